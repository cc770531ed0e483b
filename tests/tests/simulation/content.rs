//! What a release holds in the simulation: a content hash names it whole. The hash
//! `v{variant}-n{objects}-p{pad}` stands for `objects` ConfigMaps, each carrying the hash
//! itself and `pad` bytes of filler, so the simulated cluster can tell from the objects
//! alone which content it holds, and whether it holds all of it.

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;
use troupe_common::pb::v1alpha1::{self as pb, ReleaseResource};

/// The namespace of the releases, their data plane and environment.
pub const NAMESPACE: &str = "acme";
/// The data plane the agent speaks for.
pub const DATA_PLANE: &str = "sim";
/// The environment every release sits in.
pub const ENVIRONMENT: &str = "dev";

/// The project and component every release belongs to.
pub const OWNER: (&str, &str) = ("shop", "api");

/// The platform objects a release needs: its namespace, data plane, environment, and the
/// component it belongs to (with the least a project and a component type take).
pub const PLATFORM: &str = "apiVersion: troupe.dev/v1alpha1
kind: Namespace
metadata: {name: acme}
---
apiVersion: troupe.dev/v1alpha1
kind: DataPlane
metadata: {name: sim, namespace: acme}
spec: {planeId: sim}
---
apiVersion: troupe.dev/v1alpha1
kind: Environment
metadata: {name: dev, namespace: acme}
spec:
  dataPlaneRef: {kind: DataPlane, name: sim}
---
apiVersion: troupe.dev/v1alpha1
kind: DeploymentPipeline
metadata: {name: default, namespace: acme}
spec:
  promotionPaths: [{sourceEnvironment: dev}]
---
apiVersion: troupe.dev/v1alpha1
kind: Project
metadata: {name: shop, namespace: acme}
spec: {deploymentPipelineRef: default}
---
apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {name: plain, namespace: acme}
spec:
  workloadType: deployment
  resources:
    - id: settings
      template: {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}}
---
apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: api, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/plain}
";

/// Picks a content: mostly small, sometimes a few kilobytes, rarely more than one chunk
/// of the agent protocol (1 MiB), so chunking is crossed too.
pub fn pick(rng: &mut StdRng) -> String {
    let variant = rng.random_range(0..4);
    let objects = rng.random_range(1..=3);
    let pad = match rng.random_range(0..1000) {
        0..=4 => 700_000,
        5..=99 => 20_000,
        100..=399 => 2_000,
        _ => 16,
    };
    format!("v{variant}-n{objects}-p{pad}")
}

/// The object ids content `hash` holds.
pub fn ids(hash: &str) -> Vec<String> {
    let (objects, _) = parse(hash);
    (0..objects).map(|i| format!("cm-{i}")).collect()
}

/// The number of objects and the filler of each, from a hash [`pick`] made.
fn parse(hash: &str) -> (usize, usize) {
    let mut parts = hash.split('-').skip(1);
    let mut number = |prefix: char| {
        parts
            .next()
            .and_then(|p| p.strip_prefix(prefix))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{hash} is not a simulated content hash"))
    };
    (number('n'), number('p'))
}

/// The objects of content `hash` for release `name`.
pub fn resources(name: &str, hash: &str) -> Vec<ReleaseResource> {
    let (_, pad) = parse(hash);
    ids(hash)
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let object = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": format!("{name}-{i}"), "namespace": "sim"},
                "data": {"content": hash, "pad": "x".repeat(pad)},
            });
            ReleaseResource {
                id,
                object: Some(serde_json::from_value(object).expect("a JSON object")),
            }
        })
        .collect()
}

/// The content hash one object carries (what the cluster keeps of it).
pub fn tag_of(resource: &ReleaseResource) -> String {
    use pbjson_types::value::Kind;
    let field =
        |s: &pbjson_types::Struct, key: &str| s.fields.get(key).and_then(|v| v.kind.clone());
    let data = resource.object.as_ref().and_then(|o| field(o, "data"));
    match data {
        Some(Kind::StructValue(data)) => match field(&data, "content") {
            Some(Kind::StringValue(tag)) => tag,
            _ => String::new(),
        },
        _ => String::new(),
    }
}

/// Release `name` with content `hash`, as the control plane writes it.
pub fn release(name: &str, hash: &str) -> pb::Release {
    pb::Release {
        metadata: Some(pb::ObjectMeta {
            name: name.into(),
            namespace: NAMESPACE.into(),
            ..Default::default()
        }),
        spec: Some(pb::ReleaseSpec {
            owner: Some(pb::ComponentOwner {
                project_name: OWNER.0.into(),
                component_name: OWNER.1.into(),
            }),
            environment: ENVIRONMENT.into(),
            data_plane_ref: Some(pb::DataPlaneRef {
                kind: "DataPlane".into(),
                name: DATA_PLANE.into(),
            }),
            resources: resources(name, hash),
            content_hash: hash.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
