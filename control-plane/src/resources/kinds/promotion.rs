//! Promotion: a request to move a release to an environment, and then its record. Only the
//! promotion service writes one (users ask through PromotionService). Its spec never changes; once finished it holds on to nothing but its component, so history never
//! keeps an environment or an old release from being deleted.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey};

use super::{Ctx, Error, Reference, Rules};
use crate::resources::references::component_owner;

impl Rules for pb::Promotion {
    const REFERS_TO: &'static [Kind] =
        &[Kind::Component, Kind::Environment, Kind::ComponentRelease];
    // A promotion is the record the promotion service keeps of a request: it names it,
    // supersedes older ones, records refusals and who asked. A hand-written one would skip all
    // of that (and a Rollback would skip the edge's approvals and gates).
    const WRITTEN_BY_CONTROL_PLANE: Option<&'static str> = Some(
        "use `troupe promote`, `troupe rollback` or PromotionService.Promote and PromotionService.Rollback",
    );
    // The record stays until its component goes.
    const DELETED_BY_CONTROL_PLANE: Option<&'static str> = Some(
        "promotion records are kept until their component is deleted; `troupe reject` withdraws a pending one",
    );

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        ctx.component_owner(spec.owner.as_ref())?;
        ctx.dns("spec.targetEnvironment", &spec.target_environment)?;
        if !spec.release_name.is_empty() {
            ctx.dns("spec.releaseName", &spec.release_name)?;
        }
        match spec.action.as_str() {
            "Promote" => ctx.dns("spec.sourceEnvironment", &spec.source_environment),
            "Rollback" if spec.source_environment.is_empty() => Ok(()),
            "Rollback" => {
                Err(ctx.invalid("spec.sourceEnvironment", "must be empty for a Rollback"))
            }
            other => Err(ctx.invalid(
                "spec.action",
                format!("{other:?} is not one of Promote, Rollback"),
            )),
        }
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        let Some(spec) = &self.spec else { return };
        if let Some(owner) = &spec.owner {
            component_owner(namespace, owner, out);
        }
        let pending = self
            .status
            .as_ref()
            .is_none_or(|s| s.phase == "Pending" || s.phase.is_empty());
        if !pending {
            return;
        }
        for (field, environment) in [
            ("spec.sourceEnvironment", &spec.source_environment),
            ("spec.targetEnvironment", &spec.target_environment),
        ] {
            if !environment.is_empty() {
                out.push(Reference::to(
                    field,
                    ObjectKey::new(Kind::Environment, namespace, environment),
                ));
            }
        }
        if !spec.release_name.is_empty() {
            out.push(Reference::to(
                "spec.releaseName",
                ObjectKey::new(Kind::ComponentRelease, namespace, &spec.release_name),
            ));
        }
    }

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        if old.spec == self.spec {
            return Ok(());
        }
        Err(Error::Immutable {
            object: key.clone(),
            field: "spec".into(),
            change: "a promotion is a record; ask for a new one instead".into(),
        })
    }

    fn owner(&self) -> Option<&pb::ComponentOwner> {
        self.spec.as_ref().and_then(|s| s.owner.as_ref())
    }
}
