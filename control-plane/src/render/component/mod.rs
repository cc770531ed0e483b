//! Rendering one component release for one environment, pure and deterministic, in two
//! steps. [`Plan::new`] works out what no environment changes, once per release: parameters
//! defaulted and validated, schemas compiled, templates converted, patch paths parsed.
//! [`Plan::render`] then builds the context (environment, overrides, resolved connections),
//! renders the ComponentType's resources, then each trait instance's `creates` and `patches`
//! (the type's embedded traits first, then the component's, each seeing what came before),
//! checks every object (Kubernetes' naming rules, the data plane's resource policy) and puts
//! it in the environment's target namespace, adds the standard labels and the configuration
//! hash, checks the output rules, and finds where the endpoints are reached. Last come the
//! component's network policies ([`super::network`]), which the platform renders, not the
//! templates: every pod template gets the component's pod labels, so no pod escapes them.
//!
//! One render is one [`super::template::Budget`]: the context [`Plan::render`] converts
//! carries it to every stage, entry, patch and rule, so fuel, output bytes, objects and forEach
//! iterations are bounded for the render as a whole, and a render past a budget stops there.

mod patches;
mod plan;
#[cfg(test)]
mod props;
mod rules;

pub use plan::Plan;

use std::collections::HashMap;

use serde_json::Value;
use troupe_common::Policy;
use troupe_common::pb::v1alpha1 as pb;

use super::endpoints::Address;
use super::network::NetworkInput;
use super::schema::SchemaCache;
use super::template::Engine;

/// Everything one render reads.
#[derive(Clone)]
pub struct RenderInput<'a> {
    /// Control-plane namespace of the component.
    pub namespace: &'a str,
    /// Name of the ComponentRelease rendered; empty when rendering the current state.
    pub release_name: &'a str,
    /// The release content.
    pub release: &'a pb::ComponentReleaseSpec,
    /// The target environment.
    pub environment: &'a pb::Environment,
    /// The environment's data plane, as a JSON document (`{name, spec}`), for templates.
    pub data_plane: Value,
    /// The data plane's resource policy, read once per render from its spec: which kinds the
    /// rendered objects may have.
    pub policy: &'a Policy,
    /// Values for the ComponentType's `environmentConfigs`.
    pub type_environment_configs: Option<&'a pbjson_types::Struct>,
    /// Values for each trait instance's `environmentConfigs`, by instance name.
    pub trait_environment_configs: &'a HashMap<String, pbjson_types::Struct>,
    /// Changes to the workload's container in this environment.
    pub workload_overrides: Option<&'a pb::WorkloadOverrides>,
    /// Addresses of the workload's connections, by position; `None` (or missing) where the
    /// target is not available: its environment variables are left out.
    pub connections: &'a [Option<Address>],
    /// What the component's network policies are rendered from; `None` renders none.
    pub network: Option<&'a NetworkInput<'a>>,
}

/// What a render produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The Kubernetes objects, in render order.
    pub objects: Vec<Value>,
    /// Where the workload's endpoints are reached, from the rendered Services.
    pub endpoints: Vec<pb::EndpointStatus>,
    /// Network rules the data plane's provider cannot enforce, each a sentence.
    pub unenforced: Vec<String>,
}

/// A render failure: where, and what.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct RenderError {
    /// What was being rendered, e.g. `ComponentType resources[deployment]`.
    pub location: String,
    /// What went wrong.
    pub message: String,
}

fn fail(location: impl Into<String>, message: impl Into<String>) -> RenderError {
    RenderError {
        location: location.into(),
        message: message.into(),
    }
}

/// Standard label keys added to every rendered object.
pub const LABELS: [&str; 5] = [
    "troupe.dev/namespace",
    "troupe.dev/project",
    "troupe.dev/component",
    "troupe.dev/environment",
    "troupe.dev/release",
];

/// Annotation on pod templates whose value changes when configuration does, so pods roll.
pub const CONFIG_HASH: &str = "troupe.dev/config-hash";

/// Renders `input` into Kubernetes objects: [`Plan::new`] then [`Plan::render`].
pub fn render(
    engine: &Engine,
    schemas: &SchemaCache,
    input: &RenderInput<'_>,
) -> Result<Rendered, RenderError> {
    Plan::new(schemas, input.release)?.render(engine, input)
}
