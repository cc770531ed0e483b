//! gRPC handlers. Each one learns who calls ([`Auth::caller`]), decodes and checks its
//! request, asks whether the caller may ([`Auth::allow`]), makes one call into the domain,
//! and encodes the answer; errors become statuses in [`status`] only.

pub mod agent;
pub mod auth;
mod build;
pub mod promotion;
mod release;
pub mod servers;
mod status;
mod watches;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::resource_service_server::ResourceService;
use troupe_common::selector::LabelSelector;
use troupe_common::{Kind, ObjectKey};

use self::auth::stored_target;
use crate::auth::rbac::{Reach, target_of};
use crate::auth::{Auth, Principal, Target, Verb};
use crate::resources::{Error, Origin, Outcome, Resources, WatchEventType, WatchRequest};

pub use build::{BuildApi, BuildServiceServer};
pub use pb::resource_service_server::ResourceServiceServer;
pub use release::{ReleaseApi, ReleaseServiceServer};
pub use watches::DEFAULT_MAX_WATCHES_PER_CONNECTION;

/// The `troupe.v1alpha1.ResourceService` implementation.
pub struct ResourceApi {
    resources: Arc<Resources>,
    auth: Arc<Auth>,
    stopping: tokio::sync::watch::Receiver<bool>,
    watches: Arc<watches::OpenWatches>,
}

impl ResourceApi {
    /// Serves `resources` to whom `auth` allows. Watch streams end once `stopping` turns
    /// true, so a graceful shutdown is not held open by watchers.
    pub fn new(
        resources: Arc<Resources>,
        auth: Arc<Auth>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            resources,
            auth,
            stopping,
            watches: watches::OpenWatches::new(DEFAULT_MAX_WATCHES_PER_CONNECTION),
        }
    }

    /// Caps the watches one client connection may hold open.
    pub fn with_max_watches_per_connection(mut self, max: usize) -> Self {
        self.watches = watches::OpenWatches::new(max);
        self
    }

    /// Whether `who` may `verb` the object at `key` ([`stored_target`] says by what). Returns
    /// the stored object (or why there is none) and the target judged.
    fn allow_stored(
        &self,
        who: &Principal,
        verb: Verb,
        key: &ObjectKey,
    ) -> Result<(Result<troupe_common::Object, Error>, Target), Status> {
        let (stored, target) = stored_target(&self.resources, key);
        self.auth.allow(who, verb, &target)?;
        Ok((stored, target))
    }
}

/// Whether writes of `kind` change who may do what (the caller of such a write waits until
/// they do).
fn grants_access(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Role | Kind::ClusterRole | Kind::RoleBinding | Kind::ClusterRoleBinding
    )
}

