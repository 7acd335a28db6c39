//! The PtySession reconciler end to end: the real local control plane
//! (`scripts/control-plane.sh`), a real `sandbox-daemon` (endpoint target, token from a file),
//! real PTYs, and the real `sandbox-operator run` binary watching one namespace per test.
//!
//! The local control plane serves no core API, so the attach token cannot be stored in a
//! Secret there: these tests check that this is said in the `TokenStored` condition, and look
//! inside the terminal from outside (`stty -F` on the session's pts) instead of attaching.

mod common;
#[path = "common/control_plane.rs"]
mod control_plane;
#[path = "common/operator.rs"]
mod operator;

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use sandbox_operator::api::{
    PtyPhase, PtySession, PtySessionSpec, PtySessionStatus, SandboxTarget,
};
use serde_json::json;

use common::{Daemon, alive, eventually, pty_condition};
use operator::Operator;

const LIMIT: Duration = Duration::from_secs(30);

type Env = operator::Env<PtySession>;

async fn env(test: &str) -> Env {
    operator::env(test).await
}

fn spec(daemon: &Daemon, script: Option<&str>) -> PtySessionSpec {
    let mut spec = PtySessionSpec::new(SandboxTarget::endpoint(daemon.base.clone()));
    if let Some(script) = script {
        spec.command = "/bin/sh".into();
        spec.args = vec!["-c".into(), script.into()];
    }
    spec
}

async fn create(api: &Api<PtySession>, name: &str, spec: PtySessionSpec) -> PtySession {
    api.create(&PostParams::default(), &PtySession::new(name, spec))
        .await
        .expect("create PtySession")
}

async fn status_until(
    api: &Api<PtySession>,
    name: &str,
    what: &str,
    check: impl Fn(&PtySessionStatus) -> bool,
) -> PtySessionStatus {
    eventually(LIMIT, what, || async {
        api.get(name).await.ok()?.status.filter(|s| check(s))
    })
    .await
}

async fn phase(api: &Api<PtySession>, name: &str, want: PtyPhase) -> PtySessionStatus {
    status_until(api, name, &format!("{name} phase {want:?}"), |s| {
        s.phase == Some(want)
    })
    .await
}

