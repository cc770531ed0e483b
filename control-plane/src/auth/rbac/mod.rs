//! Role-based access: Role / ClusterRole rules, RoleBinding / ClusterRoleBinding subjects and
//! scopes, evaluated allow-only and fail-closed.
//!
//! [`Rbac::start`] writes the [`builtin`] roles that are missing, loads every role and binding
//! into an index (`index.rs`) and follows their changes with a watch that also marks its progress
//! through every other commit; a follower task owns the index, compiles it into the grants a
//! check reads after each burst of changes, and then says how far it has come, which is what
//! [`Rbac::caught_up`] waits on. [`Rbac::check`] and [`Rbac::reach`] only read the compiled
//! grants: they never touch the store and do not allocate unless they refuse.
//!
//! A caller holds what any binding of its user name, one of its groups, or the API token it
//! authenticated with grants, where the binding's scope covers the target: a
//! ClusterRoleBinding everywhere; a RoleBinding in its namespace, narrowed to a project (the
//! project and what belongs to it) or a component. Grants cascade down, never up: a
//! project-scoped grant does not reach namespace-level objects or listings of the whole
//! namespace, and cluster-scoped objects need a ClusterRoleBinding. A binding whose role is
//! missing grants nothing. (A role a binding names cannot be deleted through the API while
//! the binding exists, like any referenced object.)

pub mod builtin;
mod index;
#[cfg(test)]
mod tests;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{oneshot, watch};
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object};

use self::index::{Grants, Index};
use super::{Principal, Target, Verb, Via};
use crate::resources::{self, Resources, WatchEventType, WatchRequest};

/// The kinds the index follows.
const KINDS: [Kind; 4] = [
    Kind::Role,
    Kind::ClusterRole,
    Kind::RoleBinding,
    Kind::ClusterRoleBinding,
];

/// Events taken in before the grants are recompiled even though more are waiting, so a long
/// burst still reaches checks (and [`Rbac::caught_up`] waiters) as it goes.
const COMPILE_AT_LEAST_EVERY: usize = 1024;

/// Pause before watching again after the watch was lost (its start revision compacted away
/// while the follower lagged): the follower then loads everything anew.
const REWATCH_AFTER: Duration = Duration::from_secs(1);

/// How much of a kind a caller may list or watch in a namespace (or everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every object: no filtering needed.
    Everything,
    /// Only some projects or components: check each object.
    Some,
    /// None at all.
    Nothing,
}

/// What the follower task shares with checks.
struct Shared {
    /// The grants checks read, replaced whole after each burst of changes.
    grants: RwLock<Arc<Grants>>,
    /// The store revision up to which every role and binding change is in `grants`.
    applied: watch::Sender<u64>,
}

