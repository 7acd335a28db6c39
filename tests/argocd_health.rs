//! The Argo CD health checks (`charts/sandbox-operator/argocd/*.lua`) run by the real Lua 5.1
//! interpreter (Argo CD runs them in gopher-lua, which has Lua 5.1 semantics) against sample
//! objects, and the `argocd-cm.yaml` snippet carries exactly those scripts.
//!
//! Without `lua5.1` the tests FAIL (they never skip): `apt-get install lua5.1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn argocd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/sandbox-operator/argocd")
}

/// `value` as a Lua table constructor (what Argo CD hands a check as `obj`).
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b' '..=b'~' => out.push(b as char),
            // Lua 5.1 has decimal escapes only; they work for any byte, UTF-8 included.
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// Runs `script` on `obj` and returns `(hs.status, hs.message)`.
fn health(script: &str, obj: &Value) -> (String, String) {
    let path = argocd_dir().join(script);
    assert!(path.is_file(), "{} is missing", path.display());
    let driver = format!(
        "obj = {}\nlocal hs = dofile({})\nassert(type(hs) == 'table', 'the check returned no table')\n\
         io.write(tostring(hs.status), '\\n', tostring(hs.message), '\\n')\n",
        lua_literal(obj),
        lua_string(path.to_str().unwrap())
    );
    let out = Command::new("lua5.1")
        .arg("-e")
        .arg(&driver)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run lua5.1 ({e}): the Argo CD health checks are tested with Debian's \
                 Lua 5.1 interpreter; install it with `apt-get install lua5.1` \
                 (scripts/test.sh does)"
            )
        });
    assert!(
        out.status.success(),
        "lua5.1 failed on {script} ({}):\n{}\ndriver:\n{driver}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let status = lines.next().unwrap_or_default().to_string();
    let message = lines.next().unwrap_or_default().to_string();
    (status, message)
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1
    })
}

fn process(status: Value) -> Value {
    json!({
        "apiVersion": "sandboxes.dev/v1alpha1",
        "kind": "SandboxProcess",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {"sandbox": {"podName": "sandbox"}, "command": "python3", "state": "Running"},
        "status": status,
    })
}

fn pty(status: Value) -> Value {
    json!({
        "apiVersion": "sandboxes.dev/v1alpha1",
        "kind": "PtySession",
        "metadata": {"name": "shell", "namespace": "default", "generation": 1},
        "spec": {"sandbox": {"podName": "sandbox"}, "command": "/bin/sh"},
        "status": status,
    })
}

#[track_caller]
fn assert_health(script: &str, obj: &Value, want_status: &str, want_message: &str) {
    let (status, message) = health(script, obj);
    assert_eq!(
        status, want_status,
        "{script}: wrong status (message {message:?}) for\n{obj:#}"
    );
    assert!(
        message.contains(want_message),
        "{script}: message {message:?} does not contain {want_message:?} for\n{obj:#}"
    );
}

const SBP: &str = "sandboxprocess-health.lua";
const PTY: &str = "ptysession-health.lua";

#[test]
fn sandbox_process_running_and_ready_is_healthy() {
    let obj = process(json!({
        "phase": "Running", "pid": 42, "observedGeneration": 1,
        "conditions": [
            cond("Started", "True", "Started", "started with pid 42"),
            cond("Ready", "True", "Running", "running with pid 42"),
            cond("Reconciling", "False", "Running", ""),
        ],
    }));
    assert_health(SBP, &obj, "Healthy", "running with pid 42");
}

#[test]
fn sandbox_process_without_status_or_pending_is_progressing() {
    let mut obj = process(json!(null));
    obj.as_object_mut().unwrap().remove("status");
    assert_health(SBP, &obj, "Progressing", "Waiting for the operator");

    let obj = process(json!({
        "phase": "Pending", "observedGeneration": 1,
        "conditions": [
            cond("Ready", "False", "Starting", "starting"),
            cond("Reconciling", "True", "Starting", "starting the process"),
        ],
    }));
    assert_health(SBP, &obj, "Progressing", "starting the process");
}

