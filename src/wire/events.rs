use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ProcessInfo, PtySessionInfo};

/// What happened, in one `/events` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ProcessStarted,
    ProcessExited,
    ProcessRestarted,
    ProcessHealth,
    PtyCreated,
    PtyResized,
    PtyExited,
    PtyAttached,
    PtyDetached,
}

/// One state change on `GET /events` (SSE `event: state`, `id:` = `seq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DaemonEvent {
    /// Monotonically increasing within one daemon boot.
    pub seq: u64,
    pub boot_id: String,
    pub kind: EventKind,
    /// Milliseconds since the epoch.
    pub at: i64,
    /// The process as it is after the change, for process events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    /// The PTY session as it is after the change, for PTY events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<PtySessionInfo>,
}

/// First event of every `/events` stream (SSE `event: hello`): who is talking, and whether the
/// caller's `Last-Event-ID` could be honoured. When `resumed` is false the caller missed events
/// (or the daemon restarted) and must re-list to learn the current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HelloEvent {
    pub boot_id: String,
    /// The newest event id at connect time.
    pub last_seq: u64,
    pub resumed: bool,
}
