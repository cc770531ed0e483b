//! Uniform access to any typed Troupe object.
//!
//! Every kind message has the same outer shape (`apiVersion`, `kind`, `metadata`, `spec`,
//! `status`); [`Object`] (the `Resource` oneof) gets one method per concern here, generated once
//! for all kinds, so the store and API never match on kinds for bookkeeping.

use std::fmt;

use crate::kind::Kind;
use crate::pb::v1alpha1::{ObjectMeta, Resource};

/// One typed object of any kind: the `Resource` oneof.
pub use crate::pb::v1alpha1::resource::Object;

/// Identity of one object: kind, namespace (empty when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Kind of the object.
    pub kind: Kind,
    /// Namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of `name` as referenced from an object in `namespace`: in that namespace, or
    /// in none when `kind` is cluster-scoped.
    pub fn scoped(kind: Kind, namespace: &str, name: impl Into<String>) -> Self {
        let namespace = if kind.is_cluster_scoped() {
            ""
        } else {
            namespace
        };
        Self::new(kind, namespace, name)
    }
}

/// A generated kind message (`pb::Component`, …): the typed view of one [`Object`] variant.
/// Implemented for every kind by `for_every_kind!`, so typed reads are written once.
pub trait Typed: Sized {
    /// The kind of this type's objects.
    const KIND: Kind;

    /// The message inside `object`, or the kind it is of when that is another kind.
    fn from_object(object: Object) -> Result<Self, Kind>;

    /// The message inside `object`, if it is of this kind.
    fn from_mut(object: &mut Object) -> Option<&mut Self>;

    /// Wraps the message in an [`Object`].
    fn into_object(self) -> Object;
}

impl fmt::Display for ObjectKey {
    /// `Component acme/api`, or `Namespace acme` for cluster-scoped objects.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

macro_rules! for_every_kind {
    ($($variant:ident),* $(,)?) => {
        impl Object {
            /// Kind of this object.
            pub fn kind(&self) -> Kind {
                match self { $(Object::$variant(_) => Kind::$variant,)* }
            }

            /// Metadata; an object without metadata reads as empty metadata.
            pub fn meta(&self) -> &ObjectMeta {
                static EMPTY: std::sync::OnceLock<ObjectMeta> = std::sync::OnceLock::new();
                match self {
                    $(Object::$variant(o) => o.metadata.as_ref(),)*
                }
                .unwrap_or_else(|| EMPTY.get_or_init(ObjectMeta::default))
            }

            /// Mutable metadata, created empty if absent.
            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self { $(Object::$variant(o) => o.metadata.get_or_insert_default(),)* }
            }

            /// `(apiVersion, kind)` as written in the object.
            pub fn type_meta(&self) -> (&str, &str) {
                match self { $(Object::$variant(o) => (&o.api_version, &o.kind),)* }
            }

            /// Sets `apiVersion` and `kind` to their canonical values.
            pub fn set_type_meta(&mut self) {
                let kind = self.kind().name();
                match self {
                    $(Object::$variant(o) => {
                        o.api_version = crate::API_VERSION.to_string();
                        o.kind = kind.to_string();
                    })*
                }
            }

            /// True when both objects are of the same kind with equal specs.
            pub fn spec_eq(&self, other: &Object) -> bool {
                match (self, other) {
                    $((Object::$variant(a), Object::$variant(b)) => a.spec == b.spec,)*
                    _ => false,
                }
            }

            /// True when both objects are of the same kind with equal statuses.
            pub fn status_eq(&self, other: &Object) -> bool {
                match (self, other) {
                    $((Object::$variant(a), Object::$variant(b)) => a.status == b.status,)*
                    _ => false,
                }
            }

            /// True when the object carries a status.
            pub fn has_status(&self) -> bool {
                match self { $(Object::$variant(o) => o.status.is_some(),)* }
            }

            /// Replaces this object's status with `other`'s (same kind), or clears it.
            pub fn copy_status_from(&mut self, other: Option<&Object>) {
                match (self, other) {
                    $((Object::$variant(a), Some(Object::$variant(b))) => a.status = b.status.clone(),)*
                    $((Object::$variant(a), _) => a.status = None,)*
                }
            }
        }

        $(
            impl Typed for crate::pb::v1alpha1::$variant {
                const KIND: Kind = Kind::$variant;

                fn from_object(object: Object) -> Result<Self, Kind> {
                    match object {
                        Object::$variant(o) => Ok(o),
                        other => Err(other.kind()),
                    }
                }

                fn from_mut(object: &mut Object) -> Option<&mut Self> {
                    match object {
                        Object::$variant(o) => Some(o),
                        _ => None,
                    }
                }

                fn into_object(self) -> Object {
                    Object::$variant(self)
                }
            }

            impl From<crate::pb::v1alpha1::$variant> for Object {
                fn from(o: crate::pb::v1alpha1::$variant) -> Self {
                    Object::$variant(o)
                }
            }
        )*
    };
}

for_every_kind!(
    Namespace,
    DataPlane,
    ClusterDataPlane,
    Environment,
    DeploymentPipeline,
    Project,
    ComponentType,
    ClusterComponentType,
    Trait,
    ClusterTrait,
    Workflow,
    ClusterWorkflow,
    Component,
    Workload,
    WorkflowRun,
    ComponentRelease,
    ReleaseBinding,
    Release,
    Promotion,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
);

impl Object {
    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey::new(self.kind(), meta.namespace.clone(), meta.name.clone())
    }

    /// The typed message inside, mutably, if the object is a `T`.
    pub fn typed_mut<T: Typed>(&mut self) -> Option<&mut T> {
        T::from_mut(self)
    }

    /// Wraps the object in a `Resource` message.
    pub fn into_resource(self) -> Resource {
        Resource { object: Some(self) }
    }
}

impl From<Object> for Resource {
    fn from(object: Object) -> Self {
        object.into_resource()
    }
}

#[cfg(test)]
mod props;
