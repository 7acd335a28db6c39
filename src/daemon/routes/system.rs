//! `/health`, `/info`, `/events`, `/openapi.json`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;

use super::super::{Daemon, sse};
use crate::wire::{Capabilities, ErrorBody, HealthResponse, HelloEvent, InfoResponse};

#[utoipa::path(get, path = "/api/v1/health", tag = "system",
    responses((status = 200, description = "The daemon is up", body = HealthResponse)),
    security(()))]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { healthy: true })
}

#[utoipa::path(get, path = "/api/v1/info", tag = "system",
    responses(
        (status = 200, description = "Version, uptime, counts and capabilities", body = InfoResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub async fn info(State(daemon): State<Arc<Daemon>>) -> Json<InfoResponse> {
    let (running, total) = daemon.table.counts();
    Json(InfoResponse {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: daemon.started.elapsed().as_secs(),
        running_processes: running,
        total_processes: total,
        boot_id: daemon.boot_id().to_string(),
        capabilities: Capabilities {
            oom_detection: daemon.cgroups.enabled(),
            cgroup: daemon.cgroups.kind().to_string(),
            memory_limits: daemon.cgroups.enabled(),
            idempotency: true,
            events: true,
            persistence: daemon.journal.is_some(),
            pid1: daemon.pid1,
        },
    })
}

/// Query of `GET /events`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Resume after this event id (like the `Last-Event-ID` header).
    pub since_seq: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/events", tag = "system",
    params(EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "SSE: `event: hello` (HelloEvent) first, then `event: state` (DaemonEvent) per change, each with `id:`", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub async fn events(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, super::super::ApiError> {
    let query = query?;
    let resume = query.since_seq.or_else(|| last_event_id(&headers));
    let bus_last = daemon.events.last_seq();
    let mut cursor = resume.unwrap_or(bus_last);
    // A resume id from another boot (bigger than anything we have) cannot be honoured.
    let mut resumed = resume.is_some();
    if cursor > bus_last {
        cursor = bus_last;
        resumed = false;
    }
    if resume.is_some() && daemon.events.read_after(cursor, 1).missed {
        resumed = false;
    }
    let hello = HelloEvent {
        boot_id: daemon.boot_id().to_string(),
        last_seq: bus_last,
        resumed,
    };
    let mut first = BytesMut::new();
    sse::write_event(
        &mut first,
        Some("hello"),
        None,
        &serde_json::to_vec(&hello).unwrap_or_default(),
    );
    let state = EventStream {
        shutdown: daemon.shutdown.subscribe(),
        daemon,
        cursor,
        first: Some(first.freeze()),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let chunk = st.next().await?;
        Some((Ok::<_, std::io::Error>(chunk), st))
    });
    Ok((sse::headers(), axum::body::Body::from_stream(stream)).into_response())
}

struct EventStream {
    daemon: Arc<Daemon>,
    cursor: u64,
    first: Option<bytes::Bytes>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl EventStream {
    async fn next(&mut self) -> Option<bytes::Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let daemon = self.daemon.clone();
        let mut buf = BytesMut::new();
        loop {
            let notified = daemon.events.changed();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = daemon.events.read_after(self.cursor, 1024);
            if batch.missed {
                sse::write_comment(&mut buf, "events were dropped: re-list to resynchronise");
            }
            if let Some((last, _)) = batch.events.last() {
                self.cursor = *last;
                for (seq, json) in &batch.events {
                    sse::write_event(&mut buf, Some("state"), Some(*seq), json);
                }
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

/// The numeric `Last-Event-ID` header, if any.
pub fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[utoipa::path(get, path = "/openapi.json", tag = "system",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)),
    security(()))]
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::super::openapi_document(),
    )
        .into_response()
}
