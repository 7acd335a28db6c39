//! The process routes against the real daemon and real processes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Daemon, alive, cmd, eventually, group_members, sh, zombie_children};
use futures_util::StreamExt;
use sandbox_operator::client::{EventItem, FollowItem, OutputStream, RunItem};
use sandbox_operator::wire::{
    ErrorCode, EventKind, ExitReason, ProcessStatus, SignalSpec, StdinMode,
};

#[tokio::test]
async fn exit_codes_and_signals_are_reported_exactly() {
    let d = Daemon::start();
    let ok = d.start_cmd("true", &[]).await;
    let three = d.client.start(&sh("exit 3")).await.unwrap();
    let killed = d.client.start(&sh("kill -9 $$")).await.unwrap();
    assert_eq!(ok.status, ProcessStatus::Running);
    assert!(ok.pid > 0 && ok.handle > 0 && ok.started_at > 1_600_000_000_000);

    let ok = d.wait_end(ok.pid).await;
    assert_eq!(
        (ok.status, ok.exit_code, ok.signal),
        (ProcessStatus::Exited, Some(0), None)
    );
    assert_eq!(ok.exit_reason, Some(ExitReason::Exited));
    assert!(ok.ended_at.unwrap() >= ok.started_at);

    let three = d.wait_end(three.pid).await;
    assert_eq!(
        (three.status, three.exit_code),
        (ProcessStatus::Exited, Some(3))
    );

    let killed = d.wait_end(killed.pid).await;
    assert_eq!(
        (killed.status, killed.exit_code, killed.signal),
        (ProcessStatus::Signaled, None, Some(9))
    );
    // SIGKILL alone is never taken for an OOM kill.
    assert!(!killed.oom_killed);
    assert_eq!(killed.exit_reason, Some(ExitReason::Signaled));
}

#[tokio::test]
async fn many_concurrent_starts_keep_every_exit_code() {
    let d = Daemon::start();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = d.client.clone();
        tasks.push(tokio::spawn(async move {
            let code = i % 256;
            let p = client.start(&sh(&format!("exit {code}"))).await.unwrap();
            (p.pid, code)
        }));
    }
    for task in tasks {
        let (pid, code) = task.await.unwrap();
        let info = d.wait_end(pid).await;
        assert_eq!(info.exit_code, Some(code), "{info:?}");
    }
}

#[tokio::test]
async fn signal_by_number_and_by_name_reaches_the_process() {
    let d = Daemon::start();
    let a = d.start_cmd("sleep", &["100"]).await;
    let b = d.start_cmd("sleep", &["100"]).await;
    d.client
        .signal(&a.pid.to_string(), SignalSpec::Number(15))
        .await
        .unwrap();
    d.client
        .signal(&b.pid.to_string(), SignalSpec::Name("SIGINT".into()))
        .await
        .unwrap();
    let a = d.wait_end(a.pid).await;
    let b = d.wait_end(b.pid).await;
    assert_eq!((a.status, a.signal), (ProcessStatus::Signaled, Some(15)));
    assert_eq!(b.signal, Some(2));
    assert_eq!(a.exit_reason, Some(ExitReason::Killed));

    let err = d
        .client
        .signal(&a.pid.to_string(), SignalSpec::Number(15))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotRunning));
    assert_eq!(err.status().unwrap().as_u16(), 400);
    let c = d.start_cmd("sleep", &["100"]).await;
    let err = d
        .client
        .signal(&c.pid.to_string(), SignalSpec::Name("SIGBOGUS".into()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
    let err = d
        .client
        .signal(&c.pid.to_string(), SignalSpec::Number(99))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
    d.client.kill(&c.pid.to_string(), None).await.unwrap();
}

#[tokio::test]
async fn kill_reaches_the_whole_group_and_leaves_no_orphans() {
    let d = Daemon::start();
    let p = d
        .client
        .start(&sh("sleep 1000 & sleep 1000 & sh -c 'sleep 1000' & wait"))
        .await
        .unwrap();
    let members = eventually(Duration::from_secs(5), "four group members", || async {
        let m = group_members(p.pid);
        (m.len() >= 5).then_some(m)
    })
    .await;
    d.client.kill(&p.pid.to_string(), None).await.unwrap();
    let info = d.client.get(&p.pid.to_string()).await.unwrap();
    assert_eq!(
        (info.status, info.signal),
        (ProcessStatus::Signaled, Some(9)),
        "{info:?}"
    );
    assert_eq!(info.exit_reason, Some(ExitReason::Killed));
    eventually(
        Duration::from_secs(5),
        "every group member gone",
        || async { members.iter().all(|pid| !alive(*pid)).then_some(()) },
    )
    .await;
    // Orphans were re-parented to the daemon (subreaper) and reaped, not left as zombies.
    eventually(
        Duration::from_secs(5),
        "no zombies under the daemon",
        || async { zombie_children(d.pid()).is_empty().then_some(()) },
    )
    .await;
    // Killing an ended process is fine (idempotent).
    d.client.kill(&p.pid.to_string(), None).await.unwrap();
}

#[tokio::test]
async fn graceful_delete_sends_the_stop_signal_then_sigkill() {
    let d = Daemon::start();
    let mut req = sh("trap 'echo got-term' TERM; while true; do sleep 0.05; done");
    req.stop_signal = Some(SignalSpec::Name("TERM".into()));
    let p = d.client.start(&req).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    d.client.kill(&p.pid.to_string(), Some(400)).await.unwrap();
    let info = d.wait_end(p.pid).await;
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "SIGKILL came before the grace ended"
    );
    assert_eq!(info.signal, Some(9));
    let out = d
        .client
        .output(&p.pid.to_string(), OutputStream::Stdout)
        .await
        .unwrap();
    assert!(out.lines.iter().any(|l| l == "got-term"), "{out:?}");
}

