//! Building the daemon, its router, authentication, and the serve loop with graceful shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use super::cgroup::Cgroups;
use super::events::EventBus;
use super::lifecycle::StopReason;
use super::persist::{Journal, Loaded, Record};
use super::reaper::{self, Reaper};
use super::routes::{files, processes, pty, system};
use super::table::{ManagedState, Process, ProcessTable, RunState};
use super::{ApiError, Config, Daemon, Keyed, random_id};
use crate::wire::{ErrorCode, ExitReason, HealthStatus, ManagedStatus, ProcessStatus, now_ms};

impl Daemon {
    /// Sets the daemon up: reaper, cgroups, persisted state.
    pub fn new(config: Config) -> anyhow::Result<Arc<Daemon>> {
        let pid1 = std::process::id() == 1;
        reaper::become_subreaper();
        let reaper = Reaper::start()?;
        let cgroups = if config.cgroups {
            Cgroups::detect(config.cgroup_parent.as_deref())
        } else {
            Cgroups::disabled("disabled by --no-cgroups")
        };
        if let Some(dir) = &config.state_dir {
            // The previous run's leaves are known by the tag it recorded here.
            let tag_file = dir.join("cgroup-tag");
            let previous = std::fs::read_to_string(&tag_file).unwrap_or_default();
            let swept = cgroups.sweep_previous(previous.trim());
            if swept > 0 {
                tracing::info!(swept, "removed empty cgroup leaves of the previous run");
            }
            std::fs::create_dir_all(dir)?;
            std::fs::write(&tag_file, cgroups.tag())?;
        }
        if let Some(reason) = cgroups.unavailable_reason() {
            tracing::warn!(%reason, "per-process cgroups unavailable: OOM kills will not be detected");
        }
        let (journal, loaded) = match &config.state_dir {
            Some(dir) => {
                let (journal, loaded) = Journal::open(dir)?;
                (Some(journal), loaded)
            }
            None => (None, Loaded::default()),
        };
        let boot_id = random_id(8);
        let daemon = Arc::new(Daemon {
            table: ProcessTable::new(config.max_records),
            ptys: super::pty::PtyRegistry::new(),
            events: EventBus::new(boot_id, config.event_buffer),
            reaper,
            cgroups,
            journal,
            keys: Mutex::new(HashMap::new()),
            leftover_leaves: Mutex::new(Vec::new()),
            started: Instant::now(),
            pid1,
            shutdown: tokio::sync::watch::Sender::new(false),
            config,
        });
        daemon.restore(loaded)?;
        tokio::spawn(daemon.clone().sweep_leaves());
        tokio::spawn(daemon.clone().refill_leaves());
        tokio::spawn(daemon.clone().expire_restored_ptys());
        Ok(daemon)
    }

