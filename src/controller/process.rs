//! The `SandboxProcess` reconciler, as a pipeline: fetch (the object, handed in by the
//! controller) -> validate/resolve (target, token, env) -> observe (the daemon's view) -> plan
//! and build (pure: the start request, the desired status) -> apply (daemon calls) -> status
//! (server-side apply, only when it changed).
//!
//! Invariants worth knowing:
//! - The process is found by its owner-uid label before anything is started, and the start
//!   carries `Idempotency-Key: <uid>`, so a crash anywhere never starts a second process.
//! - `Lost` and the finished phases are terminal: the operator never re-runs a process the
//!   user did not ask to run again (restarts are the daemon's job under `restartPolicy`).
//! - Status is bound to the daemon's boot id and the Pod UID; a missing record of a process we
//!   had a pid for means it is `Lost`, never a stale `Running`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};
use reqwest::StatusCode;
use tracing::{debug, info, warn};

use super::conditions::{self, STALLED};
use super::daemons::{DaemonHub, OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL, OWNER_UID_LABEL};
use super::error::{Error, Result};
use super::events::{EventType, Recorder};
use super::metrics::Metrics;
pub use super::object::FIELD_MANAGER;
use super::object::{Identity, identity, now, write_status};
use super::target::{self, Resolved};
use crate::api::{
    DesiredState, EnvVar, FINALIZER, OutputMode, ProcessPhase, ResolvedTarget, RestartPolicy,
    SandboxProcess, SandboxProcessSpec, SandboxProcessStatus, SandboxTarget, StdinMode, Time,
};
use crate::client::{Client, ClientError, OutputStream};
use crate::wire::{
    self, ExitReason, ManagedStatus, ProcessInfo, ProcessStatus, RestartConfig, SignalSpec,
    StartProcessRequest, UserSpec,
};

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub kube: kube::Client,
    /// One event stream per daemon.
    pub hub: DaemonHub,
    /// One HTTP connection pool for all daemons.
    pub http: reqwest::Client,
    /// The operator-wide daemon token, for targets without `tokenSecretRef`.
    pub token_file: Option<PathBuf>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Events on transitions (best effort).
    pub events: Recorder,
    /// Consecutive failures per object uid, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Processes (uid -> daemon handle) a stop was already sent to, so a reconcile during the
    /// grace period does not send it again.
    stopping: Mutex<HashMap<String, u64>>,
}