#[tokio::test]
async fn stdin_pipe_round_trips_and_closes() {
    let d = Daemon::start();
    let mut req = cmd("cat", &[]);
    req.stdin_mode = StdinMode::Pipe;
    let p = d.client.start(&req).await.unwrap();
    assert!(p.stdin_writable);
    let r = p.pid.to_string();
    let mut follow = Box::pin(
        d.client
            .follow(&r, OutputStream::Stdout, None)
            .await
            .unwrap(),
    );
    d.client.write_stdin(&r, "hello\nwor").await.unwrap();
    d.client.write_stdin(&r, "ld\n").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match follow.next().await.unwrap().unwrap() {
            FollowItem::Line { line, .. } => seen.push(line.line),
            FollowItem::Eof => panic!("eof too early"),
        }
    }
    assert_eq!(seen, vec!["hello", "world"]);
    d.client.close_stdin(&r).await.unwrap();
    let info = d.wait_end(p.pid).await;
    assert_eq!(info.exit_code, Some(0));
    assert!(!info.stdin_writable);
    assert_eq!(follow.next().await.unwrap().unwrap(), FollowItem::Eof);
    let err = d.client.write_stdin(&r, "late").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StdinNotWritable));
    let closed = d.start_cmd("sleep", &["5"]).await;
    let err = d
        .client
        .write_stdin(&closed.pid.to_string(), "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StdinNotWritable));
    let err = d
        .client
        .close_stdin(&closed.pid.to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StdinNotWritable));
}

#[tokio::test]
async fn output_is_bounded_keeping_head_and_tail() {
    let d = Daemon::start();
    let mut req = cmd("seq", &["1", "200000"]);
    req.output_limit_bytes = Some(64 << 10);
    let p = d.client.start(&req).await.unwrap();
    let info = d.wait_end(p.pid).await;
    let r = p.pid.to_string();
    // The pipe reader may finish just after the exit is recorded.
    let out = eventually(Duration::from_secs(5), "last line captured", || {
        let client = d.client.clone();
        let r = r.clone();
        async move {
            let out = client.output(&r, OutputStream::Stdout).await.unwrap();
            (out.lines.last().map(String::as_str) == Some("200000")).then_some(out)
        }
    })
    .await;
    assert!(out.truncated);
    assert_eq!(out.lines[0], "1");
    assert!(out.line_count < 200_000 && out.line_count == out.lines.len());
    // Head lines are contiguous from 1; tail lines contiguous up to 200000.
    let nums: Vec<u64> = out.lines.iter().map(|l| l.parse().unwrap()).collect();
    let gap = nums.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert_eq!(gap, 1, "exactly one gap between head and tail");
    let stats = d.client.get(&r).await.unwrap().output;
    assert!(stats.truncated);
    assert_eq!(
        stats.stdout_bytes,
        (1..=200000u64)
            .map(|n| n.to_string().len() as u64 + 1)
            .sum::<u64>()
    );
    assert_eq!(info.exit_code, Some(0));
}

