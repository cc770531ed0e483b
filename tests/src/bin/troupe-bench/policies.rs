//! `troupe-bench render --policy-components N`: the wall time from one visibility change to
//! updated network policies across N components, through the real server (sled on disk,
//! gRPC over TCP, every controller). N components of project `billing`, which controls
//! egress, each connect to shop's `core` across projects; `core` then takes `namespace` out
//! of its endpoint's visibility, so its policy stops admitting all N, and each of the N
//! stops being allowed to send to it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use troupe_common::Object;
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::EventType;

use super::api::LocalServer;
use super::rerender::apply_all;

const PLATFORM: &str = include_str!("../../../../examples/platform.yaml");

/// The cell of the consumers, as the target's policy names it.
const CONSUMER_CELL: &str = "acme-billing-development";
/// The cell of the target, as the consumers' egress names it.
const TARGET_CELL: &str = "acme-shop-development";

/// Figures of one run.
pub struct Policies {
    /// Seconds from the first apply until every policy named every connection.
    pub first_deploy_s: f64,
    /// Seconds from the visibility change until every policy had dropped them.
    pub update_s: f64,
}

/// shop's `core`, serving `http` with `visibility`.
fn core(visibility: &str) -> Vec<Object> {
    let yaml = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: core, namespace: acme}}
spec:
  owner: {{projectName: shop}}
  componentType: {{name: deployment/service}}
  autoDeploy: true
  parameters: {{port: 8080}}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: core, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: core}}
  container: {{image: ghcr.io/acme/core:1.0.0}}
  endpoints: [{{name: http, type: HTTP, port: 8080, visibility: {visibility}}}]
"
    );
    from_yaml(&yaml).expect("valid component")
}

/// Consumer `i` of project billing, connecting to shop's core.
fn consumer(i: usize) -> Vec<Object> {
    let yaml = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: c{i}, namespace: acme}}
spec:
  owner: {{projectName: billing}}
  componentType: {{name: deployment/service}}
  autoDeploy: true
  parameters: {{port: 8080}}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: c{i}, namespace: acme}}
spec:
  owner: {{projectName: billing, componentName: c{i}}}
  container: {{image: ghcr.io/acme/c{i}:1.0.0}}
  endpoints: [{{name: http, type: HTTP, port: 8080}}]
  connections:
    - {{project: shop, component: core, endpoint: http, visibility: namespace, envBindings: {{address: CORE_URL}}}}
"
    );
    from_yaml(&yaml).expect("valid component")
}

const BILLING: &str = "apiVersion: troupe.dev/v1alpha1
kind: Project
metadata: {name: billing, namespace: acme}
spec:
  deploymentPipelineRef: default
  egress:
    enabled: true
    allow: [{cidr: 10.0.0.0/8}]
";

/// The network policy of a Release, as JSON.
fn policy(object: &Object) -> Option<Value> {
    let Object::Release(release) = object else {
        return None;
    };
    let resource = release
        .spec
        .as_ref()?
        .resources
        .iter()
        .find(|r| r.id.starts_with("NetworkPolicy/"))?;
    serde_json::to_value(resource.object.as_ref()?).ok()
}

/// How many consumers `core`'s policy admits by name.
fn admitted(policy: &Value) -> usize {
    policy["spec"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["from"].as_array().cloned().unwrap_or_default())
        .filter(|peer| {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == CONSUMER_CELL
        })
        .count()
}

/// Whether a consumer's policy lets it send to `core`.
fn sends_to_core(policy: &Value) -> bool {
    policy["spec"]["egress"].to_string().contains(TARGET_CELL)
}

/// Follows Release events until `done` holds for what was seen: each Release's latest
/// policy, by name.
async fn until(
    watch: &mut tonic::Streaming<troupe_common::pb::v1alpha1::WatchResponse>,
    seen: &mut HashMap<String, Value>,
    done: impl Fn(&HashMap<String, Value>) -> bool,
) -> anyhow::Result<()> {
    while !done(seen) {
        let event = tokio::time::timeout(Duration::from_secs(300), watch.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the watch ended"))?;
        if event.r#type() == EventType::Deleted {
            continue;
        }
        if let Some(object) = event.resource.and_then(|r| r.object)
            && let Some(policy) = policy(&object)
        {
            seen.insert(object.meta().name.clone(), policy);
        }
    }
    Ok(())
}

/// Runs the measurement with `components` consumers.
pub async fn run(components: usize) -> anyhow::Result<Policies> {
    let server = LocalServer::start().await?;
    let url = server.api.clone();
    let mut platform: Vec<Object> = from_yaml(PLATFORM)?
        .into_iter()
        .filter(|o| !matches!(o, Object::Component(_) | Object::Workload(_)))
        .collect();
    platform.extend(from_yaml(BILLING)?);
    apply_all(&url, platform, 1).await?;

    let mut watch = url.watch_releases().await?;

    let start = Instant::now();
    let mut objects = core("[namespace]");
    objects.extend((0..components).flat_map(consumer));
    apply_all(&url, objects, 64).await?;
    let mut seen = HashMap::new();
    until(&mut watch, &mut seen, |seen| {
        seen.get("core-development")
            .is_some_and(|p| admitted(p) == components)
            && (0..components).all(|i| {
                seen.get(&format!("c{i}-development"))
                    .is_some_and(sends_to_core)
            })
    })
    .await?;
    let first_deploy_s = start.elapsed().as_secs_f64();
    println!(
        "{components} components connecting to one across projects: every policy names every connection after {first_deploy_s:.1} s"
    );

    let start = Instant::now();
    apply_all(&url, core("[]"), 1).await?;
    until(&mut watch, &mut seen, |seen| {
        seen.get("core-development")
            .is_some_and(|p| admitted(p) == 0)
            && (0..components).all(|i| {
                seen.get(&format!("c{i}-development"))
                    .is_some_and(|p| !sends_to_core(p))
            })
    })
    .await?;
    let update_s = start.elapsed().as_secs_f64();
    println!(
        "visibility change → {} policies updated: {update_s:.2} s",
        components + 1
    );
    server.stop().await?;
    Ok(Policies {
        first_deploy_s,
        update_s,
    })
}