impl Context {
    /// A context; `hub` must send its changes to the controller (see `run`).
    pub fn new(
        kube: kube::Client,
        hub: DaemonHub,
        token_file: Option<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self {
            hub,
            http,
            events: Recorder::new(
                kube.clone(),
                format!("sandbox-operator-{}", std::process::id()),
            ),
            kube,
            token_file,
            metrics,
            failures: Mutex::new(HashMap::new()),
            stopping: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets the failure count of `uid` after a successful reconcile.
    pub(super) fn succeeded(&self, uid: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// Resolves `sandbox` for an object in `namespace` (the operator-wide token file as the
    /// fallback token).
    pub(super) async fn resolve(
        &self,
        namespace: &str,
        sandbox: &SandboxTarget,
    ) -> Result<Resolved> {
        target::resolve(&self.kube, namespace, sandbox, self.token_file.as_deref()).await
    }

    /// The daemon to clean up on for a deleted object, with retries; `None` when the target is
    /// gone for good (deletion must not hang on it).
    pub(super) async fn cleanup_daemon(
        &self,
        id: &Identity,
        sandbox: &SandboxTarget,
    ) -> Result<Option<Client>> {
        match self.resolve(&id.namespace, sandbox).await {
            Ok(resolved) => Ok(Some(self.daemon(&resolved).with_retry(
                crate::client::Retry {
                    attempts: 3,
                    initial: Duration::from_millis(100),
                    max: Duration::from_millis(500),
                },
            ))),
            Err(Error::Target(message)) => {
                warn!(
                    namespace = id.namespace,
                    name = id.name,
                    message,
                    "target gone: dropping the finalizer"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Logs and counts an object becoming Stalled (its status says why).
    pub(super) fn stalled(&self, id: &Identity, reason: &str, message: &str) {
        warn!(
            namespace = id.namespace,
            name = id.name,
            reason,
            message,
            "stalled"
        );
        self.metrics
            .failed(Error::Target(String::new()).metric_label());
    }

    pub(super) fn daemon(&self, resolved: &Resolved) -> Client {
        Client::with_http(
            self.http.clone(),
            &resolved.endpoint,
            resolved.token.clone(),
        )
    }
}

/// The controller's reconcile function.
pub async fn reconcile(obj: Arc<SandboxProcess>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let id = identity(&*obj)?;
    let api: Api<SandboxProcess> = Api::namespaced(ctx.kube.clone(), &id.namespace);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(obj) => apply(&obj, &ctx, &api).await,
            Event::Cleanup(obj) => cleanup(&obj, &ctx).await,
        }
    })
    .await
    .map_err(Error::from);
    ctx.metrics.reconciled(started);
    if result.is_ok() {
        ctx.succeeded(&id.uid);
    }
    result
}

/// The controller's error policy: count the error, requeue with per-object exponential backoff.
/// Shared by every kind: failures are counted per object uid.
pub fn error_policy<K: Resource>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.metric_label());
    let uid = obj.uid().unwrap_or_default();
    let attempt = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    warn!(
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
        error = %error,
        attempt,
        "reconcile failed"
    );
    if matches!(error, Error::CleanupPending(_)) {
        return Action::requeue(Duration::from_millis(500));
    }
    let backoff = super::daemons::Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(60),
    };
    Action::requeue(backoff.delay(attempt.saturating_sub(1)))
}

// ------------------------------------------------------------------------------------ apply

async fn apply(obj: &SandboxProcess, ctx: &Context, api: &Api<SandboxProcess>) -> Result<Action> {
    let id = identity(obj)?;
    let prev = obj.status.clone().unwrap_or_default();
    let now = now();
    // Terminal phases: nothing more to ask of the daemon (and it may be gone).
    match prev.phase {
        Some(ProcessPhase::Lost) => return Ok(Action::await_change()),
        Some(phase) if phase.is_finished() => return ttl(obj, &prev, api, &id).await,
        _ => {}
    }

    let resolved = match ctx.resolve(&id.namespace, &obj.spec.sandbox).await {
        Ok(r) => r,
        Err(Error::Target(message)) => {
            return stall(obj, ctx, api, &prev, "TargetUnresolvable", message, &now).await;
        }
        Err(e) => return Err(e),
    };
    let client = ctx.daemon(&resolved);
    if obj.spec.attach.is_none() {
        ctx.hub.watch(&client);
    }
    let boot_id = boot_id(ctx, &client).await?;
    let resolved_target = ResolvedTarget {
        pod_name: resolved.pod_name.clone(),
        pod_uid: resolved.pod_uid.clone(),
        endpoint: Some(resolved.endpoint.clone()),
        boot_id: Some(boot_id.clone()),
    };

    let mut info = observe(ctx, &client, obj, &id.uid, &boot_id).await?;
    let lost = is_lost(&prev, info.as_ref(), &resolved);

    match plan(&obj.spec, &prev, info.as_ref(), lost) {
        Step::Start => {
            let env = match resolve_env(&ctx.kube, &id.namespace, &obj.spec.env).await {
                Ok(env) => env,
                Err(Error::Target(message)) => {
                    return stall(obj, ctx, api, &prev, "EnvUnresolvable", message, &now).await;
                }
                Err(e) => return Err(e),
            };
            let req = build_request(&obj.spec, &id.namespace, &id.name, &id.uid, env);
            let started = match ctx
                .metrics
                .daemon_call("start", client.start_idempotent(&req, &id.uid))
                .await
            {
                Ok(started) => started,
                // The daemon refused the request itself (bad command, user, directory; a
                // wrong token): retrying soon cannot help, so say so in the status.
                Err(e) if start_rejected(&e) => {
                    return stall(obj, ctx, api, &prev, "StartRejected", e.to_string(), &now).await;
                }
                Err(e) => return Err(e.into()),
            };
            info!(
                namespace = id.namespace,
                name = id.name,
                pid = started.pid,
                endpoint = resolved.endpoint,
                "started"
            );
            info = Some(started);
        }
        Step::Stop { pid, handle } => {
            let already = ctx
                .stopping
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id.uid)
                == Some(&handle);
            if !already {
                let grace_ms = grace_ms(&obj.spec);
                match ctx
                    .metrics
                    .daemon_call("kill", client.kill(&pid.to_string(), Some(grace_ms)))
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {}
                    Err(e) => return Err(e.into()),
                }
                ctx.stopping
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.uid.clone(), handle);
                info!(
                    namespace = id.namespace,
                    name = id.name,
                    pid,
                    grace_ms,
                    "stop sent"
                );
            }
        }
        Step::Nothing => {}
    }

    let finished = info
        .as_ref()
        .is_some_and(|i| phase_of(i, obj.spec.state == DesiredState::Stopped).is_finished());
    let output_tail =
        if finished && obj.spec.output == OutputMode::Capture && prev.output_tail.is_empty() {
            let reference = info.as_ref().map(|i| i.pid.to_string()).unwrap_or_default();
            match ctx
                .metrics
                .daemon_call("output", client.output(&reference, OutputStream::Output))
                .await
            {
                Ok(out) => tail(&out.lines),
                // The tail is a convenience: never fail the status over it.
                Err(e) => {
                    debug!(error = %e, "no output tail");
                    Vec::new()
                }
            }
        } else {
            prev.output_tail.clone()
        };
    if finished {
        ctx.stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id.uid);
    }

    let status = desired_status(
        &obj.spec,
        obj.meta().generation,
        &prev,
        Observation {
            info: info.as_ref(),
            lost,
            target: resolved_target,
            output_tail,
            stall: None,
        },
        &now,
    );
    write_status(api, &id.name, obj.status.as_ref(), &status).await?;
    publish_transition(ctx, obj, &prev, &status).await;
    if status.phase != prev.phase {
        let finished = status.phase.is_some_and(ProcessPhase::is_finished);
        ctx.metrics.phase_changed(
            obj,
            status.phase == Some(ProcessPhase::Running) && prev.pid.is_none(),
            info.as_ref().and_then(|i| i.ended_at).filter(|_| finished),
        );
    }

    let phase = status.phase.unwrap_or(ProcessPhase::Pending);
    if info.as_ref().is_some_and(settling) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    Ok(match phase {
        p if p.is_finished() => return ttl(obj, &status, api, &id).await,
        ProcessPhase::Lost => Action::await_change(),
        ProcessPhase::Pending => Action::requeue(Duration::from_secs(2)),
        // Attached processes carry no owner label, so no daemon event names them: poll.
        ProcessPhase::Running if obj.spec.attach.is_some() => {
            Action::requeue(Duration::from_secs(5))
        }
        // Owned processes are followed through the daemon's event stream; the requeue is only
        // a safety net.
        _ => Action::requeue(Duration::from_secs(300)),
    })
}