#[test]
fn sandbox_process_reconciling_while_running_is_progressing() {
    let obj = process(json!({
        "phase": "Running", "observedGeneration": 1,
        "conditions": [
            cond("Ready", "True", "Running", "running"),
            cond("Reconciling", "True", "Stopping", "sending SIGTERM"),
        ],
    }));
    assert_health(SBP, &obj, "Progressing", "sending SIGTERM");

    // Restarting (restartPolicy Always, in backoff): Running but not Ready.
    let obj = process(json!({
        "phase": "Running", "observedGeneration": 1,
        "conditions": [cond("Ready", "False", "Restarting", "restarting after exit code 1")],
    }));
    assert_health(SBP, &obj, "Progressing", "restarting after exit code 1");
}

#[test]
fn sandbox_process_succeeded_is_healthy() {
    let obj = process(json!({
        "phase": "Succeeded", "exitCode": 0, "observedGeneration": 1,
        "conditions": [
            cond("Ready", "False", "Succeeded", "exited"),
            cond("Completed", "True", "Succeeded", "exited with code 0"),
        ],
    }));
    assert_health(SBP, &obj, "Healthy", "exited with code 0");

    // Without conditions the message is built from the status fields.
    let obj = process(json!({"phase": "Succeeded", "exitCode": 0, "observedGeneration": 1}));
    assert_health(SBP, &obj, "Healthy", "Succeeded: exit code 0");
}

#[test]
fn sandbox_process_failed_and_lost_are_degraded() {
    let obj = process(json!({
        "phase": "Failed", "exitCode": 3, "observedGeneration": 1,
        "conditions": [cond("Completed", "True", "Failed", "exited with code 3")],
    }));
    assert_health(SBP, &obj, "Degraded", "exited with code 3");

    let obj = process(json!({"phase": "Failed", "signal": 9, "observedGeneration": 1}));
    assert_health(SBP, &obj, "Degraded", "killed by signal 9");

    let obj = process(json!({
        "phase": "Lost", "observedGeneration": 1,
        "conditions": [cond("Ready", "False", "Lost", "pod sandbox was replaced")],
    }));
    assert_health(SBP, &obj, "Degraded", "pod sandbox was replaced");

    let obj = process(json!({"phase": "Lost", "observedGeneration": 1}));
    assert_health(SBP, &obj, "Degraded", "Lost");
}

#[test]
fn sandbox_process_stalled_is_degraded() {
    let obj = process(json!({
        "phase": "Pending", "observedGeneration": 1,
        "conditions": [cond("Stalled", "True", "CommandNotFound", "python3: not found")],
    }));
    assert_health(SBP, &obj, "Degraded", "python3: not found");
}

#[test]
fn sandbox_process_being_deleted_is_progressing() {
    let mut obj = process(json!({
        "phase": "Running", "observedGeneration": 1,
        "conditions": [cond("Ready", "True", "Running", "running")],
    }));
    obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert_health(SBP, &obj, "Progressing", "Being deleted");

    // Even a failed one: deletion is what is going on now.
    let mut obj = process(json!({"phase": "Failed", "observedGeneration": 1}));
    obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert_health(SBP, &obj, "Progressing", "Being deleted");
}

#[test]
fn sandbox_process_with_unobserved_generation_is_progressing() {
    // A stale Healthy status must not count for a spec the operator has not seen yet.
    let mut obj = process(json!({
        "phase": "Running", "observedGeneration": 1,
        "conditions": [cond("Ready", "True", "Running", "running")],
    }));
    obj["metadata"]["generation"] = json!(2);
    assert_health(SBP, &obj, "Progressing", "observe generation 2");

    let obj = process(json!({"phase": "Failed"}));
    assert_health(SBP, &obj, "Progressing", "observe generation 1");
}

#[test]
fn sandbox_process_stopped_is_suspended() {
    let mut obj = process(json!({
        "phase": "Stopped", "signal": 15, "observedGeneration": 2,
        "conditions": [cond("Completed", "True", "Stopped", "stopped with SIGTERM")],
    }));
    obj["metadata"]["generation"] = json!(2);
    obj["spec"]["state"] = json!("Stopped");
    assert_health(SBP, &obj, "Suspended", "stopped with SIGTERM");

    // Asked to stop, not stopped yet: the operator keeps Ready=True while the process runs.
    let mut obj = process(json!({
        "phase": "Running", "observedGeneration": 2,
        "conditions": [
            cond("Ready", "True", "Running", "running with pid 42"),
            cond("Reconciling", "False", "Running", ""),
        ],
    }));
    obj["metadata"]["generation"] = json!(2);
    obj["spec"]["state"] = json!("Stopped");
    assert_health(SBP, &obj, "Progressing", "Stopping: spec.state is Stopped");
}

