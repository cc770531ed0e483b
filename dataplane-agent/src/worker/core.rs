//! The agent's state and what can be done to it: the worker task owns the one [`Core`] and
//! calls these between commands. An apply is split in two so the worker need not wait for
//! the applier: [`Core::begin_upsert`] / [`Core::begin_reapply`] screen the objects and claim
//! them (a [`Started`]), the applier runs elsewhere, and [`Core::finish`] records the result;
//! a prune likewise ends in [`Core::finish_remove`]. Nothing here knows of sessions; what
//! changed is left in [`Core::unreported`] for the worker to pass on.

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
use super::screen::{Screened, merge, screen};
use super::{Upsert, message};
use crate::apply::{Applied, Applier};
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
    /// The objects the applies in flight will own: taken, for every other release, as if
    /// owned already.
    pub(super) claimed: Owners,
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
    /// Releases whose last apply failed as a whole, partway perhaps: the target may hold a
    /// mix of what was held and what was being applied, so the content held is applied
    /// again when sent, not just acknowledged.
    pub(super) broken: BTreeSet<String>,
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

/// An apply under way: the release as it will be recorded once the applier is done, what
/// screening decided of its objects, and whether to record it whatever changed.
pub(super) struct Started {
    held: Held,
    screened: Screened,
    record: bool,
}

