//! Status back: what agents report becomes Release status, ReleaseBinding conditions and
//! DataPlane status.
//!
//! Sessions hand reports to [`StatusWriter`], which merges them per object (latest wins) and
//! writes them from a small worker pool, so a burst of acks for one Release is one write and a
//! slow disk never stalls a stream. Each Release write is followed by the roll-up of its
//! binding's `Ready`, `Progressing` and `Degraded` conditions ([`rollup`]), which the binding
//! controller also runs after it renders.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use crate::controllers::queue::Queue;
use crate::controllers::set_condition;
use crate::resources::Resources;

/// Workers writing status.
const WORKERS: usize = 8;

/// What an agent said about one Release since the last write.
#[derive(Debug, Default, Clone)]
struct ReleaseReport {
    /// Newest generation acknowledged as applied.
    applied: Option<i64>,
    /// Newest generation that failed to apply, and why.
    failed: Option<(i64, String)>,
    /// Newest object health, with the generation it was observed for.
    health: Option<(i64, Vec<pb::ReleaseResourceStatus>)>,
}

/// The connection state of one data plane, as its sessions see it.
#[derive(Debug, Default, Clone)]
pub struct PlaneReport {
    /// Sessions open (0 or 1: a newer one displaces the older).
    pub sessions: i32,
    /// Version of the agent last connected.
    pub agent_version: String,
    /// What the agent said of its cluster.
    pub cluster_info: Option<pb::ClusterInfo>,
    /// When the agent last connected.
    pub last_connected: Option<pbjson_types::Timestamp>,
    /// When the agent last disconnected.
    pub last_disconnected: Option<pbjson_types::Timestamp>,
    /// When the agent was last heard from.
    pub last_heartbeat: Option<pbjson_types::Timestamp>,
    /// Releases in sync and pending.
    pub in_sync: i32,
    /// Releases waiting to be applied or pruned.
    pub pending: i32,
    /// Why the last session ended, if it did.
    pub message: String,
}

/// Merges reports and writes them as status.
pub struct StatusWriter {
    resources: Arc<Resources>,
    queue: Arc<Queue>,
    releases: Mutex<HashMap<ObjectKey, ReleaseReport>>,
    planes: Mutex<HashMap<ObjectKey, PlaneReport>>,
    connected: Mutex<HashSet<ObjectKey>>,
}

impl StatusWriter {
    /// A writer over `resources`, with its workers started.
    pub fn start(resources: Arc<Resources>) -> Arc<Self> {
        let this = Arc::new(Self {
            resources,
            queue: Arc::new(Queue::default()),
            releases: Mutex::default(),
            planes: Mutex::default(),
            connected: Mutex::default(),
        });
        let worker = this.clone();
        this.queue.spawn_workers(WORKERS, move |key| {
            let this = worker.clone();
            async move {
                let result = match key.kind {
                    Kind::Release => this.write_release(&key).await,
                    _ => this.write_plane(&key).await,
                };
                if let Err(e) = result {
                    tracing::debug!(object = %key, error = %e, "status not written");
                }
            }
        });
        this
    }

    /// Re-derives a Release's status and its binding's conditions (after it changed).
    pub fn touch(&self, release: ObjectKey) {
        self.queue.add(release);
    }

    /// The agent applied `generation` of `release`.
    pub fn applied(&self, release: ObjectKey, generation: i64) {
        self.merge(release, |r| {
            r.applied = r.applied.max(Some(generation));
            if r.failed.as_ref().is_some_and(|(g, _)| *g <= generation) {
                r.failed = None;
            }
        });
    }

    /// The agent could not apply `generation` of `release`.
    pub fn failed(&self, release: ObjectKey, generation: i64, error: String) {
        self.merge(release, |r| r.failed = Some((generation, error)));
    }

    /// The agent observed the health of `release`'s objects.
    pub fn health(
        &self,
        release: ObjectKey,
        generation: i64,
        resources: Vec<pb::ReleaseResourceStatus>,
    ) {
        self.merge(release, |r| {
            if r.health.as_ref().is_none_or(|(g, _)| *g <= generation) {
                r.health = Some((generation, resources));
            }
        });
    }