#[test]
fn pty_session_phases() {
    let active = pty(json!({
        "phase": "Active", "sessionId": "s1", "observedGeneration": 1,
        "conditions": [cond("Ready", "True", "Active", "session s1 is alive")],
    }));
    assert_health(PTY, &active, "Healthy", "session s1 is alive");

    let pending = pty(json!({"phase": "Pending", "observedGeneration": 1}));
    assert_health(PTY, &pending, "Progressing", "Pending");

    let exited = pty(json!({"phase": "Exited", "exitCode": 0, "observedGeneration": 1}));
    assert_health(PTY, &exited, "Healthy", "Exited with code 0");

    let exited = pty(json!({
        "phase": "Exited", "exitCode": 130, "observedGeneration": 1,
        "conditions": [cond("Completed", "True", "Exited", "the shell exited with code 130")],
    }));
    assert_health(PTY, &exited, "Healthy", "code 130");

    let expired = pty(json!({"phase": "Expired", "observedGeneration": 1}));
    assert_health(PTY, &expired, "Healthy", "Expired");

    let lost = pty(json!({
        "phase": "Lost", "observedGeneration": 1,
        "conditions": [cond("Ready", "False", "Lost", "daemon restarted")],
    }));
    assert_health(PTY, &lost, "Degraded", "daemon restarted");

    // Alive, but nobody can ever attach: the operator could not store the token.
    let unattachable = pty(json!({
        "phase": "Active", "observedGeneration": 1,
        "conditions": [
            cond("Ready", "True", "Active", "alive"),
            cond("TokenStored", "False", "TokenUnrecoverable", "delete and re-create the object"),
        ],
    }));
    assert_health(PTY, &unattachable, "Degraded", "delete and re-create");

    // The token is on its way: not a problem.
    let storing = pty(json!({
        "phase": "Active", "observedGeneration": 1,
        "conditions": [
            cond("Ready", "True", "Active", "alive"),
            cond("TokenStored", "False", "Pending", ""),
        ],
    }));
    assert_health(PTY, &storing, "Healthy", "alive");

    let stalled = pty(json!({
        "phase": "Pending", "observedGeneration": 1,
        "conditions": [cond("Stalled", "True", "TooManySessions", "429 from the daemon")],
    }));
    assert_health(PTY, &stalled, "Degraded", "429");
}

#[test]
fn pty_session_deleting_or_unobserved_is_progressing() {
    let mut obj = pty(json!({
        "phase": "Active", "observedGeneration": 1,
        "conditions": [cond("Ready", "True", "Active", "alive")],
    }));
    obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert_health(PTY, &obj, "Progressing", "Being deleted");

    let mut obj = pty(json!({
        "phase": "Active", "observedGeneration": 1,
        "conditions": [cond("Ready", "True", "Active", "alive")],
    }));
    obj["metadata"]["generation"] = json!(3);
    assert_health(PTY, &obj, "Progressing", "observe generation 3");

    let mut obj = pty(json!(null));
    obj.as_object_mut().unwrap().remove("status");
    assert_health(PTY, &obj, "Progressing", "Waiting for the operator");
}

#[test]
fn lua_literals_survive_quotes_and_non_ascii() {
    let obj = process(json!({
        "phase": "Failed", "observedGeneration": 1,
        "conditions": [cond("Completed", "True", "Failed", "say \"héllo\"\\n\nbye")],
    }));
    assert_health(SBP, &obj, "Degraded", "say \"héllo\"\\n");
}

#[test]
fn argocd_cm_snippet_carries_the_scripts() {
    let dir = argocd_dir();
    let snippet = std::fs::read_to_string(dir.join("argocd-cm.yaml")).expect("argocd-cm.yaml");
    for (key, script) in [
        (
            "resource.customizations.health.sandboxes.dev_SandboxProcess: |",
            SBP,
        ),
        (
            "resource.customizations.health.sandboxes.dev_PtySession: |",
            PTY,
        ),
    ] {
        let lua = std::fs::read_to_string(dir.join(script)).unwrap();
        let indented: Vec<String> = lua
            .trim_end()
            .lines()
            .map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("    {l}")
                }
            })
            .collect();
        let block = format!("  {key}\n{}\n", indented.join("\n"));
        assert!(
            snippet.contains(&block),
            "charts/sandbox-operator/argocd/argocd-cm.yaml does not carry {script} verbatim under \
             `{key}`: re-indent the script by four spaces into it"
        );
    }
}