#[tokio::test]
async fn follow_resumes_without_loss_or_duplication_under_concurrent_output() {
    let d = Daemon::start();
    // Two writers, stdout and stderr, interleaving as fast as they can.
    let p = d
        .client
        .start(&sh(
            "seq 1 60000 | sed 's/^/o/' & seq 1 60000 | sed 's/^/e/' >&2 & wait",
        ))
        .await
        .unwrap();
    let r = p.pid.to_string();
    let mut got: Vec<(u64, String)> = Vec::new();
    let mut since = None;
    // Read in several sessions, disconnecting in the middle each time.
    for session in 0.. {
        let mut follow = Box::pin(
            d.client
                .follow(&r, OutputStream::Output, since)
                .await
                .unwrap(),
        );
        let mut n = 0;
        let mut eof = false;
        while let Some(item) = follow.next().await {
            match item.unwrap() {
                FollowItem::Line { seq, line } => {
                    got.push((seq, line.line));
                    since = Some(seq);
                    n += 1;
                    if n == 7_000 + session * 13 {
                        break;
                    }
                }
                FollowItem::Eof => {
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            break;
        }
    }
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    let expected: Vec<u64> = (1..=120_000).collect();
    assert_eq!(seqs.len(), 120_000, "lines lost or doubled");
    assert_eq!(seqs, expected);
    let mut next_o = 1;
    let mut next_e = 1;
    for (_, line) in &got {
        let (prefix, n) = line.split_at(1);
        let n: u64 = n.parse().unwrap();
        match prefix {
            "o" => {
                assert_eq!(n, next_o);
                next_o += 1
            }
            "e" => {
                assert_eq!(n, next_e);
                next_e += 1
            }
            _ => panic!("unexpected line {line}"),
        }
    }
    assert_eq!((next_o, next_e), (60_001, 60_001));
}

#[tokio::test]
async fn partial_last_lines_and_invalid_utf8_are_kept() {
    let d = Daemon::start();
    let p = d
        .client
        .start(&sh(r"printf 'a\nb\377c\nno-newline'"))
        .await
        .unwrap();
    d.wait_end(p.pid).await;
    let r = p.pid.to_string();
    let out = eventually(Duration::from_secs(5), "three lines", || {
        let client = d.client.clone();
        let r = r.clone();
        async move {
            let out = client.output(&r, OutputStream::Output).await.unwrap();
            (out.line_count == 3).then_some(out)
        }
    })
    .await;
    assert_eq!(out.lines, vec!["a", "b\u{FFFD}c", "no-newline"]);
}

#[tokio::test]
async fn idempotent_start_returns_the_same_process_and_refuses_another_body() {
    let d = Daemon::start();
    let req = cmd("sleep", &["30"]);
    let first = d.client.start_idempotent(&req, "uid-1234").await.unwrap();
    let again = d.client.start_idempotent(&req, "uid-1234").await.unwrap();
    assert_eq!(first.pid, again.pid);
    assert_eq!(first.handle, again.handle);
    let other = cmd("sleep", &["31"]);
    let err = d
        .client
        .start_idempotent(&other, "uid-1234")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::IdempotencyKeyReused));
    assert_eq!(err.status().unwrap().as_u16(), 409);
    // Concurrent retries of one key start one process.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = d.client.clone();
        let req = cmd("sleep", &["32"]);
        tasks.push(tokio::spawn(async move {
            client.start_idempotent(&req, "uid-race").await.unwrap().pid
        }));
    }
    let mut pids = Vec::new();
    for t in tasks {
        pids.push(t.await.unwrap());
    }
    pids.dedup();
    assert_eq!(pids.len(), 1);
    let all = d.client.list(&[]).await.unwrap();
    assert_eq!(all.iter().filter(|p| p.args == vec!["32"]).count(), 1);
    // The key survives a daemon restart.
    d.client.kill(&first.pid.to_string(), None).await.unwrap();
    let mut d = d;
    d.restart(libc::SIGTERM);
    let after = d.client.start_idempotent(&req, "uid-1234").await.unwrap();
    assert_eq!(after.pid, first.pid);
    assert!(!after.is_running());
}

