//! Integrity checks that read other objects: every reference of a write resolves and fits
//! (creation order, workload types, allowed traits and workflows, owners that agree), and the
//! referrers of an object about to be deleted. Both walk the graph [`references`] describes.

use troupe_common::{Kind, Object, ObjectKey};

use super::references::{self, Reference, references};
use super::{Error, Resources, decode};
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

    /// Checks that every reference of `object` resolves and fits (DESIGN §2, creation order).
    pub(super) fn check_references(&self, object: &Object) -> Result<(), Error> {
        let key = object.key();
        for reference in references(object) {
            let Some(record) = self.store.get(&reference.target)? else {
                return Err(Error::MissingReference {
                    object: key,
                    field: reference.field,
                    target: reference.target.to_string(),
                });
            };
            // Most references need only exist; decode the few whose content is checked.
            let checked = matches!(
                (object.kind(), reference.target.kind),
                (
                    Kind::Component,
                    Kind::ComponentType | Kind::ClusterComponentType
                ) | (_, Kind::Component)
                    | (Kind::ReleaseBinding, Kind::ComponentRelease)
            );
            if !checked {
                continue;
            }
            let target = decode(&record)?;
            let bad = |message: String| Error::BadReference {
                object: key.clone(),
                field: reference.field.clone(),
                message,
            };
            match (object, &target) {
                (
                    Object::Component(c),
                    Object::ComponentType(_) | Object::ClusterComponentType(_),
                ) => {
                    let spec = c.spec.clone().unwrap_or_default();
                    let wanted = spec.component_type.unwrap_or_default();
                    let type_spec = match &target {
                        Object::ComponentType(t) => t.spec.clone(),
                        Object::ClusterComponentType(t) => t.spec.clone(),
                        _ => None,
                    }
                    .unwrap_or_default();
                    let prefix = wanted.name.split_once('/').map_or("", |(p, _)| p);
                    if prefix != type_spec.workload_type {
                        return Err(bad(format!(
                            "{} has workloadType {:?}, so the reference must be \"{}/{}\", not {:?}",
                            reference.target,
                            type_spec.workload_type,
                            type_spec.workload_type,
                            reference.target.name,
                            wanted.name
                        )));
                    }
                    for (i, t) in spec.traits.iter().enumerate() {
                        let kind = t.kind.as_str().if_empty(Kind::Trait.name());
                        if !type_spec.allowed_traits.iter().any(|a| {
                            a.kind.as_str().if_empty(Kind::Trait.name()) == kind && a.name == t.name
                        }) {
                            return Err(Error::BadReference {
                                object: key.clone(),
                                field: format!("spec.traits[{i}]"),
                                message: format!(
                                    "{kind} {:?} is not in the allowedTraits of {}",
                                    t.name, reference.target
                                ),
                            });
                        }
                    }
                    if let Some(w) = &spec.workflow {
                        let kind = w.kind.as_str().if_empty(Kind::Workflow.name());
                        if !type_spec.allowed_workflows.iter().any(|a| {
                            a.kind.as_str().if_empty(Kind::Workflow.name()) == kind
                                && a.name == w.name
                        }) {
                            return Err(Error::BadReference {
                                object: key.clone(),
                                field: "spec.workflow".into(),
                                message: format!(
                                    "{kind} {:?} is not in the allowedWorkflows of {}",
                                    w.name, reference.target
                                ),
                            });
                        }
                    }
                }
                (_, Object::Component(component))
                    if reference.field == "spec.owner.componentName" =>
                {
                    let project = component
                        .spec
                        .as_ref()
                        .and_then(|s| s.owner.as_ref())
                        .map(|o| o.project_name.as_str())
                        .unwrap_or("");
                    let claimed = owner_project(object);
                    if claimed != project {
                        return Err(Error::BadReference {
                            object: key.clone(),
                            field: "spec.owner.projectName".into(),
                            message: format!(
                                "{} belongs to project {project:?}, not {claimed:?}",
                                reference.target
                            ),
                        });
                    }
                }
                (Object::ReleaseBinding(b), Object::ComponentRelease(r)) => {
                    let mine = b.spec.as_ref().and_then(|s| s.owner.clone());
                    let theirs = r.spec.as_ref().and_then(|s| s.owner.clone());
                    if mine != theirs {
                        return Err(bad(format!(
                            "{} belongs to another component",
                            reference.target
                        )));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The project named in an owned object's `spec.owner`.
fn owner_project(object: &Object) -> &str {
    let owner = match object {
        Object::Workload(o) => o.spec.as_ref().and_then(|s| s.owner.as_ref()),
        Object::WorkflowRun(o) => o.spec.as_ref().and_then(|s| s.owner.as_ref()),
        Object::ComponentRelease(o) => o.spec.as_ref().and_then(|s| s.owner.as_ref()),
        Object::ReleaseBinding(o) => o.spec.as_ref().and_then(|s| s.owner.as_ref()),
        Object::Release(o) => o.spec.as_ref().and_then(|s| s.owner.as_ref()),
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
