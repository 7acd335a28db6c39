//! The operator's shared daemon event streams against the real daemon.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Daemon, sh};
use sandbox_operator::controller::daemons::{Backoff, Change, DaemonHub, OWNER_UID_LABEL};
use sandbox_operator::wire::ProcessStatus;
use tokio::sync::mpsc;

async fn next_change(
    rx: &mut mpsc::UnboundedReceiver<Change>,
    what: &str,
    pred: impl Fn(&Change) -> bool,
) -> Change {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let change = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no change within 10 s: {what}"))
            .expect("hub alive");
        if pred(&change) {
            return change;
        }
    }
}

#[tokio::test]
async fn owned_process_changes_arrive_and_a_restart_is_noticed() {
    let mut d = Daemon::start();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hub = DaemonHub::new(tx).with_backoff(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
    });
    hub.watch(&d.client);
    let first_boot = match next_change(&mut rx, "connected", |c| {
        matches!(c, Change::Connected { .. })
    })
    .await
    {
        Change::Connected { boot_id, .. } => boot_id,
        _ => unreachable!(),
    };

    // An owned process: started and exited both arrive, with the exit code.
    let mut req = sh("sleep 0.2; exit 6");
    req.labels = BTreeMap::from([(OWNER_UID_LABEL.to_string(), "uid-a".to_string())]);
    let started = std::time::Instant::now();
    let p = d.client.start(&req).await.unwrap();
    let exited = next_change(&mut rx, "exit of uid-a", |c| {
        matches!(c, Change::Process { info, .. } if info.pid == p.pid && info.status == ProcessStatus::Exited)
    })
    .await;
    let Change::Process { info, endpoint } = exited else {
        unreachable!()
    };
    assert_eq!(info.exit_code, Some(6));
    assert_eq!(endpoint, d.base);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(hub.process(&d.base, "uid-a").unwrap().exit_code, Some(6));

    // Unowned processes are not reported.
    let other = d.client.start(&sh("exit 0")).await.unwrap();
    d.wait_end(other.pid).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(change) = rx.try_recv() {
        if let Change::Process { info, .. } = change {
            assert_ne!(info.pid, other.pid, "an unowned process was reported");
        }
    }

    // A daemon restart: disconnected, then restarted with a new boot id, then re-listed.
    d.restart(libc::SIGTERM);
    next_change(&mut rx, "disconnected", |c| {
        matches!(c, Change::Disconnected { .. })
    })
    .await;
    let restarted = next_change(&mut rx, "restarted", |c| {
        matches!(c, Change::Restarted { .. })
    })
    .await;
    let Change::Restarted {
        old_boot_id,
        new_boot_id,
        ..
    } = restarted
    else {
        unreachable!()
    };
    assert_eq!(old_boot_id, first_boot);
    assert_ne!(new_boot_id, first_boot);
    // The persisted record comes back through the re-list.
    next_change(
        &mut rx,
        "relisted uid-a",
        |c| matches!(c, Change::Process { info, .. } if info.pid == p.pid),
    )
    .await;
    assert_eq!(
        hub.view(&d.base).unwrap().boot_id.as_deref(),
        Some(new_boot_id.as_str())
    );
}

#[test]
fn backoff_grows_is_jittered_and_capped() {
    let b = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(1000),
    };
    for attempt in 0..10 {
        let d = b.delay(attempt);
        let ceiling = Duration::from_millis((100u64 << attempt).min(1000));
        assert!(d <= ceiling && d >= ceiling / 2, "attempt {attempt}: {d:?}");
    }
}
