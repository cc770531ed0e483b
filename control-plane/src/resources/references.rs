//! The reference graph: which objects each object points at, and which kinds can point at a
//! given kind. Write-time checks (every reference resolves) and delete-time checks (nothing
//! still points here; owned children cascade) both read it from here, so the two can never
//! disagree. Each kind states its own references in its file under `kinds/`; this module adds
//! what every kind shares (a namespaced object points at its Namespace) and the helpers for
//! references several kinds make.

use troupe_common::pb::v1alpha1::{ComponentOwner, DataPlaneRef};
use troupe_common::{Kind, Object, ObjectKey};

pub use troupe_common::kind::scoped_kind;

use super::kinds;

/// One reference from an object to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Path of the referring field, e.g. `spec.owner.projectName`.
    pub field: String,
    /// The referenced object.
    pub target: ObjectKey,
    /// True when the target owns the referrer: deleting the target deletes the referrer.
    pub owner: bool,
}

impl Reference {
    /// A reference that only needs its target to exist.
    pub(super) fn to(field: impl Into<String>, target: ObjectKey) -> Self {
        Self {
            field: field.into(),
            target,
            owner: false,
        }
    }

    /// A reference to the referrer's owner: deleting the target deletes the referrer.
    pub(super) fn owned_by(field: impl Into<String>, target: ObjectKey) -> Self {
        Self {
            field: field.into(),
            target,
            owner: true,
        }
    }
}

/// A reference to a data plane, if its kind is one (validation reports the others).
pub(super) fn data_plane(namespace: &str, r: &DataPlaneRef, field: &str, out: &mut Vec<Reference>) {
    if r.data_plane_kind().is_some() {
        out.push(Reference::to(field, r.key(namespace)));
    }
}

/// The reference of an object owned by a component to that component.
pub(super) fn component_owner(namespace: &str, owner: &ComponentOwner, out: &mut Vec<Reference>) {
    out.push(Reference::owned_by(
        "spec.owner.componentName",
        ObjectKey::new(Kind::Component, namespace, &owner.component_name),
    ));
}

/// Every reference `object` makes. References whose `kind` is not one of the allowed values
/// are left out here; validation reports them.
pub fn references(object: &Object) -> Vec<Reference> {
    let meta = object.meta();
    let namespace = meta.namespace.as_str();
    let mut out = Vec::new();
    if !object.kind().is_cluster_scoped() {
        out.push(Reference::to(
            "metadata.namespace",
            ObjectKey::new(Kind::Namespace, "", namespace),
        ));
    }
    kinds::references(object, namespace, &mut out);
    out
}

/// The kinds whose objects may reference an object of `kind`.
pub fn referrer_kinds(kind: Kind) -> Vec<Kind> {
    kinds::referrer_kinds(kind)
}

/// The namespace to search for referrers of `target`: its own namespace, every namespace
/// (`None`) for cluster-scoped kinds, or the namespace a Namespace names.
pub fn referrer_scope(target: &ObjectKey) -> Option<&str> {
    match target.kind {
        Kind::Namespace => Some(&target.name),
        k if k.is_cluster_scoped() => None,
        _ => Some(&target.namespace),
    }
}
