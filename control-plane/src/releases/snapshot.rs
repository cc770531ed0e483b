//! Cutting a ComponentRelease: the Component with its Workload, ComponentType and every Trait
//! it uses, copied as they are now, and named by the hash of that content.

use sha2::{Digest, Sha256};
use troupe_common::kind::scoped_kind;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use crate::resources::{Error, Resources};

/// The release spec for the component's current state, and the name it is released under.
pub async fn snapshot(
    resources: &Resources,
    namespace: &str,
    component: &str,
) -> Result<(pb::ComponentReleaseSpec, String), Error> {
    let component_key = ObjectKey::new(Kind::Component, namespace, component);
    let c = resources.get_as::<pb::Component>(&component_key)?;
    // First, as a component without one (just created) has no release, and the copies below
    // cost more than this read.
    let workload = find_workload(resources, namespace, component)?;
    let spec = c.spec.unwrap_or_default();
    let owner = pb::ComponentOwner {
        project_name: spec.owner.clone().unwrap_or_default().project_name,
        component_name: component.to_string(),
    };

    let type_ref = spec.component_type.clone().unwrap_or_default();
    let type_kind = scoped_kind(
        &type_ref.kind,
        Kind::ComponentType,
        Kind::ClusterComponentType,
    )
    .unwrap_or(Kind::ComponentType);
    let type_name = type_ref.name.split_once('/').map_or("", |(_, n)| n);
    let type_key = ObjectKey::scoped(type_kind, namespace, type_name);
    let type_spec = match &*resources.get_shared(&type_key)? {
        Object::ComponentType(t) => t.spec.clone(),
        Object::ClusterComponentType(t) => t.spec.clone(),
        _ => None,
    };
    let type_spec = type_spec.unwrap_or_default();

    // Every trait used, embedded in the type first, each (kind, name) once, sorted.
    let mut used: Vec<(Kind, String)> = type_spec
        .traits
        .iter()
        .chain(&spec.traits)
        .map(|t| {
            let kind = scoped_kind(&t.kind, Kind::Trait, Kind::ClusterTrait).unwrap_or(Kind::Trait);
            (kind, t.name.clone())
        })
        .collect();
    used.sort();
    used.dedup();
    let mut traits = Vec::with_capacity(used.len());
    for (kind, name) in used {
        let trait_spec = match &*resources.get_shared(&ObjectKey::scoped(kind, namespace, &name))? {
            Object::Trait(t) => t.spec.clone(),
            Object::ClusterTrait(t) => t.spec.clone(),
            _ => None,
        };
        traits.push(pb::TraitSnapshot {
            kind: kind.name().to_string(),
            name,
            spec: trait_spec,
        });
    }

    let mut release = pb::ComponentReleaseSpec {
        owner: Some(owner),
        component_type: Some(pb::ComponentTypeSnapshot {
            kind: type_kind.name().to_string(),
            name: type_ref.name.clone(),
            spec: Some(type_spec),
        }),
        traits,
        component_profile: Some(pb::ComponentProfile {
            parameters: spec.parameters.clone(),
            traits: spec.traits.clone(),
            egress: spec.egress.clone(),
        }),
        workload: Some(pb::WorkloadTemplate {
            container: workload.container,
            endpoints: workload.endpoints,
            connections: workload.connections,
            build: workload.build,
        }),
        content_hash: String::new(),
    };
    release.content_hash = content_hash(&release);
    let name = release_name(component, &release.content_hash);
    Ok((release, name))
}

/// The component's Workload: it is named after the component (checked when written).
fn find_workload(
    resources: &Resources,
    namespace: &str,
    component: &str,
) -> Result<pb::WorkloadSpec, Error> {
    match resources.get_as::<pb::Workload>(&ObjectKey::new(Kind::Workload, namespace, component)) {
        Ok(w) => Ok(w.spec.unwrap_or_default()),
        Err(Error::NotFound(_)) => Err(Error::MissingReference {
            object: ObjectKey::new(Kind::Component, namespace, component),
            field: "its Workload".into(),
            target: format!("Workload {namespace}/{component}"),
        }),
        Err(e) => Err(e),
    }
}

/// Hex sha256 of the release's content in canonical JSON (sorted keys, integral numbers).
fn content_hash(release: &pb::ComponentReleaseSpec) -> String {
    let mut value = serde_json::to_value(release).expect("generated types serialize");
    troupe_common::document::integral_numbers(&mut value);
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `{component}-{first 10 hex of the hash}`, within a DNS label.
fn release_name(component: &str, hash: &str) -> String {
    let prefix: String = component.chars().take(52).collect();
    format!("{}-{}", prefix.trim_end_matches('-'), &hash[..10])
}
