//! The SandboxProcess reconciler end to end: the real local control plane
//! (`scripts/control-plane.sh`), a real `sandbox-daemon` (endpoint target, token from a file)
//! and the real `sandbox-operator run` binary watching one namespace per test.

mod common;
#[path = "common/control_plane.rs"]
mod control_plane;
#[path = "common/operator.rs"]
mod operator;

use std::process::{Command, Stdio};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use sandbox_operator::api::{
    AttachTarget, ProcessPhase, SandboxProcess, SandboxProcessSpec, SandboxProcessStatus,
    SandboxTarget,
};
use sandbox_operator::controller::daemons::OWNER_UID_LABEL;
use serde_json::json;

use common::{Daemon, alive, eventually};
use operator::Operator;

const LIMIT: Duration = Duration::from_secs(30);

type Env = operator::Env<SandboxProcess>;

async fn env(test: &str) -> Env {
    operator::env(test).await
}

fn sh_spec(daemon: &Daemon, script: &str) -> SandboxProcessSpec {
    let mut spec = SandboxProcessSpec::new(SandboxTarget::endpoint(daemon.base.clone()), "sh");
    spec.args = vec!["-c".into(), script.into()];
    spec
}

async fn create(api: &Api<SandboxProcess>, name: &str, spec: SandboxProcessSpec) -> SandboxProcess {
    api.create(&PostParams::default(), &SandboxProcess::new(name, spec))
        .await
        .expect("create SandboxProcess")
}

/// Waits until the object's status satisfies `check`; returns that status.
async fn status_until(
    api: &Api<SandboxProcess>,
    name: &str,
    what: &str,
    check: impl Fn(&SandboxProcessStatus) -> bool,
) -> SandboxProcessStatus {
    eventually(LIMIT, what, || async {
        let obj = api.get(name).await.ok()?;
        obj.status.filter(|s| check(s))
    })
    .await
}

async fn phase(api: &Api<SandboxProcess>, name: &str, want: ProcessPhase) -> SandboxProcessStatus {
    status_until(api, name, &format!("{name} phase {want:?}"), |s| {
        s.phase == Some(want)
    })
    .await
}

fn condition(s: &SandboxProcessStatus, type_: &str) -> String {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

async fn owned(daemon: &Daemon, uid: &str) -> usize {
    daemon
        .client
        .list(&[(OWNER_UID_LABEL, uid)])
        .await
        .expect("list")
        .len()
}

#[tokio::test]
async fn create_runs_with_pid_and_exit_codes_are_reflected() {
    let e = env("op-exit").await;
    create(&e.api, "ok", sh_spec(&e.daemon, "sleep 1; echo done")).await;
    create(
        &e.api,
        "bad",
        sh_spec(&e.daemon, "sleep 1; echo oops >&2; exit 3"),
    )
    .await;

    let running = phase(&e.api, "ok", ProcessPhase::Running).await;
    let pid = running.pid.expect("Running carries a pid");
    assert!(alive(pid), "pid {pid} of a Running object is alive");
    assert_eq!(condition(&running, "Ready"), "True");
    assert_eq!(condition(&running, "Started"), "True");
    assert_eq!(
        running.target.as_ref().and_then(|t| t.endpoint.as_deref()),
        Some(e.daemon.base.as_str())
    );
    assert!(
        running
            .target
            .as_ref()
            .and_then(|t| t.boot_id.as_ref())
            .is_some()
    );

    let ok = phase(&e.api, "ok", ProcessPhase::Succeeded).await;
    assert_eq!(ok.exit_code, Some(0));
    assert_eq!(ok.output_tail, vec!["done".to_owned()]);
    assert_eq!(condition(&ok, "Completed"), "True");
    assert_eq!(condition(&ok, "Ready"), "False");
    assert!(ok.ended_at.is_some());

    let bad = phase(&e.api, "bad", ProcessPhase::Failed).await;
    assert_eq!(bad.exit_code, Some(3));
    assert_eq!(bad.exit_reason.as_deref(), Some("exited"));
    assert_eq!(bad.output_tail, vec!["oops".to_owned()]);
    assert_eq!(bad.observed_generation, Some(1));
}

#[tokio::test]
async fn state_stopped_stops_the_process() {
    let e = env("op-stop").await;
    let mut spec = sh_spec(&e.daemon, "sleep 300");
    spec.termination_grace_period_seconds = 2;
    create(&e.api, "p", spec).await;
    let pid = phase(&e.api, "p", ProcessPhase::Running).await.pid.unwrap();

    e.api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"state": "Stopped"}})),
        )
        .await
        .unwrap();
    let stopped = phase(&e.api, "p", ProcessPhase::Stopped).await;
    assert_eq!(stopped.exit_reason.as_deref(), Some("killed"));
    assert_eq!(stopped.observed_generation, Some(2));
    assert!(!alive(pid), "pid {pid} is gone after state: Stopped");
}