/// The role and binding objects, indexed for fast checks, following every change.
pub struct Rbac {
    shared: Arc<Shared>,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for Rbac {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl Rbac {
    /// Writes the built-in cluster roles that are missing, loads every role and binding and
    /// follows their changes. Returns once everything stored is in the index.
    pub async fn start(resources: Arc<Resources>) -> anyhow::Result<Arc<Self>> {
        let written = builtin::write_missing(&resources)
            .await
            .context("writing the built-in roles and bindings")?;
        if !written.is_empty() {
            tracing::info!(objects = ?written, "wrote the built-in roles and bindings");
        }
        let events = resources
            .watch_with_progress(request())
            .context("watching roles and bindings")?;
        let shared = Arc::new(Shared {
            grants: RwLock::new(Arc::new(Grants::default())),
            applied: watch::Sender::new(0),
        });
        let (loaded_tx, loaded) = oneshot::channel();
        let follower = tokio::spawn(follow(shared.clone(), resources, events, loaded_tx));
        let rbac = Arc::new(Self { shared, follower });
        loaded
            .await
            .context("the access index stopped before it had loaded the roles and bindings")?;
        Ok(rbac)
    }

    /// Whether `who` may do `verb` to `target`; the error says what grant was missing. The
    /// server itself ([`Via::Internal`]) may do anything.
    pub fn check(&self, who: &Principal, verb: Verb, target: &Target) -> Result<(), String> {
        if who.via == Via::Internal || self.grants().allows(who, verb, target) {
            return Ok(());
        }
        Err(format!(
            "{} may not {verb} {target}: no role grants {:?} on {} there",
            who.display_name(),
            verb.as_str(),
            target.kind
        ))
    }

    /// How much of `kind` in `namespace` (empty: every namespace) `who` may `verb`.
    pub fn reach(&self, who: &Principal, verb: Verb, kind: &str, namespace: &str) -> Reach {
        if who.via == Via::Internal {
            return Reach::Everything;
        }
        self.grants().reach(who, verb, kind, namespace)
    }

    /// Returns once every role and binding change up to `revision` is in the index, so a
    /// caller that just wrote one is judged by it. Any store revision will do (the watch
    /// marks its progress through every commit); one not yet committed is waited for.
    pub async fn caught_up(&self, revision: u64) {
        let mut applied = self.shared.applied.subscribe();
        // The sender lives as long as `self`; an error means the server is going away.
        let _ = applied.wait_for(|&r| r >= revision).await;
    }

    fn grants(&self) -> std::sync::RwLockReadGuard<'_, Arc<Grants>> {
        // The lock guards one pointer swap; a panicking writer leaves the old grants whole.
        self.shared
            .grants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn request() -> WatchRequest {
    WatchRequest {
        kinds: KINDS.to_vec(),
        ..Default::default()
    }
}

type Events = resources::WatchEvents;

/// The follower: keeps the index in line with the store, watching anew (from a fresh load)
/// whenever the watch is lost, until the server stops.
async fn follow(
    shared: Arc<Shared>,
    resources: Arc<Resources>,
    mut events: Events,
    loaded: oneshot::Sender<()>,
) {
    let mut loaded = Some(loaded);
    loop {
        match follow_watch(&shared, &mut events, &mut loaded).await {
            Ok(()) => return,
            Err(e) => tracing::error!(error = %e, "the access index lost its watch; reloading"),
        }
        tokio::time::sleep(REWATCH_AFTER).await;
        events = match resources.watch_with_progress(request()) {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(error = %e, "the access index could not watch roles and bindings");
                continue;
            }
        };
    }
}

/// Applies one watch's events to a fresh index (starting with every current object) and
/// publishes it at each bookmark once nothing more is waiting; returns when the watch ends.
async fn follow_watch(
    shared: &Shared,
    events: &mut Events,
    loaded: &mut Option<oneshot::Sender<()>>,
) -> Result<(), resources::Error> {
    let mut index = Index::default();
    // A new watch starts a new index, which replaces the published one at its first bookmark.
    let mut dirty = true;
    let mut unpublished = 0;
    while let Some(event) = events.recv().await {
        let event = event?;
        unpublished += 1;
        match (event.kind, &event.object) {
            (WatchEventType::Bookmark, _) | (_, None) => {}
            (WatchEventType::Added | WatchEventType::Modified, Some(object)) => {
                index.apply(object);
                dirty = true;
            }
            (WatchEventType::Deleted, Some(object)) => {
                index.remove(&object.key());
                dirty = true;
            }
        }
        // Only a bookmark vouches that every change up to its revision has arrived (a
        // snapshot's objects all carry its revision, and more of them may follow).
        let ready = event.kind == WatchEventType::Bookmark
            && (events.is_empty() || unpublished >= COMPILE_AT_LEAST_EVERY);
        if !ready {
            continue;
        }
        if dirty {
            // Compiling walks every binding: off the async workers, taking the index along.
            let compiled = tokio::task::spawn_blocking(move || {
                let grants = index.grants();
                (index, grants)
            })
            .await;
            let (back, grants) = match compiled {
                Ok(compiled) => compiled,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime is shutting down.
                Err(_) => return Ok(()),
            };
            index = back;
            let grants = Arc::new(grants);
            *shared
                .grants
                .write()
                .unwrap_or_else(PoisonError::into_inner) = grants;
            dirty = false;
        }
        unpublished = 0;
        shared.applied.send_if_modified(|applied| {
            let advanced = event.revision > *applied;
            *applied = (*applied).max(event.revision);
            advanced
        });
        if let Some(loaded) = loaded.take() {
            let _ = loaded.send(());
        }
    }
    Ok(())
}

/// The target an object is: its kind, namespace and name, and the project and component it
/// belongs to (a Component's own project, the owner of a Workload, ReleaseBinding …).
pub fn target_of(object: &Object) -> Target {
    let key = object.key();
    let (project, component) = match object {
        Object::Project(_) => (key.name.clone(), String::new()),
        Object::Component(c) => {
            let owner = c.spec.as_ref().and_then(|s| s.owner.as_ref());
            let project = owner.map_or("", |o| o.project_name.as_str());
            (project.to_string(), key.name.clone())
        }
        Object::Workload(o) => owned(o.spec.as_ref().and_then(|s| s.owner.as_ref())),
        Object::WorkflowRun(o) => owned(o.spec.as_ref().and_then(|s| s.owner.as_ref())),
        Object::ComponentRelease(o) => owned(o.spec.as_ref().and_then(|s| s.owner.as_ref())),
        Object::ReleaseBinding(o) => owned(o.spec.as_ref().and_then(|s| s.owner.as_ref())),
        Object::Release(o) => owned(o.spec.as_ref().and_then(|s| s.owner.as_ref())),
        Object::Promotion(o) => owned(o.spec.as_ref().and_then(|s| s.owner.as_ref())),
        _ => (String::new(), String::new()),
    };
    Target {
        kind: key.kind.name().to_string(),
        namespace: key.namespace,
        project,
        component,
        name: key.name,
    }
}

/// The project and component of an object a component owns (none for a standalone run).
fn owned(owner: Option<&pb::ComponentOwner>) -> (String, String) {
    owner.map_or_else(Default::default, |o| {
        (o.project_name.clone(), o.component_name.clone())
    })
}