#[tokio::test]
async fn timeout_stops_the_process_and_says_so() {
    let d = Daemon::start();
    let mut req = cmd("sleep", &["100"]);
    req.timeout_ms = Some(300);
    req.kill_grace_ms = Some(200);
    let p = d.client.start(&req).await.unwrap();
    let info = d.wait_end(p.pid).await;
    assert!(info.timed_out);
    assert_eq!(info.exit_reason, Some(ExitReason::Timeout));
    assert_eq!(
        (info.status, info.signal),
        (ProcessStatus::Signaled, Some(15))
    );
    let lasted = info.ended_at.unwrap() - info.started_at;
    assert!((250..3000).contains(&lasted), "lasted {lasted} ms");

    // A process ignoring the stop signal is SIGKILLed after the grace period.
    let mut req = sh("trap '' TERM; sleep 100 & wait; sleep 100");
    req.timeout_ms = Some(200);
    req.kill_grace_ms = Some(300);
    let p = d.client.start(&req).await.unwrap();
    let info = d.wait_end(p.pid).await;
    assert!(info.timed_out);
    assert_eq!(info.signal, Some(9));
    let lasted = info.ended_at.unwrap() - info.started_at;
    assert!(lasted >= 450, "SIGKILL before the grace: {lasted} ms");
}

