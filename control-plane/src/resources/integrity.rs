//! Integrity checks that read other objects: every reference of a write resolves and fits
//! (creation order, workload types, allowed traits and workflows, owners that agree), and the
//! referrers of an object about to be deleted. Both walk the graph [`references`] describes.

use troupe_common::{Kind, Object, ObjectKey};

use troupe_common::pb::v1alpha1 as pb;

use super::references::{self, Reference, references};
use super::validate::struct_to_json as to_json;
use super::{Error, Resources, decode};
use crate::render::schema::describe;
use crate::store::Revision;

impl Resources {
    /// Objects that reference `target`, with the reference and their revision.
    pub(super) fn referrers(
        &self,
        target: &ObjectKey,
    ) -> Result<Vec<(ObjectKey, Reference, Revision)>, Error> {
        let mut out = Vec::new();
        let scope = references::referrer_scope(target);
        for &kind in references::referrer_kinds(target.kind) {
            let (records, _) = self.store.list(kind, scope)?;
            for record in records {
                let object = decode(&record)?;
                for reference in references(&object) {
                    if &reference.target == target {
                        out.push((record.key.clone(), reference, record.mod_revision));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Checks that every reference of `object` resolves and fits (DESIGN §2, creation order),
    /// and that parameters and overrides satisfy the schemas of what they refer to.
    pub(super) fn check_references(&self, object: &Object) -> Result<(), Error> {
        let key = object.key();
        // Most references need only exist; the few whose content is checked are decoded.
        let mut resolved: Vec<(Reference, Object)> = Vec::new();
        for reference in references(object) {
            let Some(record) = self.store.get(&reference.target)? else {
                return Err(Error::MissingReference {
                    object: key,
                    field: reference.field,
                    target: reference.target.to_string(),
                });
            };
            // Nothing new may point at an environment on its way out.
            if reference.target.kind == Kind::Environment
                && decode(&record)?.meta().delete_time.is_some()
            {
                return Err(Error::Refused {
                    object: key,
                    message: format!(
                        "{}: {} is being deleted (waiting for its data planes to prune)",
                        reference.field, reference.target
                    ),
                });
            }
            if needs_content(object.kind(), reference.target.kind) {
                let target = decode(&record)?;
                resolved.push((reference, target));
            }
        }
        for (reference, target) in &resolved {
            if let Object::Component(component) = target
                && reference.owner
            {
                check_owner_project(&key, object, reference, component)?;
            }
        }
        match object {
            Object::Component(c) => self.check_component(&key, c, &resolved),
            Object::ReleaseBinding(b) => self.check_binding(&key, b, &resolved),
            _ => Ok(()),
        }
    }

    /// A Component against its type and traits: workload type, allowed traits and workflow,
    /// parameters valid against the schemas.
    fn check_component(
        &self,
        key: &ObjectKey,
        component: &pb::Component,
        resolved: &[(Reference, Object)],
    ) -> Result<(), Error> {
        let spec = component.spec.clone().unwrap_or_default();
        let Some((type_ref, type_version, type_spec)) =
            resolved.iter().find_map(|(r, o)| match o {
                Object::ComponentType(t) => Some((
                    r,
                    o.meta().resource_version,
                    t.spec.clone().unwrap_or_default(),
                )),
                Object::ClusterComponentType(t) => Some((
                    r,
                    o.meta().resource_version,
                    t.spec.clone().unwrap_or_default(),
                )),
                _ => None,
            })
        else {
            return Ok(());
        };
        let wanted = spec.component_type.unwrap_or_default();
        let prefix = wanted.name.split_once('/').map_or("", |(p, _)| p);
        if prefix != type_spec.workload_type {
            return Err(Error::BadReference {
                object: key.clone(),
                field: type_ref.field.clone(),
                message: format!(
                    "{} has workloadType {:?}, so the reference must be \"{}/{}\", not {:?}",
                    type_ref.target,
                    type_spec.workload_type,
                    type_spec.workload_type,
                    type_ref.target.name,
                    wanted.name
                ),
            });
        }
        for (i, t) in spec.traits.iter().enumerate() {
            if type_spec
                .traits
                .iter()
                .any(|embedded| embedded.instance_name == t.instance_name)
            {
                return Err(Error::invalid(
                    key,
                    format!("spec.traits[{i}].instanceName"),
                    format!(
                        "{:?} is already the name of a trait instance embedded in {}",
                        t.instance_name, type_ref.target
                    ),
                ));
            }
            let kind = t.kind.as_str().if_empty(Kind::Trait.name());
            if !type_spec
                .allowed_traits
                .iter()
                .any(|a| a.kind.as_str().if_empty(Kind::Trait.name()) == kind && a.name == t.name)
            {
                return Err(Error::BadReference {
                    object: key.clone(),
                    field: format!("spec.traits[{i}]"),
                    message: format!(
                        "{kind} {:?} is not in the allowedTraits of {}",
                        t.name, type_ref.target
                    ),
                });
            }
        }
        if let Some(w) = &spec.workflow {
            let kind = w.kind.as_str().if_empty(Kind::Workflow.name());
            if !type_spec.allowed_workflows.iter().any(|a| {
                a.kind.as_str().if_empty(Kind::Workflow.name()) == kind && a.name == w.name
            }) {
                return Err(Error::BadReference {
                    object: key.clone(),
                    field: "spec.workflow".into(),
                    message: format!(
                        "{kind} {:?} is not in the allowedWorkflows of {}",
                        w.name, type_ref.target
                    ),
                });
            }
        }
        self.check_values(
            key,
            "spec.parameters",
            Some(format!("{}@{type_version}/parameters", type_ref.target)),
            type_spec.parameters.as_ref(),
            spec.parameters.as_ref(),
        )?;
        for (i, instance) in spec.traits.iter().enumerate() {
            let trait_spec = resolved.iter().find_map(|(r, o)| match o {
                Object::Trait(t) if r.target.name == instance.name => t.spec.clone(),
                Object::ClusterTrait(t) if r.target.name == instance.name => t.spec.clone(),
                _ => None,
            });
            let trait_spec = trait_spec.unwrap_or_default();
            self.check_values(
                key,
                &format!("spec.traits[{i}].parameters"),
                None,
                trait_spec.parameters.as_ref(),
                instance.parameters.as_ref(),
            )?;
        }
        Ok(())
    }

    /// A ReleaseBinding against its release: same component, overrides valid against the
    /// schemas captured in the release.
    fn check_binding(
        &self,
        key: &ObjectKey,
        binding: &pb::ReleaseBinding,
        resolved: &[(Reference, Object)],
    ) -> Result<(), Error> {
        let Some((release_ref, release)) = resolved.iter().find_map(|(r, o)| match o {
            Object::ComponentRelease(cr) => Some((r, cr.spec.clone().unwrap_or_default())),
            _ => None,
        }) else {
            return Ok(());
        };
        let spec = binding.spec.clone().unwrap_or_default();
        if spec.owner != release.owner {
            return Err(Error::BadReference {
                object: key.clone(),
                field: release_ref.field.clone(),
                message: format!("{} belongs to another component", release_ref.target),
            });
        }
        let type_spec = release
            .component_type
            .and_then(|t| t.spec)
            .unwrap_or_default();
        self.check_values(
            key,
            "spec.componentTypeEnvironmentConfigs",
            None,
            type_spec.environment_configs.as_ref(),
            spec.component_type_environment_configs.as_ref(),
        )?;
        let profile = release.component_profile.unwrap_or_default();
        let mut instances: Vec<&String> = spec.trait_environment_configs.keys().collect();
        instances.sort();
        for instance in instances {
            let field = format!("spec.traitEnvironmentConfigs.{instance}");
            let Some(used) = profile.traits.iter().find(|t| &t.instance_name == instance) else {
                let known: Vec<&str> = profile
                    .traits
                    .iter()
                    .map(|t| t.instance_name.as_str())
                    .collect();
                return Err(Error::invalid(
                    key,
                    field,
                    format!(
                        "the release has no trait instance {instance:?} (it has: {})",
                        known.join(", ")
                    ),
                ));
            };
            let trait_spec = release
                .traits
                .iter()
                .find(|t| {
                    t.name == used.name
                        && t.kind.as_str().if_empty(Kind::Trait.name())
                            == used.kind.as_str().if_empty(Kind::Trait.name())
                })
                .and_then(|t| t.spec.clone())
                .unwrap_or_default();
            self.check_values(
                key,
                &field,
                None,
                trait_spec.environment_configs.as_ref(),
                spec.trait_environment_configs.get(instance),
            )?;
        }
        Ok(())
    }

    /// Validates `value` (with defaults applied) against `schema`, if there is one.
    /// `cache_id` names the schema's version (owner key and revision) when known, which
    /// spares converting the schema to find it in the cache.
    fn check_values(
        &self,
        key: &ObjectKey,
        field: &str,
        cache_id: Option<String>,
        schema: Option<&pbjson_types::Struct>,
        value: Option<&pbjson_types::Struct>,
    ) -> Result<(), Error> {
        let Some(schema) = schema else {
            return Ok(());
        };
        let compiled = match cache_id {
            Some(id) => self.schemas.get_or_compile(&id, || to_json(schema)),
            None => self.schemas.get(&to_json(schema)),
        };
        let schema = compiled
            .map_err(|v| Error::invalid(key, field, format!("the schema does not compile: {v}")))?;
        let value = value.map(to_json);
        schema
            .apply(value.as_ref())
            .map(|_| ())
            .map_err(|violations| Error::invalid(key, field, describe(&violations)))
    }
}

/// True when a reference from `from` to `to` is checked beyond existence.
fn needs_content(from: Kind, to: Kind) -> bool {
    matches!(
        (from, to),
        (
            Kind::Component,
            Kind::ComponentType | Kind::ClusterComponentType | Kind::Trait | Kind::ClusterTrait
        ) | (_, Kind::Component)
            | (Kind::ReleaseBinding, Kind::ComponentRelease)
    )
}

/// An owned object names its project twice (its own `spec.owner.projectName` and its
/// component's); the two must agree.
fn check_owner_project(
    key: &ObjectKey,
    object: &Object,
    reference: &Reference,
    component: &pb::Component,
) -> Result<(), Error> {
    let project = component
        .spec
        .as_ref()
        .and_then(|s| s.owner.as_ref())
        .map_or("", |o| o.project_name.as_str());
    let claimed = owner_project(object);
    if claimed == project {
        return Ok(());
    }
    Err(Error::BadReference {
        object: key.clone(),
        field: "spec.owner.projectName".into(),
        message: format!(
            "{} belongs to project {project:?}, not {claimed:?}",
            reference.target
        ),
    })
}

/// The project named in an owned object's `spec.owner`.
fn owner_project(object: &Object) -> &str {
    let owner = match object {
        Object::Workload(o) => o.spec.as_ref().and_then(|s| s.owner.as_ref()),
        Object::WorkflowRun(o) => o.spec.as_ref().and_then(|s| s.owner.as_ref()),
        Object::ComponentRelease(o) => o.spec.as_ref().and_then(|s| s.owner.as_ref()),
        Object::ReleaseBinding(o) => o.spec.as_ref().and_then(|s| s.owner.as_ref()),
        Object::Release(o) => o.spec.as_ref().and_then(|s| s.owner.as_ref()),
        Object::Promotion(o) => o.spec.as_ref().and_then(|s| s.owner.as_ref()),
        _ => None,
    };
    owner.map_or("", |o| o.project_name.as_str())
}

trait IfEmpty {
    fn if_empty<'a>(&'a self, default: &'a str) -> &'a str;
}

impl IfEmpty for str {
    fn if_empty<'a>(&'a self, default: &'a str) -> &'a str {
        if self.is_empty() { default } else { self }
    }
}
