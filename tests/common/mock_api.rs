//! A tower-test mock of the Kubernetes API server that records every request, for the
//! scenarios asserting the exact calls of one reconcile (`operator_mock.rs`,
//! `operator_pty_mock.rs`).
//!
//! It answers a write to the custom resource with the object itself (what the finalizer helper
//! needs to deserialize) and a core/v1 write (an Event, a Secret) with the request echoed back,
//! or, for [`CoreApi::NotServed`], a core/v1 request the way the apiextensions-apiserver does:
//! a 404 that is no Status. So nothing but the recorded calls depends on its answers.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use sandbox_operator::controller::daemons::DaemonHub;
use sandbox_operator::controller::metrics::Metrics;
use sandbox_operator::controller::process::Context;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::common::Daemon;

/// One request the mock API server received.
#[derive(Debug)]
pub struct Call {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

/// Whether the mock serves core/v1 or answers like the local control plane, which does not.
#[derive(Clone, Copy, PartialEq)]
pub enum CoreApi {
    Served,
    NotServed,
}

/// A reconcile context on a fresh mock API server answering `object` (JSON), and the task that
/// returns the recorded calls once every clone of the client (the context's) is dropped.
pub fn context(
    object: Vec<u8>,
    core: CoreApi,
    daemon: &Daemon,
) -> (Arc<Context>, JoinHandle<Vec<Call>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let kube = kube::Client::new(service, "default");
    let (changes, _rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Context::new(
        kube,
        DaemonHub::new(changes),
        Some(daemon.dir.path().join("token")),
        Arc::new(Metrics::default()),
    ));
    let server = tokio::spawn(async move {
        let mut calls = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let core_path = parts.uri.path().starts_with("/api/");
            let response = if core_path && core == CoreApi::NotServed {
                Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Body::from(br#"{"paths":["/apis"]}"#.to_vec()))
                    .unwrap()
            } else {
                let reply = if core_path {
                    let mut echo = body.clone();
                    if echo["metadata"]["name"].as_str().is_none() {
                        echo["metadata"]["name"] = json!("e1");
                    }
                    serde_json::to_vec(&echo).unwrap()
                } else {
                    object.clone()
                };
                Response::builder().body(Body::from(reply)).unwrap()
            };
            calls.push(Call {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                body,
            });
            send.send_response(response);
        }
        calls
    });
    (ctx, server)
}
