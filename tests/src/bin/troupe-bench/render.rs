//! `troupe-bench render`: how fast one component release renders, next to raw minijinja
//! evaluating the same expressions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use troupe_common::Object;
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1 as pb;
use troupe_control_plane::render::component::{Plan, RenderInput, render};
use troupe_control_plane::render::network::{
    Consumer, Destination, Egress, GatewayPeer, NetworkInput, Peer, Provider,
};
use troupe_control_plane::render::schema::SchemaCache;
use troupe_control_plane::render::template::{Engine, Limits};

const PLATFORM: &str = include_str!("../../../../examples/platform.yaml");

/// A second trait for the benchmark: labels every workload's pods through a patch.
const TEAM_LABELS: &str = "apiVersion: troupe.dev/v1alpha1
kind: Trait
metadata: {name: team-labels, namespace: acme}
spec:
  parameters:
    type: object
    properties:
      team: {type: string, default: platform}
  patches:
    - target: {group: apps, version: v1, kind: Deployment}
      operations:
        - op: add
          path: /spec/template/metadata/labels/team
          value: ${{ parameters.team }}
        - op: add
          path: /metadata/annotations
          value: {owner: \"${{ parameters.team }}-${{ metadata.componentName }}\"}
";

/// The release of `service` with two traits (ingress and team-labels) built from the examples.
fn mk_release() -> anyhow::Result<(pb::ComponentReleaseSpec, pb::Environment, Value)> {
    let mut objects = from_yaml(PLATFORM).expect("examples parse");
    objects.extend(from_yaml(TEAM_LABELS).expect("trait parses"));
    let mut release = pb::ComponentReleaseSpec::default();
    let mut environment = pb::Environment::default();
    let mut data_plane = Value::Null;
    for object in objects {
        match object {
            Object::ComponentType(t) => {
                release.component_type = Some(pb::ComponentTypeSnapshot {
                    kind: "ComponentType".into(),
                    name: "deployment/service".into(),
                    spec: t.spec,
                })
            }
            Object::Trait(t) => release.traits.push(pb::TraitSnapshot {
                kind: "Trait".into(),
                name: t.metadata.unwrap_or_default().name,
                spec: t.spec,
            }),
            Object::Component(c) => {
                let mut spec = c.spec.unwrap_or_default();
                spec.traits.push(pb::ComponentTraitInstance {
                    name: "team-labels".into(),
                    instance_name: "team".into(),
                    ..Default::default()
                });
                release.owner = Some(pb::ComponentOwner {
                    project_name: "shop".into(),
                    component_name: "api".into(),
                });
                release.component_profile = Some(pb::ComponentProfile {
                    parameters: spec.parameters,
                    traits: spec.traits,
                    egress: spec.egress,
                });
            }
            Object::Workload(w) => {
                let spec = w.spec.unwrap_or_default();
                release.workload = Some(pb::WorkloadTemplate {
                    container: spec.container,
                    endpoints: spec.endpoints,
                    connections: spec.connections,
                    build: spec.build,
                });
            }
            Object::DataPlane(dp) => {
                let mut spec = serde_json::to_value(dp.spec)?;
                troupe_common::document::integral_numbers(&mut spec);
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
    Ok((release, environment, data_plane))
}

/// What the benchmark's network policy is rendered from: ten consumers in two projects,
/// both gateways, and egress to two connections and two CIDRs.
fn network_inputs() -> (Vec<Consumer>, Vec<GatewayPeer>, Egress) {
    let peer = |project: &str, component: String| Peer {
        project: project.into(),
        component,
    };
    let consumers = (0..10)
        .map(|i| Consumer {
            peer: peer(if i % 2 == 0 { "shop" } else { "billing" }, format!("c{i}")),
            endpoint: "http".into(),
            visibility: "namespace".into(),
        })
        .collect();
    let gateways = ["external", "internal"]
        .into_iter()
        .map(|visibility| GatewayPeer {
            visibility: visibility.into(),
            namespace: "gateways".into(),
            pod_selector: [("app".to_string(), format!("gateway-{visibility}"))].into(),
        })
        .collect();
    let egress = Egress {
        destinations: ["db", "cache"]
            .into_iter()
            .map(|c| Destination {
                peer: peer("shop", c.into()),
                port: 5432,
                protocol: "TCP".into(),
            })
            .collect(),
        rules: ["10.0.0.0/8", "192.168.10.0/24"]
            .into_iter()
            .map(|cidr| pb::EgressRule {
                cidr: cidr.into(),
                ..Default::default()
            })
            .collect(),
    };
    (consumers, gateways, egress)
}

/// Every `${{ … }}` expression in a JSON tree.
fn expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${{") {
                let body = &rest[start + 3..];
                let Some(len) = expression_end(body) else {
                    break;
                };
                out.push(body[..len].trim().to_string());
                rest = &body[len + 2..];
            }
        }
        Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                expressions(&Value::String(k.clone()), out);
                expressions(v, out);
            }
        }
        _ => {}
    }
}

/// Where the `}}` closing an expression starts: the first one outside brackets and quotes.
fn expression_end(body: &str) -> Option<usize> {
    let (mut depth, mut quote) = (0usize, None);
    let bytes = body.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'}') if depth == 0 && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            (None, b'{' | b'[' | b'(') => depth += 1,
            (None, b'}' | b']' | b')') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Seconds per call of `f`, calling it for `run`.
fn per_call<T, E>(run: Duration, mut f: impl FnMut() -> Result<T, E>) -> Result<f64, E> {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < run {
        std::hint::black_box(f()?);
        calls += 1;
    }
    Ok(start.elapsed().as_secs_f64() / calls as f64)
}

