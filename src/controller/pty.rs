//! The `PtySession` reconciler: the same pipeline as [`super::process`] (resolve the target,
//! observe the daemon, plan, apply, write the status only when it changed), sharing its
//! context, target resolution, event streams, finalizer handling and status writer.
//!
//! Invariants worth knowing:
//! - The session is created with `Idempotency-Key: <uid>` and the owner labels, and looked up
//!   by label before anything is created, so a crash anywhere never creates a second session.
//! - The attach token is a credential: it goes into a Secret owned by the object
//!   ([`secret`]) and nowhere else, never into status, events or logs. A token that cannot be
//!   stored (no core API) is said in the `TokenStored` condition.
//! - `Exited`, `Expired` and `Lost` are terminal: a session is never re-created behind the
//!   user's back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};
use reqwest::StatusCode;
use tracing::info;

use super::conditions::{self, STALLED};
use super::daemons::{OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL, OWNER_UID_LABEL};
use super::error::{Error, Result};
use super::events::EventType;
use super::object::{Identity, identity, now, write_status};
use super::process::{Context, boot_id, resolve_env, start_rejected};
use super::target::Resolved;
use crate::api::{
    FINALIZER, PtyPhase, PtySession, PtySessionSpec, PtySessionStatus, ResolvedTarget, Time,
};
use crate::client::Client;
use crate::wire::{CreatePtyRequest, ErrorCode, PtySessionInfo, UserSpec};

mod cleanup;
pub mod secret;
mod status;

pub use status::{Observation, TokenState, desired_status, phase_of};