#[tokio::test]
async fn restart_policy_backs_off_exponentially_up_to_max_restarts() {
    let d = Daemon::start();
    let mut req = sh("exit 1");
    req.name = Some("flaky".into());
    req.restart = Some(sandbox_operator::wire::RestartConfig {
        policy: sandbox_operator::wire::RestartPolicy::OnFailure,
        max_restarts: Some(3),
        initial_backoff_ms: 100,
        max_backoff_ms: 1000,
    });
    let mut events = Box::pin(d.client.events(None).await.unwrap());
    let p = d.client.start(&req).await.unwrap();
    assert!(p.managed.is_some());
    let mut restarts = Vec::new();
    while restarts.len() < 3 {
        let item = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let EventItem::State(e) = item {
            if e.kind == EventKind::ProcessRestarted {
                restarts.push(e.at);
            }
        }
    }
    let info = eventually(
        Duration::from_secs(5),
        "stopped after max restarts",
        || async {
            let info = d.client.get("flaky").await.unwrap();
            let m = info.managed.clone().unwrap();
            (m.status == sandbox_operator::wire::ManagedStatus::Stopped).then_some(info)
        },
    )
    .await;
    let m = info.managed.unwrap();
    assert_eq!(m.restart_count, 3);
    assert_eq!(m.last_exit.unwrap().exit_code, Some(1));
    // Gaps grow: ~100 ms, ~200 ms (exponential back-off).
    let gap1 = restarts[1] - restarts[0];
    let gap2 = restarts[2] - restarts[1];
    assert!(gap1 >= 180 && gap2 >= 380, "gaps {gap1} {gap2}");
    // A successful exit is not restarted under on_failure; always restarts anyway.
    let mut req = sh("exit 0");
    req.restart = Some(sandbox_operator::wire::RestartConfig {
        policy: sandbox_operator::wire::RestartPolicy::Always,
        max_restarts: Some(2),
        initial_backoff_ms: 50,
        max_backoff_ms: 50,
    });
    let p = d.client.start(&req).await.unwrap();
    let r = p.pid.to_string();
    eventually(
        Duration::from_secs(5),
        "always-policy restarted twice",
        || async {
            let m = d.client.get(&r).await.unwrap().managed.unwrap();
            (m.restart_count == 2 && m.status == sandbox_operator::wire::ManagedStatus::Stopped)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn managed_process_is_addressable_by_name_and_restartable() {
    let d = Daemon::start();
    let mut req = cmd("sleep", &["100"]);
    req.name = Some("web".into());
    let p = d.client.start(&req).await.unwrap();
    let by_name = d.client.get("web").await.unwrap();
    assert_eq!(by_name.pid, p.pid);
    let restarted = d.client.restart("web").await.unwrap();
    assert_ne!(restarted.pid, p.pid);
    assert!(restarted.is_running());
    assert_eq!(restarted.handle, p.handle);
    assert_eq!(
        d.client
            .get(&restarted.pid.to_string())
            .await
            .unwrap()
            .handle,
        p.handle
    );
    // The name is taken while it runs.
    let err = d.client.start(&req).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
    d.client.kill("web", None).await.unwrap();
    let info = d.client.get("web").await.unwrap();
    assert!(!info.is_running());
    assert_eq!(
        info.managed.unwrap().status,
        sandbox_operator::wire::ManagedStatus::Stopped
    );
    // Bad names are refused.
    for bad in ["", "a/b", "123"] {
        let mut req = cmd("true", &[]);
        req.name = Some(bad.into());
        assert_eq!(
            d.client.start(&req).await.unwrap_err().code(),
            Some(ErrorCode::InvalidRequest)
        );
    }
}

#[tokio::test]
async fn health_check_turns_healthy_then_unhealthy() {
    let d = Daemon::start();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Listens for a while, then stops listening but keeps running.
    let script = format!(
        "import socket,time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1',{port})); s.listen(16)\ntime.sleep(1.5); s.close(); time.sleep(100)"
    );
    let mut req = cmd("python3", &["-c", &script]);
    req.name = Some("svc".into());
    req.health_check = Some(sandbox_operator::wire::HealthCheck {
        kind: sandbox_operator::wire::HealthCheckType::Tcp,
        port,
        path: None,
        initial_delay_ms: 300,
        interval_ms: 100,
        timeout_ms: 100,
        failure_threshold: 2,
    });
    d.client.start(&req).await.unwrap();
    use sandbox_operator::wire::HealthStatus;
    eventually(Duration::from_secs(5), "healthy", || async {
        let m = d.client.get("svc").await.unwrap().managed.unwrap();
        (m.health_status == HealthStatus::Healthy).then_some(())
    })
    .await;
    let m = eventually(Duration::from_secs(8), "unhealthy", || async {
        let m = d.client.get("svc").await.unwrap().managed.unwrap();
        (m.health_status == HealthStatus::Unhealthy).then_some(m)
    })
    .await;
    assert!(m.consecutive_health_failures >= 2);
    d.client.kill("svc", None).await.unwrap();
}

#[tokio::test]
async fn a_real_oom_kill_is_reported_as_oom_killed() {
    let d = Daemon::start();
    let info = d.client.info().await.unwrap();
    assert!(
        info.capabilities.oom_detection,
        "this host has no writable memory cgroup (capabilities: {:?}); the OOM test needs one",
        info.capabilities
    );
    let mut req = cmd(
        "python3",
        &["-c", "a = bytearray(512 * 1024 * 1024); print(len(a))"],
    );
    req.memory_limit_bytes = Some(64 << 20);
    let p = d.client.start(&req).await.unwrap();
    let info = d.wait_end(p.pid).await;
    assert_eq!(info.status, ProcessStatus::OomKilled, "{info:?}");
    assert!(info.oom_killed);
    assert_eq!(info.signal, Some(9));
    assert_eq!(info.exit_reason, Some(ExitReason::OomKilled));
    // The same allocation without a tight limit is fine.
    let mut req = cmd("python3", &["-c", "a = bytearray(16 * 1024 * 1024)"]);
    req.memory_limit_bytes = Some(256 << 20);
    let p = d.client.start(&req).await.unwrap();
    let info = d.wait_end(p.pid).await;
    assert_eq!(
        (info.status, info.oom_killed),
        (ProcessStatus::Exited, false)
    );
}

#[tokio::test]
async fn restarted_daemon_keeps_exited_records_and_marks_lost_ones() {
    let mut d = Daemon::start();
    let done = d.client.start(&sh("exit 7")).await.unwrap();
    d.wait_end(done.pid).await;
    let running = d.start_cmd("sleep", &["100"]).await;
    let old_tag = std::fs::read_to_string(d.state_dir().join("cgroup-tag")).unwrap_or_default();
    // SIGKILL: the daemon gets no chance to stop its children or write anything more.
    d.restart(libc::SIGKILL);
    let done_after = d.client.get(&done.pid.to_string()).await.unwrap();
    assert_eq!(
        (done_after.status, done_after.exit_code),
        (ProcessStatus::Exited, Some(7))
    );
    assert_eq!(done_after.handle, done.handle);
    let lost = d.client.get(&running.pid.to_string()).await.unwrap();
    assert!(!lost.is_running());
    assert_eq!(lost.exit_reason, Some(ExitReason::Lost));
    // The SIGKILLed incarnation's pooled (empty) cgroup leaves were swept by the new one.
    if let Some(base) = cgroup_base(d.pid()) {
        assert!(
            !old_tag.is_empty(),
            "the daemon records its cgroup tag in the state dir"
        );
        let prefix = format!("leaf-{old_tag}-");
        let left: Vec<String> = std::fs::read_dir(&base)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        // Only busy leaves may stay (the orphaned `sleep` still runs in its own).
        for name in &left {
            let procs = std::fs::read_to_string(base.join(name).join("cgroup.procs")).unwrap();
            assert!(
                !procs.trim().is_empty(),
                "empty stale leaf {name} in {base:?} was not swept"
            );
        }
        assert!(left.len() <= 1, "stale leaves in {base:?}: {left:?}");
    }
    // The journal (which can hold PTY tokens) is private to the daemon's user.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(d.state_dir()), 0o700);
    assert_eq!(mode(d.state_dir().join("state.jsonl")), 0o600);
    // New handles continue after the old ones.
    let next = d.start_cmd("true", &[]).await;
    assert!(next.handle > running.handle);
    unsafe { libc::kill(-running.pid, libc::SIGKILL) };
}

#[tokio::test]
async fn sigterm_stops_children_gracefully_and_persists() {
    let mut d = Daemon::start_with(&["--shutdown-grace-ms", "2000"]);
    let p = d
        .client
        .start(&sh("trap 'exit 42' TERM; while true; do sleep 0.05; done"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = d.stop(libc::SIGTERM);
    assert!(status.success(), "daemon exit: {status:?}");
    assert!(!alive(p.pid));
    d.restart(0);
    let info = d.client.get(&p.pid.to_string()).await.unwrap();
    assert_eq!(
        (info.status, info.exit_code),
        (ProcessStatus::Exited, Some(42)),
        "{info:?}"
    );
}

#[tokio::test]
async fn labels_filter_the_list_and_wait_long_polls() {
    let d = Daemon::start();
    let mut a = cmd("sleep", &["0.3"]);
    a.labels = BTreeMap::from([("app".into(), "x".into()), ("uid".into(), "1".into())]);
    let mut b = cmd("sleep", &["100"]);
    b.labels = BTreeMap::from([("app".into(), "y".into())]);
    let a = d.client.start(&a).await.unwrap();
    let b = d.client.start(&b).await.unwrap();
    let xs = d.client.list(&[("app", "x")]).await.unwrap();
    assert_eq!(xs.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![a.pid]);
    assert_eq!(xs[0].labels["uid"], "1");
    assert!(
        d.client
            .list(&[("app", "x"), ("uid", "2")])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(d.client.list(&[]).await.unwrap().len(), 2);
    let waited = d
        .client
        .wait(&a.pid.to_string(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(waited.exit_code, Some(0));
    let t = std::time::Instant::now();
    let still = d
        .client
        .wait(&b.pid.to_string(), Duration::from_millis(200))
        .await
        .unwrap();
    assert!(still.is_running());
    assert!(t.elapsed() >= Duration::from_millis(190));
    d.client.kill(&b.pid.to_string(), None).await.unwrap();
}

#[tokio::test]
async fn events_stream_reports_changes_and_resumes() {
    let d = Daemon::start();
    let mut events = Box::pin(d.client.events(None).await.unwrap());
    let EventItem::Hello(hello) = events.next().await.unwrap().unwrap() else {
        panic!("hello first")
    };
    assert!(!hello.boot_id.is_empty());
    let p = d.client.start(&sh("exit 5")).await.unwrap();
    let mut kinds = Vec::new();
    let mut last_seq = 0;
    while kinds.len() < 2 {
        if let EventItem::State(e) = events.next().await.unwrap().unwrap() {
            assert!(e.seq > last_seq);
            last_seq = e.seq;
            assert_eq!(e.process.as_ref().unwrap().pid, p.pid);
            kinds.push((e.kind, e.process.unwrap().exit_code));
        }
    }
    assert_eq!(
        kinds,
        vec![
            (EventKind::ProcessStarted, None),
            (EventKind::ProcessExited, Some(5))
        ]
    );
    drop(events);
    // Resume after the first event: exactly the second comes again.
    let mut resumed = Box::pin(d.client.events(Some(last_seq - 1)).await.unwrap());
    let EventItem::Hello(hello) = resumed.next().await.unwrap().unwrap() else {
        panic!()
    };
    assert!(hello.resumed);
    let EventItem::State(e) = resumed.next().await.unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(e.seq, last_seq);
    // An id from another boot cannot be honoured.
    let mut stale = Box::pin(d.client.events(Some(1_000_000)).await.unwrap());
    let EventItem::Hello(hello) = stale.next().await.unwrap().unwrap() else {
        panic!()
    };
    assert!(!hello.resumed);
}

#[tokio::test]
async fn run_streams_started_lines_and_exit() {
    let d = Daemon::start();
    let mut req = sh("echo one; echo two >&2; exit 4");
    req.timeout = Some(10.0);
    let items: Vec<RunItem> = d
        .client
        .run(&req)
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    let RunItem::Started(started) = &items[0] else {
        panic!("{items:?}")
    };
    assert!(started.pid > 0);
    let lines: Vec<&str> = items
        .iter()
        .filter_map(|i| match i {
            RunItem::Line(l) => Some(l.line.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.contains(&"one") && lines.contains(&"two"));
    let RunItem::Finished(fin) = items.last().unwrap() else {
        panic!("{items:?}")
    };
    assert_eq!(fin.exit_code, Some(4));
    let mut req = cmd("sleep", &["100"]);
    req.timeout = Some(0.2);
    let items: Vec<RunItem> = d
        .client
        .run(&req)
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    let RunItem::Finished(fin) = items.last().unwrap() else {
        panic!("{items:?}")
    };
    assert_eq!(fin.signal, Some(15));
    assert!(fin.timed_out);
}

#[tokio::test]
async fn orphans_of_exited_processes_are_reaped() {
    let d = Daemon::start();
    // The parent exits at once; its child lives on briefly, is re-parented and must be reaped.
    let p = d
        .client
        .start(&sh("(sleep 0.3; exit 0) & exit 0"))
        .await
        .unwrap();
    d.wait_end(p.pid).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    eventually(
        Duration::from_secs(3),
        "no zombies under the daemon",
        || async { zombie_children(d.pid()).is_empty().then_some(()) },
    )
    .await;
}

/// Where the daemon `pid` makes its per-process cgroup leaves (v1 memory hierarchy, or the
/// parent of its own v2 leaf), if it uses cgroups.
fn cgroup_base(pid: i32) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let own = std::path::Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
        return own.parent().map(|p| p.to_path_buf());
    }
    let rel = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })?;
    Some(std::path::Path::new("/sys/fs/cgroup/memory").join(rel.trim_start_matches('/')))
}

#[tokio::test]
async fn a_clean_exit_on_the_stop_signal_is_still_killed() {
    let d = Daemon::start();
    // A server that catches SIGTERM and exits 0, as most do.
    let mut req = sh("trap 'exit 0' TERM; while :; do sleep 0.05; done");
    req.stop_signal = Some(SignalSpec::Name("SIGTERM".into()));
    let p = d.client.start(&req).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    d.client.kill(&p.pid.to_string(), Some(5000)).await.unwrap();
    let info = d.wait_end(p.pid).await;
    assert_eq!(info.exit_code, Some(0), "{info:?}");
    assert_eq!(info.exit_reason, Some(ExitReason::Killed), "{info:?}");
}
