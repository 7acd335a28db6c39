//! Leader election with a coordination.k8s.io Lease, so only one replica reconciles.
//!
//! A plain acquire/renew loop: take the Lease when it is free or expired (optimistic
//! concurrency through `resourceVersion`), renew it every third of its duration, and report
//! leadership lost when renewing fails for longer than the duration. An API server without
//! Leases (the local control plane) is a clear startup error, never a silent no-op.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

/// Where and how long the Lease is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

/// Waits until this replica holds the Lease; then returns a future that completes when
/// leadership is lost (the caller shuts down).
pub async fn acquire(
    kube: kube::Client,
    cfg: LeaseConfig,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let api: Api<Lease> = Api::namespaced(kube, &cfg.namespace);
    loop {
        match try_take(&api, &cfg).await {
            Ok(true) => break,
            Ok(false) => tokio::time::sleep(cfg.duration / 3).await,
            Err(e) if super::target::not_served(&e) => {
                anyhow::bail!(
                    "leader election: the API server does not serve coordination.k8s.io Leases \
                     ({e}); run without --leader-elect"
                )
            }
            Err(e) => {
                warn!(error = %e, "leader election: cannot read or take the Lease; retrying");
                tokio::time::sleep(cfg.duration / 3).await;
            }
        }
    }
    info!(
        lease = cfg.name,
        identity = cfg.identity,
        "leader election: acquired"
    );
    Ok(async move {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(cfg.duration / 3).await;
            match try_take(&api, &cfg).await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!("leader election: another replica took the Lease");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "leader election: renewing failed");
                    if last_ok.elapsed() > cfg.duration {
                        return;
                    }
                }
            }
        }
    })
}

/// Takes or renews the Lease; `Ok(false)` when another live holder has it.
async fn try_take(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let secs = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        let held = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
        t.0.as_second().saturating_add(held) < now.0.as_second()
    });
    if !ours && !expired {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(secs);
    spec.renew_time = Some(now);
    // `replace` carries the resourceVersion we read: a concurrent taker makes this a 409.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
