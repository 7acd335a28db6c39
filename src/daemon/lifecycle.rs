//! Starting, supervising, stopping and restarting processes.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::output::LineSplitter;
use super::persist::Record;
use super::reaper::WaitStatus;
use super::spawn::{self, Credentials, signal_group};
use super::table::{ManagedState, Process, RunState};
use super::{ApiError, Daemon, Keyed};
use crate::wire::{
    ErrorCode, EventKind, ExitReason, HealthCheckType, HealthStatus, LastExit, ManagedStatus,
    OutputMode, ProcessStatus, RestartPolicy, StartProcessRequest, StreamKind, now_ms,
};

const SIGKILL: i32 = libc::SIGKILL;
/// Largest pipe read buffer, reached by chatty children.
const READ_BUFFER_MAX: usize = 256 << 10;
/// A run that lasted this long resets the restart back-off.
const STABLE_RUN: Duration = Duration::from_secs(10);

/// Why the daemon is stopping a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Timeout,
    Api,
    Shutdown,
}

impl Daemon {
    /// Checks a start request and works out what it implies.
    fn validate(&self, req: &StartProcessRequest) -> Result<(Option<Credentials>, i32), ApiError> {
        check_command(&req.command, &req.args, &req.env)?;
        if let Some(name) = &req.name {
            if name.is_empty() || name.contains('/') || name.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::invalid(
                    "`name` must be non-empty, without `/`, and not all digits",
                ));
            }
            if let Some(existing) = self.table.resolve(name) {
                let done = !existing.is_running()
                    && existing
                        .state()
                        .managed
                        .as_ref()
                        .is_none_or(|m| m.stopped || m.status == ManagedStatus::Stopped);
                if !done {
                    return Err(ApiError::invalid(format!(
                        "a process named `{name}` already exists"
                    )));
                }
            }
        }
        if let Some(hc) = &req.health_check {
            if hc.port == 0 || hc.interval_ms == 0 || hc.failure_threshold == 0 {
                return Err(ApiError::invalid(
                    "`health_check` needs a port, a non-zero interval and failure_threshold",
                ));
            }
        }
        if req.timeout.is_some_and(|t| !t.is_finite() || t < 0.0) {
            return Err(ApiError::invalid(
                "`timeout` must be a non-negative number of seconds",
            ));
        }
        if req.memory_limit_bytes.is_some_and(|m| m < 1 << 20) {
            return Err(ApiError::invalid(
                "`memory_limit_bytes` must be at least 1 MiB",
            ));
        }
        if req.output_limit_bytes == Some(0) {
            return Err(ApiError::invalid("`output_limit_bytes` must be positive"));
        }
        let stop_signal = match &req.stop_signal {
            None => libc::SIGTERM,
            Some(s) => s
                .number()
                .ok_or_else(|| ApiError::invalid(format!("unknown stop_signal {s:?}")))?,
        };
        let creds = match &req.user {
            None => None,
            Some(user) => Some(
                spawn::resolve_user(user).map_err(|e| ApiError::new(ErrorCode::SpawnFailed, e))?,
            ),
        };
        Ok((creds, stop_signal))
    }

    /// Starts a process; with an idempotency key, a repeat of the same request returns the
    /// process the first one started (`true` = replayed) and a different request is refused.
    pub fn start_idempotent(
        self: &Arc<Self>,
        key: Option<&str>,
        route: &str,
        req: StartProcessRequest,
    ) -> Result<(Arc<Process>, bool), ApiError> {
        let Some(key) = key else {
            return Ok((self.start_process(req)?, false));
        };
        let fingerprint = fingerprint(route, &serde_json::to_vec(&req).unwrap_or_default());
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((fp, keyed)) = keys.get(key) {
            if *fp != fingerprint {
                return Err(key_reused());
            }
            if let Keyed::Process(handle) = keyed {
                if let Some(process) = self.table.get(*handle) {
                    return Ok((process, true));
                }
            } else {
                return Err(key_reused());
            }
        }
        let process = self.start_process(req)?;
        keys.insert(
            key.to_owned(),
            (fingerprint, Keyed::Process(process.handle)),
        );
        if let Some(journal) = &self.journal {
            journal.append(&Record::Key {
                key: key.to_owned(),
                fingerprint,
                handle: process.handle,
            });
        }
        Ok((process, false))
    }

    /// The response an idempotency key already gave for this request, if any; a key used with
    /// another request is refused.
    pub fn replay(
        &self,
        key: Option<&str>,
        route: &str,
        body: &[u8],
    ) -> Result<Option<(u16, bytes::Bytes)>, ApiError> {
        let Some(key) = key else { return Ok(None) };
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        match keys.get(key) {
            None => Ok(None),
            Some((
                fp,
                Keyed::Response {
                    status,
                    body: response,
                },
            )) if *fp == fingerprint(route, body) => Ok(Some((*status, response.clone()))),
            Some(_) => Err(key_reused()),
        }
    }

    /// Remembers the response given to a keyed request, for [`Daemon::replay`].
    pub fn remember(
        &self,
        key: Option<&str>,
        route: &str,
        body: &[u8],
        status: u16,
        response: bytes::Bytes,
    ) {
        if let Some(key) = key {
            self.keys.lock().unwrap_or_else(|e| e.into_inner()).insert(
                key.to_owned(),
                (
                    fingerprint(route, body),
                    Keyed::Response {
                        status,
                        body: response,
                    },
                ),
            );
        }
    }

    /// Starts a new process record.
    pub fn start_process(
        self: &Arc<Self>,
        req: StartProcessRequest,
    ) -> Result<Arc<Process>, ApiError> {
        if self.shutting_down() {
            return Err(ApiError::new(
                ErrorCode::NotRunning,
                "the daemon is shutting down",
            ));
        }
        let (creds, stop_signal) = self.validate(&req)?;
        let managed = (req.name.is_some() || req.restart.is_some() || req.health_check.is_some())
            .then(|| ManagedState {
                status: ManagedStatus::Starting,
                restart: req.restart.clone().unwrap_or(crate::wire::RestartConfig {
                    policy: RestartPolicy::Never,
                    max_restarts: None,
                    initial_backoff_ms: 500,
                    max_backoff_ms: 30_000,
                }),
                restart_count: 0,
                health_status: if req.health_check.is_some() {
                    HealthStatus::Starting
                } else {
                    HealthStatus::Disabled
                },
                consecutive_health_failures: 0,
                last_exit: None,
                last_error: None,
                next_restart_at: None,
                stopped: false,
                streak: 0,
            });
        let handle = self.table.next_handle();
        let kill_grace_ms = req
            .kill_grace_ms
            .unwrap_or(self.config.default_kill_grace_ms);
        let output_limit = req
            .output_limit_bytes
            .unwrap_or(self.config.output_limit_bytes);
        let state = RunState {
            pid: 0,
            status: ProcessStatus::Running,
            exit_code: None,
            signal: None,
            started_at: now_ms(),
            ended_at: None,
            oom_killed: false,
            timed_out: false,
            exit_reason: None,
            stdin_writable: false,
            api_signals: 0,
            stop_requested: false,
            run: 0,
            managed,
            leaf: None,
        };
        let process = Arc::new(Process::new(
            handle,
            req,
            creds,
            stop_signal,
            kill_grace_ms,
            output_limit,
            state,
        ));
        self.launch(&process).map_err(|e| {
            ApiError::new(
                ErrorCode::SpawnFailed,
                format!("failed to start `{}`: {e}", process.spec.command),
            )
        })?;
        for evicted in self.table.insert(process.clone()) {
            self.forget(evicted);
        }
        self.persist(&process);
        self.events
            .publish_process(crate::wire::EventKind::ProcessStarted, process.info());
        if process.spec.health_check.is_some() {
            tokio::spawn(self.clone().health_loop(process.clone()));
        }
        Ok(process)
    }

    fn forget(&self, handle: u64) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (_, k)| !matches!(k, Keyed::Process(h) if *h == handle));
        if let Some(journal) = &self.journal {
            journal.append(&Record::Forget { handle });
        }
    }

    pub(crate) fn persist(&self, process: &Process) {
        if let Some(journal) = &self.journal {
            journal.append(&Record::Process {
                info: Box::new(process.info()),
                spec: Box::new(process.spec.clone()),
            });
        }
    }

    /// Spawns one run of `process` and starts watching it.
    fn launch(self: &Arc<Self>, process: &Arc<Process>) -> std::io::Result<()> {
        let leaf = if self.cgroups.enabled() {
            match self
                .cgroups
                .create(process.handle, process.spec.memory_limit_bytes)
            {
                Ok(leaf) => leaf,
                Err(e) if process.spec.memory_limit_bytes.is_some() => {
                    return Err(std::io::Error::other(format!(
                        "cannot set the memory limit: {e}"
                    )));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no cgroup for this process; OOM kills will not be detected");
                    None
                }
            }
        } else if process.spec.memory_limit_bytes.is_some() {
            return Err(std::io::Error::other(
                "memory limits need a writable cgroup, and this host has none",
            ));
        } else {
            None
        };
        let spawned = match spawn::spawn(
            &self.reaper,
            &self.cgroups,
            &process.spec,
            process.creds,
            leaf.as_ref(),
        ) {
            Ok(s) => s,
            Err(e) => {
                if let Some(leaf) = leaf {
                    let _ = leaf.remove();
                }
                return Err(e);
            }
        };
        let pid = spawned.pid;
        let run = process.update(|st| {
            st.pid = pid;
            st.status = ProcessStatus::Running;
            st.exit_code = None;
            st.signal = None;
            st.ended_at = None;
            st.oom_killed = false;
            st.timed_out = false;
            st.exit_reason = None;
            st.api_signals = 0;
            st.stop_requested = false;
            st.started_at = now_ms();
            st.stdin_writable = spawned.stdin.is_some();
            st.run += 1;
            st.leaf = leaf;
            if let Some(m) = st.managed.as_mut() {
                m.status = ManagedStatus::Running;
                m.next_restart_at = None;
            }
            st.run
        });
        if let Some(fd) = spawned.stdin {
            match pipe::Sender::from_owned_fd(fd) {
                Ok(sender) => {
                    if let Ok(mut slot) = process.stdin.try_lock() {
                        *slot = Some(sender);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "stdin pipe unusable"),
            }
        }
        process.output.reopen();
        for (fd, stream, mode) in [
            (spawned.stdout, StreamKind::Stdout, process.spec.stdout_mode),
            (spawned.stderr, StreamKind::Stderr, process.spec.stderr_mode),
        ] {
            match (fd, mode) {
                (Some(fd), OutputMode::Capture) => {
                    tokio::spawn(read_pipe(
                        fd,
                        process.clone(),
                        stream,
                        self.config.max_line_bytes,
                    ));
                }
                _ => process.output.close(stream),
            }
        }
        tokio::spawn(self.clone().supervise(process.clone(), run, spawned.exit));
        Ok(())
    }

    /// Waits for one run to end (enforcing its timeout), records the end, restarts if managed.
    async fn supervise(
        self: Arc<Self>,
        process: Arc<Process>,
        run: u64,
        mut exit: tokio::sync::oneshot::Receiver<WaitStatus>,
    ) {
        let started = std::time::Instant::now();
        let timeout = process
            .spec
            .timeout_ms
            .or(process.spec.timeout.map(|s| (s * 1000.0) as u64))
            .map(Duration::from_millis);
        let status = match timeout {
            Some(limit) => tokio::select! {
                status = &mut exit => status,
                _ = tokio::time::sleep(limit) => {
                    self.stop_run(&process, run, StopReason::Timeout, Some(process.kill_grace_ms));
                    exit.await
                }
            },
            None => exit.await,
        };
        let Ok(status) = status else { return };
        self.record_exit(&process, status, started.elapsed());
        let restart = self.plan_restart(&process);
        // Published after the restart decision, so watchers see the settled managed status
        // (backing_off or stopped), not the one of the run that just ended.
        self.events
            .publish_process(EventKind::ProcessExited, process.info());
        if let Some(delay) = restart {
            let mut version = process.version.subscribe();
            let stopped = |p: &Process| p.state().managed.as_ref().is_none_or(|m| m.stopped);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = version.wait_for(|_| stopped(&process)) => {}
            }
            if stopped(&process) || self.shutting_down() {
                process.update(|st| {
                    if let Some(m) = st.managed.as_mut() {
                        m.status = ManagedStatus::Stopped;
                        m.next_restart_at = None;
                    }
                });
                self.persist(&process);
                // Supervision gave up during the back-off: tell watchers it is final.
                self.events
                    .publish_process(EventKind::ProcessExited, process.info());
                return;
            }
            self.relaunch(&process);
        }
    }

    /// Records how a run ended.
    fn record_exit(&self, process: &Arc<Process>, status: WaitStatus, lasted: Duration) {
        let ended_at = now_ms();
        process.update(|st| {
            let oom = match (&st.leaf, status) {
                (Some(leaf), WaitStatus::Signaled(SIGKILL)) => leaf.oom_kills() > 0,
                _ => false,
            };
            st.ended_at = Some(ended_at);
            st.stdin_writable = false;
            match status {
                WaitStatus::Exited(code) => {
                    st.status = ProcessStatus::Exited;
                    st.exit_code = Some(code);
                }
                WaitStatus::Signaled(sig) => {
                    st.status = if oom {
                        ProcessStatus::OomKilled
                    } else {
                        ProcessStatus::Signaled
                    };
                    st.signal = Some(sig);
                }
            }
            st.oom_killed = oom;
            st.exit_reason = Some(if oom {
                ExitReason::OomKilled
            } else if st.timed_out {
                ExitReason::Timeout
            } else {
                match status {
                    // A clean exit on the stop signal (servers that catch SIGTERM/SIGINT
                    // exit 0) is still the API's doing.
                    WaitStatus::Exited(_) if st.stop_requested => ExitReason::Killed,
                    WaitStatus::Exited(_) => ExitReason::Exited,
                    WaitStatus::Signaled(sig) if st.api_signals & (1 << sig) != 0 => {
                        ExitReason::Killed
                    }
                    WaitStatus::Signaled(_) => ExitReason::Signaled,
                }
            });
            if let Some(m) = st.managed.as_mut() {
                m.last_exit = Some(LastExit {
                    exit_code: st.exit_code,
                    signal: st.signal,
                    oom_killed: oom,
                    ended_at,
                });
                if lasted >= STABLE_RUN {
                    m.streak = 0;
                }
            }
            if let Some(leaf) = st.leaf.take() {
                self.cgroups.give_back(leaf);
            }
        });
        // Dropping our end lets writers see EPIPE instead of blocking.
        if let Ok(mut stdin) = process.stdin.try_lock() {
            stdin.take();
        }
        self.persist(process);
    }

    /// Decides whether (and after how long) a managed process restarts.
    fn plan_restart(&self, process: &Process) -> Option<Duration> {
        let shutting_down = self.shutting_down();
        let delay = process.update(|st| {
            let succeeded = st.status == ProcessStatus::Exited && st.exit_code == Some(0);
            let m = st.managed.as_mut()?;
            let wanted = match m.restart.policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !succeeded,
                RestartPolicy::Never => false,
            };
            let exhausted = m
                .restart
                .max_restarts
                .is_some_and(|max| m.restart_count >= max);
            if m.stopped || shutting_down || !wanted || exhausted {
                m.status = ManagedStatus::Stopped;
                return None;
            }
            let backoff = m
                .restart
                .initial_backoff_ms
                .saturating_mul(1u64 << m.streak.min(20))
                .min(m.restart.max_backoff_ms.max(m.restart.initial_backoff_ms));
            m.streak += 1;
            m.status = ManagedStatus::BackingOff;
            m.next_restart_at = Some(now_ms() + backoff as i64);
            Some(Duration::from_millis(backoff))
        });
        self.persist(process);
        delay
    }

    /// Starts the next run of a managed process (or a restart requested through the API).
    fn relaunch(self: &Arc<Self>, process: &Arc<Process>) {
        let result = self.launch(process);
        process.update(|st| {
            if let Some(m) = st.managed.as_mut() {
                m.restart_count += 1;
                m.last_error = result
                    .as_ref()
                    .err()
                    .map(|e| format!("restart failed: {e}"));
                if result.is_err() {
                    m.status = ManagedStatus::Stopped;
                }
            }
        });
        match result {
            Ok(()) => {
                self.table.index_pid(process.pid(), process.handle);
                self.persist(process);
                self.events
                    .publish_process(EventKind::ProcessRestarted, process.info());
            }
            Err(e) => {
                tracing::warn!(handle = process.handle, error = %e, "restart failed");
                self.persist(process);
            }
        }
    }

    /// Stops the current run: SIGKILL now (`grace` None or 0), or the stop signal and SIGKILL
    /// after `grace` ms. The whole process group and cgroup leaf are signalled.
    pub fn stop_run(
        self: &Arc<Self>,
        process: &Arc<Process>,
        run: u64,
        reason: StopReason,
        grace: Option<u64>,
    ) {
        let first_signal = match grace {
            Some(ms) if ms > 0 => process.stop_signal,
            _ => SIGKILL,
        };
        let acted = process.update(|st| {
            if st.run != run || st.status != ProcessStatus::Running {
                return false;
            }
            match reason {
                StopReason::Timeout => st.timed_out = true,
                StopReason::Api | StopReason::Shutdown => {
                    st.api_signals |= (1 << first_signal) | (1 << SIGKILL);
                    st.stop_requested = true;
                }
            }
            true
        });
        if !acted {
            return;
        }
        signal_tree(process, first_signal);
        if first_signal != SIGKILL {
            let grace = Duration::from_millis(grace.unwrap_or(0));
            let process = process.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let still = {
                    let st = process.state();
                    st.run == run && st.status == ProcessStatus::Running
                };
                if still {
                    signal_tree(&process, SIGKILL);
                }
            });
        }
    }

    /// `DELETE /processes/{ref}`: stops supervision and the current run.
    pub fn kill(self: &Arc<Self>, process: &Arc<Process>, grace: Option<u64>) {
        let run = process.update(|st| {
            if let Some(m) = st.managed.as_mut() {
                m.stopped = true;
                if st.status != ProcessStatus::Running {
                    m.status = ManagedStatus::Stopped;
                    m.next_restart_at = None;
                }
            }
            st.run
        });
        self.stop_run(process, run, StopReason::Api, grace);
        self.persist(process);
    }

    /// `POST /processes/{ref}/signal`.
    pub fn signal(&self, process: &Process, signal: i32) -> Result<(), ApiError> {
        let pid = process.update(|st| {
            (st.status == ProcessStatus::Running).then(|| {
                st.api_signals |= 1 << signal;
                st.pid
            })
        });
        let pid =
            pid.ok_or_else(|| ApiError::new(ErrorCode::NotRunning, "the process is not running"))?;
        signal_group(pid, signal)
            .map_err(|e| ApiError::new(ErrorCode::NotRunning, format!("could not signal: {e}")))
    }

    /// `POST /processes/{ref}/restart`: ends the current run (stop signal, grace, SIGKILL) and
    /// starts a new one in the same record.
    pub async fn restart(self: &Arc<Self>, process: &Arc<Process>) -> Result<(), ApiError> {
        let (run, managed) = {
            let st = process.state();
            (st.run, st.managed.is_some())
        };
        if managed {
            // The supervisor must not also restart it: mark stopped while we do it by hand.
            process.update(|st| st.managed.as_mut().map(|m| m.stopped = true));
        }
        if process.is_running() {
            self.stop_run(process, run, StopReason::Api, Some(process.kill_grace_ms));
        }
        // Wait until the old run is recorded *and* its supervisor has settled (it sees
        // `stopped` and gives up); clearing `stopped` earlier could let it restart too.
        let settled = |p: &Process| {
            let st = p.state();
            st.status != ProcessStatus::Running
                && st
                    .managed
                    .as_ref()
                    .is_none_or(|m| m.status == ManagedStatus::Stopped)
        };
        let mut version = process.version.subscribe();
        let _ = version.wait_for(|_| settled(process)).await;
        process.update(|st| {
            if let Some(m) = st.managed.as_mut() {
                m.stopped = false;
                m.streak = 0;
            }
        });
        if !managed {
            let result = self.launch(process);
            result.map_err(|e| {
                ApiError::new(ErrorCode::SpawnFailed, format!("restart failed: {e}"))
            })?;
            self.table.index_pid(process.pid(), process.handle);
            self.persist(process);
            self.events
                .publish_process(EventKind::ProcessRestarted, process.info());
            return Ok(());
        }
        self.relaunch(process);
        if process.is_running() {
            Ok(())
        } else {
            let error = process
                .state()
                .managed
                .as_ref()
                .and_then(|m| m.last_error.clone());
            Err(ApiError::new(
                ErrorCode::SpawnFailed,
                error.unwrap_or_else(|| "restart failed".into()),
            ))
        }
    }

    /// Probes a managed process's health check until the record stops for good.
    async fn health_loop(self: Arc<Self>, process: Arc<Process>) {
        let Some(check) = process.spec.health_check.clone() else {
            return;
        };
        let interval = Duration::from_millis(check.interval_ms);
        let timeout = Duration::from_millis(check.timeout_ms.max(1));
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let (run, started_at, running, finished) = {
                let st = process.state();
                let finished = st
                    .managed
                    .as_ref()
                    .is_none_or(|m| m.status == ManagedStatus::Stopped)
                    && st.status != ProcessStatus::Running;
                (
                    st.run,
                    st.started_at,
                    st.status == ProcessStatus::Running,
                    finished,
                )
            };
            if finished || *shutdown.borrow() {
                return;
            }
            let since_start = (now_ms() - started_at).max(0) as u64;
            let wait = if since_start < check.initial_delay_ms {
                Duration::from_millis(check.initial_delay_ms - since_start)
            } else {
                interval
            };
            if running && since_start >= check.initial_delay_ms {
                let healthy = probe(&check, timeout).await;
                let changed = process.update(|st| {
                    if st.run != run || st.status != ProcessStatus::Running {
                        return false;
                    }
                    let Some(m) = st.managed.as_mut() else {
                        return false;
                    };
                    let before = m.health_status;
                    if healthy {
                        m.consecutive_health_failures = 0;
                        m.health_status = HealthStatus::Healthy;
                    } else {
                        m.consecutive_health_failures += 1;
                        if m.consecutive_health_failures >= check.failure_threshold {
                            m.health_status = HealthStatus::Unhealthy;
                        }
                    }
                    before != m.health_status
                });
                if changed {
                    self.persist(&process);
                    self.events
                        .publish_process(EventKind::ProcessHealth, process.info());
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One health probe against 127.0.0.1.
async fn probe(check: &crate::wire::HealthCheck, timeout: Duration) -> bool {
    use tokio::io::AsyncWriteExt;
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", check.port))
            .await
            .ok()?;
        if check.kind == HealthCheckType::Tcp {
            return Some(true);
        }
        let path = check.path.as_deref().unwrap_or("/");
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        // "HTTP/1.x NNN": 2xx and 3xx are healthy.
        Some(matches!(head.get(9), Some(b'2' | b'3')))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

fn signal_tree(process: &Process, signal: i32) {
    let st = process.state();
    let _ = signal_group(st.pid, signal);
    if let Some(leaf) = &st.leaf {
        // Members that left the process group (setsid) are still in the cgroup.
        leaf.signal_all(signal);
    }
}

/// Checks what every child is started from: a program, its arguments and its environment
/// (shared by processes and PTY sessions).
pub(crate) fn check_command(
    command: &str,
    args: &[String],
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if command.is_empty() {
        return Err(ApiError::invalid("`command` must not be empty"));
    }
    if command.contains('\0') || args.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid(
            "`command` and `args` must not contain NUL bytes",
        ));
    }
    if env
        .iter()
        .any(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
    {
        return Err(ApiError::invalid(
            "`env` names must be non-empty without `=` or NUL",
        ));
    }
    Ok(())
}

fn key_reused() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was already used with a different request",
    )
}

fn fingerprint(route: &str, body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    route.hash(&mut h);
    body.hash(&mut h);
    h.finish()
}

/// Reads one pipe into the output store until end of file.
async fn read_pipe(fd: OwnedFd, process: Arc<Process>, stream: StreamKind, max_line: usize) {
    let mut receiver = match pipe::Receiver::from_owned_fd(fd) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "output pipe unusable");
            process.output.close(stream);
            return;
        }
    };
    let mut splitter = LineSplitter::new(max_line);
    // Most children print little: start small and grow only when reads fill the buffer.
    let mut buf = vec![0u8; 8 << 10];
    loop {
        match receiver.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if n == buf.len() && buf.len() < READ_BUFFER_MAX {
                    buf.resize((buf.len() * 4).min(READ_BUFFER_MAX), 0);
                }
                let lines = splitter.feed(&buf[..n]);
                if !lines.is_empty() {
                    process.output.push_lines(stream, now_ms(), lines);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if let Some(last) = splitter.finish() {
        process.output.push_lines(stream, now_ms(), [last]);
    }
    process.output.close(stream);
}