/// Renders per second for `run`, and raw minijinja passes over the same expressions.
pub fn run(run: Duration) -> anyhow::Result<serde_json::Map<String, Value>> {
    let (release, environment, data_plane) = mk_release()?;
    let engine = Engine::new(Limits::default());
    let schemas = SchemaCache::default();
    let overrides = HashMap::new();
    let configs: pbjson_types::Struct = serde_json::from_value(json!({"replicas": 3}))?;
    let policy = troupe_common::Policy::new("DataPlane acme/local", None);
    let input = RenderInput {
        namespace: "acme",
        release_name: "api-0123456789",
        release: &release,
        environment: &environment,
        data_plane,
        policy: &policy,
        type_environment_configs: Some(&configs),
        trait_environment_configs: &overrides,
        workload_overrides: None,
        connections: &[],
        network: None,
    };
    let objects = render(&engine, &schemas, &input)?.objects;
    println!(
        "rendering `service` with traits ingress and team-labels: {} objects",
        objects.len()
    );

    // What a binding's render costs once its release is planned (the control plane keeps a
    // plan per release), and what the first render of a release costs.
    let plan = Plan::new(&schemas, &release)?;
    let ours = per_call(run, || plan.render(&engine, &input))?;
    let cold = per_call(run, || render(&engine, &schemas, &input))?;
    // The same render with the component's network policy: ten consumers, both gateways,
    // egress control with two connections and two CIDRs.
    let endpoints = release.workload.clone().unwrap_or_default().endpoints;
    let (consumers, gateways, egress) = network_inputs();
    let network = NetworkInput {
        provider: Provider::Kubernetes,
        tenant: "acme",
        project: "shop",
        component: "api",
        environment: "production",
        endpoints: &endpoints,
        gateways: &gateways,
        consumers: &consumers,
        egress: Some(&egress),
    };
    let with_policies = RenderInput {
        network: Some(&network),
        ..input.clone()
    };
    let policed = per_call(run, || plan.render(&engine, &with_policies))?;

    // Raw minijinja: the same expressions, compiled once, evaluated against a context of the
    // same shape (built once, outside the loop).
    let mut exprs = Vec::new();
    let type_spec = release
        .component_type
        .clone()
        .unwrap_or_default()
        .spec
        .unwrap_or_default();
    for r in &type_spec.resources {
        expressions(&serde_json::to_value(&r.template)?, &mut exprs);
        expressions(&Value::String(r.include_when.clone()), &mut exprs);
    }
    for t in &release.traits {
        expressions(&serde_json::to_value(&t.spec)?, &mut exprs);
    }
    let mut env = minijinja::Environment::new();
    // Stand-ins for our helpers, so the same expressions compile.
    env.add_filter("service_ports", |v: minijinja::Value| v);
    env.add_filter("file_mounts", |v: minijinja::Value, _: String| v);
    env.add_filter("to_map", |v: minijinja::Value, _: String, _: String| v);
    env.add_test("containing", |_: minijinja::Value, _: minijinja::Value| {
        true
    });
    env.add_function("omit", || minijinja::Value::from(()));
    let compiled: Vec<_> = exprs
        .iter()
        .map(|e| env.compile_expression(e))
        .collect::<Result<_, _>>()?;
    let context = minijinja::Value::from(minijinja::value::Serde(json!({
        "dataplane": input.data_plane,
        "endpoint": {"name": "http", "port": 8080, "basePath": "/"},
        "metadata": {"name": "api", "componentName": "api", "namespace": "acme-shop-production",
                     "podSelectors": {"troupe.dev/component": "api"}},
        "parameters": {"port": 8080, "host": "api.example.com", "path": "/", "servicePort": 8080, "team": "platform"},
        "environmentConfigs": {"replicas": 3},
        "workload": {"container": {"image": "x", "command": [], "args": []},
                     "endpoints": [{"name": "http", "port": 8080}]},
        "configurations": {"env": [], "files": [{"name": "app.yaml", "mountPath": "/etc/api/app.yaml", "value": "x"}]},
        "trait": {"name": "ingress", "instanceName": "public"},
    })));
    let start = Instant::now();
    let mut passes = 0u64;
    while start.elapsed() < run {
        for expr in &compiled {
            std::hint::black_box(expr.eval(&context)?);
        }
        passes += 1;
    }
    let raw = start.elapsed().as_secs_f64() / passes as f64;
    println!(
        "{:<40} {:>12.0} per s ({:.1} µs each)\n{:<40} {:>12.0} per s ({:.1} µs each)\n{:<40} {:>12.0} per s ({:.1} µs each)\n{:<40} {:>12.0} per s ({:.1} µs each, {} expressions)",
        "render, release planned",
        1.0 / ours,
        ours * 1e6,
        "render, planned, with network policy",
        1.0 / policed,
        policed * 1e6,
        "render, release planned first",
        1.0 / cold,
        cold * 1e6,
        "raw minijinja, same expressions",
        1.0 / raw,
        raw * 1e6,
        compiled.len()
    );
    let mut figures = serde_json::Map::new();
    figures.insert("renders_per_s".into(), ((1.0 / ours).round()).into());
    figures.insert("render_us".into(), ((ours * 1e7).round() / 10.0).into());
    figures.insert(
        "render_with_policies_us".into(),
        ((policed * 1e7).round() / 10.0).into(),
    );
    figures.insert(
        "renders_per_s_unplanned".into(),
        ((1.0 / cold).round()).into(),
    );
    figures.insert(
        "raw_minijinja_passes_per_s".into(),
        ((1.0 / raw).round()).into(),
    );
    figures.insert(
        "ratio_vs_raw_minijinja".into(),
        ((raw / ours * 100.0).round() / 100.0).into(),
    );
    figures.insert("expressions".into(), compiled.len().into());
    Ok(figures)
}
