//! Appliers: where an agent puts a release's objects, and how it reads their health.
//!
//! Every applier is idempotent: applying what is already there changes nothing, so the agent
//! can re-apply its whole desired state at any time to correct drift. An applier removes
//! objects only when told to ([`Applier::prune`], or objects that left a release on
//! [`Applier::apply`]); it never decides on its own that something should go.
//!
//! Health is what [`Applier::apply`] returns; an applier that watches its objects also keeps
//! it current between applies ([`Applier::health`]) and says when it changed
//! ([`Applier::health_changes`]). Health values are [`troupe_common::status::Health`], the
//! words the control plane rolls up.
//!
//! What goes wrong with the release as a whole is an [`Error`] naming the release, object or
//! file; it reaches the control plane as the text of a failed `Ack`. What goes wrong with one
//! object is that object's status (`Degraded`, or `Progressing` while it waits), listed in
//! [`Applied::failed`]: the rest of the release applies all the same, and the worker tries
//! the release again with backoff until nothing is left failing.

pub mod dir;
mod error;
pub mod kubernetes;

pub use self::error::Error;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::Notify;
use troupe_common::pb::v1alpha1::{ClusterInfo, ReleaseResource, ReleaseResourceStatus};

/// Puts releases somewhere and reads back their health.
///
/// A failure is an [`Error`] naming what it was about; its text is what the control plane
/// sees in the failed `Ack`.
pub trait Applier: Send + Sync {
    /// Makes the objects of `release` (id `NAMESPACE/NAME`) exactly `resources`: creates or
    /// updates each, and removes objects a previous apply of the same release made that are
    /// no longer in it. Returns the health of each object, and which failed.
    fn apply<'a>(
        &'a self,
        release: &'a str,
        resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<Applied, Error>>;

    /// Removes every object of `release`. Pruning a release that has nothing is not an error.
    fn prune<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// What to tell the control plane about the target.
    fn info(&self) -> BoxFuture<'_, ClusterInfo>;

    /// The health of each object of `release` as last observed, for appliers that watch
    /// their objects between applies; `None` when health is known only from `apply`.
    fn health(&self, _release: &str) -> Option<Vec<ReleaseResourceStatus>> {
        None
    }

    /// Notified when [`Applier::health`] may have changed for some release; `None` for
    /// appliers that do not watch.
    fn health_changes(&self) -> Option<Arc<Notify>> {
        None
    }

    /// The releases with an object someone else deleted since the last call, to apply again
    /// without waiting for the drift pass; empty for appliers that do not watch.
    fn drifted(&self) -> Vec<String> {
        Vec::new()
    }

    /// The releases the applier finds objects or records of by itself (its directory
    /// layout, its inventory records), for the agent to account for releases its own state
    /// lost; empty when it cannot tell.
    fn found(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Each object's status, in the release's order.
    pub statuses: Vec<ReleaseResourceStatus>,
    /// The ids of the objects that are not applied yet and are worth another try (the API
    /// server refused or could not be reached, a kind is not served yet); their statuses
    /// say why.
    pub failed: Vec<String>,
    /// Something else is left to do: an object that left the release could not be deleted.
    pub incomplete: bool,
}

impl Applied {
    /// Everything applied.
    pub fn done(statuses: Vec<ReleaseResourceStatus>) -> Self {
        Self {
            statuses,
            ..Self::default()
        }
    }

    /// Whether the release should be applied again soon.
    pub fn needs_retry(&self) -> bool {
        !self.failed.is_empty() || self.incomplete
    }
}

/// The group, version, kind, name and namespace of a rendered object, for status entries.
pub fn describe(resource: &ReleaseResource) -> ReleaseResourceStatus {
    let object = resource.object.as_ref();
    let field = |path: &[&str]| -> String {
        let mut value = object.and_then(|o| o.fields.get(path[0]));
        for key in &path[1..] {
            value = match value.and_then(|v| v.kind.as_ref()) {
                Some(pbjson_types::value::Kind::StructValue(s)) => s.fields.get(*key),
                _ => None,
            };
        }
        match value.and_then(|v| v.kind.as_ref()) {
            Some(pbjson_types::value::Kind::StringValue(s)) => s.clone(),
            _ => String::new(),
        }
    };
    let api_version = field(&["apiVersion"]);
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version),
    };
    ReleaseResourceStatus {
        id: resource.id.clone(),
        group,
        version,
        kind: field(&["kind"]),
        name: field(&["metadata", "name"]),
        namespace: field(&["metadata", "namespace"]),
        ..Default::default()
    }
}
