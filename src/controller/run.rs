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
use super::target;
use crate::api::{ProcessPhase, SandboxProcess};

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
    metrics: Arc<Metrics>,
    stores: Vec<Store<SandboxProcess>>,
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
    let mut controllers = Vec::new();
    let mut routes = Vec::new();
    for scope in &scopes {
        let api: Api<SandboxProcess> = match scope {
            Some(ns) => Api::namespaced(kube.clone(), ns),
            None => Api::all(kube.clone()),
        };
        let (tx, rx) = mpsc::unbounded_channel::<ObjectRef<SandboxProcess>>();
        let triggers =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let controller = Controller::new(api, watcher::Config::default())
            .with_config(controller::Config::default().concurrency(config.concurrency))
            .reconcile_on(triggers)
            .graceful_shutdown_on(shutdown.clone());
        routes.push(Route {
            namespace: scope.clone(),
            store: controller.store(),
            tx,
        });
        controllers.push(controller);
    }

    let health = Arc::new(Health {
        ready: AtomicBool::new(false),
        metrics: metrics.clone(),
        stores: routes.iter().map(|r| r.store.clone()).collect(),
    });
    let server = serve(config.metrics_addr, health.clone(), shutdown.clone()).await?;

    if config.leader_elect {
        let identity = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "sandbox-operator".into()),
            std::process::id()
        );
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
        tokio::spawn(async move {
            lost.await;
            // Another replica may be reconciling now: stop at once rather than race it.
            warn!("leader election: leadership lost; exiting");
            std::process::exit(1);
        });
    }

    tokio::spawn(forward_changes(changes_rx, routes, ctx.clone()));
    {
        let health = health.clone();
        tokio::spawn(async move {
            for store in &health.stores {
                // Re-polled on a timer: the readiness latch wakes only its latest waiter, and
                // the controller's own runner waits on it too.
                while tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready())
                    .await
                    .is_err()
                {}
            }
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
    let runs = controllers.into_iter().map(|c| {
        c.run(process::reconcile, process::error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "controller");
                }
            })
    });
    futures_util::future::join_all(runs).await;
    let _ = server.await;
    info!("shut down");
    Ok(())
}

/// A kube client from `--kubeconfig`/$KUBECONFIG, else the default inference.
async fn kube_client(config: &Config) -> anyhow::Result<kube::Client> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    kube::Client::try_from(kube_config).context("building the Kubernetes client")
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

/// Where the changes of one watched scope go.
struct Route {
    namespace: Option<String>,
    store: Store<SandboxProcess>,
    tx: mpsc::UnboundedSender<ObjectRef<SandboxProcess>>,
}

/// Turns daemon changes into reconcile requests: a process change names its object through
/// its owner labels; a daemon restart requeues every object on that daemon.
async fn forward_changes(
    mut changes: mpsc::UnboundedReceiver<Change>,
    routes: Vec<Route>,
    ctx: Arc<Context>,
) {
    while let Some(change) = changes.recv().await {
        match change {
            Change::Process { info, .. } => {
                let (Some(ns), Some(name)) = (
                    info.labels.get(OWNER_NAMESPACE_LABEL),
                    info.labels.get(OWNER_NAME_LABEL),
                ) else {
                    continue;
                };
                if let Some(route) = routes
                    .iter()
                    .find(|r| r.namespace.as_ref().is_none_or(|n| n == ns))
                {
                    let _ = route.tx.send(ObjectRef::new(name).within(ns));
                }
            }
            Change::Restarted { endpoint, .. } => {
                warn!(endpoint, "daemon restarted: re-checking its objects");
                for route in &routes {
                    for obj in route.store.state() {
                        if on_endpoint(&obj, &endpoint) {
                            let _ = route.tx.send(ObjectRef::from_obj(&*obj));
                        }
                    }
                }
            }
            Change::Disconnected { endpoint, error } => {
                let used = routes.iter().any(|r| {
                    r.store
                        .state()
                        .iter()
                        .any(|obj| on_endpoint(obj, &endpoint))
                });
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

/// Whether `obj` lives on the daemon at `endpoint` (by its recorded target, else its spec).
fn on_endpoint(obj: &SandboxProcess, endpoint: &str) -> bool {
    let recorded = obj
        .status
        .as_ref()
        .and_then(|s| s.target.as_ref())
        .and_then(|t| t.endpoint.as_deref());
    match recorded {
        Some(e) => e == endpoint,
        None => {
            let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
            target::static_endpoint(ns, &obj.spec.sandbox).as_deref() == Some(endpoint)
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
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn metrics_handler(
    State(health): State<Arc<Health>>,
) -> ([(&'static str, &'static str); 1], String) {
    // Objects by phase from the caches at scrape time: always exact, no bookkeeping.
    let phases = [
        ("Pending", None),
        ("Running", Some(ProcessPhase::Running)),
        ("Succeeded", Some(ProcessPhase::Succeeded)),
        ("Failed", Some(ProcessPhase::Failed)),
        ("Stopped", Some(ProcessPhase::Stopped)),
        ("Lost", Some(ProcessPhase::Lost)),
    ];
    let mut counts: Vec<(&str, i64)> = phases.iter().map(|(n, _)| (*n, 0)).collect();
    for store in &health.stores {
        for obj in store.state() {
            let phase = obj.status.as_ref().and_then(|s| s.phase);
            let phase = match phase {
                Some(ProcessPhase::Pending) | None => None,
                p => p,
            };
            if let Some(i) = phases.iter().position(|(_, p)| *p == phase) {
                counts[i].1 += 1;
            }
        }
    }
    health.metrics.set_objects(&counts);
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}
