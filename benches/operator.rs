//! Operator benchmark against the real local control plane (`scripts/control-plane.sh`), the
//! real release `sandbox-daemon` (endpoint target) and the real `sandbox-operator run` binary
//! (a child process, so its RSS is read from /proc). Prints one JSON document.
//!
//! Every latency is measured by the client side of the API server (a watch on the CRs), as a
//! user would see it, and put beside a floor from the same run: a bare create+get round trip.
//! Run: `cargo bench --bench operator` (add `-- --quick` for a short smoke run).

#[path = "../tests/common/control_plane.rs"]
mod control_plane;
#[path = "common/operator.rs"]
mod harness;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use kube::api::{Api, PostParams};
use sandbox_operator::api::{SandboxProcess, SandboxProcessSpec, SandboxTarget};
use sandbox_operator::client::Client;
use sandbox_operator::controller::daemons::OWNER_UID_LABEL;
use serde_json::{Value, json};

use harness::{TOKEN, ms, rss_kib, start_daemon, start_operator, stats, until};

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the watch saw of one object: when (monotonic and wall clock) it first had a pid and
/// first showed a finished phase, and how many writes it took.
#[derive(Default, Clone)]
struct Seen {
    pid_at: Option<Instant>,
    finished_wall_ms: Option<i64>,
    /// resourceVersion bumps after creation (every write, metadata included).
    writes: u32,
    /// Bumps that changed `.status`: the operator's status writes.
    status_writes: u32,
    last_rv: String,
    last_status: Value,
}

type Board = harness::Board<Seen>;

/// One watch over the namespace records every object's progress into the board.
fn watch(api: Api<SandboxProcess>) -> Board {
    harness::watch_board(api, |obj: &SandboxProcess, seen: &mut Seen, now| {
        let rv = obj.metadata.resource_version.clone().unwrap_or_default();
        let status = serde_json::to_value(&obj.status).unwrap_or(Value::Null);
        if !seen.last_rv.is_empty() && seen.last_rv != rv {
            seen.writes += 1;
            if seen.last_status != status {
                seen.status_writes += 1;
            }
        }
        seen.last_rv = rv;
        seen.last_status = status;
        let st = obj.status.as_ref();
        if seen.pid_at.is_none() && st.and_then(|s| s.pid).is_some() {
            seen.pid_at = Some(now);
        }
        if seen.finished_wall_ms.is_none()
            && st.and_then(|s| s.phase).is_some_and(|p| p.is_finished())
        {
            seen.finished_wall_ms = Some(wall_ms());
        }
    })
}

