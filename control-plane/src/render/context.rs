//! The parts of the render context built from protobuf inputs: the workload, its
//! configurations and the target namespace, in the shapes templates read.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use troupe_common::pb::v1alpha1 as pb;

use super::endpoints::{Address, connection_env};

/// The workload as templates see it: every field present (empty when unset), so a template
/// can use `workload.container.command` without guarding it; `targetPort` defaults to `port`.
pub(super) fn workload_context(workload: &pb::WorkloadTemplate) -> Value {
    let container = workload.container.clone().unwrap_or_default();
    let endpoints: Vec<Value> = workload
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "type": e.r#type,
                "port": e.port,
                "targetPort": if e.target_port == 0 { e.port } else { e.target_port },
                "visibility": e.visibility,
                "basePath": e.base_path,
                "displayName": e.display_name,
            })
        })
        .collect();
    let connections: Vec<Value> = workload.connections.iter().map(to_json).collect();
    json!({
        "container": {
            "image": container.image,
            "command": container.command,
            "args": container.args,
        },
        "endpoints": endpoints,
        "connections": connections,
    })
}

/// The container as one environment runs it: the release's container with the binding's
/// overrides merged by key (an override replaces the entry with its key, new keys are
/// appended), then the environment variables of resolved connections, unless the container
/// already sets that variable itself.
pub(super) fn overridden(
    container: Option<&pb::Container>,
    overrides: Option<&pb::WorkloadOverrides>,
    connections: &[pb::Connection],
    addresses: &[Option<Address>],
) -> pb::Container {
    let mut container = container.cloned().unwrap_or_default();
    if let Some(o) = overrides.and_then(|o| o.container.as_ref()) {
        for env in &o.env {
            match container.env.iter_mut().find(|e| e.key == env.key) {
                Some(existing) => *existing = env.clone(),
                None => container.env.push(env.clone()),
            }
        }
        for file in &o.files {
            match container.files.iter_mut().find(|f| f.key == file.key) {
                Some(existing) => *existing = file.clone(),
                None => container.files.push(file.clone()),
            }
        }
    }
    for (connection, address) in connections.iter().zip(addresses) {
        let Some(address) = address else { continue };
        for (key, value) in connection_env(connection, address) {
            if container.env.iter().all(|e| e.key != key) {
                container.env.push(pb::EnvVar {
                    key,
                    value,
                    value_from: None,
                });
            }
        }
    }
    container
}

/// The workload's connections as templates see them, in declaration order: the target, and
/// once resolved its address (`resolved` false and empty address parts while pending).
pub(super) fn connections_context(
    connections: &[pb::Connection],
    addresses: &[Option<Address>],
) -> Value {
    let items: Vec<Value> = connections
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let address = addresses.get(i).cloned().flatten();
            let visibility = if c.visibility.is_empty() {
                "project"
            } else {
                c.visibility.as_str()
            };
            json!({
                "project": c.project,
                "component": c.component,
                "endpoint": c.endpoint,
                "visibility": visibility,
                "resolved": address.is_some(),
                "url": address.as_ref().map(Address::url).unwrap_or_default(),
                "host": address.as_ref().map(|a| a.host.clone()).unwrap_or_default(),
                "port": address.as_ref().map_or(0, |a| a.port),
                "basePath": address.as_ref().map(|a| a.path.clone()).unwrap_or_default(),
            })
        })
        .collect();
    Value::Array(items)
}

/// Environment variables and files of the container, in the shapes templates use:
/// `env` as Kubernetes `EnvVar`s, `files` as `{name, mountPath, value}`.
pub(super) fn configurations(container: &pb::Container) -> Value {
    let env: Vec<Value> = container
        .env
        .iter()
        .map(|e| {
            match e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                Some(secret) => json!({
                    "name": e.key,
                    "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
                }),
                None => json!({"name": e.key, "value": e.value}),
            }
        })
        .collect();
    let files: Vec<Value> = container
        .files
        .iter()
        .map(|f| json!({"name": f.key, "mountPath": f.mount_path, "value": f.value}))
        .collect();
    json!({"env": env, "files": files})
}

/// The namespace a component's objects go to in the data plane: `{ns}-{project}-{env}`,
/// shortened with a hash when it would exceed a DNS label.
pub(super) fn target_namespace(namespace: &str, project: &str, environment: &str) -> String {
    let full = format!("{namespace}-{project}-{environment}");
    if full.len() <= 63 {
        return full;
    }
    let hash = hash_hex(&full);
    format!("{}-{}", full[..54].trim_end_matches('-'), &hash[..8])
}

pub(super) fn hash_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A generated message as JSON, integral numbers as integers.
pub(super) fn to_json(value: &impl serde::Serialize) -> Value {
    let mut v = serde_json::to_value(value).unwrap_or_default();
    troupe_common::document::integral_numbers(&mut v);
    v
}
