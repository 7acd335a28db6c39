//! The exact Kubernetes API calls of one `reconcile`, against a tower-test mock API server and
//! a real `sandbox-daemon` (endpoint target).
//!
//! These live here rather than in `src/controller/process/` because the daemon side is the
//! real binary (`CARGO_BIN_EXE_sandbox-daemon` exists only for integration tests): a stub
//! daemon would only assert what the stub was written to answer.
//!
//! Each reconcile gets its own mock client, and the mock records every request it sees; the
//! scenarios then compare that list with the expected one as a whole, so an extra call (a
//! second write, a stray GET) fails just as a missing one does.

mod common;
#[path = "common/mock_api.rs"]
mod mock_api;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use sandbox_operator::api::{
    FINALIZER, ProcessPhase, SandboxProcess, SandboxProcessSpec, SandboxProcessStatus,
    SandboxTarget, Time,
};
use sandbox_operator::controller::daemons::OWNER_UID_LABEL;
use sandbox_operator::controller::process::{build_request, reconcile};
use serde_json::{Value, json};

use common::{Daemon, alive, eventually};
use mock_api::{Call, CoreApi};

const PATH: &str = "/apis/sandboxes.dev/v1alpha1/namespaces/default/sandboxprocesses";

/// A `SandboxProcess` as the API server would hand it to the controller.
fn object(uid: &str, endpoint: &str, finalizer: bool) -> SandboxProcess {
    let mut spec = SandboxProcessSpec::new(SandboxTarget::endpoint(endpoint), "sleep");
    spec.args = vec!["30".into()];
    let mut obj = SandboxProcess::new(uid, spec);
    obj.metadata = ObjectMeta {
        name: Some(uid.into()),
        namespace: Some("default".into()),
        uid: Some(uid.into()),
        generation: Some(1),
        resource_version: Some("1".into()),
        finalizers: finalizer.then(|| vec![FINALIZER.to_owned()]),
        ..Default::default()
    };
    obj
}

/// Runs one reconcile of `obj` with a fresh mock API server; returns the requests it made.
async fn reconcile_once(obj: &SandboxProcess, daemon: &Daemon) -> Vec<Call> {
    let (ctx, server) =
        mock_api::context(serde_json::to_vec(obj).unwrap(), CoreApi::Served, daemon);
    reconcile(Arc::new(obj.clone()), ctx)
        .await
        .expect("reconcile");
    server.await.unwrap()
}

/// The processes the daemon holds for an object uid.
async fn owned(daemon: &Daemon, uid: &str) -> Vec<sandbox_operator::wire::ProcessInfo> {
    daemon.client.list(&[(OWNER_UID_LABEL, uid)]).await.unwrap()
}

/// Asserts `call` is the server-side apply of the status and returns the applied status.
fn assert_status_apply(call: &Call, name: &str) -> SandboxProcessStatus {
    assert_eq!(call.method, "PATCH");
    assert_eq!(
        call.uri,
        format!("{PATH}/{name}/status?&force=true&fieldManager=sandbox-operator"),
        "status is applied on the subresource by our field manager, forced"
    );
    assert_eq!(call.content_type, "application/apply-patch+yaml");
    assert_eq!(call.body["apiVersion"], "sandboxes.dev/v1alpha1");
    assert_eq!(call.body["kind"], "SandboxProcess");
    assert_eq!(
        call.body.as_object().unwrap().len(),
        3,
        "only apiVersion, kind and status are applied: no spec or metadata ownership"
    );
    serde_json::from_value(call.body["status"].clone()).unwrap()
}

/// Asserts `call` creates a core/v1 Event with `reason` about the object `name`.
fn assert_event(call: &Call, name: &str, reason: &str) {
    assert_eq!(call.method, "POST");
    assert_eq!(call.uri, "/api/v1/namespaces/default/events?");
    assert_eq!(call.body["reason"], reason);
    assert_eq!(call.body["involvedObject"]["name"], name);
    assert_eq!(call.body["involvedObject"]["kind"], "SandboxProcess");
}

/// (a) A new object: the only call is the PATCH adding the finalizer; nothing is started.
#[tokio::test]
async fn new_object_gets_the_finalizer_first_and_nothing_else() {
    let daemon = Daemon::start();
    let obj = object("uid-new", &daemon.base, false);
    let calls = reconcile_once(&obj, &daemon).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let add = &calls[0];
    assert_eq!(add.method, "PATCH");
    assert_eq!(add.uri, format!("{PATH}/uid-new?"));
    assert_eq!(add.content_type, "application/json-patch+json");
    // A JSON patch guarded by a test op, so a concurrent change to the list fails the patch
    // instead of being overwritten.
    let ops = add.body.as_array().unwrap();
    assert!(ops.iter().any(|op| op["op"] == "test"), "{ops:?}");
    let adds: Vec<&Value> = ops.iter().filter(|op| op["op"] == "add").collect();
    assert_eq!(adds.len(), 1, "{ops:?}");
    assert_eq!(adds[0]["path"], "/metadata/finalizers");
    assert_eq!(adds[0]["value"], json!([FINALIZER]));
    assert!(
        owned(&daemon, "uid-new").await.is_empty(),
        "no process before the finalizer is in place"
    );
}

