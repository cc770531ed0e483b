//! Rendering: turning a component's release, an environment's overrides and the target data
//! plane into the final Kubernetes manifests (DESIGN §3). A pure function of its inputs: no
//! I/O, deterministic output.
//!
//! - [`schema`] defaults and validates parameters against the schemas types declare.

pub mod schema;
