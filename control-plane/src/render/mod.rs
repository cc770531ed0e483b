//! Rendering: turning a component's release, an environment's overrides and the target data
//! plane into the final Kubernetes manifests (DESIGN §3). A pure function of its inputs: no
//! I/O, deterministic output.
//!
//! - [`template`] evaluates structured templates: YAML/JSON trees with `${{ expr }}` minijinja
//!   expressions, typed when an expression stands alone.
//! - [`patch`] applies trait patches to rendered objects.
//! - [`component`] renders one component release for one environment.
//! - [`schema`] defaults and validates parameters against the schemas types declare.
//! - [`endpoints`] finds where rendered endpoints are reached and what a resolved connection
//!   injects.
//! - [`network`] renders the network policies that hold a component's pods to what it declares.

pub mod component;
mod context;
pub mod endpoints;
pub mod network;
pub mod patch;
pub mod schema;
pub mod template;