/// The controller's reconcile function.
pub async fn reconcile(obj: Arc<PtySession>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let id = identity(&*obj)?;
    let api: Api<PtySession> = Api::namespaced(ctx.kube.clone(), &id.namespace);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(obj) => apply(&obj, &ctx, &api).await,
            Event::Cleanup(obj) => cleanup::cleanup(&obj, &ctx).await,
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

async fn apply(obj: &PtySession, ctx: &Context, api: &Api<PtySession>) -> Result<Action> {
    let id = identity(obj)?;
    let prev = obj.status.clone().unwrap_or_default();
    let now = now();
    if prev
        .phase
        .is_some_and(|p| p == PtyPhase::Lost || p.is_finished())
    {
        return Ok(Action::await_change());
    }

    let resolved = match ctx.resolve(&id.namespace, &obj.spec.sandbox).await {
        Ok(r) => r,
        Err(Error::Target(message)) => {
            return stall(obj, ctx, api, &prev, "TargetUnresolvable", message, &now).await;
        }
        Err(e) => return Err(e),
    };
    let client = ctx.daemon(&resolved);
    ctx.hub.watch(&client);
    let boot_id = boot_id(ctx, &client).await?;
    let resolved_target = ResolvedTarget {
        pod_name: resolved.pod_name.clone(),
        pod_uid: resolved.pod_uid.clone(),
        endpoint: Some(resolved.endpoint.clone()),
        boot_id: Some(boot_id.clone()),
    };

    let mut info = observe(ctx, &client, &id.uid, &boot_id).await?;
    let lost = is_lost(&prev, info.as_ref(), &resolved);
    let mut token = TokenState::from_status(&prev);

    if !lost && wants_session(&prev, info.as_ref(), token) {
        let env = match resolve_env(&ctx.kube, &id.namespace, &obj.spec.env).await {
            Ok(env) => env,
            Err(Error::Target(message)) => {
                return stall(obj, ctx, api, &prev, "EnvUnresolvable", message, &now).await;
            }
            Err(e) => return Err(e),
        };
        let req = build_request(&obj.spec, &id, env);
        // A new session, or (same key, same body) the first answer again: how the token of a
        // session created before a crash is recovered.
        match ctx
            .metrics
            .daemon_call("create_pty", client.create_pty_idempotent(&req, &id.uid))
            .await
        {
            Ok(created) => {
                token = secret::store(ctx, obj, &id, &created, &resolved.endpoint).await?;
                if info.is_none() {
                    info!(
                        namespace = id.namespace,
                        name = id.name,
                        session = created.session_id,
                        endpoint = resolved.endpoint,
                        "session created"
                    );
                    info = Some(
                        ctx.metrics
                            .daemon_call("get_pty", client.get_pty(&created.session_id))
                            .await?,
                    );
                }
            }
            // The spec's size changed since the session was created, so the first answer
            // cannot be replayed: the token of this session is gone for good.
            Err(e) if info.is_some() && e.code() == Some(ErrorCode::IdempotencyKeyReused) => {
                token = TokenState::Unrecoverable;
            }
            Err(e) if start_rejected(&e) => {
                return stall(obj, ctx, api, &prev, "CreateRejected", e.to_string(), &now).await;
            }
            Err(e) => return Err(e.into()),
        }
    }

    if !lost
        && let Some(live) = info.as_ref().filter(|i| i.is_alive)
        && let Some((rows, cols)) = resize_to(&obj.spec, live)
    {
        match ctx
            .metrics
            .daemon_call(
                "resize_pty",
                client.resize_pty(&live.session_id, rows, cols),
            )
            .await
        {
            Ok(()) => {
                info = Some(
                    ctx.metrics
                        .daemon_call("get_pty", client.get_pty(&live.session_id))
                        .await?,
                );
            }
            // Ended in between: the next observation says so.
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {}
            Err(e) => return Err(e.into()),
        }
    }

    let status = desired_status(
        obj.meta().generation,
        &prev,
        Observation {
            info: info.as_ref(),
            lost,
            target: resolved_target,
            token,
            token_secret_name: token
                .stored()
                .then(|| secret::name_for(&id.name))
                .or(prev.token_secret_name.clone()),
            stall: None,
        },
        &now,
    );
    write_status(api, &id.name, obj.status.as_ref(), &status).await?;
    publish_transition(ctx, obj, &prev, &status).await;
    if status.phase != prev.phase {
        let finished = status.phase.is_some_and(PtyPhase::is_finished);
        ctx.metrics.phase_changed(
            obj,
            status.phase == Some(PtyPhase::Active),
            info.as_ref().and_then(|i| i.ended_at).filter(|_| finished),
        );
    }

    Ok(match status.phase.unwrap_or(PtyPhase::Pending) {
        PtyPhase::Pending => Action::requeue(Duration::from_secs(2)),
        // Followed through the daemon's event stream; the requeue refreshes lastActivityAt,
        // which changes with every keystroke and so has no event of its own.
        PtyPhase::Active => Action::requeue(Duration::from_secs(60)),
        _ => Action::await_change(),
    })
}

/// Whether the create call is needed: no session yet, or a live one whose token was never
/// stored (the operator stopped between the create and the Secret write).
fn wants_session(
    prev: &PtySessionStatus,
    info: Option<&PtySessionInfo>,
    token: TokenState,
) -> bool {
    match info {
        None => prev.session_id.is_none(),
        Some(i) => i.is_alive && token == TokenState::Pending,
    }
}

/// The size to resize to, when the spec asks for another than the terminal has.
pub fn resize_to(spec: &PtySessionSpec, info: &PtySessionInfo) -> Option<(u16, u16)> {
    let rows = u16::try_from(spec.rows).ok()?;
    let cols = u16::try_from(spec.cols).ok()?;
    ((rows, cols) != (info.rows, info.cols)).then_some((rows, cols))
}

/// Marks the object Stalled and retries slowly.
async fn stall(
    obj: &PtySession,
    ctx: &Context,
    api: &Api<PtySession>,
    prev: &PtySessionStatus,
    reason: &str,
    message: String,
    now: &Time,
) -> Result<Action> {
    ctx.stalled(&identity(obj)?, reason, &message);
    let status = desired_status(
        obj.meta().generation,
        prev,
        Observation {
            info: None,
            lost: false,
            target: prev.target.clone().unwrap_or_default(),
            token: TokenState::from_status(prev),
            token_secret_name: prev.token_secret_name.clone(),
            stall: Some((reason, message)),
        },
        now,
    );
    write_status(api, &obj.name_any(), obj.status.as_ref(), &status).await?;
    publish_transition(ctx, obj, prev, &status).await;
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// One Event per phase change, one when the object becomes Stalled, one when the token could
/// not be stored.
async fn publish_transition(
    ctx: &Context,
    obj: &PtySession,
    prev: &PtySessionStatus,
    status: &PtySessionStatus,
) {
    if let Some(c) = conditions::turned_true(&prev.conditions, &status.conditions, STALLED) {
        ctx.events
            .publish(obj, EventType::Warning, "Stalled", c.message.clone())
            .await;
    }
    let token_failed = |s: &PtySessionStatus| {
        s.conditions.iter().any(|c| {
            c.type_ == status::TOKEN_STORED && c.status == "False" && c.reason != "Pending"
        })
    };
    if token_failed(status) && !token_failed(prev) {
        let message = condition_message(status, status::TOKEN_STORED);
        ctx.events
            .publish(obj, EventType::Warning, "TokenNotStored", message)
            .await;
    }
    let Some(phase) = status.phase.filter(|p| prev.phase != Some(*p)) else {
        return;
    };
    let (type_, reason) = match phase {
        PtyPhase::Pending => return,
        PtyPhase::Active => (EventType::Normal, "Active"),
        PtyPhase::Exited => (EventType::Normal, "Exited"),
        PtyPhase::Expired => (EventType::Normal, "Expired"),
        PtyPhase::Lost => (EventType::Warning, "Lost"),
    };
    ctx.events
        .publish(obj, type_, reason, status::phase_message(phase, status))
        .await;
}

fn condition_message(status: &PtySessionStatus, type_: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// The object's session as the daemon knows it, or `None` when it has no record.
async fn observe(
    ctx: &Context,
    client: &Client,
    uid: &str,
    boot_id: &str,
) -> Result<Option<PtySessionInfo>> {
    // The hub's view is fresh while its stream is up for this boot; anything it lacks is asked
    // for, so a session is never created twice because an event was still in flight.
    if let Some(view) = ctx.hub.view(client.base_url())
        && view.connected
        && view.boot_id.as_deref() == Some(boot_id)
        && let Some(info) = view.sessions.get(uid)
    {
        return Ok(Some(info.clone()));
    }
    let all = ctx
        .metrics
        .daemon_call("list_ptys", client.list_ptys())
        .await?;
    Ok(owned_by(all, uid))
}

/// The newest of the sessions labelled with owner `uid`.
pub fn owned_by(sessions: Vec<PtySessionInfo>, uid: &str) -> Option<PtySessionInfo> {
    sessions
        .into_iter()
        .filter(|s| s.labels.get(OWNER_UID_LABEL).map(String::as_str) == Some(uid))
        .max_by_key(|s| s.created_at)
}

/// Whether the object's session is gone with its daemon or Pod incarnation.
pub fn is_lost(
    prev: &PtySessionStatus,
    info: Option<&PtySessionInfo>,
    resolved: &Resolved,
) -> bool {
    let prev_pod_uid = prev.target.as_ref().and_then(|t| t.pod_uid.as_deref());
    if prev_pod_uid.is_some() && prev_pod_uid != resolved.pod_uid.as_deref() {
        return true;
    }
    match info {
        Some(info) => info.end_reason == Some(crate::wire::PtyEndReason::Lost),
        // We had a session and the daemon has no record of it: the truth is unknown.
        None => prev.session_id.is_some(),
    }
}

/// The create request for a spec (pure). `env` holds the resolved values of `spec.env`.
pub fn build_request(
    spec: &PtySessionSpec,
    id: &Identity,
    env: BTreeMap<String, String>,
) -> CreatePtyRequest {
    let mut labels = spec.labels.clone();
    // The owner labels win over user labels of the same key: adoption depends on them.
    labels.insert(OWNER_UID_LABEL.into(), id.uid.clone());
    labels.insert(OWNER_NAMESPACE_LABEL.into(), id.namespace.clone());
    labels.insert(OWNER_NAME_LABEL.into(), id.name.clone());
    CreatePtyRequest {
        command: spec.command.clone(),
        args: spec.args.clone(),
        env,
        working_dir: spec.working_dir.clone(),
        rows: Some(spec.rows.into()),
        cols: Some(spec.cols.into()),
        user: spec.user.clone().map(UserSpec::Text),
        labels,
        idle_timeout_secs: Some(u64::try_from(spec.idle_timeout_seconds).unwrap_or(0)),
        ttl_secs: spec.ttl_seconds.map(|s| u64::try_from(s).unwrap_or(0)),
        memory_limit_bytes: spec.memory_limit_bytes.and_then(|b| u64::try_from(b).ok()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