fn object(name: &str, endpoint: &str, command: &str, args: &[&str]) -> SandboxProcess {
    let mut spec = SandboxProcessSpec::new(SandboxTarget::endpoint(endpoint), command);
    spec.args = args.iter().map(|s| s.to_string()).collect();
    SandboxProcess::new(name, spec)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (sequential, burst, exits, rss_total) = if quick {
        (5, 20, 5, 50)
    } else {
        (50, 500, 20, 1000)
    };
    let kube = control_plane::client().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let (_daemon, base) = start_daemon(dir.path());
    let daemon = Client::new(&base, Some(TOKEN.into())).unwrap();

    // Floor: a bare create + get of the same CR in a namespace no operator watches.
    let floor_api: Api<SandboxProcess> =
        Api::namespaced(kube.clone(), &control_plane::namespace("bench-floor"));
    let mut floor = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let name = format!("f{i}");
        floor_api
            .create(&PostParams::default(), &object(&name, &base, "true", &[]))
            .await
            .unwrap();
        floor_api.get(&name).await.unwrap();
        floor.push(ms(t.elapsed()));
    }

    let ns = control_plane::namespace("bench-op");
    let api: Api<SandboxProcess> = Api::namespaced(kube.clone(), &ns);
    let board = watch(api.clone());
    let operator = start_operator(&ns, dir.path());
    let op_pid = operator.0.id();
    // Let the operator start its watches before anything is timed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(op_pid);
    let pp = PostParams::default();

    // 1. Sequential: create -> status.pid as the watch sees it.
    let mut create_pid = Vec::new();
    for i in 0..sequential {
        let name = format!("seq-{i}");
        let t = Instant::now();
        api.create(&pp, &object(&name, &base, "sleep", &["3600"]))
            .await
            .unwrap();
        let ok = until(Duration::from_secs(10), || {
            board
                .lock()
                .unwrap()
                .get(&name)
                .is_some_and(|s| s.pid_at.is_some())
        })
        .await;
        assert!(ok, "{name}: no pid within 10 s");
        let pid_at = board.lock().unwrap()[&name].pid_at.unwrap();
        create_pid.push(ms(pid_at - t));
    }

    // 2. Burst: all created at once, time until every one has a pid (Running).
    let t = Instant::now();
    let creates = (0..burst).map(|i| {
        let api = api.clone();
        let o = object(&format!("burst-{i}"), &base, "sleep", &["3600"]);
        async move { api.create(&PostParams::default(), &o).await.unwrap() }
    });
    futures_util::future::join_all(creates).await;
    let created_in = t.elapsed();
    let all_running = until(Duration::from_secs(60), || {
        let b = board.lock().unwrap();
        (0..burst).all(|i| {
            b.get(&format!("burst-{i}"))
                .is_some_and(|s| s.pid_at.is_some())
        })
    })
    .await;
    let burst_all = t.elapsed();

    // 3. Exit -> status, and the writes of a whole create-run-exit lifecycle.
    for i in 0..exits {
        // Staggered so each exit is a lone event, not a herd.
        let secs = format!("{:.2}", 1.0 + i as f64 * 0.1);
        api.create(&pp, &object(&format!("exit-{i}"), &base, "sleep", &[&secs]))
            .await
            .unwrap();
    }
    let all_finished = until(Duration::from_secs(30), || {
        let b = board.lock().unwrap();
        (0..exits).all(|i| {
            b.get(&format!("exit-{i}"))
                .is_some_and(|s| s.finished_wall_ms.is_some())
        })
    })
    .await;
    // Late writes after the finish would count too: give them a moment to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut exit_status, mut writes, mut status_writes) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..exits {
        let name = format!("exit-{i}");
        let seen = board
            .lock()
            .unwrap()
            .get(&name)
            .cloned()
            .unwrap_or_default();
        let uid = api.get(&name).await.unwrap().metadata.uid.unwrap();
        let ended = daemon
            .list(&[(OWNER_UID_LABEL, &uid)])
            .await
            .unwrap()
            .into_iter()
            .find_map(|p| p.ended_at);
        if let (Some(ended), Some(seen_ms)) = (ended, seen.finished_wall_ms) {
            exit_status.push((seen_ms - ended) as f64);
        }
        writes.push(f64::from(seen.writes));
        status_writes.push(f64::from(seen.status_writes));
    }

    // 4. RSS with `rss_total` live objects.
    let live = sequential + burst;
    let extra = (live..rss_total).map(|i| {
        let api = api.clone();
        let o = object(&format!("rss-{i}"), &base, "sleep", &["3600"]);
        async move { api.create(&PostParams::default(), &o).await.unwrap() }
    });
    futures_util::stream::iter(extra)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let rss_running = until(Duration::from_secs(120), || {
        let b = board.lock().unwrap();
        b.values().filter(|s| s.pid_at.is_some()).count() >= rss_total + exits
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(op_pid);

    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let report = json!({
        "bench": "operator",
        "quick": quick,
        "floor_create_get": stats(floor),
        "create_to_pid_sequential": stats(create_pid),
        "burst": {
            "objects": burst,
            "created_in_ms": ms(created_in),
            "all_running": all_running,
            "all_running_ms": ms(burst_all),
        },
        "exit_to_status": {
            "all_finished": all_finished,
            "latency": stats(exit_status),
            "note": "daemon ended_at (ms) -> watch event with a finished phase (ms wall clock)",
        },
        "writes_per_create_run_exit": {
            "resource_version_bumps_max": max(&writes),
            "status_writes_max": max(&status_writes),
            "status_writes_p50": stats(status_writes)["p50_ms"],
        },
        "operator_rss": {
            "objects": rss_total,
            "all_running": rss_running,
            "idle_kib": rss_idle,
            "kib": rss,
            "mib": (rss as f64 / 1024.0 * 10.0).round() / 10.0,
        },
        "targets": {
            "create_to_pid_p50_ms": 100,
            "exit_to_status_p50_ms": 100,
            "burst_500_all_running_ms": 10_000,
            "status_writes_per_lifecycle": 3,
            "rss_mib_at_1000": 64,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    drop(operator);
}
