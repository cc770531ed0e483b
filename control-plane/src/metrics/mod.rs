//! The control plane's Prometheus metrics, served as `GET /metrics` on `--metrics-addr`.
//!
//! The figures are measured at the edges, so the domain knows nothing of Prometheus:
//!
//! - [`grpc`]: a tower layer on both tonic servers counts calls by service, method and status
//!   code, with a latency histogram.
//! - [`store`]: a wrapper around the store times commits and flushes (group commit).
//! - Renders report their duration through [`Releases::observe_renders`].
//! - [`collect`]: at scrape time, each controller's [`Queue::stats`] and the agent hub's last
//!   report per data plane (agents connected, releases in sync, pending, failed).
//! - The build (`troupe_build_info{version}`) and `process_start_time_seconds`.
//!
//! [`Metrics`] is made once by the server, which wires each piece in; [`serve`] answers
//! scrapes on a listener of its own, so a scrape never waits behind the API.

pub mod collect;
pub mod grpc;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use troupe_agent::metrics::{CONTENT_TYPE, latency_histogram, register_process};

use crate::agents::Hub;
use crate::controllers::queue::Queue;
use crate::releases::RenderObserver;
use crate::store::Store;
use collect::{Agents, Controllers};
use grpc::{GrpcLayer, GrpcMetrics};

/// The path scrapes ask for.
pub const PATH: &str = "/metrics";

/// How a render ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `ok` or `error`.
    outcome: &'static str,
}

/// Every figure of the control plane, and the registry they are served from.
pub struct Metrics {
    registry: Mutex<Registry>,
    grpc: Arc<GrpcMetrics>,
    renders: Family<Outcome, Histogram, fn() -> Histogram>,
    controllers: Controllers,
    leader: Gauge,
}

impl Metrics {
    /// The metrics of this process, with nothing measured yet.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        register_process(&mut registry, env!("CARGO_PKG_VERSION"));
        let grpc = GrpcMetrics::register(&mut registry);
        let renders = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "troupe_render_duration_seconds",
            "Time to render one component in one environment (plan and templates), by outcome",
            renders.clone(),
        );
        let controllers = Controllers::default();
        registry.register_collector(Box::new(controllers.clone()));
        let leader = Gauge::default();
        registry.register(
            "troupe_leader",
            "1 while this server runs the controllers (it leads), else 0",
            leader.clone(),
        );
        Arc::new(Self {
            registry: Mutex::new(registry),
            grpc,
            renders,
            controllers,
            leader,
        })
    }

    /// The layer that counts the calls of a tonic server.
    pub fn grpc_layer(&self) -> GrpcLayer {
        GrpcLayer(self.grpc.clone())
    }

    /// `store`, with its commits and flushes timed.
    pub fn meter_store(&self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(store::MeteredStore::new(store, &mut self.registry()))
    }

    /// What [`Releases::observe_renders`] reports to.
    pub fn render_observer(&self) -> RenderObserver {
        let renders = self.renders.clone();
        Arc::new(move |took, ok| {
            let outcome = if ok { "ok" } else { "error" };
            renders
                .get_or_create(&Outcome { outcome })
                .observe(took.as_secs_f64());
        })
    }

    /// Records whether this server runs the controllers now.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Reports the depth, reconciles, failures, retries and reconcile time of `queue` as
    /// those of controller `name`.
    pub fn watch_queue(&self, name: &'static str, queue: Arc<Queue>) {
        self.controllers.watch(name, queue);
    }

    /// Reports the agents connected and the releases of each data plane, as `hub` knows
    /// them, and the queue of its status writes (controller `status`).
    pub fn watch_hub(&self, hub: Arc<Hub>) {
        self.watch_queue("status", hub.status_queue());
        self.registry().register_collector(Box::new(Agents(hub)));
    }

    /// Every figure, in the Prometheus text format.
    pub fn encode(&self) -> String {
        troupe_agent::metrics::encode(&self.registry())
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves `GET /metrics` on `listen`, if given, until `stopping` turns true; returns the bound
/// address (port 0 picks a free one).
pub async fn serve(
    listen: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    stopping: &tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Option<SocketAddr>> {
    let scrape = move || {
        let metrics = metrics.clone();
        async move {
            (
                [(http::header::CONTENT_TYPE, CONTENT_TYPE)],
                metrics.encode(),
            )
        }
    };
    let router = axum::Router::new().route(PATH, axum::routing::get(scrape));
    crate::http::serve(listen, router, stopping, "metrics").await
}