    /// Brings back the records of an earlier run. Processes that were running then are gone
    /// with that daemon (or at least out of its reach): they are reported as lost.
    fn restore(&self, loaded: Loaded) -> anyhow::Result<()> {
        let now = now_ms();
        let mut records = Vec::new();
        for (handle, (mut info, spec)) in loaded.processes {
            if info.status == ProcessStatus::Running {
                info.status = ProcessStatus::Signaled;
                info.exit_reason = Some(ExitReason::Lost);
                info.ended_at = Some(now);
                info.stdin_writable = false;
            }
            let managed = info.managed.as_ref().map(|m| ManagedState {
                status: ManagedStatus::Stopped,
                restart: m.restart.clone(),
                restart_count: m.restart_count,
                health_status: if m.health_check.is_some() {
                    HealthStatus::Unhealthy
                } else {
                    HealthStatus::Disabled
                },
                consecutive_health_failures: m.consecutive_health_failures,
                last_exit: m.last_exit.clone(),
                last_error: m.last_error.clone(),
                next_restart_at: None,
                stopped: true,
                streak: 0,
            });
            let state = RunState {
                pid: info.pid,
                status: info.status,
                exit_code: info.exit_code,
                signal: info.signal,
                started_at: info.started_at,
                ended_at: info.ended_at,
                oom_killed: info.oom_killed,
                timed_out: info.timed_out,
                exit_reason: info.exit_reason,
                stdin_writable: false,
                api_signals: 0,
                stop_requested: false,
                run: 1,
                managed,
                leaf: None,
            };
            let stop_signal = spec
                .stop_signal
                .as_ref()
                .and_then(|s| s.number())
                .unwrap_or(libc::SIGTERM);
            let grace = spec
                .kill_grace_ms
                .unwrap_or(self.config.default_kill_grace_ms);
            let process = Process::new(handle, spec.clone(), None, stop_signal, grace, 1, state);
            for stream in [
                crate::wire::StreamKind::Stdout,
                crate::wire::StreamKind::Stderr,
            ] {
                process.output.close(stream);
            }
            let process = Arc::new(process);
            self.table.bump_handle(handle);
            self.table.insert(process.clone());
            records.push(Record::Process {
                info: Box::new(process.info()),
                spec: Box::new(spec),
            });
        }
        // Before the keys are locked below: restoring sessions restores their keys too.
        let pty_records = self.restore_ptys(&loaded.other);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        for (key, (fingerprint, handle)) in loaded.keys {
            if self.table.get(handle).is_some() {
                keys.insert(key.clone(), (fingerprint, Keyed::Process(handle)));
                records.push(Record::Key {
                    key,
                    fingerprint,
                    handle,
                });
            }
        }
        for ((kind, id), value) in loaded.other {
            records.push(Record::Other { kind, id, value });
        }
        // After the raw records, so the restored state (lost sessions ended) wins.
        records.extend(pty_records);
        if let Some(journal) = &self.journal {
            journal.compact(records)?;
        }
        Ok(())
    }

    /// Recycles handed-back cgroup leaves and keeps the pool of ready ones filled, for the
    /// daemon's lifetime. The cgroup file work runs on a blocking thread: a batch of `mkdir`s
    /// on a runtime worker stalled the requests queued behind it (the start latency's p99).
    async fn refill_leaves(self: Arc<Self>) {
        if !self.cgroups.enabled() {
            return;
        }
        loop {
            let daemon = self.clone();
            let _ = tokio::task::spawn_blocking(move || daemon.maintain_leaves()).await;
            self.cgroups.pool_low().await;
        }
    }

    /// One round of the leaf maintenance (blocking).
    fn maintain_leaves(&self) {
        for leaf in self.cgroups.take_returned() {
            if let Err(leaf) = self.cgroups.recycle(leaf) {
                self.leftover_leaves
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(leaf);
            }
        }
        self.cgroups.fill_pool();
    }

    /// Removes cgroup leaves whose last descendant has since exited.
    async fn sweep_leaves(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            self.leftover_leaves
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|leaf| leaf.remove().is_err());
        }
    }

    /// Stops every running process: the stop signal, then SIGKILL after the grace period.
    pub async fn stop_all(self: &Arc<Self>) {
        self.shutdown.send_replace(true);
        self.end_all_ptys();
        let running: Vec<Arc<Process>> = self
            .table
            .all()
            .into_iter()
            .filter(|p| p.is_running())
            .collect();
        let grace = self.config.shutdown_grace_ms;
        for process in &running {
            let run = process.state().run;
            self.stop_run(
                process,
                run,
                StopReason::Shutdown,
                Some(process.kill_grace_ms.min(grace).max(1)),
            );
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(grace) + Duration::from_secs(2);
        for process in &running {
            let mut version = process.version.subscribe();
            let _ = tokio::time::timeout_at(deadline, version.wait_for(|_| !process.is_running()))
                .await;
        }
        self.wait_ptys_ended().await;
    }
}

