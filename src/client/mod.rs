//! The typed async client of the daemon API: one method per route, the SSE routes as
//! `Stream`s, and retries with backoff on connection errors only (a request that never reached
//! the daemon is always safe to send again; anything else is the caller's call).

mod pty;
mod sse;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

pub use pty::{PtyAttach, PtyClose, PtyEvent, PtyExit};
pub use sse::{SseEvent, SseParser};

use crate::wire::{
    DaemonEvent, ErrorBody, FileList, HealthResponse, HelloEvent, IDEMPOTENCY_KEY_HEADER,
    InfoResponse, OutputLine, OutputResponse, ProcessInfo, ProcessList, RunFinished, RunStarted,
    SignalRequest, SignalSpec, StartProcessRequest,
};

/// What can go wrong talking to a daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error body.
    #[error("daemon answered {status}: {} ({})", .body.error, .body.code)]
    Api { status: StatusCode, body: ErrorBody },
    /// The daemon answered with an error status but no error body.
    #[error("daemon answered {status}: {text}")]
    Status { status: StatusCode, text: String },
    /// The daemon could not be reached or the connection broke.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// A response did not have the documented shape.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// A PTY WebSocket failed (after the handshake; refusals are `Api` errors).
    #[error("websocket: {0}")]
    WebSocket(String),
}

impl ClientError {
    /// The HTTP status of an answered error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } | ClientError::Status { status, .. } => Some(*status),
            ClientError::Transport(e) => e.status(),
            ClientError::Decode(_) | ClientError::WebSocket(_) => None,
        }
    }

    /// The machine-readable error code of an answered error.
    pub fn code(&self) -> Option<crate::wire::ErrorCode> {
        match self {
            ClientError::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }

    /// True when the daemon was not reachable at all.
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Transport(e) if e.is_connect())
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Which output a read or follow is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
    /// Both, in order.
    Output,
}

impl OutputStream {
    fn path(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
            OutputStream::Output => "output",
        }
    }
}

/// An item of a follow stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowItem {
    Line { seq: u64, line: OutputLine },
    Eof,
}

/// An item of a `/run` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunItem {
    Started(RunStarted),
    Line(OutputLine),
    Finished(RunFinished),
}

/// An item of the `/events` stream.
#[derive(Debug, Clone, PartialEq)]
pub enum EventItem {
    Hello(HelloEvent),
    State(Box<DaemonEvent>),
}

/// Retry policy for connection errors.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
        }
    }
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    retry: Retry,
}