#[tokio::test]
async fn timeout_fails_the_process() {
    let e = env("op-timeout").await;
    let mut spec = sh_spec(&e.daemon, "sleep 300");
    spec.timeout_seconds = Some(1);
    spec.termination_grace_period_seconds = 1;
    create(&e.api, "t", spec).await;
    let failed = phase(&e.api, "t", ProcessPhase::Failed).await;
    assert_eq!(failed.timed_out, Some(true));
    assert_eq!(failed.exit_reason.as_deref(), Some("timeout"));
}

#[tokio::test]
async fn delete_with_finalizer_leaves_no_process() {
    let e = env("op-delete").await;
    let mut spec = sh_spec(&e.daemon, "sleep 300");
    spec.termination_grace_period_seconds = 1;
    let obj = create(&e.api, "d", spec).await;
    let pid = phase(&e.api, "d", ProcessPhase::Running).await.pid.unwrap();
    let with_finalizer = e.api.get("d").await.unwrap();
    assert!(
        with_finalizer
            .finalizers()
            .contains(&"sandboxes.dev/cleanup".to_owned())
    );

    e.api.delete("d", &DeleteParams::default()).await.unwrap();
    eventually(LIMIT, "the object is gone", || async {
        e.api.get_opt("d").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(!alive(pid), "pid {pid} is gone once the object is");
    let uid = obj.uid().unwrap();
    let left = e
        .daemon
        .client
        .list(&[(OWNER_UID_LABEL, &uid)])
        .await
        .unwrap();
    assert!(left.iter().all(|i| !i.is_running()), "{left:?}");
}

#[tokio::test]
async fn delete_with_the_daemon_gone_does_not_hang() {
    let mut e = env("op-gone").await;
    create(&e.api, "g", sh_spec(&e.daemon, "sleep 300")).await;
    let pid = phase(&e.api, "g", ProcessPhase::Running).await.pid.unwrap();
    e.daemon.stop(libc::SIGKILL);
    // The daemon's orphan is not the operator's to clean up any more; the test's to reap.
    unsafe { libc::kill(-pid, libc::SIGKILL) }; // the group: sh and its sleep
    e.api.delete("g", &DeleteParams::default()).await.unwrap();
    eventually(LIMIT, "the object is gone", || async {
        e.api.get_opt("g").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn daemon_restart_marks_running_objects_lost() {
    let mut e = env("op-lost").await;
    create(&e.api, "l", sh_spec(&e.daemon, "sleep 300")).await;
    let before = phase(&e.api, "l", ProcessPhase::Running).await;
    e.daemon.restart(libc::SIGKILL);
    let lost = phase(&e.api, "l", ProcessPhase::Lost).await;
    assert_eq!(lost.pid, before.pid);
    assert_eq!(condition(&lost, "Stalled"), "True");
    assert_eq!(condition(&lost, "Ready"), "False");
    if let Some(pid) = before.pid {
        // The daemon died with SIGKILL; its orphan is not ours to leave behind in a test.
        unsafe { libc::kill(-pid, libc::SIGKILL) }; // the group: sh and its sleep
    }
}

#[tokio::test]
async fn operator_restarts_never_start_a_second_process() {
    let mut e = env("op-adopt").await;
    // Crash right after the create, likely mid-start, then again while it runs.
    let obj = create(&e.api, "a", sh_spec(&e.daemon, "sleep 300")).await;
    let uid = obj.uid().unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    e.operator.crash();
    e.operator = Operator::start(&e.ns, &e.daemon);
    let running = phase(&e.api, "a", ProcessPhase::Running).await;
    e.operator.crash();
    e.operator = Operator::start(&e.ns, &e.daemon);
    // Give the new operator time to reconcile (and, if it were wrong, to start another).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        owned(&e.daemon, &uid).await,
        1,
        "exactly one process for the object"
    );
    let after = phase(&e.api, "a", ProcessPhase::Running).await;
    assert_eq!(after.pid, running.pid, "the same process was adopted");
    e.api.delete("a", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_signal_is_reflected_and_finished_objects_are_not_rewritten() {
    let e = env("op-signal").await;
    create(&e.api, "s", sh_spec(&e.daemon, "kill -TERM $$")).await;
    let failed = phase(&e.api, "s", ProcessPhase::Failed).await;
    assert_eq!(failed.signal, Some(libc::SIGTERM));
    assert_eq!(failed.exit_code, None);
    assert_eq!(failed.exit_reason.as_deref(), Some("signaled"));
    // Status is written only when it changes: a settled object keeps its resourceVersion.
    let version = e.api.get("s").await.unwrap().resource_version();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(e.api.get("s").await.unwrap().resource_version(), version);
}

#[tokio::test]
async fn ttl_after_finished_deletes_the_object() {
    let e = env("op-ttl").await;
    let mut spec = sh_spec(&e.daemon, "true");
    spec.ttl_seconds_after_finished = Some(1);
    create(&e.api, "t", spec).await;
    phase(&e.api, "t", ProcessPhase::Succeeded).await;
    eventually(LIMIT, "the finished object is deleted", || async {
        e.api.get_opt("t").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn attach_mirrors_a_process_and_never_kills_it() {
    let e = env("op-attach").await;
    let existing = e.daemon.start_cmd("sleep", &["300"]).await;
    let mut spec = SandboxProcessSpec::new(SandboxTarget::endpoint(e.daemon.base.clone()), "x");
    spec.command = None;
    spec.attach = Some(AttachTarget {
        pid: Some(existing.pid),
        name: None,
    });
    create(&e.api, "att", spec).await;
    let running = phase(&e.api, "att", ProcessPhase::Running).await;
    assert_eq!(running.pid, Some(existing.pid));
    e.api.delete("att", &DeleteParams::default()).await.unwrap();
    eventually(LIMIT, "the object is gone", || async {
        e.api.get_opt("att").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(
        alive(existing.pid),
        "an attached process outlives its object"
    );
    assert_eq!(owned(&e.daemon, "none").await, 0);
    e.daemon
        .client
        .kill(&existing.pid.to_string(), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn unresolvable_targets_and_rejected_starts_are_stalled() {
    let e = env("op-stalled").await;
    let spec = SandboxProcessSpec::new(SandboxTarget::pod("no-such-pod"), "true");
    create(&e.api, "pod", spec).await;
    let stalled = status_until(&e.api, "pod", "pod target Stalled", |s| {
        condition(s, "Stalled") == "True"
    })
    .await;
    let c = stalled
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(c.reason, "TargetUnresolvable");
    assert!(c.message.contains("no-such-pod"), "{}", c.message);
    assert_eq!(stalled.phase, Some(ProcessPhase::Pending));

    let spec = SandboxProcessSpec::new(
        SandboxTarget::endpoint(e.daemon.base.clone()),
        "/nonexistent/program",
    );
    create(&e.api, "bad", spec).await;
    let stalled = status_until(&e.api, "bad", "bad command Stalled", |s| {
        condition(s, "Stalled") == "True"
    })
    .await;
    let c = stalled
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(c.reason, "StartRejected");
    assert_eq!(stalled.pid, None);
}

#[tokio::test]
async fn leader_election_fails_clearly_without_leases() {
    control_plane::client().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
        .arg("run")
        .arg("--kubeconfig")
        .arg(control_plane::kubeconfig())
        .args(["--metrics-addr", "127.0.0.1:0", "--leader-elect"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = eventually(LIMIT, "the operator exits", || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("Leases"), "{stderr}");
}

#[tokio::test]
async fn metrics_and_health_are_served() {
    control_plane::client().await;
    let daemon = Daemon::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ns = control_plane::namespace("op-metrics");
    let _operator = Operator {
        child: Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(control_plane::kubeconfig())
            .args(["--namespace", &ns])
            .arg("--daemon-token-file")
            .arg(daemon.dir.path().join("token"))
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    };
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(r.text().await.ok()?)
        }
    };
    eventually(LIMIT, "/livez", || get("/livez")).await;
    eventually(LIMIT, "/readyz", || get("/readyz")).await;
    let metrics = eventually(LIMIT, "/metrics", || get("/metrics")).await;
    assert!(
        metrics.contains("sandbox_operator_objects{kind=\"SandboxProcess\",phase=\"Running\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sandbox_operator_reconcile_duration_seconds"),
        "{metrics}"
    );
}

#[tokio::test]
async fn restart_policy_on_failure_restarts_and_counts() {
    let e = env("op-restart").await;
    let marker = e.daemon.dir.path().join("ran-once");
    let script = format!(
        "if [ -e {m} ]; then exit 0; else touch {m}; exit 1; fi",
        m = marker.display()
    );
    let mut spec = sh_spec(&e.daemon, &script);
    spec.restart_policy = sandbox_operator::api::RestartPolicy::OnFailure;
    create(&e.api, "r", spec).await;
    let done = phase(&e.api, "r", ProcessPhase::Succeeded).await;
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.restart_count, Some(1));
}

#[tokio::test]
async fn daemon_restart_without_its_state_marks_running_objects_lost() {
    let mut e = env("op-lost-nostate").await;
    create(&e.api, "l", sh_spec(&e.daemon, "sleep 300")).await;
    let before = phase(&e.api, "l", ProcessPhase::Running).await;
    // Kill the daemon and drop its records: after the restart the process is simply unknown.
    unsafe { libc::kill(e.daemon.pid(), libc::SIGKILL) };
    let _ = e.daemon.child.wait();
    std::fs::remove_dir_all(e.daemon.state_dir()).unwrap();
    e.daemon.restart(libc::SIGKILL);
    let lost = phase(&e.api, "l", ProcessPhase::Lost).await;
    assert_eq!(lost.pid, before.pid);
    assert_ne!(
        lost.target.and_then(|t| t.boot_id),
        None,
        "the status stays bound to a daemon incarnation"
    );
    if let Some(pid) = before.pid {
        unsafe { libc::kill(-pid, libc::SIGKILL) }; // the group: sh and its sleep
    }
}

#[tokio::test]
async fn a_create_run_exit_lifecycle_writes_status_at_most_three_times() {
    use futures_util::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let e = env("op-writes").await;
    let created = create(&e.api, "w", sh_spec(&e.daemon, "sleep 0.5")).await;
    let version = created.resource_version().unwrap();
    let mut stream = e
        .api
        .watch(&WatchParams::default().fields("metadata.name=w"), &version)
        .await
        .unwrap()
        .boxed();
    let mut writes = 0;
    let mut last: Option<SandboxProcessStatus> = None;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, stream.next()).await {
        if let WatchEvent::Modified(obj) = event.unwrap() {
            if obj.status != last {
                writes += 1;
                last = obj.status.clone();
            }
            if last.as_ref().and_then(|s| s.phase) == Some(ProcessPhase::Succeeded) {
                break;
            }
        }
    }
    assert_eq!(last.and_then(|s| s.phase), Some(ProcessPhase::Succeeded));
    assert!(writes <= 3, "{writes} status writes");
}

#[tokio::test]
async fn an_oom_kill_is_reflected() {
    let e = env("op-oom").await;
    let caps = e.daemon.client.info().await.unwrap().capabilities;
    assert!(
        caps.oom_detection,
        "this host has no writable memory cgroup ({caps:?}); the OOM test needs one"
    );
    let mut spec =
        SandboxProcessSpec::new(SandboxTarget::endpoint(e.daemon.base.clone()), "python3");
    spec.args = vec!["-c".into(), "a = bytearray(512 * 1024 * 1024)".into()];
    spec.memory_limit_bytes = Some(64 << 20);
    create(&e.api, "oom", spec).await;
    let failed = phase(&e.api, "oom", ProcessPhase::Failed).await;
    assert_eq!(failed.oom_killed, Some(true), "{failed:?}");
    assert_eq!(failed.exit_reason.as_deref(), Some("oom_killed"));
    assert_eq!(failed.signal, Some(libc::SIGKILL));
    assert_eq!(condition(&failed, "Completed"), "True");
}