/// The router with every route, auth and limits.
pub fn router(daemon: Arc<Daemon>) -> Router {
    let api = Router::new()
        .route("/processes", post(processes::start).get(processes::list))
        .route("/processes/run", post(processes::run))
        .route(
            "/processes/{ref}",
            get(processes::get).delete(processes::kill),
        )
        .route("/processes/{ref}/signal", post(processes::signal))
        .route("/processes/{ref}/restart", post(processes::restart))
        .route("/processes/{ref}/stdin", post(processes::stdin))
        .route("/processes/{ref}/stdin/close", post(processes::stdin_close))
        .route("/processes/{ref}/stdout", get(processes::stdout))
        .route("/processes/{ref}/stderr", get(processes::stderr))
        .route("/processes/{ref}/output", get(processes::output))
        .route(
            "/processes/{ref}/stdout/follow",
            get(processes::stdout_follow),
        )
        .route(
            "/processes/{ref}/stderr/follow",
            get(processes::stderr_follow),
        )
        .route(
            "/processes/{ref}/output/follow",
            get(processes::output_follow),
        )
        .route("/processes/{ref}/wait", get(processes::wait))
        .route("/pty", post(pty::create).get(pty::list))
        .route("/pty/{session_id}", get(pty::get).delete(pty::kill))
        .route("/pty/{session_id}/resize", post(pty::resize))
        .route("/pty/{session_id}/ws", get(pty::attach))
        .route("/files/list", get(files::list))
        .route("/health", get(system::health))
        .route("/info", get(system::info))
        .route("/events", get(system::events))
        .layer(DefaultBodyLimit::max(daemon.config.max_request_bytes))
        // File uploads stream to disk with their own, larger limit.
        .route(
            "/files",
            get(files::read)
                .put(files::write)
                .delete(files::delete)
                .layer(DefaultBodyLimit::disable()),
        );
    Router::new()
        .nest(crate::wire::API_PREFIX, api)
        .route("/openapi.json", get(system::openapi))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(daemon.clone(), authenticate))
        .layer(middleware::map_response(error_bodies))
        .with_state(daemon)
}

/// Gives every error response the `{error, code}` body, including the plain-text rejections
/// axum's extractors produce on their own (body limit, bad query, ...).
async fn error_bodies(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        413 => ErrorCode::PayloadTooLarge,
        s if s >= 500 => ErrorCode::InternalError,
        _ => ErrorCode::InvalidRequest,
    };
    let text = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let message = if message.is_empty() {
        status.to_string()
    } else {
        message
    };
    let mut response = ApiError::new(code, message).into_response();
    *response.status_mut() = status;
    response
}

/// Bearer-token check on every route but health and the OpenAPI document.
async fn authenticate(State(daemon): State<Arc<Daemon>>, request: Request, next: Next) -> Response {
    let Some(token) = daemon.config.token.as_deref() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == "/api/v1/health" || path == "/openapi.json" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(p) if bool::from(p.as_bytes().ct_eq(token.as_bytes())) => next.run(request).await,
        Some(_) => ApiError::new(ErrorCode::Unauthorized, "wrong bearer token").into_response(),
        None => ApiError::new(
            ErrorCode::Unauthorized,
            "missing `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}

/// Serves `daemon` on `listener` until `shutdown` resolves, then stops its processes.
pub async fn serve(
    listener: TcpListener,
    daemon: Arc<Daemon>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(daemon.clone());
    let stopper = daemon.clone();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down: stopping processes");
        stopper.stop_all().await;
        let _ = stopped_tx.send(());
    };
    use axum::serve::ListenerExt;
    // Interactive traffic (keystroke echo over WebSocket) must not wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(graceful)
        .await?;
    let _ = stopped_rx.await;
    daemon.cgroups.clear_pool();
    tracing::info!("stopped");
    Ok(())
}

/// Runs the daemon with `config` until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let daemon = Daemon::new(config)?;
    // On stdout, for scripts and tests that listen on port 0.
    println!("sandbox-daemon listening on {}", listener.local_addr()?);
    tracing::info!(
        listen = %listener.local_addr()?,
        boot_id = daemon.boot_id(),
        cgroups = daemon.cgroups.kind(),
        auth = daemon.config.token.is_some(),
        "sandbox-daemon ready"
    );
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    serve(listener, daemon, shutdown).await
}
