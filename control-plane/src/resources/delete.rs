//! Deleting: the cascade through owned referrers, refused while others still refer to what
//! goes, and Releases that stay, marked, until their agent has pruned them (DESIGN §6).

use std::collections::BTreeSet;
use std::sync::Arc;

use troupe_common::timestamp::now;
use troupe_common::{Kind, Object, ObjectKey};

use super::{Error, LISTED_REFERRERS, Origin, Resources, kinds, put, references, retrying};
use crate::store::{Precondition, Revision, Txn};

/// The result of a delete.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The object as it was.
    pub object: Object,
    /// Objects deleted with it by cascade.
    pub cascaded: Vec<ObjectKey>,
    /// Releases among them that stay until their agent has pruned them.
    pub pruning: Vec<ObjectKey>,
}

impl Resources {
    /// Deletes an object for `origin`, cascading to what it owns. Refused while objects
    /// outside the cascade still refer to it, and to a user for kinds the control plane
    /// removes itself. Returns once the deletion is on disk.
    pub async fn delete(
        self: &Arc<Self>,
        key: &ObjectKey,
        origin: Origin,
        expected: Revision,
        dry_run: bool,
    ) -> Result<Deleted, Error> {
        if origin == Origin::User {
            kinds::check_user_change(key, kinds::Change::Delete)?;
        }
        let key = key.clone();
        let (deleted, _) = self
            .write_durably(move |this| retrying(|| this.delete_once(&key, expected, dry_run)))
            .await?;
        Ok(deleted)
    }

    /// One attempt at the checks and the commit of [`Resources::delete`].
    fn delete_once(
        &self,
        key: &ObjectKey,
        expected: Revision,
        dry_run: bool,
    ) -> Result<(Deleted, Option<Revision>), Error> {
        let since = self.referrers_known()?;
        let (object, record) = self
            .read(key)?
            .ok_or_else(|| Error::NotFound(key.clone()))?;
        if expected != 0 && record.mod_revision != expected {
            return Err(Error::Stale {
                key: key.clone(),
                expected,
                found: record.mod_revision.to_string(),
            });
        }
        // Walk the reference graph: owned referrers join the cascade, others block it unless
        // the cascade takes them too.
        let mut doomed = vec![(key.clone(), record.mod_revision)];
        let mut in_cascade: BTreeSet<ObjectKey> = BTreeSet::from([key.clone()]);
        let mut blockers: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut i = 0;
        while i < doomed.len() {
            let target = doomed[i].0.clone();
            for (referrer, reference, revision) in self.referrers(&target)? {
                if !reference.owner {
                    blockers.insert(referrer);
                } else if in_cascade.insert(referrer.clone()) {
                    doomed.push((referrer, revision));
                }
            }
            i += 1;
        }
        blockers.retain(|b| !in_cascade.contains(b));
        if !blockers.is_empty() {
            let more = blockers.len().saturating_sub(LISTED_REFERRERS);
            return Err(Error::StillReferenced {
                key: key.clone(),
                referrers: blockers.into_iter().take(LISTED_REFERRERS).collect(),
                more,
            });
        }
        let cascaded: Vec<ObjectKey> = doomed.iter().skip(1).map(|(k, _)| k.clone()).collect();
        // A cascade of thousands may not fit in one etcd transaction: it may commit in steps,
        // since children go first and every prefix of it leaves no dangling owner.
        let mut txn = Txn::default().divisible();
        // Nothing may have come to refer to what goes since the referrers were looked up.
        for (k, _) in &doomed {
            txn = unchanged_referrers(txn, k, since);
        }
        let mut pruning = Vec::new();
        // Children first, so a watcher never sees an owner vanish before what it owns.
        for (k, revision) in doomed.iter().rev() {
            txn = txn.check(k.clone(), Precondition::AtRevision(*revision));
            // An environment whose Releases wait for their prune waits with them, marked
            // too, and goes with the last of them (`purge_release`).
            let waiting = if k.kind == Kind::Environment && !pruning.is_empty() {
                self.marked_for_deletion(k)?
            } else {
                self.awaiting_prune(k)?
            };
            txn = match waiting {
                Some(object) => {
                    pruning.push(k.clone());
                    put(txn, k.clone(), &object, None)
                }
                None => txn.delete(k.clone()),
            };
        }
        let deleted = Deleted {
            object,
            cascaded,
            pruning,
        };
        if dry_run {
            return Ok((deleted, None));
        }
        let revision = self.store.commit(txn)?;
        Ok((deleted, Some(revision)))
    }