    /// Records the connection state of a data plane.
    pub fn plane(&self, plane: ObjectKey, report: PlaneReport) {
        {
            let mut connected = self
                .connected
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if report.sessions > 0 {
                connected.insert(plane.clone());
            } else {
                connected.remove(&plane);
            }
        }
        self.planes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(plane.clone(), report);
        self.queue.add(plane);
    }

    fn merge(&self, release: ObjectKey, change: impl FnOnce(&mut ReleaseReport)) {
        change(
            self.releases
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(release.clone())
                .or_default(),
        );
        self.queue.add(release);
    }

    async fn write_release(&self, key: &ObjectKey) -> Result<(), crate::resources::Error> {
        let report = self
            .releases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
            .unwrap_or_default();
        let Ok(Object::Release(release)) = self.resources.get(key) else {
            return Ok(());
        };
        let plane = plane_of(&key.namespace, &release);
        let connected = plane.as_ref().is_some_and(|p| {
            self.connected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(p)
        });
        let plane_name = plane
            .map(|p| p.to_string())
            .unwrap_or_else(|| "(none)".into());
        self.resources
            .update_status(key, move |_, object| {
                if let Object::Release(release) = object {
                    release_status(release, &report, connected, &plane_name);
                }
            })
            .await?;
        if release
            .metadata
            .as_ref()
            .is_some_and(|m| m.delete_time.is_some())
        {
            return Ok(());
        }
        let binding = release
            .spec
            .as_ref()
            .map(|s| s.release_binding.clone())
            .unwrap_or_default();
        if binding.is_empty() {
            return Ok(());
        }
        let binding = ObjectKey::new(Kind::ReleaseBinding, &key.namespace, &binding);
        match self.resources.update_status(&binding, rollup_binding).await {
            Ok(_) | Err(crate::resources::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn write_plane(&self, key: &ObjectKey) -> Result<(), crate::resources::Error> {
        let Some(report) = self
            .planes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
        else {
            return Ok(());
        };
        let result = self
            .resources
            .update_status(key, move |_, object| {
                let generation = object.meta().generation;
                let status = match object {
                    Object::DataPlane(dp) => dp.status.get_or_insert_default(),
                    Object::ClusterDataPlane(dp) => dp.status.get_or_insert_default(),
                    _ => return,
                };
                status.observed_generation = generation;
                plane_status(status, &report);
            })
            .await;
        match result {
            Ok(_) | Err(crate::resources::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The data plane a Release goes to.
pub fn plane_of(namespace: &str, release: &pb::Release) -> Option<ObjectKey> {
    let r = release.spec.as_ref()?.data_plane_ref.as_ref()?;
    Some(if r.kind == Kind::ClusterDataPlane.name() {
        ObjectKey::new(Kind::ClusterDataPlane, "", &r.name)
    } else {
        ObjectKey::new(Kind::DataPlane, namespace, &r.name)
    })
}

fn release_status(release: &mut pb::Release, report: &ReleaseReport, connected: bool, plane: &str) {
    let generation = release.metadata.as_ref().map_or(0, |m| m.generation);
    let terminating = release
        .metadata
        .as_ref()
        .is_some_and(|m| m.delete_time.is_some());
    let count = release.spec.as_ref().map_or(0, |s| s.resources.len());
    let status = release.status.get_or_insert_default();
    if let Some(applied) = report.applied {
        status.applied_generation = status.applied_generation.max(applied);
    }
    if let Some((_, resources)) = &report.health {
        status.resources = resources.clone();
    }
    status.observed_generation = generation;
    let applied = status.applied_generation >= generation;
    let failed = report.failed.as_ref().filter(|(g, _)| *g == generation);
    let still_failed = status.conditions.iter().any(|c| {
        c.r#type == "Applied" && c.reason == "ApplyFailed" && c.observed_generation == generation
    });
    if terminating {
        let reason = if connected {
            "Pruning"
        } else {
            "AgentDisconnected"
        };
        let message = format!("waiting for data plane {plane} to prune the release's objects");
        for type_ in ["Applied", "Ready"] {
            set_condition(
                &mut status.conditions,
                type_,
                false,
                reason,
                &message,
                generation,
            );
        }
        return;
    }
    if applied {
        let message = format!("generation {generation} applied on data plane {plane}");
        set_condition(
            &mut status.conditions,
            "Applied",
            true,
            "Applied",
            &message,
            generation,
        );
    } else if let Some((_, error)) = failed {
        set_condition(
            &mut status.conditions,
            "Applied",
            false,
            "ApplyFailed",
            error,
            generation,
        );
    } else if !still_failed {
        let reason = if connected {
            "Applying"
        } else {
            "AgentDisconnected"
        };
        let message = if connected {
            format!("data plane {plane} is applying generation {generation}")
        } else {
            format!("waiting for the agent of data plane {plane} to connect")
        };
        set_condition(
            &mut status.conditions,
            "Applied",
            false,
            reason,
            &message,
            generation,
        );
    }
    let (ready, reason, message) = if !applied {
        let applied = status.conditions.iter().find(|c| c.r#type == "Applied");
        let (reason, message) = applied.map_or(("Applying", String::new()), |c| {
            (c.reason.as_str(), c.message.clone())
        });
        (false, reason.to_string(), message)
    } else {
        health(&status.resources, count)
    };
    set_condition(
        &mut status.conditions,
        "Ready",
        ready,
        &reason,
        &message,
        generation,
    );
}

/// Rolls object health up: any `Degraded` object degrades the release, any other state but
/// `Healthy` or `Suspended` keeps it progressing.
fn health(resources: &[pb::ReleaseResourceStatus], expected: usize) -> (bool, String, String) {
    let name = |r: &pb::ReleaseResourceStatus| format!("{} {}", r.kind, r.name);
    let detail = |r: &pb::ReleaseResourceStatus| {
        if r.message.is_empty() {
            name(r)
        } else {
            format!("{}: {}", name(r), r.message)
        }
    };
    let degraded: Vec<String> = resources
        .iter()
        .filter(|r| r.health == "Degraded")
        .map(detail)
        .collect();
    if !degraded.is_empty() {
        return (false, "ResourcesDegraded".into(), degraded.join("; "));
    }
    let waiting: Vec<String> = resources
        .iter()
        .filter(|r| r.health != "Healthy" && r.health != "Suspended")
        .map(detail)
        .collect();
    if !waiting.is_empty() || resources.len() < expected {
        let message = if waiting.is_empty() {
            "waiting for the agent to report health".to_string()
        } else {
            waiting.join("; ")
        };
        return (false, "ResourcesProgressing".into(), message);
    }
    (
        true,
        "ResourcesHealthy".into(),
        format!("{} object(s) healthy", resources.len()),
    )
}

/// Sets a binding's `Ready`, `Progressing` and `Degraded` conditions from its `Rendered`
/// condition and its Release's status.
pub fn rollup_binding(resources: &Resources, object: &mut Object) {
    let Object::ReleaseBinding(binding) = object else {
        return;
    };
    let generation = binding.metadata.as_ref().map_or(0, |m| m.generation);
    let namespace = binding
        .metadata
        .as_ref()
        .map(|m| m.namespace.clone())
        .unwrap_or_default();
    let name = binding
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let status = binding.status.get_or_insert_default();
    let rendered = status
        .conditions
        .iter()
        .find(|c| c.r#type == "Rendered")
        .cloned();
    let release = match resources.get(&ObjectKey::new(Kind::Release, &namespace, &name)) {
        Ok(Object::Release(r)) if r.metadata.as_ref().is_none_or(|m| m.delete_time.is_none()) => {
            Some(r)
        }
        _ => None,
    };
    // A Release rendered from an older binding spec, or a status from before the Release's
    // latest generation, says nothing about what the binding asks for now.
    let rendered_now = rendered
        .as_ref()
        .is_some_and(|c| c.observed_generation >= generation);
    let release_generation = release
        .as_ref()
        .and_then(|r| r.metadata.as_ref())
        .map_or(0, |m| m.generation);
    let observed_now = release
        .as_ref()
        .and_then(|r| r.status.as_ref())
        .is_some_and(|s| s.observed_generation >= release_generation);
    // (ready, progressing, degraded, reason, message)
    let (ready, progressing, degraded, reason, message) = match (&rendered, &release) {
        (Some(c), _) if c.status == "False" => {
            let failed = c.reason == "RenderFailed";
            (false, false, failed, c.reason.clone(), c.message.clone())
        }
        (_, None) | (_, Some(_)) if !rendered_now => (
            false,
            true,
            false,
            "Rendering".into(),
            "the release is being rendered".into(),
        ),
        (_, Some(_)) if !observed_now => (
            false,
            true,
            false,
            "Applying".into(),
            "waiting for the data plane".into(),
        ),
        (_, None) => (
            false,
            true,
            false,
            "Rendering".into(),
            "the release is being rendered".into(),
        ),
        (_, Some(release)) => {
            let conditions = release
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            let get = |t: &str| conditions.iter().find(|c| c.r#type == t);
            match (get("Applied"), get("Ready")) {
                (Some(a), _) if a.status == "False" && a.reason == "ApplyFailed" => {
                    (false, false, true, a.reason.clone(), a.message.clone())
                }
                (Some(a), _) if a.status == "False" => {
                    (false, true, false, a.reason.clone(), a.message.clone())
                }
                (Some(_), Some(r)) => {
                    let degraded = r.reason == "ResourcesDegraded";
                    (
                        r.status == "True",
                        r.status != "True" && !degraded,
                        degraded,
                        r.reason.clone(),
                        r.message.clone(),
                    )
                }
                _ => (
                    false,
                    true,
                    false,
                    "Applying".into(),
                    "waiting for the data plane".into(),
                ),
            }
        }
    };
    set_condition(
        &mut status.conditions,
        "Ready",
        ready,
        &reason,
        &message,
        generation,
    );
    let (p_reason, d_reason) = if ready {
        ("Synced", "Healthy")
    } else {
        (reason.as_str(), reason.as_str())
    };
    set_condition(
        &mut status.conditions,
        "Progressing",
        progressing,
        p_reason,
        &message,
        generation,
    );
    set_condition(
        &mut status.conditions,
        "Degraded",
        degraded,
        d_reason,
        &message,
        generation,
    );
    let current = binding
        .spec
        .as_ref()
        .map(|s| s.release_name.clone())
        .unwrap_or_default();
    record_release(status, &current, rendered_now, ready);
}

/// Releases a binding's history keeps.
pub const RELEASE_HISTORY: usize = 10;

/// Notes in the binding's history that it rendered `current` (once it has), and when it was
/// first `Ready` on it.
fn record_release(
    status: &mut pb::ReleaseBindingStatus,
    current: &str,
    rendered: bool,
    ready: bool,
) {
    if current.is_empty() || !rendered {
        return;
    }
    let history = &mut status.release_history;
    if history.first().is_none_or(|d| d.release_name != current) {
        history.insert(
            0,
            pb::DeployedRelease {
                release_name: current.to_string(),
                deploy_time: Some(troupe_common::timestamp::now()),
                ready_time: None,
            },
        );
        history.truncate(RELEASE_HISTORY);
    }
    if ready && history[0].ready_time.is_none() {
        history[0].ready_time = Some(troupe_common::timestamp::now());
    }
}

fn plane_status(status: &mut pb::DataPlaneStatus, report: &PlaneReport) {
    let connection = status.agent_connection.get_or_insert_default();
    connection.connected = report.sessions > 0;
    connection.connected_agents = report.sessions;
    if !report.agent_version.is_empty() {
        connection.agent_version = report.agent_version.clone();
    }
    connection.last_connected_time = report.last_connected.or(connection.last_connected_time);
    connection.last_disconnected_time = report
        .last_disconnected
        .or(connection.last_disconnected_time);
    connection.last_heartbeat_time = report.last_heartbeat.or(connection.last_heartbeat_time);
    connection.message = report.message.clone();
    if let Some(info) = &report.cluster_info {
        status.cluster_info = Some(info.clone());
    }
    status.releases_in_sync = report.in_sync;
    status.releases_pending = report.pending;
    let (ready, reason, message) = if report.sessions > 0 {
        (
            true,
            "AgentConnected",
            format!("agent {} connected", connection.agent_version),
        )
    } else if connection.last_connected_time.is_some() {
        (false, "AgentDisconnected", report.message.clone())
    } else {
        (false, "NoAgent", "no agent has connected yet".to_string())
    };
    let generation = status.observed_generation;
    set_condition(
        &mut status.conditions,
        "Ready",
        ready,
        reason,
        &message,
        generation,
    );
}
