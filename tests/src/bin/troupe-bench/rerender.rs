//! `troupe-bench render --components N`: the wall time from one ComponentType change to a new,
//! stored Release for each of N `autoDeploy` components, through the real server (sled on
//! disk, gRPC over TCP, both controllers).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::api::{ApiAddr, LocalServer};
use troupe_common::Object;
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;
use troupe_common::pb::v1alpha1::{ApplyRequest, EventType};

const PLATFORM: &str = include_str!("../../../../examples/platform.yaml");

/// The Deployment's metadata in the example `service` type; the change under test adds an
/// annotation to it.
const DEPLOYMENT_METADATA: &str =
    r#"metadata: {name: "${{ metadata.name }}", namespace: "${{ metadata.namespace }}"}"#;
const DEPLOYMENT_METADATA_CHANGED: &str = r#"metadata: {name: "${{ metadata.name }}", namespace: "${{ metadata.namespace }}", annotations: {troupe.dev/bench: "2"}}"#;
const MARKER: &str = "troupe.dev/bench";

/// Figures of one run.
pub struct Rerender {
    /// Seconds to apply the components and their workloads.
    pub apply_s: f64,
    /// Seconds from the first apply until every component had its first Release.
    pub first_deploy_s: f64,
    /// Seconds from the ComponentType change until every Release carried it.
    pub rerender_s: f64,
}

fn component_and_workload(i: usize) -> Vec<Object> {
    let yaml = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: c{i}, namespace: acme}}
spec:
  owner: {{projectName: shop}}
  componentType: {{name: deployment/service}}
  autoDeploy: true
  parameters: {{port: 8080}}
  traits: [{{name: ingress, instanceName: public, parameters: {{host: c{i}.acme.example.com}}}}]
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: c{i}, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: c{i}}}
  container: {{image: ghcr.io/acme/c{i}:1.0.0}}
  endpoints: [{{name: http, type: HTTP, port: 8080, visibility: [external]}}]
"
    );
    from_yaml(&yaml).expect("valid component")
}

/// Applies `objects` over `clients` connections, each taking a contiguous share in order.
pub(crate) async fn apply_all(
    api: &ApiAddr,
    objects: Vec<Object>,
    clients: usize,
) -> anyhow::Result<()> {
    // Even, so a Component and its Workload (adjacent) go through the same client, in order.
    let chunk = objects.len().div_ceil(clients).next_multiple_of(2).max(2);
    let mut tasks = Vec::new();
    for part in objects.chunks(chunk) {
        let part = part.to_vec();
        let channel = api.connect().await?;
        tasks.push(tokio::spawn(async move {
            let mut client = ResourceServiceClient::new(channel);
            for object in part {
                client
                    .apply(ApplyRequest {
                        resource: Some(object.into()),
                        dry_run: false,
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Whether a Release's Deployment carries the marker annotation.
fn marked(object: &Object) -> bool {
    let Object::Release(release) = object else {
        return false;
    };
    release
        .spec
        .as_ref()
        .map(|s| {
            s.resources.iter().any(|r| {
                r.id.starts_with("Deployment/")
                    && r.object
                        .as_ref()
                        .and_then(|o| o.fields.get("metadata"))
                        .and_then(|m| serde_json::to_value(m).ok())
                        .is_some_and(|m| m["annotations"][MARKER] == "2")
            })
        })
        .unwrap_or(false)
}

/// Runs the measurement with `components` autoDeploy components.
pub async fn run(components: usize) -> anyhow::Result<Rerender> {
    let server = LocalServer::start().await?;
    let url = server.api.clone();
    let platform: Vec<Object> = from_yaml(PLATFORM)?
        .into_iter()
        .filter(|o| !matches!(o, Object::Component(_) | Object::Workload(_)))
        .collect();
    apply_all(&url, platform, 1).await?;

    let mut watch = url.watch_releases().await?;

    let start = Instant::now();
    let objects: Vec<Object> = (0..components).flat_map(component_and_workload).collect();
    apply_all(&url, objects, 64).await?;
    let apply_s = start.elapsed().as_secs_f64();
    let mut seen = HashSet::new();
    while seen.len() < components {
        let event = tokio::time::timeout(Duration::from_secs(120), watch.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the watch ended"))?;
        if event.r#type() == EventType::Added
            && let Some(object) = event.resource.and_then(|r| r.object)
        {
            seen.insert(object.meta().name.clone());
        }
    }
    let first_deploy_s = start.elapsed().as_secs_f64();
    println!(
        "{components} autoDeploy components: applied in {apply_s:.1} s, all first Releases stored after {first_deploy_s:.1} s"
    );

    // The change: one annotation on the type's Deployment.
    let edited = PLATFORM.replace(DEPLOYMENT_METADATA, DEPLOYMENT_METADATA_CHANGED);
    anyhow::ensure!(edited != PLATFORM, "the example type changed shape");
    let change: Vec<Object> = from_yaml(&edited)?
        .into_iter()
        .filter(|o| matches!(o, Object::ComponentType(_)))
        .collect();
    let start = Instant::now();
    apply_all(&url, change, 1).await?;
    let mut updated = HashSet::new();
    while updated.len() < components {
        let event = tokio::time::timeout(Duration::from_secs(120), watch.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the watch ended"))?;
        if let Some(object) = event.resource.and_then(|r| r.object)
            && marked(&object)
        {
            updated.insert(object.meta().name.clone());
        }
    }
    let rerender_s = start.elapsed().as_secs_f64();
    println!(
        "ComponentType change → {components} new Releases stored: {rerender_s:.1} s ({:.0} per s)",
        components as f64 / rerender_s
    );
    server.stop().await?;
    Ok(Rerender {
        apply_s,
        first_deploy_s,
        rerender_s,
    })
}
