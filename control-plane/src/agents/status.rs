//! Status back: what agents report becomes Release status and DataPlane status.
//!
//! Sessions hand reports to [`StatusWriter`], which merges them per object (latest wins) and
//! writes them from a small worker pool, so a burst of acks for one Release is one write and a
//! slow disk never stalls a stream. The status itself is derived by [`crate::status`]
//! ([`release_status`], [`plane_status`]). The binding controller, on whichever server leads,
//! sees each Release write in its watch and rolls the Release's binding up: it is the one
//! writer of binding status.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use crate::controllers::queue::Queue;
use crate::resources::Resources;
use crate::status::plane::{PlaneReport, plane_status};
use crate::status::release::{ReleaseReport, release_status};

/// Workers writing status.
const WORKERS: usize = 8;

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
            queue: Arc::new(Queue::new("status")),
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
                // Not retried: the next report writes the status again.
                Ok::<_, std::convert::Infallible>(())
            }
        });
        this
    }

    /// Re-derives a Release's status (and so its binding's roll-up, if it changed).
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

    /// The last connection state recorded of each data plane.
    pub fn plane_reports(&self) -> Vec<(ObjectKey, PlaneReport)> {
        let planes = self.planes.lock().unwrap_or_else(PoisonError::into_inner);
        planes.iter().map(|(k, r)| (k.clone(), r.clone())).collect()
    }

    /// The queue of status writes.
    pub fn queue(&self) -> Arc<Queue> {
        self.queue.clone()
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
        Ok(())
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
    Some(
        release
            .spec
            .as_ref()?
            .data_plane_ref
            .as_ref()?
            .key(namespace),
    )
}

/// Every data plane whose agent is connected through a server that says so, with that
/// server's name.
pub async fn held_sessions(
    resources: &Resources,
) -> Result<Vec<(ObjectKey, String)>, crate::resources::Error> {
    let mut held = Vec::new();
    for kind in [Kind::DataPlane, Kind::ClusterDataPlane] {
        let page = resources.list(kind, "", &Default::default(), 0, "").await?;
        held.extend(
            page.items
                .iter()
                .filter_map(|plane| Some((plane.key(), held_by(plane)?.to_string()))),
        );
    }
    Ok(held)
}

/// Marks `plane` disconnected because `server`, which held its agent's session, is gone (it
/// died or was cut off, and could not say so itself); unless the agent reconnected meanwhile,
/// through another server.
pub async fn mark_departed(
    resources: &Arc<Resources>,
    plane: &ObjectKey,
    server: &str,
) -> Result<(), crate::resources::Error> {
    let report = PlaneReport {
        last_disconnected: Some(troupe_common::timestamp::now_seconds()),
        message: format!("agent disconnected: server {server}, which held its session, is gone"),
        server: server.to_string(),
        ..Default::default()
    };
    tracing::warn!(%plane, %server, "the server holding this data plane's agent is gone");
    let result = resources
        .update_status(plane, move |_, object| {
            let status = match object {
                Object::DataPlane(dp) => dp.status.get_or_insert_default(),
                Object::ClusterDataPlane(dp) => dp.status.get_or_insert_default(),
                _ => return,
            };
            let connection = status.agent_connection.clone().unwrap_or_default();
            if connection.connected && connection.server == report.server {
                let counts = (status.releases_in_sync, status.releases_pending);
                plane_status(status, &report);
                (status.releases_in_sync, status.releases_pending) = counts;
            }
        })
        .await;
    match result {
        Ok(_) | Err(crate::resources::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The server holding a data plane's agent's session, if one is connected.
fn held_by(plane: &Object) -> Option<&str> {
    let status = match plane {
        Object::DataPlane(dp) => dp.status.as_ref(),
        Object::ClusterDataPlane(dp) => dp.status.as_ref(),
        _ => None,
    }?;
    let connection = status.agent_connection.as_ref()?;
    (connection.connected && !connection.server.is_empty()).then_some(connection.server.as_str())
}
