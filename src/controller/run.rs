//! `sandbox-operator run`: the controllers, the daemon hub wired into them, the metrics and
//! health server, optional leader election, and graceful shutdown on SIGTERM / Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures_util::future::{BoxFuture, Shared};
use futures_util::{FutureExt, StreamExt};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::daemons::{Change, DaemonHub, OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL};
use super::leader::{self, LeaseConfig};
use super::metrics::Metrics;
use super::process::{self, Context};
use super::pty;
use super::target;
use crate::api::{ProcessPhase, PtyPhase, PtySession, SandboxProcess, SandboxTarget};

/// Flags (and environment variables) of `sandbox-operator run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// The kubeconfig to use; default: $KUBECONFIG, ~/.kube/config, then in-cluster.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// A namespace to watch; repeat for several. Default: all namespaces.
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// How many objects are reconciled at once (0 = no limit).
    #[arg(long, default_value_t = 16, env = "SANDBOX_OPERATOR_CONCURRENCY")]
    pub concurrency: u16,
    /// The daemons' bearer token, for targets without `tokenSecretRef`.
    #[arg(long, env = "SANDBOX_OPERATOR_DAEMON_TOKEN_FILE", value_name = "PATH")]
    pub daemon_token_file: Option<PathBuf>,
    /// Where `/metrics`, `/livez` and `/readyz` are served.
    #[arg(
        long,
        default_value = "127.0.0.1:8080",
        env = "SANDBOX_OPERATOR_METRICS_ADDR"
    )]
    pub metrics_addr: SocketAddr,
    /// Take a coordination.k8s.io Lease before reconciling (needs the core/coordination APIs).
    #[arg(long, env = "SANDBOX_OPERATOR_LEADER_ELECT")]
    pub leader_elect: bool,
    /// The namespace of the leader-election Lease.
    #[arg(
        long,
        default_value = "default",
        env = "SANDBOX_OPERATOR_LEADER_ELECTION_NAMESPACE"
    )]
    pub leader_election_namespace: String,
    /// The name of the leader-election Lease.
    #[arg(long, default_value = "sandbox-operator")]
    pub leader_election_name: String,
}

/// Shared by the health and metrics handlers.
struct Health {
    ready: AtomicBool,
    /// Waiting for the Lease: healthy and ready for a rollout, just not reconciling. A standby
    /// that reported not-ready would stall every rolling update of a replicated Deployment.
    standby: AtomicBool,
    metrics: Arc<Metrics>,
    process_stores: Vec<Store<SandboxProcess>>,
    pty_stores: Vec<Store<PtySession>>,
}

type Shutdown = Shared<BoxFuture<'static, ()>>;

/// Runs the operator until SIGTERM / Ctrl-C (or lost leadership).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let kube = kube_client(&config).await?;
    let shutdown: Shutdown = shutdown_signal().boxed().shared();
    let metrics = Arc::new(Metrics::default());

    // One controller per watched namespace (or one for all), sharing the hub and context.
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Context::new(
        kube.clone(),
        DaemonHub::new(changes_tx),
        config.daemon_token_file.clone(),
        metrics.clone(),
    ));
    let mut process_controllers = Vec::new();
    let mut pty_controllers = Vec::new();
    let mut process_routes = Vec::new();
    let mut pty_routes = Vec::new();
    for scope in &scopes {
        let (controller, route) =
            controller_for::<SandboxProcess>(&kube, scope, &config, &shutdown);
        process_routes.push(route);
        process_controllers.push(controller);
        let (controller, route) = controller_for::<PtySession>(&kube, scope, &config, &shutdown);
        pty_routes.push(route);
        pty_controllers.push(controller);
    }

    let health = Arc::new(Health {
        ready: AtomicBool::new(false),
        standby: AtomicBool::new(false),
        metrics: metrics.clone(),
        process_stores: process_routes.iter().map(|r| r.store.clone()).collect(),
        pty_stores: pty_routes.iter().map(|r| r.store.clone()).collect(),
    });
    let server = serve(config.metrics_addr, health.clone(), shutdown.clone()).await?;

    if config.leader_elect {
        let identity = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "sandbox-operator".into()),
            std::process::id()
        );
        health.standby.store(true, Ordering::SeqCst);
        let lost = leader::acquire(
            kube.clone(),
            LeaseConfig {
                namespace: config.leader_election_namespace.clone(),
                name: config.leader_election_name.clone(),
                identity,
                duration: Duration::from_secs(15),
            },
        )
        .await?;
        health.standby.store(false, Ordering::SeqCst);
        tokio::spawn(async move {
            lost.await;
            // Another replica may be reconciling now: stop at once rather than race it.
            warn!("leader election: leadership lost; exiting");
            std::process::exit(1);
        });
    }

    tokio::spawn(forward_changes(
        changes_rx,
        process_routes,
        pty_routes,
        ctx.clone(),
    ));
    {
        let health = health.clone();
        tokio::spawn(async move {
            wait_ready(&health.process_stores).await;
            wait_ready(&health.pty_stores).await;
            health.ready.store(true, Ordering::SeqCst);
            info!("caches synced: ready");
        });
    }

    info!(
        namespaces = ?config.namespaces,
        concurrency = config.concurrency,
        metrics = %config.metrics_addr,
        "sandbox-operator running"
    );
    let process_runs = process_controllers.into_iter().map(|c| {
        c.run(process::reconcile, process::error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "controller");
                }
            })
            .boxed()
    });
    let pty_runs = pty_controllers.into_iter().map(|c| {
        c.run(pty::reconcile, process::error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "controller");
                }
            })
            .boxed()
    });
    futures_util::future::join_all(process_runs.chain(pty_runs)).await;
    let _ = server.await;
    info!("shut down");
    Ok(())
}