/// Marks the object Stalled (the target or its inputs cannot be resolved) and retries slowly.
async fn stall(
    obj: &SandboxProcess,
    ctx: &Context,
    api: &Api<SandboxProcess>,
    prev: &SandboxProcessStatus,
    reason: &str,
    message: String,
    now: &Time,
) -> Result<Action> {
    ctx.stalled(&identity(obj)?, reason, &message);
    let status = desired_status(
        &obj.spec,
        obj.meta().generation,
        prev,
        Observation {
            info: None,
            lost: false,
            target: prev.target.clone().unwrap_or_default(),
            output_tail: prev.output_tail.clone(),
            stall: Some((reason, message)),
        },
        now,
    );
    write_status(api, &obj.name_any(), obj.status.as_ref(), &status).await?;
    publish_transition(ctx, obj, prev, &status).await;
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// Whether the daemon refused a start for a reason a retry cannot fix.
pub(super) fn start_rejected(e: &ClientError) -> bool {
    use crate::wire::ErrorCode;
    matches!(
        e.code(),
        Some(
            ErrorCode::SpawnFailed
                | ErrorCode::InvalidRequest
                | ErrorCode::Unauthorized
                | ErrorCode::InvalidToken
        )
    )
}

/// One Event per phase change, and one when the object becomes Stalled.
async fn publish_transition(
    ctx: &Context,
    obj: &SandboxProcess,
    prev: &SandboxProcessStatus,
    status: &SandboxProcessStatus,
) {
    if let Some(c) = conditions::turned_true(&prev.conditions, &status.conditions, STALLED) {
        ctx.events
            .publish(obj, EventType::Warning, "Stalled", c.message.clone())
            .await;
    }
    let Some(phase) = status.phase.filter(|p| prev.phase != Some(*p)) else {
        return;
    };
    let (type_, reason) = match phase {
        ProcessPhase::Pending => return,
        ProcessPhase::Running => (EventType::Normal, "Started"),
        ProcessPhase::Succeeded => (EventType::Normal, "Succeeded"),
        ProcessPhase::Stopped => (EventType::Normal, "Stopped"),
        ProcessPhase::Failed => (EventType::Warning, "Failed"),
        ProcessPhase::Lost => (EventType::Warning, "Lost"),
    };
    ctx.events
        .publish(obj, type_, reason, phase_message(phase, status))
        .await;
}

/// Deletes a finished object once `ttlSecondsAfterFinished` passed, else requeues for then.
async fn ttl(
    obj: &SandboxProcess,
    status: &SandboxProcessStatus,
    api: &Api<SandboxProcess>,
    id: &Identity,
) -> Result<Action> {
    let (Some(ttl), Some(ended)) = (obj.spec.ttl_seconds_after_finished, &status.ended_at) else {
        return Ok(Action::await_change());
    };
    let due = ended.0.as_second().saturating_add(ttl);
    let left = due - Timestamp::now().as_second();
    if left > 0 {
        return Ok(Action::requeue(Duration::from_secs(left as u64)));
    }
    if obj.meta().deletion_timestamp.is_none() {
        info!(
            namespace = id.namespace,
            name = id.name,
            "ttlSecondsAfterFinished passed: deleting"
        );
        match api.delete(&id.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}

/// The daemon's current boot id: the hub's when it is connected, else asked.
pub(super) async fn boot_id(ctx: &Context, client: &Client) -> Result<String> {
    if let Some(view) = ctx.hub.view(client.base_url()).filter(|v| v.connected)
        && let Some(boot) = view.boot_id
    {
        return Ok(boot);
    }
    Ok(ctx
        .metrics
        .daemon_call("info", client.info())
        .await?
        .boot_id)
}

/// The object's process as the daemon knows it, or `None` when the daemon has no record.
async fn observe(
    ctx: &Context,
    client: &Client,
    obj: &SandboxProcess,
    uid: &str,
    boot_id: &str,
) -> Result<Option<ProcessInfo>> {
    if let Some(attach) = &obj.spec.attach {
        let reference = match (&attach.pid, &attach.name) {
            (Some(pid), _) => pid.to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => return Err(Error::InvalidObject("attach names nothing".into())),
        };
        return match ctx.metrics.daemon_call("get", client.get(&reference)).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e.into()),
        };
    }
    // The hub's view is fresh while its stream is up for this boot; anything it lacks is asked
    // for by label, so a process is never started twice because an event was still in flight.
    if let Some(view) = ctx.hub.view(client.base_url())
        && view.connected
        && view.boot_id.as_deref() == Some(boot_id)
        && let Some(info) = view.processes.get(uid)
        && !settling(info)
    {
        return Ok(Some(info.clone()));
    }
    let found = ctx
        .metrics
        .daemon_call("list", client.list(&[(OWNER_UID_LABEL, uid)]))
        .await?;
    Ok(newest(found))
}

/// A managed process whose run ended while the daemon has not yet decided whether to restart
/// it: the exit event carries the old managed state and no event follows the decision, so such
/// a record is re-read from the daemon (and re-checked shortly) instead of trusted.
fn settling(info: &ProcessInfo) -> bool {
    info.status != ProcessStatus::Running
        && info
            .managed
            .as_ref()
            .is_some_and(|m| matches!(m.status, ManagedStatus::Starting | ManagedStatus::Running))
}

/// The most recent of several records (a daemon keeps ended processes for a while).
fn newest(found: Vec<ProcessInfo>) -> Option<ProcessInfo> {
    found.into_iter().max_by_key(|i| i.handle)
}

/// Whether the object's process is gone with its daemon or Pod incarnation.
pub fn is_lost(
    prev: &SandboxProcessStatus,
    info: Option<&ProcessInfo>,
    resolved: &Resolved,
) -> bool {
    let prev_pod_uid = prev.target.as_ref().and_then(|t| t.pod_uid.as_deref());
    if prev_pod_uid.is_some() && prev_pod_uid != resolved.pod_uid.as_deref() {
        return true;
    }
    match info {
        Some(info) => info.exit_reason == Some(ExitReason::Lost),
        // We had a pid and the daemon has no record: it restarted without its state (or the
        // record was dropped); either way the truth is unknown.
        None => prev.pid.is_some(),
    }
}

// ------------------------------------------------------------------------------------ plan

/// What the apply step does to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Start the process.
    Start,
    /// Send the stop signal, then SIGKILL after the grace period.
    Stop { pid: i32, handle: u64 },
    /// Nothing: observe only.
    Nothing,
}

