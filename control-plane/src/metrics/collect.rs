//! Figures read at scrape time from the state that already holds them: each controller's
//! queue ([`Queue::stats`]) and the agent hub's last report per data plane. Nothing is
//! counted twice and nothing is kept for metrics alone.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::agents::Hub;
use crate::controllers::queue::{Queue, QueueStats};

/// Writes one metric family: its descriptor, then one sample per label set.
fn family<S: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(S, M)],
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// A controller's name and its queue.
type Watched = (&'static str, Arc<Queue>);

/// The queues of the controllers (and of the hub's status writer), by controller name.
#[derive(Clone, Default)]
pub struct Controllers(Arc<Mutex<Vec<Watched>>>);

impl fmt::Debug for Controllers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Controllers")
    }
}

/// The label set of a sample without labels.
const NO_LABELS: [(&str, &str); 0] = [];

type ControllerLabel = [(&'static str, &'static str); 1];

impl Controllers {
    /// Reports `queue` as that of controller `name` from the next scrape on.
    pub fn watch(&self, name: &'static str, queue: Arc<Queue>) {
        let mut queues = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // A new leadership term starts the controllers again, with new queues.
        queues.retain(|(known, _)| *known != name);
        queues.push((name, queue));
    }

    fn stats(&self) -> Vec<(ControllerLabel, QueueStats)> {
        let queues = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        queues
            .iter()
            .map(|(name, queue)| ([("controller", *name)], queue.stats()))
            .collect()
    }
}

impl Collector for Controllers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.stats();
        let gauge = |f: fn(&QueueStats) -> i64| -> Vec<_> {
            stats
                .iter()
                .map(|(l, s)| (*l, ConstGauge::new(f(s))))
                .collect()
        };
        let counter = |f: fn(&QueueStats) -> u64| -> Vec<_> {
            stats
                .iter()
                .map(|(l, s)| (*l, ConstCounter::new(f(s))))
                .collect()
        };
        let e = &mut encoder;
        family(
            e,
            "troupe_controller_queue_depth",
            "Keys waiting for a worker, being reconciled or waiting for a retry.",
            MetricType::Gauge,
            &gauge(|s| s.depth() as i64),
        )?;
        family(
            e,
            "troupe_controller_retries_pending",
            "Keys whose reconcile failed, waiting for their retry (backoff 100 ms to 60 s).",
            MetricType::Gauge,
            &gauge(|s| s.backing_off as i64),
        )?;
        family(
            e,
            "troupe_controller_reconciles",
            "Reconciles run, failed or not.",
            MetricType::Counter,
            &counter(|s| s.reconciles),
        )?;
        family(
            e,
            "troupe_controller_reconcile_failures",
            "Reconciles that failed or panicked (each is retried with backoff).",
            MetricType::Counter,
            &counter(|s| s.failures),
        )?;
        family(
            e,
            "troupe_controller_retries",
            "Keys queued again by a retry after a failure (not by a change).",
            MetricType::Counter,
            &counter(|s| s.retries),
        )?;
        let seconds: Vec<_> = stats
            .iter()
            .map(|(l, s)| (*l, ConstCounter::new(s.reconcile_time.as_secs_f64())))
            .collect();
        family(
            e,
            "troupe_controller_reconcile_seconds",
            "Time spent in reconciles; divided by troupe_controller_reconciles_total, the mean \
             reconcile latency.",
            MetricType::Counter,
            &seconds,
        )?;
        let slowest: Vec<_> = stats
            .iter()
            .map(|(l, s)| (*l, ConstGauge::new(s.slowest_reconcile.as_secs_f64())))
            .collect();
        family(
            e,
            "troupe_controller_reconcile_slowest_seconds",
            "The longest reconcile since the server started.",
            MetricType::Gauge,
            &slowest,
        )
    }
}

/// The agent hub, read at scrape time.
pub struct Agents(pub(super) Arc<Hub>);

impl fmt::Debug for Agents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Agents")
    }
}

impl Collector for Agents {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut reports = self.0.plane_reports();
        reports.sort_by(|a, b| a.0.cmp(&b.0));
        let connected: i64 = reports.iter().map(|(_, r)| i64::from(r.sessions)).sum();
        family(
            &mut encoder,
            "troupe_agents_connected",
            "Agent sessions open, over every data plane.",
            MetricType::Gauge,
            &[(NO_LABELS, ConstGauge::new(connected))],
        )?;
        let names: Vec<String> = reports.iter().map(|(key, _)| plane_name(key)).collect();
        let per_plane: Vec<_> = reports
            .iter()
            .zip(&names)
            .map(|((_, r), name)| {
                (
                    [("dataplane", name.as_str())],
                    ConstGauge::new(i64::from(r.sessions)),
                )
            })
            .collect();
        family(
            &mut encoder,
            "troupe_dataplane_agent_connected",
            "1 while the data plane's agent holds a session, else 0.",
            MetricType::Gauge,
            &per_plane,
        )?;
        let mut releases = Vec::with_capacity(reports.len() * 3);
        for ((_, r), name) in reports.iter().zip(&names) {
            for (state, count) in [
                ("in_sync", r.in_sync),
                ("pending", r.pending),
                ("failed", r.failed),
            ] {
                releases.push((
                    [("dataplane", name.as_str()), ("state", state)],
                    ConstGauge::new(i64::from(count)),
                ));
            }
        }
        family(
            &mut encoder,
            "troupe_dataplane_releases",
            "Releases bound to the data plane, by state: in_sync (the agent holds the desired \
             content), pending (to apply or prune) and failed (the agent refused the current \
             generation; counted in pending too), as of the agent's last report.",
            MetricType::Gauge,
            &releases,
        )
    }
}

/// `NAMESPACE/NAME` of a DataPlane, `NAME` of a ClusterDataPlane.
fn plane_name(key: &troupe_common::ObjectKey) -> String {
    if key.namespace.is_empty() {
        key.name.clone()
    } else {
        format!("{}/{}", key.namespace, key.name)
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;
    use troupe_common::{Kind, ObjectKey};

    use super::*;

    #[test]
    fn each_controller_queue_is_one_labelled_sample_per_figure() {
        let controllers = Controllers::default();
        let binding = Arc::new(Queue::new("binding"));
        controllers.watch("binding", binding.clone());
        controllers.watch("deploy", Arc::new(Queue::new("deploy")));
        binding.add(ObjectKey::new(Kind::ReleaseBinding, "acme", "api-dev"));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(controllers));
        let text = troupe_agent::metrics::encode(&registry);
        for line in [
            "# TYPE troupe_controller_queue_depth gauge",
            "troupe_controller_queue_depth{controller=\"binding\"} 1",
            "troupe_controller_queue_depth{controller=\"deploy\"} 0",
            "# TYPE troupe_controller_reconciles_total counter",
            "troupe_controller_reconciles_total{controller=\"binding\"} 0",
            "troupe_controller_reconcile_seconds_total{controller=\"deploy\"} 0.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