/// (b) A started process is reported with one status apply (+ the Started Event); (c) a
/// reconcile that finds the same status writes nothing at all.
#[tokio::test]
async fn start_applies_status_once_then_unchanged_status_writes_nothing() {
    let daemon = Daemon::start();
    let mut obj = object("uid-run", &daemon.base, true);

    let calls = reconcile_once(&obj, &daemon).await;
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let status = assert_status_apply(&calls[0], "uid-run");
    assert_event(&calls[1], "uid-run", "Started");
    let procs = owned(&daemon, "uid-run").await;
    assert_eq!(procs.len(), 1, "exactly one process started");
    assert_eq!(status.phase, Some(ProcessPhase::Running));
    assert_eq!(status.pid, Some(procs[0].pid));
    assert_eq!(status.observed_generation, Some(1));
    assert!(alive(procs[0].pid));

    // (c) The server now holds what we applied.
    obj.status = Some(status);
    let calls = reconcile_once(&obj, &daemon).await;
    assert!(
        calls.is_empty(),
        "unchanged status must not be written: {calls:#?}"
    );
    assert_eq!(owned(&daemon, "uid-run").await.len(), 1, "no second start");
}

/// (d) A deleted object: the process is stopped, then the finalizer removed, and that PATCH
/// is the only API call.
#[tokio::test]
async fn deletion_stops_the_process_then_removes_the_finalizer() {
    let daemon = Daemon::start();
    let mut obj = object("uid-del", &daemon.base, true);
    let calls = reconcile_once(&obj, &daemon).await;
    let status = assert_status_apply(&calls[0], "uid-del");
    let pid = status.pid.expect("started");
    obj.status = Some(status);

    obj.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    obj.spec.termination_grace_period_seconds = 1;
    let calls = reconcile_once(&obj, &daemon).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let remove = &calls[0];
    assert_eq!(remove.method, "PATCH");
    assert_eq!(remove.uri, format!("{PATH}/uid-del?"));
    assert_eq!(remove.content_type, "application/json-patch+json");
    let ops = remove.body.as_array().unwrap();
    assert!(
        ops.iter()
            .any(|op| op["op"] == "test" && op["value"] == FINALIZER),
        "{ops:?}"
    );
    assert!(
        ops.iter()
            .any(|op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/0"),
        "{ops:?}"
    );
    // Cleanup waited for the end before letting the finalizer go.
    assert!(!alive(pid), "pid {pid} still alive after cleanup");
    let procs = owned(&daemon, "uid-del").await;
    assert!(procs.iter().all(|p| p.ended_at.is_some()), "{procs:?}");
}

/// (e) Adoption after a crash: the daemon already runs the object's process (the previous
/// operator started it and died before writing status); the reconcile adopts it.
#[tokio::test]
async fn crash_after_start_adopts_instead_of_starting_again() {
    let daemon = Daemon::start();
    let obj = object("uid-adopt", &daemon.base, true);
    // Exactly what the crashed operator sent.
    let req = build_request(
        &obj.spec,
        "default",
        "uid-adopt",
        "uid-adopt",
        BTreeMap::new(),
    );
    let first = daemon
        .client
        .start_idempotent(&req, "uid-adopt")
        .await
        .unwrap();

    let calls = reconcile_once(&obj, &daemon).await;
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let status = assert_status_apply(&calls[0], "uid-adopt");
    assert_event(&calls[1], "uid-adopt", "Started");
    assert_eq!(
        status.pid,
        Some(first.pid),
        "the existing process is adopted"
    );
    assert_eq!(status.phase, Some(ProcessPhase::Running));
    let procs = owned(&daemon, "uid-adopt").await;
    assert_eq!(procs.len(), 1, "no second start: {procs:?}");
}

/// The process ending is reported by one status apply with its exit, and a Succeeded Event.
#[tokio::test]
async fn exit_is_reported_with_one_status_apply() {
    let daemon = Daemon::start();
    let mut obj = object("uid-exit", &daemon.base, true);
    obj.spec.args = vec!["0.2".into()];
    let calls = reconcile_once(&obj, &daemon).await;
    let status = assert_status_apply(&calls[0], "uid-exit");
    let pid = status.pid.unwrap();
    obj.status = Some(status);
    eventually(
        std::time::Duration::from_secs(10),
        "the process exits",
        || async { (!alive(pid)).then_some(()) },
    )
    .await;

    let calls = reconcile_once(&obj, &daemon).await;
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let status = assert_status_apply(&calls[0], "uid-exit");
    assert_event(&calls[1], "uid-exit", "Succeeded");
    assert_eq!(status.phase, Some(ProcessPhase::Succeeded));
    assert_eq!(status.exit_code, Some(0));
}