impl Client {
    /// A client of the daemon at `base_url` (e.g. `http://10.0.0.7:9501`).
    pub fn new(base_url: &str, token: Option<String>) -> Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Client::with_http(http, base_url, token))
    }

    /// A client sharing an existing connection pool.
    pub fn with_http(http: reqwest::Client, base_url: &str, token: Option<String>) -> Client {
        Client {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            token,
            retry: Retry::default(),
        }
    }

    pub fn with_retry(mut self, retry: Retry) -> Client {
        self.retry = retry;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    /// Sends with retries on connection errors; error statuses become `ClientError`s.
    async fn send(&self, build: impl Fn() -> RequestBuilder) -> Result<Response> {
        let mut delay = self.retry.initial;
        let mut attempt = 1;
        loop {
            match build().send().await {
                Ok(response) => return check(response).await,
                Err(e) if e.is_connect() && attempt < self.retry.attempts => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry.max);
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn json<T: DeserializeOwned>(&self, build: impl Fn() -> RequestBuilder) -> Result<T> {
        let response = self.send(build).await?;
        let bytes = response.bytes().await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Decode(format!("{e}: {}", String::from_utf8_lossy(&bytes))))
    }

    // ---- processes ----

    /// `POST /processes`.
    pub async fn start(&self, req: &StartProcessRequest) -> Result<ProcessInfo> {
        self.json(|| self.request(Method::POST, "/api/v1/processes").json(req))
            .await
    }

    /// `POST /processes` with an `Idempotency-Key`.
    pub async fn start_idempotent(
        &self,
        req: &StartProcessRequest,
        key: &str,
    ) -> Result<ProcessInfo> {
        self.json(|| {
            self.request(Method::POST, "/api/v1/processes")
                .header(IDEMPOTENCY_KEY_HEADER, key)
                .json(req)
        })
        .await
    }

    /// `POST /processes/run`: the started event, the output lines, the finished event.
    pub async fn run(
        &self,
        req: &StartProcessRequest,
    ) -> Result<impl Stream<Item = Result<RunItem>> + use<>> {
        let response = self
            .send(|| {
                self.request(Method::POST, "/api/v1/processes/run")
                    .json(req)
            })
            .await?;
        Ok(sse_stream(response).map(|event| {
            let event = event?;
            let value: serde_json::Value = decode(&event.data)?;
            if value.get("pid").is_some() && value.get("started_at").is_some() {
                Ok(RunItem::Started(decode(&event.data)?))
            } else if value.get("line").is_some() {
                Ok(RunItem::Line(decode(&event.data)?))
            } else {
                Ok(RunItem::Finished(decode(&event.data)?))
            }
        }))
    }

    /// `GET /processes`, optionally filtered by labels (all must match).
    pub async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ProcessInfo>> {
        let query: Vec<(&str, String)> = labels
            .iter()
            .map(|(k, v)| ("label", format!("{k}={v}")))
            .collect();
        let list: ProcessList = self
            .json(|| self.request(Method::GET, "/api/v1/processes").query(&query))
            .await?;
        Ok(list.processes)
    }

    /// `GET /processes/{ref}` (a pid or a managed name).
    pub async fn get(&self, reference: &str) -> Result<ProcessInfo> {
        let path = process_path(reference, "");
        self.json(|| self.request(Method::GET, &path)).await
    }

    /// `DELETE /processes/{ref}`: SIGKILL now, or the stop signal and SIGKILL after `grace_ms`.
    pub async fn kill(&self, reference: &str, grace_ms: Option<u64>) -> Result<()> {
        let path = process_path(reference, "");
        self.send(|| {
            let req = self.request(Method::DELETE, &path);
            match grace_ms {
                Some(ms) => req.query(&[("grace_ms", ms)]),
                None => req,
            }
        })
        .await?;
        Ok(())
    }

    /// `POST /processes/{ref}/signal`.
    pub async fn signal(&self, reference: &str, signal: SignalSpec) -> Result<()> {
        let path = process_path(reference, "/signal");
        let body = SignalRequest { signal };
        self.send(|| self.request(Method::POST, &path).json(&body))
            .await?;
        Ok(())
    }

    /// `POST /processes/{ref}/restart`.
    pub async fn restart(&self, reference: &str) -> Result<ProcessInfo> {
        let path = process_path(reference, "/restart");
        self.json(|| self.request(Method::POST, &path)).await
    }

    /// `POST /processes/{ref}/stdin`.
    pub async fn write_stdin(&self, reference: &str, bytes: impl Into<Bytes>) -> Result<()> {
        let path = process_path(reference, "/stdin");
        let bytes: Bytes = bytes.into();
        self.send(|| {
            self.request(Method::POST, &path)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.clone())
        })
        .await?;
        Ok(())
    }

    /// `POST /processes/{ref}/stdin/close`.
    pub async fn close_stdin(&self, reference: &str) -> Result<()> {
        let path = process_path(reference, "/stdin/close");
        self.send(|| self.request(Method::POST, &path)).await?;
        Ok(())
    }

    /// `GET /processes/{ref}/stdout|stderr|output`.
    pub async fn output(&self, reference: &str, stream: OutputStream) -> Result<OutputResponse> {
        let path = process_path(reference, &format!("/{}", stream.path()));
        self.json(|| self.request(Method::GET, &path)).await
    }

    /// `GET /processes/{ref}/.../follow`, resuming after `since_seq` when given.
    pub async fn follow(
        &self,
        reference: &str,
        stream: OutputStream,
        since_seq: Option<u64>,
    ) -> Result<impl Stream<Item = Result<FollowItem>> + use<>> {
        let path = process_path(reference, &format!("/{}/follow", stream.path()));
        let response = self
            .send(|| {
                let req = self.request(Method::GET, &path);
                match since_seq {
                    Some(seq) => req.header("last-event-id", seq.to_string()),
                    None => req,
                }
            })
            .await?;
        Ok(sse_stream(response).filter_map(|event| async move {
            match event {
                Err(e) => Some(Err(e)),
                Ok(event) => match event.event.as_deref() {
                    Some("eof") => Some(Ok(FollowItem::Eof)),
                    Some("output") | None => {
                        Some(decode(&event.data).map(|line| FollowItem::Line {
                            seq: event.id.unwrap_or(0),
                            line,
                        }))
                    }
                    Some(_) => None,
                },
            }
        }))
    }

    /// `GET /processes/{ref}/wait`: until the process ends or `timeout` passes.
    pub async fn wait(&self, reference: &str, timeout: Duration) -> Result<ProcessInfo> {
        let path = process_path(reference, "/wait");
        let ms = timeout.as_millis() as u64;
        self.json(|| {
            self.request(Method::GET, &path)
                .query(&[("timeout_ms", ms)])
        })
        .await
    }

    /// `GET /events`, resuming after `last_event_id` when given.
    pub async fn events(
        &self,
        last_event_id: Option<u64>,
    ) -> Result<impl Stream<Item = Result<EventItem>> + use<>> {
        let response = self
            .send(|| {
                let req = self.request(Method::GET, "/api/v1/events");
                match last_event_id {
                    Some(id) => req.header("last-event-id", id.to_string()),
                    None => req,
                }
            })
            .await?;
        Ok(sse_stream(response).filter_map(|event| async move {
            match event {
                Err(e) => Some(Err(e)),
                Ok(event) => match event.event.as_deref() {
                    Some("hello") => Some(decode(&event.data).map(EventItem::Hello)),
                    Some("state") => {
                        Some(decode(&event.data).map(|e| EventItem::State(Box::new(e))))
                    }
                    _ => None,
                },
            }
        }))
    }

    // ---- files ----

    /// `GET /files?path=`.
    pub async fn read_file(&self, path: &str) -> Result<Bytes> {
        Ok(self
            .send(|| {
                self.request(Method::GET, "/api/v1/files")
                    .query(&[("path", path)])
            })
            .await?
            .bytes()
            .await?)
    }

    /// `PUT /files?path=` (atomic; parents created).
    pub async fn write_file(&self, path: &str, bytes: impl Into<Bytes>) -> Result<()> {
        let bytes: Bytes = bytes.into();
        self.send(|| {
            self.request(Method::PUT, "/api/v1/files")
                .query(&[("path", path)])
                .body(bytes.clone())
        })
        .await?;
        Ok(())
    }

    /// `DELETE /files?path=`.
    pub async fn delete_file(&self, path: &str) -> Result<()> {
        self.send(|| {
            self.request(Method::DELETE, "/api/v1/files")
                .query(&[("path", path)])
        })
        .await?;
        Ok(())
    }

    /// `GET /files/list?path=`.
    pub async fn list_files(&self, path: &str) -> Result<FileList> {
        self.json(|| {
            self.request(Method::GET, "/api/v1/files/list")
                .query(&[("path", path)])
        })
        .await
    }

    // ---- daemon ----

    pub async fn health(&self) -> Result<HealthResponse> {
        self.json(|| self.request(Method::GET, "/api/v1/health"))
            .await
    }

    pub async fn info(&self) -> Result<InfoResponse> {
        self.json(|| self.request(Method::GET, "/api/v1/info"))
            .await
    }

    /// The daemon's OpenAPI document.
    pub async fn openapi(&self) -> Result<serde_json::Value> {
        self.json(|| self.request(Method::GET, "/openapi.json"))
            .await
    }
}

async fn check(response: Response) -> Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => Err(ClientError::Api { status, body }),
        Err(_) => Err(ClientError::Status { status, text }),
    }
}

fn decode<T: DeserializeOwned>(data: &str) -> Result<T> {
    serde_json::from_str(data).map_err(|e| ClientError::Decode(format!("{e}: {data}")))
}

fn sse_stream(response: Response) -> impl Stream<Item = Result<SseEvent>> {
    sse::events(Box::pin(
        response
            .bytes_stream()
            .map(|r| r.map_err(ClientError::from)),
    ))
}

/// `/api/v1/processes/{ref}{suffix}` with `ref` percent-encoded.
fn process_path(reference: &str, suffix: &str) -> String {
    let mut encoded = String::with_capacity(reference.len());
    for b in reference.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("/api/v1/processes/{encoded}{suffix}")
}