/// `stty size` of the terminal the session's process has as its stdin: what a program inside
/// the session sees.
fn stty_size(pid: i32) -> String {
    let pts = std::fs::read_link(format!("/proc/{pid}/fd/0")).expect("the session's stdin");
    let out = std::process::Command::new("stty")
        .arg("-F")
        .arg(&pts)
        .arg("size")
        .output()
        .expect("run stty");
    assert!(out.status.success(), "stty -F {}: {out:?}", pts.display());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn create_becomes_active_and_a_resize_reaches_the_terminal() {
    let e = env("pty-active").await;
    let obj = create(&e.api, "sh", spec(&e.daemon, None)).await;
    let uid = obj.uid().unwrap();
    let active = phase(&e.api, "sh", PtyPhase::Active).await;
    let pid = active.pid.expect("an Active session has a pid");
    assert!(alive(pid));
    assert_eq!(active.is_alive, Some(true));
    assert_eq!(active.size.as_deref(), Some("80x24"));
    assert_eq!(stty_size(pid), "24 80");
    let sessions = e.daemon.owned_sessions(&uid).await;
    assert_eq!(sessions.len(), 1, "one session for the object");
    assert_eq!(
        active.session_id.as_deref(),
        Some(sessions[0].session_id.as_str())
    );
    assert_eq!(pty_condition(&active, "Ready"), ("True", "Active"));
    // No core API here: the token cannot be stored, and the status says so (never the token).
    assert_eq!(
        pty_condition(&active, "TokenStored"),
        ("False", "SecretsNotServed")
    );
    assert_eq!(active.token_secret_name, None);
    let text = serde_json::to_string(&e.api.get("sh").await.unwrap()).unwrap();
    assert!(
        !text.contains("\"token\""),
        "no token in the object: {text}"
    );

    e.api
        .patch(
            "sh",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rows": 40, "cols": 120}})),
        )
        .await
        .expect("resize");
    let resized = status_until(&e.api, "sh", "the observed size", |s| {
        s.rows == Some(40) && s.cols == Some(120)
    })
    .await;
    assert_eq!(resized.size.as_deref(), Some("120x40"));
    assert_eq!(stty_size(pid), "40 120");
    assert_eq!(resized.pid, Some(pid), "a resize keeps the session");
    e.api.delete("sh", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn an_exit_code_is_reflected() {
    let e = env("pty-exit").await;
    create(&e.api, "x", spec(&e.daemon, Some("sleep 1; exit 3"))).await;
    phase(&e.api, "x", PtyPhase::Active).await;
    let exited = phase(&e.api, "x", PtyPhase::Exited).await;
    assert_eq!(exited.exit_code, Some(3));
    assert_eq!(exited.is_alive, Some(false));
    assert!(exited.ended_at.is_some());
    assert_eq!(pty_condition(&exited, "Completed"), ("True", "Exited"));
    assert_eq!(pty_condition(&exited, "Ready").0, "False");
}

#[tokio::test]
async fn an_idle_session_expires() {
    let e = env("pty-idle").await;
    let mut s = spec(&e.daemon, None);
    s.idle_timeout_seconds = 1;
    create(&e.api, "idle", s).await;
    let expired = phase(&e.api, "idle", PtyPhase::Expired).await;
    assert_eq!(expired.is_alive, Some(false));
    assert_eq!(pty_condition(&expired, "Completed"), ("True", "Expired"));
}

#[tokio::test]
async fn delete_kills_the_session() {
    let e = env("pty-delete").await;
    let obj = create(&e.api, "d", spec(&e.daemon, None)).await;
    let uid = obj.uid().unwrap();
    let active = phase(&e.api, "d", PtyPhase::Active).await;
    let pid = active.pid.unwrap();
    e.api.delete("d", &DeleteParams::default()).await.unwrap();
    eventually(LIMIT, "the object is gone", || async {
        e.api.get_opt("d").await.unwrap().is_none().then_some(())
    })
    .await;
    let sessions = e.daemon.owned_sessions(&uid).await;
    assert!(
        sessions.iter().all(|s| !s.is_alive),
        "the session ended: {sessions:?}"
    );
    eventually(LIMIT, "the shell is gone", || async {
        (!alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn operator_restarts_adopt_instead_of_creating_another() {
    let mut e = env("pty-adopt").await;
    let obj = create(&e.api, "a", spec(&e.daemon, None)).await;
    let uid = obj.uid().unwrap();
    // Crash right after the create, likely mid-create, then again while it is Active.
    tokio::time::sleep(Duration::from_millis(150)).await;
    e.operator.crash();
    e.operator = Operator::start(&e.ns, &e.daemon);
    let active = phase(&e.api, "a", PtyPhase::Active).await;
    e.operator.crash();
    e.operator = Operator::start(&e.ns, &e.daemon);
    // Time for the new operator to reconcile (and, were it wrong, to create another).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        e.daemon.owned_sessions(&uid).await.len(),
        1,
        "exactly one session"
    );
    let after = phase(&e.api, "a", PtyPhase::Active).await;
    assert_eq!(
        after.session_id, active.session_id,
        "the same session was adopted"
    );
    e.api.delete("a", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_restarted_daemon_makes_the_session_lost() {
    let mut e = env("pty-lost").await;
    create(&e.api, "l", spec(&e.daemon, None)).await;
    let before = phase(&e.api, "l", PtyPhase::Active).await;
    e.daemon.restart(libc::SIGKILL);
    let lost = phase(&e.api, "l", PtyPhase::Lost).await;
    assert_eq!(lost.session_id, before.session_id);
    assert_eq!(pty_condition(&lost, "Stalled"), ("True", "SessionLost"));
    if let Some(pid) = before.pid {
        // The daemon died with SIGKILL; its orphaned shell is not ours to leave behind.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[tokio::test]
async fn attach_by_name_says_why_there_is_no_token_here() {
    let e = env("pty-attach").await;
    create(&e.api, "t", spec(&e.daemon, None)).await;
    phase(&e.api, "t", PtyPhase::Active).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
        .args(["attach", "t", "--namespace", &e.ns, "--kubeconfig"])
        .arg(control_plane::kubeconfig())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no attach token") && stderr.contains("serves no core/v1 Secrets"),
        "{stderr}"
    );
    e.api.delete("t", &DeleteParams::default()).await.unwrap();
}