impl Started {
    /// The release being applied.
    pub(super) fn release(&self) -> &str {
        &self.held.release
    }
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
        let held = account_for_found(held, applier.as_ref(), &state);
        Self {
            timing,
            retries: HashMap::new(),
            removing: HashMap::new(),
            broken: BTreeSet::new(),
            applier,
            policy,
            state,
            owners: Owners::from_held(&held),
            claimed: Owners::default(),
            held,
            health: HashMap::new(),
            refused: HashMap::new(),
            unreported: BTreeSet::new(),
        }
    }

    /// Starts an upsert: `None` when there is nothing to apply (the content held already),
    /// else the apply to run and the objects to hand the applier.
    ///
    /// Content decides, not generation numbers: a control plane restored from a backup, or
    /// one that lost its store, numbers generations again from lower values, and what it
    /// sends is still what must run. (One session sends a release's generations in order, and
    /// commands of an ended session are dropped, so an older generation never overtakes a
    /// newer one.) The same content under another number is only renumbered, unless the
    /// release is being removed (a prune that failed may have removed part of it: it is
    /// applied again and its removal called off) or its last apply failed (it may be half
    /// replaced).
    pub(super) fn begin_upsert(
        &mut self,
        upsert: Upsert,
    ) -> Result<Option<(Started, Vec<ReleaseResource>)>, Failure> {
        if let Some(held) = self.held.get_mut(&upsert.release)
            && !held.is_pending()
            && !self.removing.contains_key(&upsert.release)
            && !self.broken.contains(&upsert.release)
            && held.content_hash == upsert.content_hash
        {
            if held.generation != upsert.generation {
                held.generation = upsert.generation;
                self.state.save(held).map_err(Failure::Record)?;
                if let Some((generation, _)) = self.health.get_mut(&upsert.release) {
                    *generation = upsert.generation;
                    self.unreported.insert(upsert.release.clone());
                }
            }
            return Ok(None);
        }
        let resources = decode_manifests(&upsert.manifests).map_err(Failure::Decode)?;
        // A new generation starts counting its attempts afresh, and is no longer removed.
        self.retries.remove(&upsert.release);
        self.removing.remove(&upsert.release);
        if !self.held.contains_key(&upsert.release) {
            // Written ahead of a first apply: if the agent dies between the apply and the
            // record, the release is still reported in `Hello` (as generation 0), so the
            // control plane sends it again or, if it is gone, a removal for what the apply
            // created. Held in memory too, so a session that connects meanwhile reports it.
            let pending = Held::pending(&upsert.release);
            self.state.save(&pending).map_err(Failure::Record)?;
            self.held.insert(upsert.release.clone(), pending);
        }
        let held = Held {
            release: upsert.release.clone(),
            generation: upsert.generation,
            content_hash: upsert.content_hash,
            resources,
            unapplied: Default::default(),
        };
        Ok(Some(self.begin(held, true)))
    }

    /// Starts applying `release` again as held, correcting drift or retrying. `None` for a
    /// release no longer held, only written ahead of its first apply (nothing acknowledged
    /// to keep) or being removed (not to be re-created).
    pub(super) fn begin_reapply(
        &mut self,
        release: &str,
    ) -> Option<(Started, Vec<ReleaseResource>)> {
        let held = self.held.get(release)?;
        if held.is_pending() || self.removing.contains_key(release) {
            return None;
        }
        let held = held.clone();
        Some(self.begin(held, false))
    }

    /// Screens `held` and claims what it will own until the apply finishes, so that an
    /// apply of another release started meanwhile does not take the same objects.
    fn begin(&mut self, held: Held, record: bool) -> (Started, Vec<ReleaseResource>) {
        let (owners, claimed) = (&self.owners, &self.claimed);
        let mut screened = screen(&held.release, &held.resources, &self.policy, |key| {
            owners.owner_of(key).or_else(|| claimed.owner_of(key))
        });
        self.claimed.set(&held.release, screened.owned.clone());
        let objects = std::mem::take(&mut screened.apply);
        let started = Started {
            held,
            screened,
            record,
        };
        (started, objects)
    }

    /// Takes in what the applier made of `started`: records the release (always for an
    /// upsert, else when what it owns changed), then moves the claim to the owners index
    /// and takes in the health. Returns true when health changed.
    pub(super) fn finish(
        &mut self,
        started: Started,
        result: Result<Applied, crate::apply::Error>,
    ) -> Result<bool, Failure> {
        let Started {
            mut held,
            screened,
            record,
        } = started;
        self.claimed.let_go(&held.release);
        let applied = match result {
            Ok(applied) => applied,
            Err(e) => {
                self.broken.insert(held.release);
                return Err(Failure::Apply(e));
            }
        };
        self.broken.remove(&held.release);
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

    /// A retry whose apply failed as a whole: nothing new to wait for, so try again later
    /// rather than spin.
    pub(super) fn retry_later(&mut self, release: &str) {
        if self.held.contains_key(release) {
            let retry = Retry::after(self.retries.get(release), &[], &self.timing);
            self.retries.insert(release.to_string(), retry);
        }
    }

    /// Takes in what the prune of `release` did: forgets it, or, when the prune failed,
    /// tries again with backoff, the release held until then.
    pub(super) fn finish_remove(
        &mut self,
        release: &str,
        generation: i64,
        result: Result<(), crate::apply::Error>,
    ) -> Result<(), Failure> {
        if let Err(e) = result {
            let retry = Retry::after(
                self.removing.get(release).map(|(_, r)| r),
                &[],
                &self.timing,
            );
            self.removing
                .insert(release.to_string(), (generation, retry));
            // Being removed, it is not applied again.
            self.retries.remove(release);
            return Err(Failure::Apply(e));
        }
        self.removing.remove(release);
        self.retries.remove(release);
        self.broken.remove(release);
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

    /// Every release held, for a drift pass.
    pub(super) fn held_releases(&self) -> Vec<String> {
        self.held.keys().cloned().collect()
    }

    /// When the next retry is due, if any, leaving out the releases `busy` says are being
    /// applied or removed already (their retry is rescheduled when that ends).
    pub(super) fn next_retry(&self, busy: impl Fn(&str) -> bool) -> Option<Instant> {
        let applies = self.retries.iter().map(|(k, r)| (k, r.at));
        let removals = self.removing.iter().map(|(k, (_, r))| (k, r.at));
        applies
            .chain(removals)
            .filter(|(release, _)| !busy(release))
            .map(|(_, at)| at)
            .min()
    }

    /// The removals due again (with their generations) and the releases whose apply is due
    /// again, leaving out the ones `busy` says are being applied or removed already.
    pub(super) fn due(&self, busy: impl Fn(&str) -> bool) -> (Vec<(String, i64)>, Vec<String>) {
        let now = Instant::now();
        let removals = self
            .removing
            .iter()
            .filter(|(release, (_, r))| r.at <= now && !busy(release))
            .map(|(release, (generation, _))| (release.clone(), *generation))
            .collect();
        let applies = self
            .retries
            .iter()
            .filter(|(release, r)| r.at <= now && !busy(release))
            .map(|(release, _)| release.clone())
            .collect();
        (removals, applies)
    }

    /// The releases that wait for an object no release owns any more (its owner was
    /// removed), to apply again.
    pub(super) fn waiting(&self) -> Vec<String> {
        self.held
            .values()
            .filter(|h| self.waits_for_free_object(h))
            .map(|h| h.release.clone())
            .collect()
    }

    fn waits_for_free_object(&self, held: &Held) -> bool {
        held.resources
            .iter()
            .filter(|r| held.unapplied.contains(&r.id))
            .any(|r: &ReleaseResource| {
                let key = super::owners::ObjectKey::of(&crate::apply::describe(r));
                self.owners.owner_of(&key).is_none() && self.claimed.owner_of(&key).is_none()
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

    /// What `Hello` reports: each release held at the generation acknowledged. A release
    /// whose removal failed and is being retried, or whose last apply failed, is reported as
    /// pending (generation 0): the target may hold only part of it, and the new session
    /// decides again whether it goes (a removal) or stays (an upsert, applied again, which
    /// calls a removal off).
    pub(super) fn known(&self) -> Vec<(String, pb::KnownRelease)> {
        self.held
            .values()
            .map(|h| {
                let uncertain =
                    self.removing.contains_key(&h.release) || self.broken.contains(&h.release);
                let known = match uncertain {
                    true => pb::KnownRelease::default(),
                    false => pb::KnownRelease {
                        generation: h.generation,
                        content_hash: h.content_hash.clone(),
                    },
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

/// Adds to `held` the releases the applier finds objects or records of that the agent's
/// state does not name (the state was lost or a file of it removed), as pending: reported in
/// `Hello` at generation 0, the control plane sends each again or a removal, so none is
/// purged while its objects stay behind.
fn account_for_found(
    mut held: BTreeMap<String, Held>,
    applier: &dyn Applier,
    state: &State,
) -> BTreeMap<String, Held> {
    for release in applier.found() {
        if held.contains_key(&release) {
            continue;
        }
        tracing::warn!(%release, "found objects of a release the agent's state does not hold; reporting it as pending");
        let pending = Held::pending(&release);
        if let Err(e) = state.save(&pending) {
            tracing::warn!(%release, error = %e, "could not record the pending release");
        }
        held.insert(release, pending);
    }
    held
}
