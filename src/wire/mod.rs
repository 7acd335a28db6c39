//! The daemon API's request and response types, shared by the daemon (server) and the client,
//! so the two can never disagree about a field. Depends on nothing else in this crate.
//!
//! Field names follow the Tensorlake sandbox daemon API exactly; everything we add is optional
//! and documented as an addition.

mod error;
mod events;
mod files;
mod process;
pub mod pty;
mod system;

pub use error::{ErrorBody, ErrorCode};
pub use events::{DaemonEvent, EventKind, HelloEvent};
pub use files::{FileEntry, FileList};
pub use process::*;
pub use pty::{
    CreatePtyRequest, CreatePtyResponse, PTY_TOKEN_HEADER, PtyEndReason, PtySessionInfo,
    PtySessionList, ResizePtyRequest,
};
pub use system::{Capabilities, HealthResponse, InfoResponse};

/// Base path of every API route.
pub const API_PREFIX: &str = "/api/v1";
/// Default TCP port of the daemon.
pub const DEFAULT_PORT: u16 = 9501;
/// Header carrying the idempotency key (our addition).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Response header set when a response is the replay of an earlier idempotent request.
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";

/// Milliseconds since the Unix epoch, the timestamp unit of the whole API.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
