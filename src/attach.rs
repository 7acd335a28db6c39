//! `sandbox-operator attach`: a terminal on a workstation bridged to a PtySession.
//!
//! Two halves with one job each:
//! - [`resolve`]: from a PtySession's name to where and how to connect (daemon URL, the
//!   daemon's bearer token, the session id and its attach token from the owned Secret), or
//!   straight from flags when there is no cluster to ask.
//! - [`bridge`]: the local terminal in raw mode, keystrokes to the session, output back,
//!   window-size changes forwarded, and the session's exit code as ours.
//!
//! Tokens are read from Secrets or files and handed to the connection only; they are never
//! printed, logged or put into an error message.

use std::path::PathBuf;

mod bridge;
mod resolve;
mod terminal;

pub use bridge::{DETACH_KEY, bridge};
pub use resolve::{Target, resolve, resolve_in};

/// Flags of `sandbox-operator attach`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// The PtySession to attach to (omit with --session).
    #[arg(value_name = "NAME", required_unless_present = "session")]
    pub name: Option<String>,
    /// Its namespace; default: the kubeconfig context's.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The kubeconfig to use; default: $KUBECONFIG, ~/.kube/config, then in-cluster.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Reach the daemon here instead of the URL the operator used, e.g. the local end of
    /// `kubectl port-forward pod/<sandbox> 9501` (`http://127.0.0.1:9501`).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The daemon's bearer token; default: the PtySession's `spec.sandbox.tokenSecretRef`.
    #[arg(long, value_name = "PATH")]
    pub daemon_token_file: Option<PathBuf>,
    /// Attach to this daemon session id directly, without asking the cluster (needs
    /// --endpoint and --token-file).
    #[arg(long, value_name = "ID", requires_all = ["endpoint", "token_file"])]
    pub session: Option<String>,
    /// The session's attach token; default: the Secret named by `status.tokenSecretName`.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// Resolves, attaches and bridges until the session ends or the user detaches; returns the
/// exit code to leave with.
pub async fn run(config: Config) -> anyhow::Result<i32> {
    let target = resolve(&config).await?;
    bridge(&target).await
}
