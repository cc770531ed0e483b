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

/// Longest readable part kept in a hashed target namespace: 63 less `--` and the hash.
const HASHED_PREFIX_LEN: usize = 63 - 2 - TARGET_HASH_LEN;
/// Hex digits of SHA-256 in a hashed target namespace (64 bits).
const TARGET_HASH_LEN: usize = 16;

/// The namespace a component's objects go to in the data plane: one per (control-plane
/// namespace, project, environment), never shared by two of them, and a DNS label.
///
/// - **Readable**, `{namespace}-{project}-{environment}`, when that reads back as exactly one
///   triple: the namespace and the environment contain no `-`, the project no `--`, and the
///   whole fits 63 characters. Splitting at the first and the last `-` gives the triple back.
/// - **Hashed** otherwise: the readable form cut to 45 characters (without `-` at its ends),
///   `--`, and 16 hex digits of SHA-256 over the exact triple. A readable form never contains
///   `--`, so it never equals a hashed one; two hashed forms are equal only if 64 bits of
///   SHA-256 are.
///
/// So `acme-shop-development` stays as it reads, and (`team`, `a-b`, `prod`), which is
/// readable as `team-a-b-prod`, and (`team-a`, `b`, `prod`), hashed to `team-a-b-prod--…`,
/// land in two namespaces.
pub(super) fn target_namespace(namespace: &str, project: &str, environment: &str) -> String {
    let full = format!("{namespace}-{project}-{environment}");
    let readable = !namespace.is_empty()
        && !project.is_empty()
        && !environment.is_empty()
        && !namespace.contains('-')
        && !environment.contains('-')
        && !full.contains("--")
        && full.len() <= 63;
    if readable {
        return full;
    }
    // Length-prefixed, so no two triples hash the same bytes whatever their characters.
    let exact = format!(
        "{}:{namespace}{}:{project}{environment}",
        namespace.len(),
        project.len()
    );
    let hash = hash_hex(&exact);
    let mut cut = HASHED_PREFIX_LEN.min(full.len());
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = full[..cut].trim_matches('-');
    let prefix = if prefix.is_empty() { "t" } else { prefix };
    format!("{prefix}--{}", &hash[..TARGET_HASH_LEN])
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use troupe_common::names::check_dns_label;

    use super::target_namespace;

    #[test]
    fn the_common_case_reads_as_it_always_did() {
        assert_eq!(
            target_namespace("acme", "shop", "development"),
            "acme-shop-development"
        );
        assert_eq!(
            target_namespace("acme", "web-shop", "prod"),
            "acme-web-shop-prod"
        );
    }

    #[test]
    fn tenants_whose_readable_forms_meet_land_in_two_namespaces() {
        let a = target_namespace("team", "a-b", "prod");
        let b = target_namespace("team-a", "b", "prod");
        let c = target_namespace("team", "a", "b-prod");
        assert_eq!(a, "team-a-b-prod");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
        // The hashed form says where it came from and is marked by `--`.
        assert!(b.starts_with("team-a-b-prod--"), "{b}");
        assert_eq!(b.len(), "team-a-b-prod--".len() + 16);
    }

    #[test]
    fn a_hashed_form_is_never_a_readable_one() {
        // An environment named like the hash of another triple stays apart from it.
        let hashed = target_namespace("team-a", "b", "prod");
        let (_, hash) = hashed.split_once("--").unwrap();
        let readable = target_namespace("team", "a-b-prod", hash);
        assert_ne!(readable, hashed);
        assert!(!readable.contains("--"));
    }

    #[test]
    fn long_names_fit_a_dns_label_and_stay_apart() {
        let long = "a".repeat(63);
        let names = [
            target_namespace(&long, &long, &long),
            target_namespace(&long, &long, &"a".repeat(62)),
            target_namespace(&long, &"a".repeat(62), &long),
            target_namespace("acme", "shop", &long),
        ];
        for name in &names {
            assert_eq!(check_dns_label(name), Ok(()), "{name}");
        }
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn names_with_dashes_at_their_ends_stay_apart_and_valid() {
        let names = [
            target_namespace("team-", "a", "prod"),
            target_namespace("team", "-a", "prod"),
            target_namespace("team", "a-", "prod"),
            target_namespace("team", "a", "-prod"),
            target_namespace("-", "-", "-"),
            target_namespace("", "", ""),
        ];
        for name in &names {
            assert_eq!(check_dns_label(name), Ok(()), "{name}");
        }
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn ten_thousand_random_triples_never_collide() {
        // Short parts from a small alphabet with many dashes: the triples most likely to
        // share a readable form. A fixed xorshift keeps the test deterministic.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let part = |next: &mut dyn FnMut() -> u64| {
            let len = 1 + (next() % 8) as usize;
            let mut s: String = (0..len)
                .map(|_| ['a', 'b', '-', '1'][(next() % 4) as usize])
                .collect();
            if next().is_multiple_of(16) {
                s.push_str(&"x".repeat(40));
            }
            s.trim_matches('-').to_string()
        };
        let mut seen: HashMap<String, (String, String, String)> = HashMap::new();
        let mut triples = 0;
        while triples < 10_000 {
            let (ns, project, env) = (part(&mut next), part(&mut next), part(&mut next));
            if ns.is_empty() || project.is_empty() || env.is_empty() {
                continue;
            }
            let name = target_namespace(&ns, &project, &env);
            assert!(name.len() <= 63, "{name}");
            let triple = (ns, project, env);
            if let Some(other) = seen.insert(name.clone(), triple.clone()) {
                assert_eq!(other, triple, "{name} is shared");
                continue;
            }
            triples += 1;
        }
    }
}
