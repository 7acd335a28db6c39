//! `/api/v1/pty/...`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::super::pty::ws;
use super::super::{ApiError, Daemon};
use super::{idempotency_key, parse_json, query_pairs};
use crate::wire::{
    CreatePtyRequest, CreatePtyResponse, ErrorBody, ErrorCode, IDEMPOTENT_REPLAYED_HEADER,
    PTY_TOKEN_HEADER, PtySessionInfo, PtySessionList, ResizePtyRequest,
};

type Daemonic = State<Arc<Daemon>>;

#[utoipa::path(post, path = "/api/v1/pty", tag = "pty", operation_id = "create_pty",
    request_body(content = CreatePtyRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body returns the first session and token; another body gets 409")),
    responses(
        (status = 201, description = "Started; the token is shown only here", body = CreatePtyResponse),
        (status = 400, description = "Invalid request or the program could not be started (INVALID_REQUEST, SPAWN_FAILED)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Too many live sessions (TOO_MANY_SESSIONS)", body = ErrorBody),
    ))]
pub async fn create(
    State(daemon): Daemonic,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreatePtyRequest = parse_json(&body)?;
    let key = idempotency_key(&headers)?;
    let (created, replayed) = daemon.create_pty(key, req)?;
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/pty", tag = "pty", operation_id = "list_ptys",
    responses(
        (status = 200, description = "Every live session and every ended one still retained, oldest first; never the tokens", body = PtySessionList),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub async fn list(State(daemon): Daemonic) -> Json<PtySessionList> {
    Json(PtySessionList {
        sessions: daemon.ptys.all().iter().map(|s| s.info()).collect(),
    })
}

#[utoipa::path(get, path = "/api/v1/pty/{session_id}", tag = "pty", operation_id = "get_pty",
    params(("session_id" = String, Path, description = "The PTY session identifier")),
    responses(
        (status = 200, description = "The session (never the token)", body = PtySessionInfo),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = ErrorBody),
    ))]
pub async fn get(
    State(daemon): Daemonic,
    Path(id): Path<String>,
) -> Result<Json<PtySessionInfo>, ApiError> {
    Ok(Json(daemon.pty_session(&id)?.info()))
}

#[utoipa::path(post, path = "/api/v1/pty/{session_id}/resize", tag = "pty", operation_id = "resize_pty",
    params(("session_id" = String, Path, description = "The PTY session identifier")),
    request_body(content = ResizePtyRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Resized (rows clamped to 1..=500, cols to 1..=1000)"),
        (status = 400, description = "Invalid body, or the session has ended (NOT_RUNNING)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = ErrorBody),
    ))]
pub async fn resize(
    State(daemon): Daemonic,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let session = daemon.pty_session(&id)?;
    let req: ResizePtyRequest = parse_json(&body)?;
    daemon.resize_session(&session, req.rows, req.cols)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/pty/{session_id}", tag = "pty", operation_id = "kill_pty",
    params(("session_id" = String, Path, description = "The PTY session identifier")),
    responses(
        (status = 204, description = "SIGHUP sent to the session (SIGKILL follows after the daemon's grace period), or it had already ended; attached clients are closed with 1001 `session terminated`"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = ErrorBody),
    ))]
pub async fn kill(State(daemon): Daemonic, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let session = daemon.pty_session(&id)?;
    daemon.kill_session(&session);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/pty/{session_id}/ws", tag = "pty", operation_id = "attach_pty",
    description = "WebSocket attach. Binary frames only; the first byte is the opcode. \
Client to server: `0x00`+bytes input, `0x01`+cols(u16 BE)+rows(u16 BE) resize, `0x02` READY \
(send first: output, starting with the retained scrollback, is held until READY). Server to \
client: `0x00`+bytes output, `0x03`+exit code (i32 BE, 128+signal when a signal ended it) then \
close 1000 with reason `exit:<code>`. Close codes: 1001 `session terminated` (killed, idle \
timeout, TTL, daemon shutdown), 1008 (no READY before 1 MiB of output), 1013 (the client fell a \
whole scrollback ring behind: reattach to resume). Unknown or malformed frames are ignored.",
    params(
        ("session_id" = String, Path, description = "The PTY session identifier"),
        ("token" = Option<String>, Query, description = "The session's token (or the X-PTY-Token header)"),
        ("X-PTY-Token" = Option<String>, Header, description = "The session's token (or `?token=`)"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "Missing or wrong session token (INVALID_TOKEN)", body = ErrorBody),
        (status = 404, description = "No such session (SESSION_NOT_FOUND), checked before the token", body = ErrorBody),
    ))]
pub async fn attach(
    State(daemon): Daemonic,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let session = daemon.pty_session(&id)?;
    let header = headers
        .get(PTY_TOKEN_HEADER)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let query = query_pairs(raw.as_deref())
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v);
    let presented: Vec<String> = header.into_iter().chain(query).collect();
    // Every token presented must match: a stale header next to a fresh query string is refused.
    if presented.is_empty() || !presented.iter().all(|t| session.token_matches(t)) {
        return Err(ApiError::new(
            ErrorCode::InvalidToken,
            "missing or wrong PTY session token",
        ));
    }
    let upgrade = upgrade.map_err(|e| {
        ApiError::invalid(format!("expected a WebSocket upgrade: {}", e.body_text()))
    })?;
    Ok(upgrade
        .max_message_size(ws::MAX_MESSAGE)
        .max_frame_size(ws::MAX_MESSAGE)
        .read_buffer_size(ws::READ_BUFFER)
        .on_upgrade(move |socket| ws::serve(daemon, session, socket)))
}
