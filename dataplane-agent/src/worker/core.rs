//! The agent's state and what can be done to it, one operation at a time: the worker task
//! owns the one [`Core`] and calls these between commands. Nothing here knows of sessions;
//! what changed is left in [`Core::unreported`] for the worker to pass on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::time::Instant;

use troupe_common::agent::decode_manifests;
use troupe_common::pb::v1alpha1::{
    self as pb, AgentMessage, ReleaseResource, ReleaseResourceStatus, agent_message,
};
use troupe_common::policy::Policy;
use troupe_common::timestamp::now_seconds;

use super::owners::Owners;
use super::retry::{Retry, Timing};
use super::screen::{merge, screen};
use super::{Upsert, message};
use crate::apply::Applier;
use crate::state::{Held, State};

/// The applier, the desired state and the health the agent last saw.
pub(super) struct Core {
    pub(super) applier: Arc<dyn Applier>,
    /// The kinds the agent applies.
    pub(super) policy: Arc<Policy>,
    /// The desired state on disk; written before each ack.
    pub(super) state: State,
    /// The release that owns each object applied; follows `held`.
    pub(super) owners: Owners,
    /// What `state` holds, by release id.
    pub(super) held: BTreeMap<String, Held>,
    /// Per release, the generation and object health last observed.
    pub(super) health: HashMap<String, (i64, Vec<ReleaseResourceStatus>)>,
    /// Per release, the status entries of the objects the last apply refused, to report
    /// beside the health the applier watches.
    pub(super) refused: HashMap<String, Vec<ReleaseResourceStatus>>,
    /// Releases whose health changed since it was last reported.
    pub(super) unreported: BTreeSet<String>,
    /// Drift and retry intervals.
    pub(super) timing: Timing,
    /// Per release whose last apply left objects failing, the next attempt.
    pub(super) retries: HashMap<String, Retry>,
    /// Per release whose removal failed, the generation of the removal and the next attempt;
    /// drift leaves these alone.
    pub(super) removing: HashMap<String, (i64, Retry)>,
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
    /// The state of an agent starting over `held`, as loaded from `state`.
    pub(super) fn new(
        applier: Arc<dyn Applier>,
        policy: Arc<Policy>,
        state: State,
        held: BTreeMap<String, Held>,
        timing: Timing,
    ) -> Self {
        Self {
            timing,
            retries: HashMap::new(),
            removing: HashMap::new(),
            applier,
            policy,
            state,
            owners: Owners::from_held(&held),
            held,
            health: HashMap::new(),
            refused: HashMap::new(),
            unreported: BTreeSet::new(),
        }
    }

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
        // A new generation starts counting its attempts afresh, and is no longer removed.
        self.retries.remove(&upsert.release);
        self.removing.remove(&upsert.release);
        if !self.held.contains_key(&upsert.release) {
            // Written ahead of a first apply: if the agent dies between the apply and the
            // record below, the release is still reported in `Hello` (as generation 0), so
            // the control plane sends it again or, if it is gone, a removal for what the
            // apply created.
            self.state
                .save(&Held::pending(&upsert.release))
                .map_err(Failure::Record)?;
        }
        let held = Held {
            release: upsert.release.clone(),
            generation: upsert.generation,
            content_hash: upsert.content_hash,
            resources,
            unapplied: Default::default(),
        };
        self.apply(held, true).await.map(|_| ())
    }

    /// Applies what `held` owns of its objects, records it (always when `record`, else when
    /// what it owns changed) and takes in the health. The owners index changes only once the
    /// record is written. Returns true when health changed.
    async fn apply(&mut self, mut held: Held, record: bool) -> Result<bool, Failure> {
        let screened = screen(&held.release, &held.resources, &self.policy, &self.owners);
        let applied = self
            .applier
            .apply(&held.release, &screened.apply)
            .await
            .map_err(Failure::Apply)?;
        if record || held.unapplied != screened.unapplied {
            held.unapplied = screened.unapplied;
            self.state.save(&held).map_err(Failure::Record)?;
        }
        self.owners.set(&held.release, screened.owned);
        let (release, generation) = (held.release.clone(), held.generation);
        self.held.insert(release.clone(), held);
        let refused = screened.refused.iter().map(|(_, s)| s.clone()).collect();
        self.refused.insert(release.clone(), refused);
        let statuses = if applied.needs_retry() {
            let retry = Retry::after(self.retries.get(&release), &applied.failed, &self.timing);
            let statuses = retry.mark(applied.statuses);
            self.retries.insert(release.clone(), retry);
            statuses
        } else {
            self.retries.remove(&release);
            applied.statuses
        };
        Ok(self.observed(&release, generation, merge(statuses, screened.refused)))
    }

    /// Prunes and forgets `release`; a failed prune is tried again with backoff, the
    /// release held until then.
    pub(super) async fn remove(&mut self, release: &str, generation: i64) -> Result<(), Failure> {
        if let Err(e) = self.applier.prune(release).await {
            let retry = Retry::after(
                self.removing.get(release).map(|(_, r)| r),
                &[],
                &self.timing,
            );
            self.removing
                .insert(release.to_string(), (generation, retry));
            return Err(Failure::Apply(e));
        }
        self.removing.remove(release);
        self.retries.remove(release);
        self.state.remove(release).map_err(Failure::Forget)?;
        self.owners.let_go(release);
        self.held.remove(release);
        self.health.remove(release);
        self.refused.remove(release);
        self.unreported.remove(release);
        Ok(())
    }

    /// Takes in the health of `release`; returns true when it changed.
    fn observed(
        &mut self,
        release: &str,
        generation: i64,
        statuses: Vec<ReleaseResourceStatus>,
    ) -> bool {
        let new = (generation, statuses);
        if self.health.get(release) == Some(&new) {
            return false;
        }
        self.health.insert(release.to_string(), new);
        self.unreported.insert(release.to_string());
        true
    }

    /// Re-applies everything held, correcting drift. Returns true when health changed.
    pub(super) async fn correct_drift(&mut self) -> bool {
        let releases: Vec<String> = self.held.keys().cloned().collect();
        self.reapply(releases, "could not re-apply").await
    }

    /// Applies again, at once, the releases an object of which someone else deleted.
    /// Returns true when health changed.
    pub(super) async fn restore_deleted(&mut self) -> bool {
        let releases = self.applier.drifted();
        if !releases.is_empty() {
            tracing::info!(
                ?releases,
                "objects were deleted by someone else; applying again"
            );
        }
        self.reapply(releases, "could not re-apply").await
    }

    /// Applies the held `releases` again, saying `failed` when one fails. A release only
    /// written ahead of its first apply has nothing acknowledged to keep, and one being
    /// removed is not re-created: both are skipped. Returns true when health changed.
    async fn reapply(&mut self, releases: Vec<String>, failed: &str) -> bool {
        let mut changed = false;
        for release in releases {
            let Some(held) = self.held.get(&release).cloned() else {
                continue;
            };
            if held.is_pending() || self.removing.contains_key(&release) {
                continue;
            }
            match self.apply(held, false).await {
                Ok(c) => changed |= c,
                Err(e) => tracing::warn!(%release, error = %e, "{failed}"),
            }
        }
        changed
    }

    /// When the next retry is due, if any.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        let applies = self.retries.values().map(|r| r.at);
        let removals = self.removing.values().map(|(_, r)| r.at);
        applies.chain(removals).min()
    }

    /// Applies again the releases whose retry is due, and prunes again those whose removal
    /// is. Returns whether health changed and the removals that now succeeded, with their
    /// generations.
    pub(super) async fn retry_due(&mut self) -> (bool, Vec<(String, i64)>) {
        let now = Instant::now();
        let mut removed = Vec::new();
        let due: Vec<(String, i64)> = self
            .removing
            .iter()
            .filter(|(_, (_, r))| r.at <= now)
            .map(|(release, (generation, _))| (release.clone(), *generation))
            .collect();
        for (release, generation) in due {
            match self.remove(&release, generation).await {
                Ok(()) => removed.push((release, generation)),
                Err(e) => tracing::warn!(%release, error = %e, "prune failed again"),
            }
        }
        let due: Vec<String> = self
            .retries
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(release, _)| release.clone())
            .collect();
        let mut changed = false;
        for release in due {
            let Some(held) = self.held.get(&release).cloned() else {
                self.retries.remove(&release);
                continue;
            };
            match self.apply(held, false).await {
                Ok(c) => changed |= c,
                Err(e) => {
                    // Nothing new to wait for: try again later rather than spin.
                    tracing::warn!(%release, error = %e, "retry failed");
                    let retry = Retry::after(self.retries.get(&release), &[], &self.timing);
                    self.retries.insert(release, retry);
                }
            }
        }
        (changed, removed)
    }

    /// Re-applies the releases that wait for an object no release owns any more (its owner
    /// was removed). Returns true when health changed.
    pub(super) async fn apply_waiting(&mut self) -> bool {
        let waiting: Vec<String> = self
            .held
            .values()
            .filter(|h| self.waits_for_free_object(h))
            .map(|h| h.release.clone())
            .collect();
        self.reapply(waiting, "could not apply what it waited for")
            .await
    }

    fn waits_for_free_object(&self, held: &Held) -> bool {
        held.resources
            .iter()
            .filter(|r| held.unapplied.contains(&r.id))
            .any(|r: &ReleaseResource| {
                let key = super::owners::ObjectKey::of(&crate::apply::describe(r));
                self.owners.owner_of(&key).is_none()
            })
    }

    /// Takes the health the applier watched change since the last apply. Returns true when
    /// health changed.
    pub(super) fn refresh_health(&mut self) -> bool {
        let held: Vec<(String, i64)> = self
            .held
            .values()
            .map(|h| (h.release.clone(), h.generation))
            .collect();
        let mut changed = false;
        for (release, generation) in held {
            if let Some(mut statuses) = self.applier.health(&release) {
                if let Some(retry) = self.retries.get(&release) {
                    statuses = retry.mark(statuses);
                }
                statuses.extend(self.refused.get(&release).cloned().unwrap_or_default());
                changed |= self.observed(&release, generation, statuses);
            }
        }
        changed
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
