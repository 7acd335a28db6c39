//! Prometheus metrics (`sandbox_operator_*`). Labels are kinds (error variant, phase, daemon
//! call), never object names, so cardinality stays fixed.

use std::future::Future;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    kind: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~8 s: daemon calls on loopback are sub-millisecond, reconciles a few ms.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// The operator's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_duration: Histogram,
    reconcile_errors: Family<ErrorLabels, Counter>,
    objects: Family<PhaseLabels, Gauge>,
    daemon_calls: HistogramFamily<CallLabels>,
    create_to_running: HistogramFamily<KindLabels>,
    exit_to_status: HistogramFamily<KindLabels>,
}

/// 10 ms .. ~160 s, for times users wait on (whole seconds on the object's timestamps).
fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconcile_duration = latency_histogram();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let objects = Family::<PhaseLabels, Gauge>::default();
        let daemon_calls: HistogramFamily<CallLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "sandbox_operator_reconcile_duration_seconds",
            "Time one reconcile took",
            reconcile_duration.clone(),
        );
        registry.register(
            "sandbox_operator_reconcile_errors",
            "Failed reconciles by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "sandbox_operator_objects",
            "Objects by kind and phase",
            objects.clone(),
        );
        let create_to_running: HistogramFamily<KindLabels> =
            Family::new_with_constructor(wait_histogram);
        let exit_to_status: HistogramFamily<KindLabels> =
            Family::new_with_constructor(wait_histogram);
        registry.register(
            "sandbox_operator_create_to_running_seconds",
            "From an object's creation (whole seconds, as creationTimestamp has) to the status showing it Running (Active), by kind",
            create_to_running.clone(),
        );
        registry.register(
            "sandbox_operator_exit_to_status_seconds",
            "From the daemon's end time of a process or session to the status showing it, by kind",
            exit_to_status.clone(),
        );
        registry.register(
            "sandbox_operator_daemon_call_duration_seconds",
            "Latency of calls to sandbox daemons by call",
            daemon_calls.clone(),
        );
        Self {
            registry,
            reconcile_duration,
            reconcile_errors,
            objects,
            daemon_calls,
            create_to_running,
            exit_to_status,
        }
    }
}

fn observe_since(family: &HistogramFamily<KindLabels>, kind: &str, since_ms: i64) {
    let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let secs = (now_ms - since_ms).max(0) as f64 / 1000.0;
    family
        .get_or_create(&KindLabels {
            kind: kind.to_owned(),
        })
        .observe(secs);
}

impl Metrics {
    /// Records one reconcile's duration.
    pub fn reconciled(&self, started: Instant) {
        self.reconcile_duration
            .observe(started.elapsed().as_secs_f64());
    }

    /// Records the waits a user sees at a phase change of `obj`: from its creation to now when
    /// it `started` (first Running / Active), and from the daemon's end of the run (`ended_ms`,
    /// epoch ms) to now when its status first shows that end.
    pub fn phase_changed<K: kube::Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        started: bool,
        ended_ms: Option<i64>,
    ) {
        let kind = K::kind(&());
        if started && let Some(created) = obj.meta().creation_timestamp.as_ref() {
            observe_since(&self.create_to_running, &kind, created.0.as_millisecond());
        }
        if let Some(ended) = ended_ms {
            observe_since(&self.exit_to_status, &kind, ended);
        }
    }

    /// Counts one failed reconcile under `error` (an error variant name).
    pub fn failed(&self, error: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                error: error.to_owned(),
            })
            .inc();
    }

    /// Sets the counts of objects of `kind` by phase (every phase named, so absent ones read 0).
    pub fn set_objects(&self, kind: &str, counts: &[(&str, i64)]) {
        for (phase, n) in counts {
            self.objects
                .get_or_create(&PhaseLabels {
                    kind: kind.to_owned(),
                    phase: (*phase).to_owned(),
                })
                .set(*n);
        }
    }

    /// Times a daemon call.
    pub async fn daemon_call<T>(&self, call: &str, fut: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = fut.await;
        self.daemon_calls
            .get_or_create(&CallLabels {
                call: call.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
        out
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exposition_names_every_metric() {
        let m = Metrics::default();
        m.daemon_call("start", async {}).await;
        m.failed("Daemon");
        m.set_objects("SandboxProcess", &[("Running", 2)]);
        m.reconciled(Instant::now());
        let text = m.encode();
        assert!(text.contains("sandbox_operator_reconcile_errors_total{error=\"Daemon\"} 1"));
        assert!(
            text.contains("sandbox_operator_objects{kind=\"SandboxProcess\",phase=\"Running\"} 2")
        );
        assert!(text.contains("sandbox_operator_reconcile_duration_seconds_count 1"));
        let pty = crate::api::PtySession::new(
            "s",
            crate::api::PtySessionSpec::new(crate::api::SandboxTarget::endpoint("http://x")),
        );
        m.phase_changed(
            &pty,
            false,
            Some(k8s_openapi::jiff::Timestamp::now().as_millisecond()),
        );
        let text = m.encode();
        assert!(
            text.contains("sandbox_operator_exit_to_status_seconds_count{kind=\"PtySession\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sandbox_operator_daemon_call_duration_seconds_count{call=\"start\"} 1")
        );
    }
}
