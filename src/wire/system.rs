use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /health` (no authentication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    pub healthy: bool,
}

/// `GET /info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InfoResponse {
    pub version: String,
    pub uptime_secs: u64,
    pub running_processes: u64,
    pub total_processes: u64,
    /// Addition: a random id chosen at each daemon start. A change means the daemon restarted,
    /// so anything the caller knew about running processes may be stale.
    #[serde(default)]
    pub boot_id: String,
    /// Addition: what this daemon can do on this host.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// Capability flags reported by `/info` (our addition).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Capabilities {
    /// `oom_killed` is reported from the kernel's own OOM counters (a per-process memory cgroup).
    pub oom_detection: bool,
    /// Which cgroup mechanism is used: `v1`, `v2` or `none`.
    pub cgroup: String,
    /// `memory_limit_bytes` on a start request is enforced.
    pub memory_limits: bool,
    /// Idempotency keys, labels, events, wait, output limits are supported.
    pub idempotency: bool,
    pub events: bool,
    /// Process and session records survive a daemon restart.
    pub persistence: bool,
    /// Running as PID 1 (reaping orphans).
    pub pid1: bool,
}
