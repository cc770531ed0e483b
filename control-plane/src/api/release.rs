//! `troupe.v1alpha1.ReleaseService` handlers: cut releases, render without storing, draw the
//! dependency graph.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use troupe_common::Object;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::release_service_server::ReleaseService;

use super::auth::component_target;
use crate::auth::rbac::Reach;
use crate::auth::{Auth, Principal, Target, Verb};
use crate::graph::{self, Query};
use crate::releases::{Releases, RenderRequest};
use crate::resources::Resources;

pub use pb::release_service_server::ReleaseServiceServer;

/// The `troupe.v1alpha1.ReleaseService` implementation.
pub struct ReleaseApi {
    releases: Arc<Releases>,
    resources: Arc<Resources>,
    auth: Arc<Auth>,
}

impl ReleaseApi {
    /// Serves `releases` to whom `auth` allows.
    pub fn new(releases: Arc<Releases>, resources: Arc<Resources>, auth: Arc<Auth>) -> Self {
        Self {
            releases,
            resources,
            auth,
        }
    }
}

/// The kinds the graph is drawn from; its caller needs `list` on each.
const GRAPH_KINDS: [troupe_common::Kind; 3] = [
    troupe_common::Kind::Component,
    troupe_common::Kind::Workload,
    troupe_common::Kind::ReleaseBinding,
];

impl ReleaseApi {
    /// Whether `who` may draw the graph `query` asks for: `list` on each of [`GRAPH_KINDS`]
    /// where the query looks (the project, or the namespace), with some reach at least, as
    /// `ResourceService.List` judges. `PERMISSION_DENIED` names the first kind missing.
    /// Returns whether the caller sees everything there (else each component is judged).
    fn allow_graph(&self, who: &Principal, query: &Query) -> Result<bool, Status> {
        let mut everything = true;
        for kind in GRAPH_KINDS {
            let target = Target {
                kind: kind.name().to_string(),
                namespace: query.namespace.clone(),
                project: query.project.clone(),
                ..Target::default()
            };
            let reach = self
                .auth
                .reach(who, Verb::List, kind.name(), &query.namespace);
            if reach == Reach::Nothing || !query.project.is_empty() {
                self.auth.allow(who, Verb::List, &target)?;
            }
            everything &= reach == Reach::Everything;
        }
        Ok(everything)
    }

    /// Whether `who` may list what the graph shows of component `project/component`.
    fn sees(&self, who: &Principal, namespace: &str, project: &str, component: &str) -> bool {
        GRAPH_KINDS.iter().all(|kind| {
            let target = Target {
                kind: kind.name().to_string(),
                namespace: namespace.to_string(),
                project: project.to_string(),
                component: component.to_string(),
                ..Target::default()
            };
            self.auth.may(who, Verb::List, &target).is_ok()
        })
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
        let who = self.auth.caller(&request).await?;
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        required("component", &r.component)?;
        let target = component_target(
            &self.resources,
            troupe_common::Kind::ComponentRelease,
            &r.namespace,
            &r.component,
        );
        self.auth.allow(&who, Verb::Apply, &target)?;
        let (release, created) = self.releases.create(&r.namespace, &r.component).await?;
        self.auth.record(
            &who,
            Verb::Apply,
            &target,
            release.meta().resource_version.into(),
        );
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
        let who = self.auth.caller(&request).await?;
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        required("component", &r.component)?;
        required("environment", &r.environment)?;
        let target = component_target(
            &self.resources,
            troupe_common::Kind::Component,
            &r.namespace,
            &r.component,
        );
        self.auth.allow(&who, Verb::Render, &target)?;
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

    async fn graph(
        &self,
        request: Request<pb::GraphRequest>,
    ) -> Result<Response<pb::GraphResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        let query = Query {
            namespace: r.namespace,
            project: r.project,
            environment: r.environment,
        };
        let everything = self.allow_graph(&who, &query)?;
        let mut graph = graph::graph(&self.resources, &query).await?;
        if !everything {
            graph::retain_visible(&mut graph, |project, component| {
                self.sees(&who, &query.namespace, project, component)
            });
        }
        Ok(Response::new(graph))
    }
}