/// Decides the daemon call (pure).
pub fn plan(
    spec: &SandboxProcessSpec,
    prev: &SandboxProcessStatus,
    info: Option<&ProcessInfo>,
    lost: bool,
) -> Step {
    // Attach is inspect-only: never start, never kill what we did not start.
    if lost || spec.attach.is_some() {
        return Step::Nothing;
    }
    match (info, spec.state) {
        (Some(i), DesiredState::Stopped) if is_live(i) => Step::Stop {
            pid: i.pid,
            handle: i.handle,
        },
        (None, DesiredState::Running) if prev.pid.is_none() => Step::Start,
        _ => Step::Nothing,
    }
}

/// Whether the process runs or will run again (a managed process between restarts).
fn is_live(info: &ProcessInfo) -> bool {
    info.status == ProcessStatus::Running
        || info.managed.as_ref().is_some_and(|m| {
            matches!(
                m.status,
                ManagedStatus::Starting | ManagedStatus::Running | ManagedStatus::BackingOff
            )
        })
}

/// The start request for a spec (pure). `env` holds the resolved values of `spec.env`.
pub fn build_request(
    spec: &SandboxProcessSpec,
    namespace: &str,
    name: &str,
    uid: &str,
    env: BTreeMap<String, String>,
) -> StartProcessRequest {
    let mut labels = spec.labels.clone();
    // The owner labels win over user labels of the same key: adoption depends on them.
    labels.insert(OWNER_UID_LABEL.into(), uid.into());
    labels.insert(OWNER_NAMESPACE_LABEL.into(), namespace.into());
    labels.insert(OWNER_NAME_LABEL.into(), name.into());
    let output = match spec.output {
        OutputMode::Capture => wire::OutputMode::Capture,
        OutputMode::Discard => wire::OutputMode::Discard,
    };
    let restart = match spec.restart_policy {
        RestartPolicy::Never => None,
        RestartPolicy::OnFailure => Some(wire::RestartPolicy::OnFailure),
        RestartPolicy::Always => Some(wire::RestartPolicy::Always),
    }
    .map(|policy| RestartConfig {
        policy,
        max_restarts: None,
        initial_backoff_ms: 500,
        max_backoff_ms: 30_000,
    });
    StartProcessRequest {
        command: spec.command.clone().unwrap_or_default(),
        args: spec.args.clone(),
        env,
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone().map(UserSpec::Text),
        stdin_mode: match spec.stdin {
            StdinMode::Closed => wire::StdinMode::Closed,
            StdinMode::Pipe => wire::StdinMode::Pipe,
        },
        stdout_mode: output,
        stderr_mode: output,
        restart,
        labels,
        timeout_ms: spec
            .timeout_seconds
            .map(|s| u64::try_from(s).unwrap_or(0).saturating_mul(1000)),
        memory_limit_bytes: spec.memory_limit_bytes.and_then(|b| u64::try_from(b).ok()),
        stop_signal: Some(SignalSpec::Name(spec.stop_signal.clone())),
        kill_grace_ms: Some(grace_ms(spec)),
        ..Default::default()
    }
}

