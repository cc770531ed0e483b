//! The deploy controller (`autoDeploy`): when a Component with `autoDeploy: true`, its
//! Workload, or the ComponentType or a Trait it uses changes, it cuts a release of the
//! component (content-named, so unchanged inputs cut nothing new) and points the component's
//! ReleaseBinding in the first environment of its project's pipeline at it, keeping that
//! binding's overrides. Other environments change only by promotion. For a component without
//! `autoDeploy` it keeps `status.latestRelease` naming the release its current state makes,
//! so `troupe status` can say a newer release is available.

use std::sync::Arc;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey, Pipeline};

use super::queue::Queue;
use super::{WORKERS, follow};
use crate::releases::Releases;
use crate::releases::bind::{Lookup, bind};
use crate::resources::{Error, Resources, WatchEventType};

/// Cuts and binds releases of `autoDeploy` components.
pub struct DeployController {
    resources: Arc<Resources>,
    releases: Arc<Releases>,
    /// Components to deploy; a failed deploy is retried with backoff.
    queue: Arc<Queue>,
}

impl DeployController {
    /// A controller over `resources`.
    pub fn new(resources: Arc<Resources>, releases: Arc<Releases>) -> Self {
        Self {
            resources,
            releases,
            queue: Arc::new(Queue::new("deploy")),
        }
    }

    /// The controller's work queue, for its [`Queue::stats`].
    pub fn queue(&self) -> Arc<Queue> {
        self.queue.clone()
    }

    /// Runs for as long as the runtime runs (see [`follow`]).
    pub async fn run(self) {
        let kinds = vec![
            Kind::Component,
            Kind::Workload,
            Kind::ComponentType,
            Kind::ClusterComponentType,
            Kind::Trait,
            Kind::ClusterTrait,
        ];
        let this = Arc::new(self);
        let queue = this.queue.clone();
        let worker = this.clone();
        queue.spawn_workers(WORKERS, move |component| {
            let this = worker.clone();
            async move { this.deploy(&component).await }
        });
        let resources = this.resources.clone();
        follow(&resources, "deploy", kinds, |kind, object| {
            let (this, queue) = (this.clone(), queue.clone());
            async move {
                for component in this.affected(kind, object).await {
                    queue.add(component);
                }
            }
        })
        .await;
    }

    /// The components a change can affect.
    async fn affected(&self, kind: WatchEventType, object: Object) -> Vec<ObjectKey> {
        if kind == WatchEventType::Deleted {
            return vec![];
        }
        let key = object.key();
        match &object {
            Object::Component(_) => vec![key],
            Object::Workload(w) => {
                let owner = w
                    .spec
                    .as_ref()
                    .and_then(|s| s.owner.clone())
                    .unwrap_or_default();
                vec![ObjectKey::new(
                    Kind::Component,
                    &key.namespace,
                    owner.component_name,
                )]
            }
            Object::ComponentType(_) | Object::Trait(_) => self.components(&key.namespace).await,
            Object::ClusterComponentType(_) | Object::ClusterTrait(_) => self.components("").await,
            _ => vec![],
        }
    }

    /// Components in `namespace` (every namespace if empty).
    async fn components(&self, namespace: &str) -> Vec<ObjectKey> {
        let page = self
            .resources
            .list(Kind::Component, namespace, &Default::default(), 0, "")
            .await;
        page.map(|p| p.items.iter().map(Object::key).collect())
            .unwrap_or_default()
    }

    /// Cuts a release of `component` if it auto-deploys, and binds it in the first environment;
    /// otherwise records which release its current state makes.
    pub async fn deploy(&self, component: &ObjectKey) -> Result<(), Error> {
        let Ok(c) = self.resources.get_as::<pb::Component>(component) else {
            return Ok(());
        };
        let spec = c.spec.unwrap_or_default();
        if !spec.auto_deploy {
            return self
                .note_latest(component, c.status.and_then(|s| s.latest_release))
                .await;
        }
        let project = spec.owner.unwrap_or_default().project_name;
        let Some(environment) = self.first_environment(&component.namespace, &project)? else {
            return Ok(());
        };
        let (release, _) = match self
            .releases
            .create(&component.namespace, &component.name)
            .await
        {
            Ok(release) => release,
            // No Workload yet: nothing to release until there is one.
            Err(Error::MissingReference { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let owner = pb::ComponentOwner {
            project_name: project,
            component_name: component.name.clone(),
        };
        bind(
            &self.resources,
            &component.namespace,
            &owner,
            &environment,
            &release.meta().name,
            Lookup::ByName,
        )
        .await?;
        Ok(())
    }

    /// Sets `status.latestRelease` of a component that does not auto-deploy, if it changed.
    async fn note_latest(
        &self,
        component: &ObjectKey,
        noted: Option<pb::LatestRelease>,
    ) -> Result<(), Error> {
        let latest = match self
            .releases
            .latest(&component.namespace, &component.name)
            .await
        {
            Ok(latest) => latest,
            Err(Error::MissingReference { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if noted.as_ref() == Some(&latest) {
            return Ok(());
        }
        self.resources
            .update_status(component, move |_, object| {
                if let Some(c) = object.typed_mut::<pb::Component>() {
                    c.status.get_or_insert_default().latest_release = Some(latest.clone());
                }
            })
            .await?;
        Ok(())
    }

    /// The first environment of the project's pipeline: a source that is no edge's target.
    fn first_environment(&self, namespace: &str, project: &str) -> Result<Option<String>, Error> {
        let Ok(project) = self.resources.get_as::<pb::Project>(&ObjectKey::new(
            Kind::Project,
            namespace,
            project,
        )) else {
            return Ok(None);
        };
        let pipeline_name = project.spec.unwrap_or_default().deployment_pipeline_ref;
        let key = ObjectKey::new(Kind::DeploymentPipeline, namespace, pipeline_name);
        let pipeline = self.resources.get_as::<pb::DeploymentPipeline>(&key)?;
        let pipeline = Pipeline::new(&pipeline.spec.unwrap_or_default());
        Ok(pipeline.first().map(str::to_string))
    }
}
