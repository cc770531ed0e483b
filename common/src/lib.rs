//! Troupe's resource model, shared by the control plane, the agent and the tests.
//!
//! `proto/` is the schema of record. [`pb`] holds the code generated from it (prost types, tonic
//! clients and servers, pbjson serde following the proto3 JSON mapping); the modules beside it
//! make that code pleasant to use: [`kind`] names every resource kind, [`object`] gives uniform
//! access to any typed object ([`Typed`] for typed reads), [`pipeline`] reads a pipeline as a
//! graph, [`data_plane`] maps a data-plane reference to its key, and [`document`] converts
//! objects to and from the YAML/JSON documents users write, which are the same document under
//! the proto3 JSON mapping. [`status`] names the words status is written in (condition types,
//! reasons, health, binding states, run phases) once, for both sides of the agent protocol.
//! [`policy`] says which Kubernetes kinds a data plane accepts, and [`k8s_names`] holds
//! Kubernetes' naming rules for what is sent to a cluster. [`access`] names the words access
//! control is written in (verbs, pseudo-kinds, subject kinds). [`duration`] reads durations
//! as resources spell them (`1h30m`); [`build_step`] says what a build step may be given
//! (environment names, outputs, working directories).

pub mod access;
pub mod agent;
pub mod backoff;
pub mod build_step;
pub mod codec;
pub mod data_plane;
pub mod document;
pub mod durable;
pub mod duration;
pub mod fnv;
pub mod hex;
pub mod k8s_names;
pub mod kind;
pub mod names;
pub mod object;
pub mod pipeline;
pub mod policy;
#[cfg(test)]
mod props;
pub mod selector;
pub mod status;
pub mod timestamp;

/// Code generated from `proto/`. Never edited by hand.
#[allow(missing_docs, clippy::all, reason = "generated code")]
pub mod pb {
    /// The `troupe.v1alpha1` package.
    pub mod v1alpha1 {
        tonic::include_proto!("troupe.v1alpha1");
        include!(concat!(env!("OUT_DIR"), "/troupe.v1alpha1.serde.rs"));
    }
}

/// Encoded `FileDescriptorSet` of every file in `proto/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("troupe_descriptor");

/// The `apiVersion` every Troupe document carries.
pub const API_VERSION: &str = "troupe.dev/v1alpha1";

pub use kind::Kind;
pub use object::{Object, ObjectKey, Typed};
pub use pipeline::Pipeline;
pub use policy::Policy;
