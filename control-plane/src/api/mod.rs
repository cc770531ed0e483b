//! gRPC handlers. Each one decodes and checks its request, makes one call into
//! [`Resources`], and encodes the answer; errors become statuses in [`status`] only.

pub mod agent;
pub mod promotion;
mod release;
mod status;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::resource_service_server::ResourceService;
use troupe_common::selector::LabelSelector;
use troupe_common::{Kind, ObjectKey};

use crate::resources::{Error, Origin, Outcome, Resources, WatchEventType, WatchRequest};

pub use pb::resource_service_server::ResourceServiceServer;
pub use release::{ReleaseApi, ReleaseServiceServer};

/// The `troupe.v1alpha1.ResourceService` implementation.
pub struct ResourceApi {
    resources: Arc<Resources>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl ResourceApi {
    /// Serves `resources`. Watch streams end once `stopping` turns true, so a graceful
    /// shutdown is not held open by watchers.
    pub fn new(resources: Arc<Resources>, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            resources,
            stopping,
        }
    }
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
        let request = request.into_inner();
        let object = request.resource.and_then(|r| r.object).ok_or_else(|| {
            Status::invalid_argument(
                "resource: required: set exactly one kind, e.g. {\"component\": {...}}",
            )
        })?;
        let (object, outcome) = self
            .resources
            .apply(object, Origin::User, request.dry_run)
            .await?;
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
        let r = request.into_inner();
        let key = object_key(&r.kind, &r.namespace, &r.name)?;
        let object = self.resources.get(&key)?;
        Ok(Response::new(pb::GetResponse {
            resource: Some(object.into()),
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = request.into_inner();
        let kind = parse_kind("kind", &r.kind)?;
        if kind.is_cluster_scoped() && !r.namespace.is_empty() {
            return Err(Status::invalid_argument(format!(
                "namespace: must be empty: {kind} is cluster-scoped"
            )));
        }
        let selector = parse_selector(&r.label_selector)?;
        let page = self
            .resources
            .list(
                kind,
                &r.namespace,
                &selector,
                r.page_size as usize,
                &r.page_token,
            )
            .await?;
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
        let r = request.into_inner();
        let key = object_key(&r.kind, &r.namespace, &r.name)?;
        let deleted = self
            .resources
            .delete(&key, Origin::User, r.expected_resource_version, r.dry_run)
            .await?;
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
        let r = request.into_inner();
        let kinds = if r.kind.is_empty() {
            vec![]
        } else {
            vec![parse_kind("kind", &r.kind)?]
        };
        let request = WatchRequest {
            kinds,
            namespace: r.namespace,
            selector: parse_selector(&r.label_selector)?,
            since: r.since_revision,
        };
        let events = self.resources.watch(request)?;
        let stream = ReceiverStream::new(events).map(|item: Result<_, Error>| {
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
        let stop = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        Ok(Response::new(Box::pin(futures::StreamExt::take_until(
            stream, stop,
        ))))
    }
}
