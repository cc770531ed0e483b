//! The Troupe control plane: the resource API over gRPC, backed by a durable store, and the
//! `troupe` command line that talks to it.
//!
//! Data flows inward: [`api`] decodes gRPC requests and calls [`resources`], which enforces
//! integrity rules and persists through [`store`]. [`server`] wires them together once;
//! [`cli`] is the client side of the same binary.
//!
//! [`status`] is the floor below [`controllers`] and [`agents`]: pure derivations of Release,
//! ReleaseBinding and DataPlane status, which those two floors write (agents may call into
//! controllers, never the other way round).

pub mod agents;
pub mod api;
pub mod cli;
pub mod controllers;
pub mod promotions;
pub mod releases;
pub mod render;
pub mod resources;
pub mod server;
pub mod status;
pub mod store;