/// A kube client from `--kubeconfig`/$KUBECONFIG, else the default inference.
async fn kube_client(config: &Config) -> anyhow::Result<kube::Client> {
    let kube_config = kube_config(config.kubeconfig.as_deref()).await?;
    kube::Client::try_from(kube_config).context("building the Kubernetes client")
}

/// The client configuration from `kubeconfig` (a path), else the default inference
/// ($KUBECONFIG, ~/.kube/config, in-cluster). Shared by `run` and `attach`.
pub async fn kube_config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster"),
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    info!("shutdown requested");
}

/// One controller of kind `K` for one watched scope, and the route daemon changes take to it.
fn controller_for<K>(
    kube: &kube::Client,
    scope: &Option<String>,
    config: &Config,
    shutdown: &Shutdown,
) -> (Controller<K>, Route<K>)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = match scope {
        Some(ns) => Api::namespaced(kube.clone(), ns),
        None => Api::all(kube.clone()),
    };
    let (tx, rx) = mpsc::unbounded_channel::<ObjectRef<K>>();
    let triggers =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let controller = Controller::new(api, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .reconcile_on(triggers)
        .graceful_shutdown_on(shutdown.clone());
    let route = Route {
        namespace: scope.clone(),
        store: controller.store(),
        tx,
    };
    (controller, route)
}

/// Where the changes of one watched scope go.
struct Route<K: kube::Resource<DynamicType = ()> + 'static> {
    namespace: Option<String>,
    store: Store<K>,
    tx: mpsc::UnboundedSender<ObjectRef<K>>,
}

impl<K: Targeted + kube::Resource<DynamicType = ()> + Clone + 'static> Route<K> {
    /// Requeues object `ns/name` if this route covers `ns`; true if it does.
    fn send(&self, ns: &str, name: &str) -> bool {
        if self.namespace.as_ref().is_none_or(|n| n == ns) {
            let _ = self.tx.send(ObjectRef::new(name).within(ns));
            return true;
        }
        false
    }

    /// Requeues every object on the daemon at `endpoint`.
    fn send_all_on(&self, endpoint: &str) {
        for obj in self.store.state() {
            if on_endpoint(&*obj, endpoint) {
                let _ = self.tx.send(ObjectRef::from_obj(&*obj));
            }
        }
    }

    fn uses(&self, endpoint: &str) -> bool {
        self.store
            .state()
            .iter()
            .any(|obj| on_endpoint(&**obj, endpoint))
    }
}

/// Turns daemon changes into reconcile requests: a process or session change names its object
/// through its owner labels; a daemon restart requeues every object on that daemon.
async fn forward_changes(
    mut changes: mpsc::UnboundedReceiver<Change>,
    process_routes: Vec<Route<SandboxProcess>>,
    pty_routes: Vec<Route<PtySession>>,
    ctx: Arc<Context>,
) {
    let owner = |labels: &std::collections::BTreeMap<String, String>| {
        Some((
            labels.get(OWNER_NAMESPACE_LABEL)?.clone(),
            labels.get(OWNER_NAME_LABEL)?.clone(),
        ))
    };
    while let Some(change) = changes.recv().await {
        match change {
            Change::Process { info, .. } => {
                if let Some((ns, name)) = owner(&info.labels) {
                    let _ = process_routes.iter().find(|r| r.send(&ns, &name));
                }
            }
            Change::Session { info, .. } => {
                if let Some((ns, name)) = owner(&info.labels) {
                    let _ = pty_routes.iter().find(|r| r.send(&ns, &name));
                }
            }
            Change::Restarted { endpoint, .. } => {
                warn!(endpoint, "daemon restarted: re-checking its objects");
                process_routes.iter().for_each(|r| r.send_all_on(&endpoint));
                pty_routes.iter().for_each(|r| r.send_all_on(&endpoint));
            }
            Change::Disconnected { endpoint, error } => {
                let used = process_routes.iter().any(|r| r.uses(&endpoint))
                    || pty_routes.iter().any(|r| r.uses(&endpoint));
                if used {
                    warn!(endpoint, error, "daemon stream down; polling");
                } else {
                    // No object lives there any more: stop following a daemon nobody needs.
                    info!(endpoint, "daemon stream down and unused: forgetting it");
                    ctx.hub.forget(&endpoint);
                }
            }
            Change::Connected { .. } => {}
        }
    }
}

