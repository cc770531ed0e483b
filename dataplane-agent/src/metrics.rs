//! The agent's Prometheus metrics, served as `GET /metrics` on `--health-addr`
//! ([`crate::probes`]).
//!
//! The figures come from the edges, so neither the worker nor the stream knows metrics exist:
//! [`Metered`] wraps the applier (apply and prune latency, failures by kind, releases held,
//! releases waiting for a retry), and [`Metrics::observe`] follows the stream's [`Event`]s
//! (sessions synced and ended, attempts that never synced, acks). [`crate::run`] puts both in
//! place when [`Config::metrics`](crate::Config::metrics) is set; an agent without it (the
//! benchmarks' thousands of in-process agents) pays nothing.
//!
//! The control plane registers its process figures with the same helpers
//! ([`register_process`], [`latency_buckets`], [`encode`]), so both speak alike.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use troupe_common::pb::v1alpha1::{ClusterInfo, ReleaseResource, ReleaseResourceStatus};

use crate::Event;
use crate::apply::{Applied, Applier, Error};

/// The `Content-Type` of [`encode`]'s output: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Latency buckets, in seconds: 0.5 ms doubling to about 16 s, wide enough for an RPC, a
/// flush, a render and a Kubernetes apply alike.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16)
}

/// A latency histogram with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Registers `troupe_build_info{version}` and `process_start_time_seconds` (the name every
/// Prometheus client uses, so dashboards find restarts without knowing Troupe).
pub fn register_process(registry: &mut Registry, version: &'static str) {
    registry.register(
        "troupe_build",
        "The build of this process: its version, as a label; the value is always 1",
        Info::new([("version", version)]),
    );
    let start: Gauge<f64, AtomicU64> = Gauge::default();
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    start.set(since_epoch.as_secs_f64());
    registry.register(
        "process_start_time_seconds",
        "When the process started, in seconds since the Unix epoch",
        start,
    );
}

/// `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; a collector that fails leaves what it wrote.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// What an apply or a prune was.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    /// `apply` or `prune`.
    op: &'static str,
}

/// What went wrong, and in which operation.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    op: &'static str,
    /// The applier's error variant, or `objects` when an apply went through with objects
    /// left failing, or `incomplete` when an object that left the release could not be
    /// deleted.
    kind: &'static str,
}

/// The failure kind of an applier error, for the `kind` label.
fn failure_kind(error: &Error) -> &'static str {
    match error {
        Error::BadRelease(_) => "bad_release",
        Error::BadObject { .. } => "bad_object",
        Error::Unnamed { .. } => "unnamed",
        Error::Render { .. } => "render",
        Error::Io { .. } => "io",
        Error::Discovery { .. } => "discovery",
        Error::Request { .. } => "request",
        Error::Record { .. } => "record",
    }
}

/// Releases applied, and releases waiting for another attempt, as the applier sees them.
#[derive(Default)]
struct Books {
    held: HashSet<String>,
    retrying: HashSet<String>,
}

/// The agent's metrics and the registry that serves them.
pub struct Metrics {
    registry: Registry,
    apply_seconds: Histogram,
    prune_seconds: Histogram,
    failures: Family<FailureLabels, Counter>,
    held: Gauge,
    retries_pending: Gauge,
    books: Mutex<Books>,
    connects: Counter,
    disconnects: Counter,
    connect_failures: Counter,
    connected: Gauge,
    acks: Counter,
    /// Whether the current stream has synced: its end is a disconnect, not a failed attempt.
    synced: Mutex<bool>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered with the build and start time of this process.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        register_process(&mut registry, crate::VERSION);
        let durations = Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let apply_seconds = durations.get_or_create_owned(&OpLabels { op: "apply" });
        let prune_seconds = durations.get_or_create_owned(&OpLabels { op: "prune" });
        registry.register(
            "troupe_agent_apply_duration_seconds",
            "Time the applier took to apply (op=apply) or prune (op=prune) one release",
            durations,
        );
        let metrics = Self {
            registry,
            apply_seconds,
            prune_seconds,
            failures: Family::default(),
            held: Gauge::default(),
            retries_pending: Gauge::default(),
            books: Mutex::default(),
            connects: Counter::default(),
            disconnects: Counter::default(),
            connect_failures: Counter::default(),
            connected: Gauge::default(),
            acks: Counter::default(),
            synced: Mutex::new(false),
        };
        metrics.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "troupe_agent_apply_failures",
            "Applies and prunes that failed, by op and kind of failure (the applier's error, \
             `objects` for an apply that left objects failing, `incomplete` for an object that \
             left the release and could not be deleted)",
            self.failures.clone(),
        );
        r.register(
            "troupe_agent_releases_held",
            "Releases applied on this data plane and not pruned",
            self.held.clone(),
        );
        r.register(
            "troupe_agent_retries_pending",
            "Releases whose last apply left objects failing, or whose prune failed: the agent \
             tries them again with backoff",
            self.retries_pending.clone(),
        );
        r.register(
            "troupe_agent_session_connects",
            "Streams to the control plane that opened and synced",
            self.connects.clone(),
        );
        r.register(
            "troupe_agent_session_disconnects",
            "Synced streams that ended (the agent reconnects after a backoff)",
            self.disconnects.clone(),
        );
        r.register(
            "troupe_agent_connect_failures",
            "Attempts to open a stream that ended before it synced",
            self.connect_failures.clone(),
        );
        r.register(
            "troupe_agent_connected",
            "1 while the agent holds a synced stream to the control plane, else 0",
            self.connected.clone(),
        );
        r.register(
            "troupe_agent_acks",
            "Releases applied, recorded and acknowledged to the control plane",
            self.acks.clone(),
        );
        self
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }

    /// Follows one event of the stream.
    pub fn observe(&self, event: &Event) {
        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Synced => {
                if !*synced {
                    self.connects.inc();
                }
                *synced = true;
                self.connected.set(1);
            }
            Event::Disconnected { .. } => {
                if *synced {
                    self.disconnects.inc();
                } else {
                    self.connect_failures.inc();
                }
                *synced = false;
                self.connected.set(0);
            }
            Event::Acked { .. } => {
                self.acks.inc();
            }
        }
    }

    fn failed(&self, op: &'static str, kind: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { op, kind })
            .inc();
    }

    /// Books an apply of `release` that went through with `applied`.
    fn applied(&self, release: &str, applied: &Applied) {
        if !applied.failed.is_empty() {
            self.failed("apply", "objects");
        }
        if applied.incomplete {
            self.failed("apply", "incomplete");
        }
        self.book(|books| {
            if !books.held.contains(release) {
                books.held.insert(release.to_string());
            }
            if applied.needs_retry() {
                if !books.retrying.contains(release) {
                    books.retrying.insert(release.to_string());
                }
            } else {
                books.retrying.remove(release);
            }
        });
    }

    /// Books a prune of `release`: gone when it went through, waiting for a retry if not.
    fn pruned(&self, release: &str, ok: bool) {
        self.book(|books| {
            if ok {
                books.held.remove(release);
                books.retrying.remove(release);
            } else if !books.retrying.contains(release) {
                books.retrying.insert(release.to_string());
            }
        });
    }

    fn book(&self, change: impl FnOnce(&mut Books)) {
        let mut books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut books);
        self.held.set(books.held.len() as i64);
        self.retries_pending.set(books.retrying.len() as i64);
    }
}

