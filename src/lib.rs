//! sandbox-operator: Kubernetes-native processes and terminals for sandboxes.
//!
//! - [`wire`]: the daemon API's request and response types (shared by server and client).
//! - [`daemon`]: `sandbox-daemon`, the in-pod HTTP server.
//! - [`client`]: the typed async client of the daemon API.
//! - [`api`]: the custom resources; [`controller`]: the operator's reconcilers.
//! - [`attach`]: `sandbox-operator attach`, a local terminal bridged to a PtySession.

pub mod api;
pub mod attach;
pub mod client;
pub mod controller;
pub mod daemon;
pub mod logging;
pub mod wire;
