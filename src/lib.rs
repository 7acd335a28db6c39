//! sandbox-operator: Kubernetes-native processes and terminals for sandboxes.
//!
//! - [`wire`]: the daemon API's request and response types (shared by server and client).
//! - [`daemon`]: `sandbox-daemon`, the in-pod HTTP server.
//! - [`client`]: the typed async client of the daemon API.

pub mod api;
pub mod client;
pub mod controller;
pub mod daemon;
pub mod logging;
pub mod wire;
