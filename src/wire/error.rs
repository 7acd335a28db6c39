use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error response of the daemon: `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A human-readable message.
    pub error: String,
    /// A machine-readable code.
    pub code: ErrorCode,
}

/// Machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    NotFound,
    InvalidRequest,
    SpawnFailed,
    NotRunning,
    StdinNotWritable,
    TooManySessions,
    InvalidToken,
    SessionNotFound,
    PathTraversal,
    IsDirectory,
    NotADirectory,
    Unauthorized,
    IdempotencyKeyReused,
    PayloadTooLarge,
    MethodNotAllowed,
    InternalError,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::NotFound | ErrorCode::SessionNotFound => 404,
            ErrorCode::InvalidRequest
            | ErrorCode::SpawnFailed
            | ErrorCode::NotRunning
            | ErrorCode::StdinNotWritable
            | ErrorCode::IsDirectory
            | ErrorCode::NotADirectory => 400,
            ErrorCode::TooManySessions => 429,
            ErrorCode::InvalidToken | ErrorCode::PathTraversal => 403,
            ErrorCode::Unauthorized => 401,
            ErrorCode::IdempotencyKeyReused => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::InternalError => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&text)
    }
}
