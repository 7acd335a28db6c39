//! The exact Kubernetes API calls of one PtySession `reconcile`, against a tower-test mock API
//! server and a real `sandbox-daemon` with real PTYs (endpoint target): create (token Secret,
//! status, Event), a token that cannot be stored, resize, adoption, and deletion.
//!
//! As in `operator_mock.rs`, the mock records every request and each scenario compares the
//! whole list, so an extra call fails as a missing one does.

mod common;
#[path = "common/mock_api.rs"]
mod mock_api;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use sandbox_operator::api::{
    FINALIZER, PtyPhase, PtySession, PtySessionSpec, PtySessionStatus, SandboxTarget, Time,
};
use sandbox_operator::controller::object::Identity;
use sandbox_operator::controller::pty::{build_request, reconcile, secret};
use serde_json::json;

use common::{Daemon, alive, eventually, pty_condition};
use mock_api::{Call, CoreApi};

const PATH: &str = "/apis/sandboxes.dev/v1alpha1/namespaces/default/ptysessions";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";

fn object(uid: &str, endpoint: &str, finalizer: bool) -> PtySession {
    let spec = PtySessionSpec::new(SandboxTarget::endpoint(endpoint));
    let mut obj = PtySession::new(uid, spec);
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

async fn reconcile_once(obj: &PtySession, daemon: &Daemon, core: CoreApi) -> Vec<Call> {
    let (ctx, server) = mock_api::context(serde_json::to_vec(obj).unwrap(), core, daemon);
    reconcile(Arc::new(obj.clone()), ctx)
        .await
        .expect("reconcile");
    server.await.unwrap()
}

fn assert_status_apply(call: &Call, name: &str) -> PtySessionStatus {
    assert_eq!(call.method, "PATCH");
    assert_eq!(
        call.uri,
        format!("{PATH}/{name}/status?&force=true&fieldManager=sandbox-operator")
    );
    assert_eq!(call.content_type, "application/apply-patch+yaml");
    assert_eq!(call.body["kind"], "PtySession");
    assert_eq!(call.body.as_object().unwrap().len(), 3, "{:?}", call.body);
    serde_json::from_value(call.body["status"].clone()).unwrap()
}

fn assert_event(call: &Call, name: &str, reason: &str) {
    assert_eq!(call.method, "POST");
    assert_eq!(call.uri, "/api/v1/namespaces/default/events?");
    assert_eq!(call.body["reason"], reason);
    assert_eq!(call.body["involvedObject"]["name"], name);
    assert_eq!(call.body["involvedObject"]["kind"], "PtySession");
}

/// The token the daemon handed out for the object: the same request under the same key is
/// answered with the first response again.
async fn daemon_token(daemon: &Daemon, obj: &PtySession) -> String {
    let id = Identity {
        namespace: "default".into(),
        name: obj.metadata.name.clone().unwrap(),
        uid: obj.metadata.uid.clone().unwrap(),
    };
    let req = build_request(&obj.spec, &id, BTreeMap::new());
    daemon
        .client
        .create_pty_idempotent(&req, &id.uid)
        .await
        .expect("replayed create")
        .token
}

/// Create: the session, then the token Secret (server-side apply, owned by the object), then
/// one status apply naming the Secret, then the Active Event. Nothing else.
#[tokio::test]
async fn create_stores_the_token_in_an_owned_secret_then_applies_status_once() {
    let daemon = Daemon::start();
    let mut obj = object("uid-new", &daemon.base, true);
    let calls = reconcile_once(&obj, &daemon, CoreApi::Served).await;
    assert_eq!(calls.len(), 3, "{calls:#?}");

    let put = &calls[0];
    assert_eq!(put.method, "PATCH");
    assert_eq!(
        put.uri,
        format!("{SECRETS}/uid-new-pty-token?&force=true&fieldManager=sandbox-operator")
    );
    assert_eq!(put.content_type, "application/apply-patch+yaml");
    assert_eq!(put.body["type"], secret::SECRET_TYPE);
    let owner = &put.body["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "PtySession");
    assert_eq!(owner["uid"], "uid-new");
    assert_eq!(owner["controller"], true);
    let token = daemon_token(&daemon, &obj).await;
    let stored = put.body["data"][secret::TOKEN_KEY].as_str().unwrap();
    // Secret data is base64 on the wire.
    assert_eq!(stored, base64(token.as_bytes()));

    let status = assert_status_apply(&calls[1], "uid-new");
    assert_eq!(status.phase, Some(PtyPhase::Active));
    assert_eq!(
        status.token_secret_name.as_deref(),
        Some("uid-new-pty-token")
    );
    assert_eq!(pty_condition(&status, "TokenStored"), ("True", "Stored"));
    let sessions = daemon.owned_sessions("uid-new").await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        status.session_id.as_deref(),
        Some(sessions[0].session_id.as_str())
    );
    assert_eq!(status.pid, Some(sessions[0].pid));
    let text = serde_json::to_string(&calls[1].body).unwrap();
    assert!(!text.contains(&token), "the token is never in status");
    assert_event(&calls[2], "uid-new", "Active");
    assert!(
        !serde_json::to_string(&calls[2].body)
            .unwrap()
            .contains(&token)
    );

    // The server now holds what we applied: a reconcile finds nothing to do.
    obj.status = Some(status);
    let calls = reconcile_once(&obj, &daemon, CoreApi::Served).await;
    assert!(calls.is_empty(), "{calls:#?}");
    assert_eq!(
        daemon.owned_sessions("uid-new").await.len(),
        1,
        "no second session"
    );
}

/// No core API: the Secret write is answered 404; the status says why the token was not
/// stored, a Warning Event is attempted (and found unserved), and the session is tracked.
#[tokio::test]
async fn a_token_that_cannot_be_stored_is_said_in_a_condition() {
    let daemon = Daemon::start();
    let obj = object("uid-nocore", &daemon.base, true);
    let calls = reconcile_once(&obj, &daemon, CoreApi::NotServed).await;
    // Secret apply (404), status apply, one Event attempt (404: the recorder gives up).
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert!(calls[0].uri.starts_with(SECRETS), "{:?}", calls[0].uri);
    let status = assert_status_apply(&calls[1], "uid-nocore");
    assert_eq!(status.phase, Some(PtyPhase::Active));
    assert_eq!(status.token_secret_name, None);
    assert_eq!(
        pty_condition(&status, "TokenStored"),
        ("False", "SecretsNotServed")
    );
    assert_eq!(calls[2].uri, "/api/v1/namespaces/default/events?");
}

/// Crash after the create, before the Secret: the next reconcile adopts the session, recovers
/// its token by replaying the create, and stores it. No second session.
#[tokio::test]
async fn crash_after_create_adopts_and_recovers_the_token() {
    let daemon = Daemon::start();
    let obj = object("uid-adopt", &daemon.base, true);
    let token = daemon_token(&daemon, &obj).await; // the "previous operator" created it
    let calls = reconcile_once(&obj, &daemon, CoreApi::Served).await;
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert_eq!(
        calls[0].body["data"][secret::TOKEN_KEY].as_str().unwrap(),
        base64(token.as_bytes())
    );
    let status = assert_status_apply(&calls[1], "uid-adopt");
    assert_eq!(status.phase, Some(PtyPhase::Active));
    assert_eq!(
        daemon.owned_sessions("uid-adopt").await.len(),
        1,
        "adopted, not re-created"
    );
}

/// A changed size: one resize call to the daemon, one status apply with the observed size.
#[tokio::test]
async fn resize_applies_the_observed_size_once() {
    let daemon = Daemon::start();
    let mut obj = object("uid-resize", &daemon.base, true);
    let calls = reconcile_once(&obj, &daemon, CoreApi::Served).await;
    obj.status = Some(assert_status_apply(&calls[1], "uid-resize"));

    obj.spec.rows = 50;
    obj.spec.cols = 132;
    obj.metadata.generation = Some(2);
    let calls = reconcile_once(&obj, &daemon, CoreApi::Served).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let status = assert_status_apply(&calls[0], "uid-resize");
    assert_eq!((status.rows, status.cols), (Some(50), Some(132)));
    assert_eq!(status.observed_generation, Some(2));
    let live = &daemon.owned_sessions("uid-resize").await[0];
    assert_eq!((live.rows, live.cols), (50, 132));
}

/// Deletion: the session is killed and has ended before the finalizer goes; that PATCH is the
/// only API call (the Secret goes with the object through its ownerReference).
#[tokio::test]
async fn deletion_kills_the_session_then_removes_the_finalizer() {
    let daemon = Daemon::start();
    let mut obj = object("uid-del", &daemon.base, true);
    let calls = reconcile_once(&obj, &daemon, CoreApi::Served).await;
    let status = assert_status_apply(&calls[1], "uid-del");
    let pid = status.pid.unwrap();
    obj.status = Some(status);

    obj.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let calls = reconcile_once(&obj, &daemon, CoreApi::Served).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].method, "PATCH");
    assert_eq!(calls[0].uri, format!("{PATH}/uid-del?"));
    let ops = calls[0].body.as_array().unwrap();
    assert!(
        ops.iter()
            .any(|op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/0"),
        "{ops:?}"
    );
    let sessions = daemon.owned_sessions("uid-del").await;
    assert!(sessions.iter().all(|s| !s.is_alive), "{sessions:?}");
    eventually(
        std::time::Duration::from_secs(10),
        "the shell is reaped",
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
}

/// Standard base64 with padding, as Kubernetes encodes Secret data.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `sandbox-operator attach NAME` on a cluster: the session and daemon URL come from the
/// object's status, the attach token from its Secret, the daemon's token from
/// `spec.sandbox.tokenSecretRef`; the reads are exactly those three GETs, and the resolved
/// token really attaches to the session.
#[tokio::test]
async fn attach_by_name_reads_the_session_and_its_secrets() {
    let daemon = Daemon::start();
    let mut obj = object("uid-att", &daemon.base, true);
    obj.spec.sandbox.token_secret_ref = Some(sandbox_operator::api::SecretKeySelector {
        name: "daemon-token".into(),
        key: "token".into(),
    });
    // Create through the reconciler (the daemon token from the file: the mock's Secret GET
    // answers the object, so resolve it from the file here).
    let mut created_obj = obj.clone();
    created_obj.spec.sandbox.token_secret_ref = None;
    let calls = reconcile_once(&created_obj, &daemon, CoreApi::Served).await;
    let stored_secret = calls[0].body.clone();
    obj.status = Some(assert_status_apply(&calls[1], "uid-att"));
    let daemon_token = std::fs::read_to_string(daemon.dir.path().join("token")).unwrap();

    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let kube = kube::Client::new(service, "default");
    let object_json = serde_json::to_vec(&obj).unwrap();
    let server = tokio::spawn(async move {
        let mut paths = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_owned();
            let body = if path.ends_with("/secrets/uid-att-pty-token") {
                serde_json::to_vec(&stored_secret).unwrap()
            } else if path.ends_with("/secrets/daemon-token") {
                serde_json::to_vec(&json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "daemon-token", "namespace": "default"},
                    "data": {"token": base64(daemon_token.trim().as_bytes())},
                }))
                .unwrap()
            } else {
                object_json.clone()
            };
            paths.push(format!("{} {path}", req.method()));
            send.send_response(Response::builder().body(Body::from(body)).unwrap());
        }
        paths
    });
    let config = sandbox_operator::attach::Config {
        name: Some("uid-att".into()),
        namespace: None,
        kubeconfig: None,
        endpoint: None,
        daemon_token_file: None,
        session: None,
        token_file: None,
    };
    let target = sandbox_operator::attach::resolve_in(&kube, "default", "uid-att", None, &config)
        .await
        .expect("resolve");
    drop(kube);
    let paths = server.await.unwrap();
    assert_eq!(
        paths,
        [
            format!("GET {PATH}/uid-att"),
            format!("GET {SECRETS}/uid-att-pty-token"),
            format!("GET {SECRETS}/daemon-token"),
        ]
    );
    assert_eq!(target.endpoint, daemon.base);
    assert_eq!(
        Some(target.session_id.as_str()),
        obj.status.as_ref().unwrap().session_id.as_deref()
    );
    assert!(
        !format!("{target:?}").contains(&target.pty_token),
        "Debug hides the tokens"
    );
    // The resolved credentials attach for real.
    let client =
        sandbox_operator::client::Client::new(&target.endpoint, target.daemon_token.clone())
            .unwrap();
    let attach = client
        .attach_pty(&target.session_id, &target.pty_token)
        .await
        .expect("attach with the resolved token");
    attach.detach().await.unwrap();
}
