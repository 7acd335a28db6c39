//! `/api/v1/processes/...`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::super::output::Selector;
use super::super::table::Process;
use super::super::{ApiError, Daemon, sse};
use super::{idempotency_key, parse_json, query_pairs};
use crate::wire::{
    ErrorBody, ErrorCode, IDEMPOTENT_REPLAYED_HEADER, OutputMode, OutputResponse, ProcessInfo,
    ProcessList, RunFinished, RunStarted, SignalRequest, StartProcessRequest, StdinMode,
    StreamKind, SuccessResponse,
};

type Daemonic = State<Arc<Daemon>>;

fn find(daemon: &Daemon, reference: &str) -> Result<Arc<Process>, ApiError> {
    daemon
        .table
        .resolve(reference)
        .ok_or_else(|| ApiError::not_found(format!("process `{reference}`")))
}

fn replayed(mut response: Response, replay: bool) -> Response {
    if replay {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

#[utoipa::path(post, path = "/api/v1/processes", tag = "processes",
    request_body(content = StartProcessRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body returns the first process; another body gets 409")),
    responses(
        (status = 201, description = "Started", body = ProcessInfo),
        (status = 400, description = "Invalid request or the program could not be started (INVALID_REQUEST, SPAWN_FAILED)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ))]
pub async fn start(
    State(daemon): Daemonic,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: StartProcessRequest = parse_json(&body)?;
    let key = idempotency_key(&headers)?;
    let (process, replay) = daemon.start_idempotent(key, "start", req)?;
    Ok(replayed(
        (StatusCode::CREATED, Json(process.info())).into_response(),
        replay,
    ))
}

#[utoipa::path(post, path = "/api/v1/processes/run", tag = "processes",
    request_body(content = StartProcessRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body streams the same process again")),
    responses(
        (status = 200, description = "SSE data-only events: RunStarted, then OutputLine per line, then RunFinished", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid request or spawn failure", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ))]
pub async fn run(
    State(daemon): Daemonic,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut req: StartProcessRequest = parse_json(&body)?;
    // A run streams output and ends with the exit: stdin closed, output captured, unmanaged.
    req.stdin_mode = StdinMode::Closed;
    req.stdout_mode = OutputMode::Capture;
    req.stderr_mode = OutputMode::Capture;
    req.name = None;
    req.restart = None;
    req.health_check = None;
    let key = idempotency_key(&headers)?;
    let (process, _) = daemon.start_idempotent(key, "run", req)?;
    let info = process.info();
    let mut first = BytesMut::new();
    let started = RunStarted {
        handle: info.handle,
        pid: info.pid,
        started_at: info.started_at,
    };
    sse::write_event(
        &mut first,
        None,
        None,
        &serde_json::to_vec(&started).unwrap_or_default(),
    );
    let state = RunStream {
        process,
        cursor: 0,
        first: Some(first.freeze()),
        done: false,
        shutdown: daemon.shutdown.subscribe(),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let chunk = st.next().await?;
        Some((Ok::<_, std::io::Error>(chunk), st))
    });
    Ok((sse::headers(), Body::from_stream(stream)).into_response())
}

struct RunStream {
    process: Arc<Process>,
    cursor: u64,
    first: Option<Bytes>,
    done: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl RunStream {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.done {
            return None;
        }
        let process = self.process.clone();
        let mut version = process.version.subscribe();
        let mut ended_since: Option<tokio::time::Instant> = None;
        let mut buf = BytesMut::new();
        loop {
            let notified = process.output.changed();
            tokio::pin!(notified);
            notified.as_mut().enable();
            version.borrow_and_update();
            let batch = process
                .output
                .read_after(Selector::Both, self.cursor, FOLLOW_BATCH_BYTES);
            if let Some(last) = batch.lines.last() {
                self.cursor = last.seq;
                for line in &batch.lines {
                    sse::write_line(&mut buf, None, line);
                }
                return Some(sse::take(&mut buf));
            }
            if !process.is_running() {
                let since = *ended_since.get_or_insert_with(tokio::time::Instant::now);
                // Output still open after the exit means a descendant holds the pipe; do not
                // wait for it forever.
                if batch.finished || since.elapsed() > Duration::from_secs(1) {
                    let info = process.info();
                    let finished = RunFinished {
                        exit_code: info.exit_code,
                        signal: info.signal,
                        oom_killed: info.oom_killed,
                        timed_out: info.timed_out,
                    };
                    sse::write_event(
                        &mut buf,
                        None,
                        None,
                        &serde_json::to_vec(&finished).unwrap_or_default(),
                    );
                    self.done = true;
                    return Some(sse::take(&mut buf));
                }
            }
            if *self.shutdown.borrow() {
                return None;
            }
            tokio::select! {
                _ = notified => {}
                _ = version.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(if ended_since.is_some() { 100 } else { 15_000 })) => {
                    if ended_since.is_none() {
                        sse::write_comment(&mut buf, "keep-alive");
                        return Some(sse::take(&mut buf));
                    }
                }
                _ = self.shutdown.changed() => return None,
            }
        }
    }
}

#[utoipa::path(get, path = "/api/v1/processes", tag = "processes",
    params(("label" = Option<String>, Query, description = "`key=value`; repeat to require several labels")),
    responses(
        (status = 200, description = "Every tracked process, oldest first", body = ProcessList),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub async fn list(State(daemon): Daemonic, RawQuery(raw): RawQuery) -> Response {
    let wanted: Vec<(String, String)> = query_pairs(raw.as_deref())
        .into_iter()
        .filter(|(k, _)| k == "label")
        .map(|(_, v)| match v.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (v, String::new()),
        })
        .collect();
    // Written by hand from each record's (cached) JSON: `{"processes":[...]}`.
    let mut body = Vec::with_capacity(64 * 1024);
    body.extend_from_slice(b"{\"processes\":[");
    let mut first = true;
    for process in daemon.table.all() {
        if !wanted
            .iter()
            .all(|(k, v)| process.spec.labels.get(k) == Some(v))
        {
            continue;
        }
        if !first {
            body.push(b',');
        }
        first = false;
        body.extend_from_slice(&process.info_json());
    }
    body.extend_from_slice(b"]}");
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/processes/{ref}", tag = "processes",
    params(("ref" = String, Path, description = "The OS pid (all digits) or a managed process name")),
    responses(
        (status = 200, description = "The process", body = ProcessInfo),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such process", body = ErrorBody),
    ))]
pub async fn get(
    State(daemon): Daemonic,
    Path(reference): Path<String>,
) -> Result<Json<ProcessInfo>, ApiError> {
    Ok(Json(find(&daemon, &reference)?.info()))
}

/// Query of `DELETE /processes/{ref}`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct KillQuery {
    /// Send the stop signal first and SIGKILL only after this many milliseconds.
    pub grace_ms: Option<u64>,
}

#[utoipa::path(delete, path = "/api/v1/processes/{ref}", tag = "processes",
    params(("ref" = String, Path, description = "The OS pid or a managed process name"), KillQuery),
    responses(
        (status = 204, description = "Killed (or had already ended)"),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such process", body = ErrorBody),
    ))]
pub async fn kill(
    State(daemon): Daemonic,
    Path(reference): Path<String>,
    query: Result<Query<KillQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(query) = query?;
    let process = find(&daemon, &reference)?;
    daemon.kill(&process, query.grace_ms);
    if query.grace_ms.unwrap_or(0) == 0 {
        // SIGKILL is quick: answer once the end is recorded, so a GET right after sees it.
        let mut version = process.version.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            version.wait_for(|_| !process.is_running()),
        )
        .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/processes/{ref}/signal", tag = "processes",
    params(("ref" = String, Path, description = "The OS pid or a managed process name"),
           ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body is not signalled twice")),
    request_body(content = SignalRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Signalled (the whole process group)", body = SuccessResponse),
        (status = 400, description = "Unknown signal (INVALID_REQUEST) or not running (NOT_RUNNING)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such process", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ))]
pub async fn signal(
    State(daemon): Daemonic,
    Path(reference): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let process = find(&daemon, &reference)?;
    let req: SignalRequest = parse_json(&body)?;
    let number = req
        .signal
        .number()
        .ok_or_else(|| ApiError::invalid(format!("unknown signal {:?}", req.signal)))?;
    let key = idempotency_key(&headers)?;
    let route = format!("signal:{}", process.handle);
    if let Some((status, response)) = daemon.replay(key, &route, &body)? {
        return Ok(replayed(json_bytes(status, response), true));
    }
    daemon.signal(&process, number)?;
    let response = Bytes::from_static(br#"{"success":true}"#);
    daemon.remember(key, &route, &body, 200, response.clone());
    Ok(json_bytes(200, response))
}

fn json_bytes(status: u16, body: Bytes) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

#[utoipa::path(post, path = "/api/v1/processes/{ref}/restart", tag = "processes",
    params(("ref" = String, Path, description = "The OS pid or a managed process name")),
    responses(
        (status = 200, description = "Restarted: the new run", body = ProcessInfo),
        (status = 400, description = "The new run could not be started", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such process", body = ErrorBody),
    ))]
pub async fn restart(
    State(daemon): Daemonic,
    Path(reference): Path<String>,
) -> Result<Json<ProcessInfo>, ApiError> {
    let process = find(&daemon, &reference)?;
    daemon.restart(&process).await?;
    Ok(Json(process.info()))
}

#[utoipa::path(post, path = "/api/v1/processes/{ref}/stdin", tag = "processes",
    params(("ref" = String, Path, description = "The OS pid or a managed process name"),
           ("Idempotency-Key" = Option<String>, Header, description = "Same key + same bytes is written once")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "Written"),
        (status = 400, description = "stdin is not a pipe or was closed (STDIN_NOT_WRITABLE)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such process", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ))]
pub async fn stdin(
    State(daemon): Daemonic,
    Path(reference): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let process = find(&daemon, &reference)?;
    let key = idempotency_key(&headers)?;
    let route = format!("stdin:{}", process.handle);
    if daemon.replay(key, &route, &body)?.is_some() {
        return Ok(replayed(StatusCode::NO_CONTENT.into_response(), true));
    }
    write_stdin(&process, &body).await?;
    daemon.remember(key, &route, &body, 204, Bytes::new());
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn write_stdin(process: &Process, bytes: &[u8]) -> Result<(), ApiError> {
    let not_writable = || {
        ApiError::new(
            ErrorCode::StdinNotWritable,
            "stdin is not open for writing (start with stdin_mode \"pipe\"; it closes when the process ends or stdin/close is called)",
        )
    };
    let mut slot = process.stdin.lock().await;
    let Some(sender) = slot.as_mut() else {
        return Err(not_writable());
    };
    if let Err(e) = sender.write_all(bytes).await {
        slot.take();
        process.update(|st| st.stdin_writable = false);
        return Err(ApiError::new(
            ErrorCode::StdinNotWritable,
            format!("stdin is closed: {e}"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/processes/{ref}/stdin/close", tag = "processes",
    params(("ref" = String, Path, description = "The OS pid or a managed process name")),
    responses(
        (status = 204, description = "stdin closed (EOF)"),
        (status = 400, description = "stdin is not a pipe or already closed", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such process", body = ErrorBody),
    ))]
pub async fn stdin_close(
    State(daemon): Daemonic,
    Path(reference): Path<String>,
) -> Result<StatusCode, ApiError> {
    let process = find(&daemon, &reference)?;
    let mut slot = process.stdin.lock().await;
    if slot.take().is_none() {
        return Err(ApiError::new(
            ErrorCode::StdinNotWritable,
            "stdin is not open",
        ));
    }
    process.update(|st| st.stdin_writable = false);
    Ok(StatusCode::NO_CONTENT)
}

fn selector_for(stream: &str) -> Selector {
    match stream {
        "stdout" => Selector::Only(StreamKind::Stdout),
        "stderr" => Selector::Only(StreamKind::Stderr),
        _ => Selector::Both,
    }
}

fn lines_of(
    daemon: &Daemon,
    reference: &str,
    selector: Selector,
) -> Result<Json<OutputResponse>, ApiError> {
    let process = find(daemon, reference)?;
    let (lines, truncated) = process.output.snapshot(selector);
    let lines: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(&l.text).into_owned())
        .collect();
    Ok(Json(OutputResponse {
        pid: process.pid(),
        line_count: lines.len(),
        lines,
        truncated,
    }))
}

macro_rules! output_routes {
    ($name:ident, $follow:ident, $stream:literal) => {
        #[utoipa::path(get, path = concat!("/api/v1/processes/{ref}/", $stream), tag = "processes",
            params(("ref" = String, Path, description = "The OS pid or a managed process name")),
            responses(
                (status = 200, description = concat!("Retained ", $stream, " lines"), body = OutputResponse),
                (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
                (status = 404, description = "No such process", body = ErrorBody),
            ))]
        pub async fn $name(State(daemon): Daemonic, Path(reference): Path<String>) -> Result<Json<OutputResponse>, ApiError> {
            lines_of(&daemon, &reference, selector_for($stream))
        }

        #[utoipa::path(get, path = concat!("/api/v1/processes/{ref}/", $stream, "/follow"), tag = "processes",
            params(("ref" = String, Path, description = "The OS pid or a managed process name"), FollowQuery,
                   ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this line id")),
            responses(
                (status = 200, description = "SSE: `event: output` (OutputLine, `id:` = line sequence number) replaying retained lines then live ones, then `event: eof`", content_type = "text/event-stream", body = String),
                (status = 400, description = "Bad query", body = ErrorBody),
                (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
                (status = 404, description = "No such process", body = ErrorBody),
            ))]
        pub async fn $follow(
            State(daemon): Daemonic,
            Path(reference): Path<String>,
            headers: HeaderMap,
            query: Result<Query<FollowQuery>, axum::extract::rejection::QueryRejection>,
        ) -> Result<Response, ApiError> {
            follow(&daemon, &reference, selector_for($stream), headers, query?.0)
        }
    };
}

output_routes!(stdout, stdout_follow, "stdout");
output_routes!(stderr, stderr_follow, "stderr");
output_routes!(output, output_follow, "output");

/// Query of the follow routes.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct FollowQuery {
    /// Resume after this line id (like `Last-Event-ID`).
    pub since_seq: Option<u64>,
}

fn follow(
    daemon: &Arc<Daemon>,
    reference: &str,
    selector: Selector,
    headers: HeaderMap,
    query: FollowQuery,
) -> Result<Response, ApiError> {
    let process = find(daemon, reference)?;
    let cursor = query
        .since_seq
        .or_else(|| super::system::last_event_id(&headers))
        .unwrap_or(0);
    let state = FollowStream {
        process,
        selector,
        cursor,
        done: false,
        shutdown: daemon.shutdown.subscribe(),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let chunk = st.next().await?;
        Some((Ok::<_, std::io::Error>(chunk), st))
    });
    Ok((sse::headers(), Body::from_stream(stream)).into_response())
}

/// Line bytes per follow chunk: big chunks keep per-chunk costs (syscalls, wake-ups) small.
const FOLLOW_BATCH_BYTES: usize = 1 << 20;

struct FollowStream {
    process: Arc<Process>,
    selector: Selector,
    cursor: u64,
    done: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl FollowStream {
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let process = self.process.clone();
        let mut buf = BytesMut::new();
        loop {
            let notified = process.output.changed();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = process
                .output
                .read_after(self.selector, self.cursor, FOLLOW_BATCH_BYTES);
            if batch.skipped {
                sse::write_comment(
                    &mut buf,
                    "lines were dropped here by the output retention limit",
                );
            }
            if let Some(last) = batch.lines.last() {
                self.cursor = last.seq;
                for line in &batch.lines {
                    sse::write_line(&mut buf, Some("output"), line);
                }
                return Some(sse::take(&mut buf));
            }
            if batch.finished {
                sse::write_event(&mut buf, Some("eof"), None, b"{}");
                self.done = true;
                return Some(sse::take(&mut buf));
            }
            if *self.shutdown.borrow() {
                return None;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_secs(15)) => {
                    sse::write_comment(&mut buf, "keep-alive");
                    return Some(sse::take(&mut buf));
                }
                _ = self.shutdown.changed() => return None,
            }
        }
    }
}

/// Query of `GET /processes/{ref}/wait`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct WaitQuery {
    /// How long to wait at most (default 30000, at most 300000).
    pub timeout_ms: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/processes/{ref}/wait", tag = "processes",
    params(("ref" = String, Path, description = "The OS pid or a managed process name"), WaitQuery),
    responses(
        (status = 200, description = "The process once it ended, or still running when the timeout passed", body = ProcessInfo),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such process", body = ErrorBody),
    ))]
pub async fn wait(
    State(daemon): Daemonic,
    Path(reference): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ProcessInfo>, ApiError> {
    let Query(query) = query?;
    let process = find(&daemon, &reference)?;
    let limit = Duration::from_millis(query.timeout_ms.unwrap_or(30_000).min(300_000));
    let mut version = process.version.subscribe();
    let mut shutdown = daemon.shutdown.subscribe();
    tokio::select! {
        _ = tokio::time::timeout(limit, version.wait_for(|_| !process.is_running())) => {}
        _ = shutdown.wait_for(|down| *down) => {}
    }
    Ok(Json(process.info()))
}