/// An applier that times and counts what the one inside it does.
pub struct Metered {
    inner: Arc<dyn Applier>,
    metrics: Arc<Metrics>,
}

impl Metered {
    /// Meters `inner` into `metrics`.
    pub fn new(inner: Arc<dyn Applier>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

impl Applier for Metered {
    fn apply<'a>(
        &'a self,
        release: &'a str,
        resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<Applied, Error>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.apply(release, resources).await;
            let metrics = &self.metrics;
            metrics
                .apply_seconds
                .observe(started.elapsed().as_secs_f64());
            match &result {
                Ok(applied) => metrics.applied(release, applied),
                Err(e) => metrics.failed("apply", failure_kind(e)),
            }
            result
        })
    }

    fn prune<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.prune(release).await;
            let metrics = &self.metrics;
            metrics
                .prune_seconds
                .observe(started.elapsed().as_secs_f64());
            if let Err(e) = &result {
                metrics.failed("prune", failure_kind(e));
            }
            metrics.pruned(release, result.is_ok());
            result
        })
    }

    fn info(&self) -> BoxFuture<'_, ClusterInfo> {
        self.inner.info()
    }

    fn health(&self, release: &str) -> Option<Vec<ReleaseResourceStatus>> {
        self.inner.health(release)
    }

    fn health_changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.health_changes()
    }

    fn found(&self) -> Vec<String> {
        self.inner.found()
    }

    fn drifted(&self) -> Vec<String> {
        self.inner.drifted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name` (with its labels, as written) in `text`.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn sessions_count_connects_disconnects_and_failed_attempts() {
        let metrics = Metrics::new();
        let down = || Event::Disconnected {
            reason: "refused".into(),
        };
        metrics.observe(&down());
        metrics.observe(&Event::Synced);
        metrics.observe(&Event::Synced);
        metrics.observe(&Event::Acked {
            release: "acme/api".into(),
            generation: 1,
        });
        let text = metrics.encode();
        assert_eq!(sample(&text, "troupe_agent_connected"), Some(1.0), "{text}");
        assert_eq!(
            sample(&text, "troupe_agent_session_connects_total"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "troupe_agent_connect_failures_total"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "troupe_agent_acks_total"), Some(1.0));
        metrics.observe(&down());
        let text = metrics.encode();
        assert_eq!(sample(&text, "troupe_agent_connected"), Some(0.0));
        assert_eq!(
            sample(&text, "troupe_agent_session_disconnects_total"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "troupe_agent_connect_failures_total"),
            Some(1.0)
        );
        let build = format!("troupe_build_info{{version=\"{}\"}}", crate::VERSION);
        assert_eq!(sample(&text, &build), Some(1.0), "{text}");
    }

    #[test]
    fn held_and_retrying_follow_applies_and_prunes() {
        let metrics = Metrics::new();
        let failing = Applied {
            failed: vec!["web".into()],
            ..Applied::default()
        };
        metrics.applied("acme/a", &Applied::default());
        metrics.applied("acme/b", &failing);
        let text = metrics.encode();
        assert_eq!(sample(&text, "troupe_agent_releases_held"), Some(2.0));
        assert_eq!(sample(&text, "troupe_agent_retries_pending"), Some(1.0));
        let objects = "troupe_agent_apply_failures_total{op=\"apply\",kind=\"objects\"}";
        assert_eq!(sample(&text, objects), Some(1.0), "{text}");
        metrics.applied("acme/b", &Applied::default());
        metrics.pruned("acme/a", false);
        let text = metrics.encode();
        assert_eq!(sample(&text, "troupe_agent_retries_pending"), Some(1.0));
        metrics.pruned("acme/a", true);
        let text = metrics.encode();
        assert_eq!(sample(&text, "troupe_agent_releases_held"), Some(1.0));
        assert_eq!(sample(&text, "troupe_agent_retries_pending"), Some(0.0));
    }
}
