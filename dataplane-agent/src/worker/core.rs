//! The agent's state and what can be done to it, one operation at a time: the worker task
//! owns the one [`Core`] and calls these between commands. Nothing here knows of sessions;
//! what changed is left in [`Core::unreported`] for the worker to pass on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use troupe_common::agent::decode_manifests;
use troupe_common::pb::v1alpha1::{self as pb, AgentMessage, ReleaseResourceStatus, agent_message};
use troupe_common::timestamp::now_seconds;

use super::{Upsert, message};
use crate::apply::Applier;
use crate::state::{Held, State};

/// The applier, the desired state and the health the agent last saw.
pub(super) struct Core {
    pub(super) applier: Arc<dyn Applier>,
    /// The desired state on disk; written before each ack.
    pub(super) state: State,
    /// What `state` holds, by release id.
    pub(super) held: BTreeMap<String, Held>,
    /// Per release, the generation and object health last observed.
    pub(super) health: HashMap<String, (i64, Vec<ReleaseResourceStatus>)>,
    /// Releases whose health changed since it was last reported.
    pub(super) unreported: BTreeSet<String>,
}

/// Why an upsert or a removal failed; its text is the error of the `Ack`.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    /// The joined chunks are not a list of objects.
    #[error("{0}")]
    Decode(String),
    /// The applier failed.
    #[error(transparent)]
    Apply(#[from] crate::apply::Error),
    /// The state on disk could not be written.
    #[error("recording the release in the agent's state: {0}")]
    Record(#[source] std::io::Error),
    /// The state on disk could not be cleared.
    #[error("forgetting the release in the agent's state: {0}")]
    Forget(#[source] std::io::Error),
}

impl Core {
    pub(super) async fn upsert(&mut self, upsert: Upsert) -> Result<(), Failure> {
        if let Some(held) = self.held.get(&upsert.release)
            && (held.generation > upsert.generation
                || (held.generation == upsert.generation
                    && held.content_hash == upsert.content_hash))
        {
            // A resend of what is applied already, or an old generation: nothing to do.
            return Ok(());
        }
        let resources = decode_manifests(&upsert.manifests).map_err(Failure::Decode)?;
        if !self.held.contains_key(&upsert.release) {
            // Written ahead of a first apply: if the agent dies between the apply and the
            // record below, the release is still reported in `Hello` (as generation 0), so
            // the control plane sends it again or, if it is gone, a removal for what the
            // apply created.
            self.state
                .save(&Held::pending(&upsert.release))
                .map_err(Failure::Record)?;
        }
        let statuses = self
            .applier
            .apply(&upsert.release, &resources)
            .await
            .map_err(Failure::Apply)?;
        let held = Held {
            release: upsert.release.clone(),
            generation: upsert.generation,
            content_hash: upsert.content_hash,
            resources,
        };
        self.state.save(&held).map_err(Failure::Record)?;
        self.held.insert(upsert.release.clone(), held);
        self.observed(&upsert.release, upsert.generation, statuses);
        Ok(())
    }

    pub(super) async fn remove(&mut self, release: &str) -> Result<(), Failure> {
        self.applier.prune(release).await.map_err(Failure::Apply)?;
        self.state.remove(release).map_err(Failure::Forget)?;
        self.held.remove(release);
        self.health.remove(release);
        self.unreported.remove(release);
        Ok(())
    }

    fn observed(&mut self, release: &str, generation: i64, statuses: Vec<ReleaseResourceStatus>) {
        let new = (generation, statuses);
        if self.health.get(release) != Some(&new) {
            self.health.insert(release.to_string(), new);
            self.unreported.insert(release.to_string());
        }
    }

    /// Re-applies everything held, correcting drift. Returns true when health changed.
    pub(super) async fn correct_drift(&mut self) -> bool {
        let releases: Vec<Held> = self.held.values().cloned().collect();
        let before = self.unreported.len();
        // A release only written ahead of its first apply has nothing acknowledged to keep.
        for held in releases.into_iter().filter(|h| !h.is_pending()) {
            let statuses = match self.applier.apply(&held.release, &held.resources).await {
                Ok(statuses) => statuses,
                Err(e) => {
                    tracing::warn!(release = %held.release, error = %e, "could not re-apply");
                    continue;
                }
            };
            self.observed(&held.release, held.generation, statuses);
        }
        self.unreported.len() != before
    }

    /// Takes the health the applier watched change since the last apply. Returns true when
    /// health changed.
    pub(super) fn refresh_health(&mut self) -> bool {
        let held: Vec<(String, i64)> = self
            .held
            .values()
            .map(|h| (h.release.clone(), h.generation))
            .collect();
        let before = self.unreported.len();
        for (release, generation) in held {
            if let Some(statuses) = self.applier.health(&release) {
                self.observed(&release, generation, statuses);
            }
        }
        self.unreported.len() != before
    }

    pub(super) fn known(&self) -> Vec<(String, pb::KnownRelease)> {
        self.held
            .values()
            .map(|h| {
                let known = pb::KnownRelease {
                    generation: h.generation,
                    content_hash: h.content_hash.clone(),
                };
                (h.release.clone(), known)
            })
            .collect()
    }

    pub(super) fn report(&self, release: &str) -> Option<AgentMessage> {
        let (generation, resources) = self.health.get(release)?.clone();
        Some(message(agent_message::Message::Status(pb::StatusReport {
            release: release.to_string(),
            generation,
            resources: stamp(resources),
        })))
    }
}

fn stamp(mut resources: Vec<ReleaseResourceStatus>) -> Vec<ReleaseResourceStatus> {
    let now = now_seconds();
    for r in &mut resources {
        r.last_observed_time = Some(now);
    }
    resources
}