/// An object that lives on a sandbox daemon.
trait Targeted {
    /// The daemon URL the status recorded, if any.
    fn recorded_endpoint(&self) -> Option<&str>;
    /// The spec's target.
    fn sandbox(&self) -> &SandboxTarget;
}

impl Targeted for SandboxProcess {
    fn recorded_endpoint(&self) -> Option<&str> {
        self.status.as_ref()?.target.as_ref()?.endpoint.as_deref()
    }
    fn sandbox(&self) -> &SandboxTarget {
        &self.spec.sandbox
    }
}

impl Targeted for PtySession {
    fn recorded_endpoint(&self) -> Option<&str> {
        self.status.as_ref()?.target.as_ref()?.endpoint.as_deref()
    }
    fn sandbox(&self) -> &SandboxTarget {
        &self.spec.sandbox
    }
}

/// Whether `obj` lives on the daemon at `endpoint` (by its recorded target, else its spec).
fn on_endpoint<K: Targeted + kube::Resource>(obj: &K, endpoint: &str) -> bool {
    match obj.recorded_endpoint() {
        Some(e) => e == endpoint,
        None => {
            let ns = obj.meta().namespace.as_deref().unwrap_or_default();
            target::static_endpoint(ns, obj.sandbox()).as_deref() == Some(endpoint)
        }
    }
}

/// Binds the metrics/health server and serves it until shutdown.
async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    shutdown: Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    info!(%bound, "metrics and health listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            warn!(error = %e, "metrics server");
        }
    }))
}

async fn readyz(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else if health.standby.load(Ordering::SeqCst) {
        (
            StatusCode::OK,
            "standby: waiting for the leader-election Lease",
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn metrics_handler(
    State(health): State<Arc<Health>>,
) -> ([(&'static str, &'static str); 1], String) {
    // Objects by phase from the caches at scrape time: always exact, no bookkeeping.
    let process_phases = [
        ProcessPhase::Pending,
        ProcessPhase::Running,
        ProcessPhase::Succeeded,
        ProcessPhase::Failed,
        ProcessPhase::Stopped,
        ProcessPhase::Lost,
    ];
    let counts = count_phases(&health.process_stores, &process_phases, |obj| {
        obj.status.as_ref().and_then(|s| s.phase)
    });
    let named: Vec<(&str, i64)> = counts.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    health.metrics.set_objects("SandboxProcess", &named);
    let pty_phases = [
        PtyPhase::Pending,
        PtyPhase::Active,
        PtyPhase::Exited,
        PtyPhase::Expired,
        PtyPhase::Lost,
    ];
    let counts = count_phases(&health.pty_stores, &pty_phases, |obj| {
        obj.status.as_ref().and_then(|s| s.phase)
    });
    let named: Vec<(&str, i64)> = counts.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    health.metrics.set_objects("PtySession", &named);
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}

/// Waits until every store's cache is synced. Re-polled on a timer: the readiness latch wakes
/// only its latest waiter, and the controller's own runner waits on it too.
async fn wait_ready<K>(stores: &[Store<K>])
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    for store in stores {
        while tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready())
            .await
            .is_err()
        {}
    }
}

/// Counts the objects in `stores` by phase; objects without a phase count as `phases[0]`
/// (Pending).
fn count_phases<K, P>(
    stores: &[Store<K>],
    phases: &[P],
    phase_of: impl Fn(&K) -> Option<P>,
) -> Vec<(P, i64)>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
    P: Copy + PartialEq,
{
    let mut counts: Vec<(P, i64)> = phases.iter().map(|p| (*p, 0)).collect();
    for store in stores {
        for obj in store.state() {
            let phase = phase_of(&obj).unwrap_or(phases[0]);
            if let Some(c) = counts.iter_mut().find(|(p, _)| *p == phase) {
                c.1 += 1;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(ready: bool, standby: bool) -> Arc<Health> {
        Arc::new(Health {
            ready: AtomicBool::new(ready),
            standby: AtomicBool::new(standby),
            metrics: Arc::new(Metrics::default()),
            process_stores: Vec::new(),
            pty_stores: Vec::new(),
        })
    }

    #[tokio::test]
    async fn readyz_is_ready_when_synced_or_standing_by() {
        assert_eq!(
            readyz(State(health(false, false))).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(readyz(State(health(true, false))).await.0, StatusCode::OK);
        // A leader-election standby must not block a rolling update.
        assert_eq!(readyz(State(health(false, true))).await.0, StatusCode::OK);
    }
}