fn parse_kind(field: &str, value: &str) -> Result<Kind, Status> {
    Kind::parse(value).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn parse_selector(value: &str) -> Result<LabelSelector, Status> {
    LabelSelector::parse(value).map_err(|e| Status::invalid_argument(format!("labelSelector: {e}")))
}

fn object_key(kind: &str, namespace: &str, name: &str) -> Result<ObjectKey, Status> {
    let kind = parse_kind("kind", kind)?;
    if name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "name: required to name a {kind}"
        )));
    }
    if kind.is_cluster_scoped() && !namespace.is_empty() {
        return Err(Status::invalid_argument(format!(
            "namespace: must be empty: {kind} is cluster-scoped"
        )));
    }
    if !kind.is_cluster_scoped() && namespace.is_empty() {
        return Err(Status::invalid_argument(format!(
            "namespace: required: {kind} is namespaced"
        )));
    }
    Ok(ObjectKey::new(kind, namespace, name))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ResourceService for ResourceApi {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let caller = self.auth.caller(&request).await?;
        let request = request.into_inner();
        let object = request.resource.and_then(|r| r.object).ok_or_else(|| {
            Status::invalid_argument(
                "resource: required: set exactly one kind, e.g. {\"component\": {...}}",
            )
        })?;
        let target = target_of(&object);
        self.auth.allow(&caller, Verb::Apply, &target)?;
        if !target.component.is_empty() {
            // An object that belongs to a component is also judged where it is now, so a
            // caller cannot write over another project's object of the same name.
            let key = object.key();
            if let Ok(stored) = self.resources.get(&key) {
                let before = target_of(&stored);
                if before != target {
                    self.auth.allow(&caller, Verb::Apply, &before)?;
                }
            }
        }
        let kind = object.kind();
        let (object, outcome) = self
            .resources
            .apply(object, Origin::User, request.dry_run)
            .await
            .map_err(|e| self.auth.refused(&caller, Verb::Apply, &target, e.into()))?;
        let revision = object.meta().resource_version;
        if !request.dry_run {
            self.auth
                .record(&caller, Verb::Apply, &target, Some(revision));
            if grants_access(kind) {
                self.auth.caught_up(revision).await;
            }
        }
        let outcome = match outcome {
            Outcome::Created => pb::ApplyOutcome::Created,
            Outcome::Configured => pb::ApplyOutcome::Configured,
            Outcome::Unchanged => pb::ApplyOutcome::Unchanged,
        };
        Ok(Response::new(pb::ApplyResponse {
            resource: Some(object.into()),
            outcome: outcome.into(),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let caller = self.auth.caller(&request).await?;
        let r = request.into_inner();
        let key = object_key(&r.kind, &r.namespace, &r.name)?;
        let object = self.allow_stored(&caller, Verb::Get, &key)?.0?;
        Ok(Response::new(pb::GetResponse {
            resource: Some(object.into()),
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let caller = self.auth.caller(&request).await?;
        let r = request.into_inner();
        let kind = parse_kind("kind", &r.kind)?;
        if kind.is_cluster_scoped() && !r.namespace.is_empty() {
            return Err(Status::invalid_argument(format!(
                "namespace: must be empty: {kind} is cluster-scoped"
            )));
        }
        let selector = parse_selector(&r.label_selector)?;
        let reach = self
            .auth
            .reach(&caller, Verb::List, kind.name(), &r.namespace);
        if reach == Reach::Nothing {
            let target = Target {
                kind: kind.name().to_string(),
                namespace: r.namespace.clone(),
                ..Target::default()
            };
            self.auth.allow(&caller, Verb::List, &target)?;
        }
        let mut page = self
            .resources
            .list(
                kind,
                &r.namespace,
                &selector,
                crate::resources::page_size(r.page_size)?,
                &r.page_token,
            )
            .await?;
        if reach != Reach::Everything {
            page.items
                .retain(|o| self.auth.may(&caller, Verb::List, &target_of(o)).is_ok());
        }
        Ok(Response::new(pb::ListResponse {
            items: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
            revision: page.revision,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let caller = self.auth.caller(&request).await?;
        let r = request.into_inner();
        let key = object_key(&r.kind, &r.namespace, &r.name)?;
        let (_, target) = self.allow_stored(&caller, Verb::Delete, &key)?;
        let deleted = self
            .resources
            .delete(&key, Origin::User, r.expected_resource_version, r.dry_run)
            .await
            .map_err(|e| self.auth.refused(&caller, Verb::Delete, &target, e.into()))?;
        if !r.dry_run {
            self.auth.record(&caller, Verb::Delete, &target, None);
            if grants_access(key.kind) {
                self.auth.caught_up(self.resources.revision()).await;
            }
        }
        let references = |keys: Vec<ObjectKey>| {
            keys.into_iter()
                .map(|k| pb::ObjectReference {
                    kind: k.kind.name().to_string(),
                    namespace: k.namespace,
                    name: k.name,
                })
                .collect()
        };
        Ok(Response::new(pb::DeleteResponse {
            resource: Some(deleted.object.into()),
            cascaded: references(deleted.cascaded),
            pruning: references(deleted.pruning),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.auth.caller(&request).await?;
        let slot = self.watches.open(request.remote_addr())?;
        let r = request.into_inner();
        let kinds = if r.kind.is_empty() {
            vec![]
        } else {
            vec![parse_kind("kind", &r.kind)?]
        };
        // A watch of one kind the caller cannot see at all is refused; a watch of every
        // kind is allowed and carries only what the caller may see.
        let reach = match kinds.first() {
            Some(kind) => self
                .auth
                .reach(&caller, Verb::Watch, kind.name(), &r.namespace),
            None => Reach::Some,
        };
        if let (Reach::Nothing, Some(kind)) = (reach, kinds.first()) {
            let target = Target {
                kind: kind.name().to_string(),
                namespace: r.namespace.clone(),
                ..Target::default()
            };
            self.auth.allow(&caller, Verb::Watch, &target)?;
        }
        let request = WatchRequest {
            kinds,
            namespace: r.namespace,
            selector: parse_selector(&r.label_selector)?,
            since: r.since_revision,
        };
        let events = self.resources.watch(request)?;
        let auth = self.auth.clone();
        let visible = move |event: &Result<crate::resources::WatchEvent, Error>| match event {
            Ok(event) => match &event.object {
                Some(object) if reach != Reach::Everything => {
                    auth.may(&caller, Verb::Watch, &target_of(object)).is_ok()
                }
                _ => true,
            },
            Err(_) => true,
        };
        let stream = events.filter(visible).map(|item| {
            let event = item?;
            let kind = match event.kind {
                WatchEventType::Added => pb::EventType::Added,
                WatchEventType::Modified => pb::EventType::Modified,
                WatchEventType::Deleted => pb::EventType::Deleted,
                WatchEventType::Bookmark => pb::EventType::Bookmark,
            };
            Ok(pb::WatchResponse {
                r#type: kind.into(),
                resource: event.object.map(Into::into),
                revision: event.revision,
            })
        });
        let mut stopping = self.stopping.clone();
        // The stream holds the watch's place on its connection until it ends.
        let stop = async move {
            let _slot = slot;
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        Ok(Response::new(Box::pin(futures::StreamExt::take_until(
            stream, stop,
        ))))
    }
}
