//! Deletion: the Cleanup half of the finalizer.

use std::time::Duration;

use kube::runtime::controller::Action;
use reqwest::StatusCode;
use tracing::{info, warn};

use super::{Context, grace_ms, is_live};
use crate::api::SandboxProcess;
use crate::client::ClientError;
use crate::controller::daemons::OWNER_UID_LABEL;
use crate::controller::error::{Error, Result};
use crate::controller::object::identity;
use crate::wire::ProcessInfo;

/// Deletion: stop the process (stop signal, grace, SIGKILL) and wait for it to end. A target
/// that is gone for good (unresolvable, connection refused, not a daemon) does not hold the
/// deletion up.
pub(super) async fn cleanup(obj: &SandboxProcess, ctx: &Context) -> Result<Action> {
    let id = identity(obj)?;
    if obj.spec.attach.is_some() {
        // Inspect-only: the process was never ours to stop.
        return Ok(Action::await_change());
    }
    let Some(client) = ctx.cleanup_daemon(&id, &obj.spec.sandbox).await? else {
        return Ok(Action::await_change());
    };
    let found = match client.list(&[(OWNER_UID_LABEL, &id.uid)]).await {
        Ok(found) => found,
        Err(e) if gone_for_good(&e) => {
            warn!(namespace = id.namespace, name = id.name, error = %e, "daemon gone: dropping the finalizer");
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    let grace = grace_ms(&obj.spec);
    let live: Vec<&ProcessInfo> = found.iter().filter(|i| is_live(i)).collect();
    for info in &live {
        match ctx
            .metrics
            .daemon_call("kill", client.kill(&info.pid.to_string(), Some(grace)))
            .await
        {
            Ok(()) => {}
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {}
            Err(e) if gone_for_good(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    // Wait (bounded, so a worker is not held forever) until each has ended; the error requeues.
    let limit = Duration::from_millis(grace.saturating_add(2000)).min(Duration::from_secs(20));
    for info in &live {
        match client.wait(&info.pid.to_string(), limit).await {
            Ok(i) if !is_live(&i) => {}
            Ok(_) => return Err(Error::CleanupPending(format!("pid {}", info.pid))),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {}
            Err(e) if gone_for_good(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    ctx.stopping
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id.uid);
    info!(
        namespace = id.namespace,
        name = id.name,
        stopped = live.len(),
        "cleaned up"
    );
    Ok(Action::await_change())
}

/// The daemon is not there (refused) or the URL is not a daemon (404 on the list route).
pub(in crate::controller) fn gone_for_good(e: &ClientError) -> bool {
    e.is_connect() || e.status() == Some(StatusCode::NOT_FOUND)
}
