//! The parts of the render context built from protobuf inputs: the workload, its
//! configurations and the target namespace, in the shapes templates read.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use troupe_common::pb::v1alpha1 as pb;

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

/// Environment variables and files of the container, in the shapes templates use:
/// `env` as Kubernetes `EnvVar`s, `files` as `{name, mountPath, value}`.
pub(super) fn configurations(container: Option<&pb::Container>) -> Value {
    let Some(container) = container else {
        return json!({"env": [], "files": []});
    };
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
