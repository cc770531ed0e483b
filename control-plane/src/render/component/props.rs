//! Property tests of a whole component render: the example release (the `service` type, its
//! traits, the component and its workload) with any part of it replaced by arbitrary JSON —
//! parameters, templates, patch paths and values, rules, the workload — renders or fails with
//! an error, never panics, finishes in bounded time and renders the same way twice.
//! Replay: see `crate::props`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Object, Policy};

use super::{RenderInput, render};
use crate::render::schema::SchemaCache;
use crate::render::template::{Engine, Limits};

const PLATFORM: &str = include_str!("../../../../examples/platform.yaml");
const MORE: &str = include_str!("../../../../examples/samples/more-types-and-traits.yaml");

const KEYS: &[&str] = &[
    "name",
    "port",
    "replicas",
    "image",
    "path",
    "op",
    "value",
    "target",
    "kind",
    "${{ parameters }}",
];

/// The release of the first example component (with the traits it uses), the production
/// environment and the data plane as templates see it.
fn mk_release() -> (pb::ComponentReleaseSpec, pb::Environment, Value) {
    let mut objects = from_yaml(PLATFORM).expect("the examples parse");
    objects.extend(from_yaml(MORE).expect("the examples parse"));
    let mut release = pb::ComponentReleaseSpec {
        owner: Some(pb::ComponentOwner {
            project_name: "shop".into(),
            component_name: "api".into(),
        }),
        ..Default::default()
    };
    let (mut environment, mut data_plane) = (pb::Environment::default(), Value::Null);
    for object in objects {
        match object {
            Object::ComponentType(t) if release.component_type.is_none() => {
                release.component_type = Some(pb::ComponentTypeSnapshot {
                    kind: "ComponentType".into(),
                    name: "deployment/service".into(),
                    spec: t.spec,
                });
            }
            Object::Trait(t) => release.traits.push(pb::TraitSnapshot {
                kind: "Trait".into(),
                name: t.metadata.unwrap_or_default().name,
                spec: t.spec,
            }),
            Object::Component(c) if release.component_profile.is_none() => {
                let spec = c.spec.unwrap_or_default();
                release.component_profile = Some(pb::ComponentProfile {
                    parameters: spec.parameters,
                    traits: spec.traits,
                    egress: spec.egress,
                });
            }
            Object::Workload(w) if release.workload.is_none() => {
                let spec = w.spec.unwrap_or_default();
                release.workload = Some(pb::WorkloadTemplate {
                    container: spec.container,
                    endpoints: spec.endpoints,
                    connections: spec.connections,
                    build: spec.build,
                });
            }
            Object::DataPlane(dp) => {
                let spec = serde_json::to_value(dp.spec).expect("a data plane spec");
                data_plane = json!({"kind": "DataPlane", "name": "local", "spec": spec});
            }
            Object::Environment(e)
                if e.metadata.as_ref().is_some_and(|m| m.name == "production") =>
            {
                environment = e;
            }
            _ => {}
        }
    }
    (release, environment, data_plane)
}

/// [`mk_release`], made once per test binary.
fn example() -> &'static (pb::ComponentReleaseSpec, pb::Environment, Value) {
    static EXAMPLE: std::sync::OnceLock<(pb::ComponentReleaseSpec, pb::Environment, Value)> =
        std::sync::OnceLock::new();
    EXAMPLE.get_or_init(mk_release)
}

/// Every location (JSON pointer) inside `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (token, child) in children {
        let p = format!("{at}/{token}");
        out.push(p.clone());
        pointers(child, p, out);
    }
}

fn mk_limits() -> Limits {
    Limits {
        fuel: 200_000,
        max_output_bytes: 256 << 10,
        ..Limits::default()
    }
}

proptest! {
    #![proptest_config(crate::props::config())]

    #[test]
    fn any_release_renders_or_fails_in_bounded_time_and_the_same_twice(
        at in any::<usize>(),
        replacement in crate::props::json(KEYS),
    ) {
        let (release, environment, data_plane) = example();
        let mut doc = serde_json::to_value(release).expect("a release serializes");
        let mut locations = Vec::new();
        pointers(&doc, String::new(), &mut locations);
        let location = &locations[at % locations.len()];
        *doc.pointer_mut(location).expect("a location of the release") = replacement;
        let Ok(release) = serde_json::from_value::<pb::ComponentReleaseSpec>(doc) else {
            return Ok(());
        };
        let started = Instant::now();
        let first = mk_render(&release, environment, data_plane.clone());
        prop_assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        prop_assert_eq!(mk_render(&release, environment, data_plane.clone()), first, "at {}", location);
    }
}

/// Renders `release` into `environment` as the release controller does.
fn mk_render(
    release: &pb::ComponentReleaseSpec,
    environment: &pb::Environment,
    data_plane: Value,
) -> Result<super::Rendered, super::RenderError> {
    let (engine, schemas) = (Engine::new(mk_limits()), SchemaCache::default());
    let policy = Policy::new("DataPlane acme/local", None);
    let overrides = HashMap::new();
    let input = RenderInput {
        namespace: "acme",
        release_name: "api-0123456789",
        release,
        environment,
        data_plane,
        policy: &policy,
        type_environment_configs: None,
        trait_environment_configs: &overrides,
        workload_overrides: None,
        connections: &[],
        network: None,
    };
    render(&engine, &schemas, &input)
}

/// The unmodified example renders, so the property starts from a release that works.
#[test]
fn the_example_release_renders() {
    let (release, environment, data_plane) = mk_release();
    let rendered = mk_render(&release, &environment, data_plane).expect("the example renders");
    assert!(rendered.objects.len() >= 2, "{:?}", rendered.objects);
}
