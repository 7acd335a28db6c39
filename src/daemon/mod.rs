//! `sandbox-daemon`: the in-pod HTTP server that starts, watches, signals and kills processes
//! (and PTY sessions) on behalf of its callers. Knows nothing of Kubernetes.

pub mod cgroup;
mod error;
mod events;
mod files;
mod lifecycle;
mod openapi;
pub mod output;
mod persist;
mod pty;
pub mod reaper;
mod routes;
mod server;
pub mod spawn;
mod sse;
mod table;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use error::ApiError;
pub use openapi::openapi_document;
pub use server::{run, serve};

use cgroup::{Cgroups, Leaf};
use events::EventBus;
use persist::Journal;
use reaper::Reaper;
use table::ProcessTable;

/// Everything the daemon is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The bearer token; `None` only with `--insecure-no-auth`.
    pub token: Option<String>,
    pub state_dir: Option<PathBuf>,
    /// File routes resolve paths under this directory.
    pub files_root: PathBuf,
    /// Retained bytes per output stream, unless a start request says otherwise.
    pub output_limit_bytes: u64,
    /// Longest line kept whole; longer runs without a newline are split.
    pub max_line_bytes: usize,
    pub max_request_bytes: usize,
    pub max_file_bytes: usize,
    /// Ended records kept before the oldest are forgotten.
    pub max_records: usize,
    pub default_kill_grace_ms: u64,
    /// How long shutdown waits for children after the stop signal.
    pub shutdown_grace_ms: u64,
    pub cgroups: bool,
    pub cgroup_parent: Option<PathBuf>,
    pub event_buffer: usize,
    /// Live PTY sessions allowed at once (429 TOO_MANY_SESSIONS beyond).
    pub max_pty_sessions: usize,
    /// Between SIGHUP and SIGKILL when a PTY session is killed, expires or the daemon stops.
    pub pty_kill_grace_ms: u64,
    /// How long an ended PTY session stays queryable unless its create request says otherwise.
    pub pty_retain_after_exit_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], crate::wire::DEFAULT_PORT)),
            token: None,
            state_dir: None,
            files_root: PathBuf::from("/"),
            output_limit_bytes: 4 << 20,
            max_line_bytes: 64 << 10,
            max_request_bytes: 1 << 20,
            max_file_bytes: 256 << 20,
            max_records: 100_000,
            default_kill_grace_ms: 5_000,
            shutdown_grace_ms: 10_000,
            cgroups: true,
            cgroup_parent: None,
            event_buffer: 4_096,
            max_pty_sessions: 64,
            pty_kill_grace_ms: 2_000,
            pty_retain_after_exit_secs: 300,
        }
    }
}

/// What an idempotency key answered.
#[derive(Debug, Clone)]
pub(crate) enum Keyed {
    /// A start: the process it started.
    Process(u64),
    /// Another request: its response, replayed as is.
    Response { status: u16, body: bytes::Bytes },
}

/// The daemon's shared state, handed to every route.
#[derive(Debug)]
pub struct Daemon {
    pub config: Config,
    pub(crate) reaper: Arc<Reaper>,
    pub(crate) cgroups: Cgroups,
    pub(crate) table: ProcessTable,
    pub(crate) ptys: pty::PtyRegistry,
    pub(crate) events: EventBus,
    pub(crate) journal: Option<Journal>,
    pub(crate) keys: Mutex<HashMap<String, (u64, Keyed)>>,
    /// Leaves that could not be removed yet (a descendant still lived); swept periodically.
    pub(crate) leftover_leaves: Mutex<Vec<Leaf>>,
    pub(crate) started: Instant,
    pub(crate) pid1: bool,
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
}

impl Daemon {
    pub fn boot_id(&self) -> &str {
        self.events.boot_id()
    }

    pub(crate) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// A random hex id (boot ids).
pub(crate) fn random_id(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
