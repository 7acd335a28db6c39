//! Deletion: the Cleanup half of the finalizer. Kills the session (the daemon sends SIGHUP,
//! then SIGKILL after its grace period) and waits, bounded, until it ended. A target that is
//! gone for good never holds the deletion up. The token Secret goes with the object through its
//! ownerReference.

use std::time::Duration;

use kube::runtime::controller::Action;
use reqwest::StatusCode;
use tracing::{info, warn};

use crate::api::PtySession;
use crate::controller::daemons::OWNER_UID_LABEL;
use crate::controller::error::{Error, Result};
use crate::controller::object::identity;
use crate::controller::process::Context;
use crate::controller::process::gone_for_good;

/// How long one cleanup waits for the session to end before requeueing.
const WAIT: Duration = Duration::from_secs(10);

pub(super) async fn cleanup(obj: &PtySession, ctx: &Context) -> Result<Action> {
    let id = identity(obj)?;
    let Some(client) = ctx.cleanup_daemon(&id, &obj.spec.sandbox).await? else {
        return Ok(Action::await_change());
    };
    let sessions = match client.list_ptys().await {
        Ok(all) => all,
        Err(e) if gone_for_good(&e) => {
            warn!(namespace = id.namespace, name = id.name, error = %e, "daemon gone: dropping the finalizer");
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    let live: Vec<String> = sessions
        .into_iter()
        .filter(|s| s.is_alive && s.labels.get(OWNER_UID_LABEL) == Some(&id.uid))
        .map(|s| s.session_id)
        .collect();
    for session in &live {
        match ctx
            .metrics
            .daemon_call("kill_pty", client.kill_pty(session))
            .await
        {
            Ok(()) => {}
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {}
            Err(e) if gone_for_good(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    for session in &live {
        loop {
            match client.get_pty(session).await {
                Ok(s) if !s.is_alive => break,
                Ok(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::CleanupPending(format!("session {session}")));
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) || gone_for_good(&e) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    info!(
        namespace = id.namespace,
        name = id.name,
        killed = live.len(),
        "cleaned up"
    );
    Ok(Action::await_change())
}