fn grace_ms(spec: &SandboxProcessSpec) -> u64 {
    u64::try_from(spec.termination_grace_period_seconds)
        .unwrap_or(0)
        .saturating_mul(1000)
}

/// Literal env values as they are; `valueFrom` Secret keys read from the core API.
pub(super) async fn resolve_env(
    kube: &kube::Client,
    namespace: &str,
    vars: &[EnvVar],
) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for var in vars {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                let sel = &from.secret_key_ref;
                let secret = Api::<Secret>::namespaced(kube.clone(), namespace)
                    .get(&sel.name)
                    .await
                    .map_err(|e| match e {
                        e if target::not_served(&e)
                            || matches!(&e, kube::Error::Api(s) if s.code == 404) =>
                        {
                            Error::Target(format!(
                            "env {}: Secret {namespace}/{} not readable (missing, or no core API)",
                            var.name, sel.name
                        ))
                        }
                        e => Error::Kube(e),
                    })?;
                let bytes = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&sel.key))
                    .ok_or_else(|| {
                        Error::Target(format!(
                            "env {}: Secret {namespace}/{} has no key {}",
                            var.name, sel.name, sel.key
                        ))
                    })?;
                String::from_utf8_lossy(&bytes.0).into_owned()
            }
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    Ok(env)
}

mod cleanup;
mod status;
use cleanup::cleanup;
pub(super) use cleanup::gone_for_good;
use status::phase_message;
pub use status::{Observation, desired_status, phase_of, tail};

#[cfg(test)]
mod tests;
