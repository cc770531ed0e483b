//! `troupe.v1alpha1.ReleaseService` handlers: cut releases, render without storing.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use troupe_common::Object;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::release_service_server::ReleaseService;

use crate::releases::{Releases, RenderRequest};

pub use pb::release_service_server::ReleaseServiceServer;

/// The `troupe.v1alpha1.ReleaseService` implementation.
pub struct ReleaseApi {
    releases: Arc<Releases>,
}

impl ReleaseApi {
    /// Serves `releases`.
    pub fn new(releases: Arc<Releases>) -> Self {
        Self { releases }
    }
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field}: required")));
    }
    Ok(())
}

#[tonic::async_trait]
impl ReleaseService for ReleaseApi {
    async fn create_release(
        &self,
        request: Request<pb::CreateReleaseRequest>,
    ) -> Result<Response<pb::CreateReleaseResponse>, Status> {
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        required("component", &r.component)?;
        let (release, created) = self.releases.create(&r.namespace, &r.component).await?;
        let Object::ComponentRelease(release) = release else {
            return Err(Status::internal("a release that is not a ComponentRelease"));
        };
        Ok(Response::new(pb::CreateReleaseResponse {
            release: Some(release),
            created,
        }))
    }

    async fn render(
        &self,
        request: Request<pb::RenderRequest>,
    ) -> Result<Response<pb::RenderResponse>, Status> {
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        required("component", &r.component)?;
        required("environment", &r.environment)?;
        let rendered = self
            .releases
            .render(RenderRequest {
                namespace: r.namespace,
                component: r.component,
                environment: r.environment,
                release: r.release,
                type_environment_configs: r.component_type_environment_configs,
                trait_environment_configs: r.trait_environment_configs,
                workload_overrides: r.workload_overrides,
            })
            .await?;
        let manifests = rendered
            .manifests
            .into_iter()
            .map(|m| serde_json::from_value(m).map_err(|e| Status::internal(e.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::RenderResponse {
            manifests,
            release: rendered.release,
            endpoints: rendered.endpoints,
            resolved_connections: rendered.connections.resolved,
            pending_connections: rendered.connections.pending,
        }))
    }
}
