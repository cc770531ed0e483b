//! Workload: what a component runs, named after its component. Container, endpoints (each
//! name once, a real port) and connections (names and a known visibility).

use std::collections::BTreeSet;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey};

use super::{Ctx, Error, Reference, Rules, unchanged_fields};
use crate::resources::references::component_owner;

impl Rules for pb::Workload {
    const REFERS_TO: &'static [Kind] = &[Kind::Component];

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        ctx.component_owner(spec.owner.as_ref())?;
        let component = spec
            .owner
            .as_ref()
            .map_or("", |o| o.component_name.as_str());
        if self.metadata.as_ref().is_some_and(|m| m.name != component) {
            return Err(ctx.invalid(
                "metadata.name",
                format!("a Workload is named after its component: expected {component:?}"),
            ));
        }
        let container = ctx.required("spec.container", spec.container.as_ref())?;
        if container.image.trim().is_empty() {
            return Err(ctx.invalid("spec.container.image", "required"));
        }
        endpoints(ctx, &spec.endpoints)?;
        connections(ctx, &spec.connections)?;
        ctx.container_vars("spec.container", &container.env, &container.files)
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        if let Some(owner) = self.owner() {
            component_owner(namespace, owner, out);
        }
    }

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        unchanged_fields!(key, old, self, "spec.owner" => owner)
    }

    fn owner(&self) -> Option<&pb::ComponentOwner> {
        self.spec.as_ref().and_then(|s| s.owner.as_ref())
    }
}

fn endpoints(ctx: &Ctx<'_>, endpoints: &[pb::Endpoint]) -> Result<(), Error> {
    let mut names = BTreeSet::new();
    for (i, e) in endpoints.iter().enumerate() {
        ctx.dns(&format!("spec.endpoints[{i}].name"), &e.name)?;
        if !names.insert(e.name.as_str()) {
            return Err(ctx.invalid(
                format!("spec.endpoints[{i}].name"),
                format!("{:?} is declared twice", e.name),
            ));
        }
        if !(1..=65535).contains(&e.port) {
            return Err(ctx.invalid(
                format!("spec.endpoints[{i}].port"),
                format!("{} is not a port (1-65535)", e.port),
            ));
        }
    }
    Ok(())
}

fn connections(ctx: &Ctx<'_>, connections: &[pb::Connection]) -> Result<(), Error> {
    for (i, c) in connections.iter().enumerate() {
        let at = format!("spec.connections[{i}]");
        if !c.project.is_empty() {
            ctx.dns(&format!("{at}.project"), &c.project)?;
        }
        ctx.dns(&format!("{at}.component"), &c.component)?;
        ctx.dns(&format!("{at}.endpoint"), &c.endpoint)?;
        if !matches!(c.visibility.as_str(), "" | "project" | "namespace") {
            return Err(ctx.invalid(
                format!("{at}.visibility"),
                format!("{:?} is not one of project, namespace", c.visibility),
            ));
        }
    }
    Ok(())
}