    /// A Release some agent has applied is not deleted outright: it stays, marked with
    /// `deleteTime` at a new generation, until the agent acknowledges pruning it (DESIGN §6:
    /// objects leave a data plane only on an explicit removal). Returns that marked Release,
    /// or `None` when `key` can simply go.
    fn awaiting_prune(&self, key: &ObjectKey) -> Result<Option<Object>, Error> {
        if key.kind != Kind::Release {
            return Ok(None);
        }
        let Some((Object::Release(mut release), _)) = self.read(key)? else {
            return Ok(None);
        };
        let applied = release
            .status
            .as_ref()
            .is_some_and(|s| s.applied_generation > 0);
        let meta = release.metadata.get_or_insert_default();
        if !applied || meta.delete_time.is_some() {
            return Ok(applied.then_some(Object::Release(release)));
        }
        meta.delete_time = Some(now());
        meta.generation += 1;
        meta.resource_version = 0;
        Ok(Some(Object::Release(release)))
    }

    /// The object marked with `deleteTime` (kept if already marked), at a new generation.
    fn marked_for_deletion(&self, key: &ObjectKey) -> Result<Option<Object>, Error> {
        let Some((mut object, _)) = self.read(key)? else {
            return Ok(None);
        };
        let meta = object.meta_mut();
        if meta.delete_time.is_none() {
            meta.delete_time = Some(now());
            meta.generation += 1;
        }
        meta.resource_version = 0;
        Ok(Some(object))
    }

    /// Removes a Release that waited for its prune, once the agent acknowledged pruning
    /// `generation`. A Release revived or changed since is left alone. Returns true when it
    /// was removed.
    pub async fn purge_release(
        self: &Arc<Self>,
        key: &ObjectKey,
        generation: i64,
    ) -> Result<bool, Error> {
        let key = key.clone();
        let ((), revision) = self
            .write_durably(move |this| {
                let (left, purged) = retrying(|| this.purge_once(&key, generation))?;
                // Two last Releases purged at once may each have seen the other and left the
                // environment; the second to commit sees neither now, and takes it.
                let taken = match left {
                    Some(environment) => retrying(|| this.purge_environment_once(&environment))?.1,
                    None => None,
                };
                Ok(((), taken.or(purged)))
            })
            .await?;
        Ok(revision.is_some())
    }

    /// One attempt at the checks and the commit of [`Resources::purge_release`]. Returns
    /// the environment being deleted that the Release was not the last of, if so.
    fn purge_once(
        &self,
        key: &ObjectKey,
        generation: i64,
    ) -> Result<(Option<ObjectKey>, Option<Revision>), Error> {
        let since = self.referrers_known()?;
        let Some((object, record)) = self.read(key)? else {
            return Ok((None, None));
        };
        let meta = object.meta();
        if meta.delete_time.is_none() || meta.generation > generation {
            return Ok((None, None));
        }
        let mut txn = Txn::default()
            .check(key.clone(), Precondition::AtRevision(record.mod_revision))
            .delete(key.clone());
        let mut left = None;
        // The last Release of an environment being deleted takes the environment.
        if let Object::Release(release) = &object {
            let environment = ObjectKey::new(
                Kind::Environment,
                &key.namespace,
                release.spec.as_ref().map_or("", |s| s.environment.as_str()),
            );
            if let Some((env, env_record)) = self.read(&environment)?
                && env.meta().delete_time.is_some()
            {
                if self
                    .referrers(&environment)?
                    .iter()
                    .all(|(k, _, _)| k == key)
                {
                    txn = txn
                        .check(
                            environment.clone(),
                            Precondition::AtRevision(env_record.mod_revision),
                        )
                        .delete(environment.clone());
                    txn = unchanged_referrers(txn, &environment, since);
                } else {
                    left = Some(environment);
                }
            }
        }
        let revision = self.store.commit(txn)?;
        Ok((left, Some(revision)))
    }

    /// Removes `environment` if it is being deleted and nothing refers to it any more.
    fn purge_environment_once(
        &self,
        environment: &ObjectKey,
    ) -> Result<((), Option<Revision>), Error> {
        let since = self.referrers_known()?;
        let Some((env, record)) = self.read(environment)? else {
            return Ok(((), None));
        };
        if env.meta().delete_time.is_none() || !self.referrers(environment)?.is_empty() {
            return Ok(((), None));
        }
        let txn = Txn::default()
            .check(
                environment.clone(),
                Precondition::AtRevision(record.mod_revision),
            )
            .delete(environment.clone());
        let revision = self
            .store
            .commit(unchanged_referrers(txn, environment, since))?;
        Ok(((), Some(revision)))
    }
}

/// `txn` requiring that nothing that could refer to `target` was written after `since`.
fn unchanged_referrers(mut txn: Txn, target: &ObjectKey, since: Revision) -> Txn {
    let scope = references::referrer_scope(target);
    for kind in references::referrer_kinds(target.kind) {
        txn = txn.unchanged_since(kind, scope, since);
    }
    txn
}
