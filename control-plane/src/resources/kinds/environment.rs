//! Environment: a deployment stage on one data plane, which it names once and for good.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey};

use super::{Ctx, Error, Reference, Rules, unchanged_fields};
use crate::resources::references::data_plane;

impl Rules for pb::Environment {
    const REFERS_TO: &'static [Kind] = &[Kind::DataPlane, Kind::ClusterDataPlane];

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        let r = ctx.required("spec.dataPlaneRef", spec.data_plane_ref.as_ref())?;
        ctx.ref_kind(
            "spec.dataPlaneRef.kind",
            &r.kind,
            Kind::DataPlane,
            Kind::ClusterDataPlane,
        )?;
        ctx.dns("spec.dataPlaneRef.name", &r.name)
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        if let Some(r) = self.spec.as_ref().and_then(|s| s.data_plane_ref.as_ref()) {
            data_plane(namespace, r, "spec.dataPlaneRef", out);
        }
    }

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        unchanged_fields!(key, old, self, "spec.dataPlaneRef" => data_plane_ref)
    }
}
