//! ComponentRelease (an immutable snapshot of a component) and Release (the manifests one
//! binding renders for one data plane). A Release waiting for its agent to prune it has
//! outlived its owners, and holds on only to its environment and data plane. Only the control
//! plane writes either (it computes their content, names and content hashes); users read them.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey};

use super::{Ctx, Error, Reference, Rules, unchanged_fields};
use crate::resources::references::{component_owner, data_plane};

impl Rules for pb::ComponentRelease {
    const REFERS_TO: &'static [Kind] = &[Kind::Component];
    // The release path snapshots the component and names the release after its content hash;
    // a hand-written one could carry any content under any name. Deleting an unused one is
    // left to users: the bindings and pending promotions that use one keep it alive.
    const WRITTEN_BY_CONTROL_PLANE: Option<&'static str> =
        Some("use `troupe release create` or ReleaseService.CreateRelease");

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        ctx.component_owner(self.owner())
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        if let Some(owner) = self.owner() {
            component_owner(namespace, owner, out);
        }
    }

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        if old.spec == self.spec {
            return Ok(());
        }
        Err(Error::Immutable {
            object: key.clone(),
            field: "spec".into(),
            change: "a release is a snapshot; cut a new release instead".into(),
        })
    }

    fn owner(&self) -> Option<&pb::ComponentOwner> {
        self.spec.as_ref().and_then(|s| s.owner.as_ref())
    }
}

impl Rules for pb::Release {
    const REFERS_TO: &'static [Kind] = &[
        Kind::Component,
        Kind::Environment,
        Kind::ReleaseBinding,
        Kind::DataPlane,
        Kind::ClusterDataPlane,
    ];
    // What reaches a data plane: only the binding controller renders it, from its binding.
    const WRITTEN_BY_CONTROL_PLANE: Option<&'static str> = Some(
        "the binding controller renders it from its ReleaseBinding; change the ReleaseBinding, or use `troupe promote` or `troupe rollback`",
    );
    // Deleting one directly would prune a running component while its binding still says it
    // runs; it goes with its binding (or when the binding's state is Undeploy).
    const DELETED_BY_CONTROL_PLANE: Option<&'static str> =
        Some("delete its ReleaseBinding, or set the binding's state to Undeploy");

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        ctx.component_owner(spec.owner.as_ref())?;
        ctx.dns("spec.environment", &spec.environment)?;
        if let Some(dp) = &spec.data_plane_ref {
            ctx.ref_kind(
                "spec.dataPlaneRef.kind",
                &dp.kind,
                Kind::DataPlane,
                Kind::ClusterDataPlane,
            )?;
            ctx.dns("spec.dataPlaneRef.name", &dp.name)?;
        }
        Ok(())
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        let Some(spec) = &self.spec else { return };
        let environment = || {
            Reference::owned_by(
                "spec.environment",
                ObjectKey::new(Kind::Environment, namespace, &spec.environment),
            )
        };
        let pruning = self
            .metadata
            .as_ref()
            .is_some_and(|m| m.delete_time.is_some());
        if !pruning {
            if let Some(owner) = &spec.owner {
                component_owner(namespace, owner, out);
            }
            out.push(environment());
            if !spec.release_binding.is_empty() {
                out.push(Reference::owned_by(
                    "spec.releaseBinding",
                    ObjectKey::new(Kind::ReleaseBinding, namespace, &spec.release_binding),
                ));
            }
        } else {
            out.push(environment());
        }
        if let Some(dp) = &spec.data_plane_ref {
            data_plane(namespace, dp, "spec.dataPlaneRef", out);
        }
    }

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        unchanged_fields!(key, old, self, "spec.owner" => owner, "spec.environment" => environment)
    }

    fn owner(&self) -> Option<&pb::ComponentOwner> {
        self.spec.as_ref().and_then(|s| s.owner.as_ref())
    }
}
