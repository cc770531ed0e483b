//! The Troupe control plane: the resource API over gRPC, backed by a durable store, and the
//! `troupe` command line that talks to it.
//!
//! The modules are floors; each imports only the floors below it:
//!
//! | floor | modules | role |
//! |---|---|---|
//! | 1 | [`store`] | revisions, preconditions, multi-object commits, the event log (sled, memory) |
//! | 1 | [`render`] | pure: templates, schemas, patches, one component's render |
//! | 1 | [`status`] | pure derivations of Release, ReleaseBinding and DataPlane status |
//! | 1 | [`shared_state`] | where the server's own state lives: files, or etcd for every replica |
//! | 1 | [`http`] | serving the plain HTTP endpoints (metrics, the push webhook) |
//! | 2 | [`resources`] | apply/get/list/delete/watch; the rules of each kind in `resources/kinds/` |
//! | 3 | [`releases`] | cutting ComponentReleases, rendering on request, binding |
//! | 3 | [`builds`] | WorkflowRuns: plans, the scheduler and leases, agents' progress and logs, the webhook, trace |
//! | 3 | [`graph`] | the dependency graph: components, endpoints, connections' state per environment |
//! | 4 | [`promotions`] | promote, approve, reject, check, rollback, gates |
//! | 5 | [`controllers`] | level-triggered loops; the binding controller writes binding status |
//! | 6 | [`agents`] | the agent hub: sessions, CA and tokens; writes Release and DataPlane status |
//! | 6 | [`auth`] | who calls (tokens, OIDC) and what they may do (roles, bindings); the audit log |
//! | 7 | [`api`] | thin gRPC handlers and the one error → status mapping |
//! | 7 | [`metrics`] | Prometheus figures measured at the edges: gRPC layer, store wrapper, queues, hub |
//! | 8 | [`server`] | wiring, once: store, services, controllers, hub, endpoints, metrics, dev mode |
//! | 8 | `migrate` | moving a server's data directory into an etcd store (feature `etcd`) |
//! | 9 | [`cli`] | the verbs, one struct each; `troupe server` calls [`server`] |
//!
//! Data flows inward: [`api`] decodes a request and makes one domain call. Agents report
//! through the hub, which writes Release status and asks the binding controller to roll the
//! binding up, so every status field has one writer.

pub mod agents;
pub mod api;
pub mod auth;
pub mod builds;
pub mod cli;
pub mod controllers;
pub mod graph;
pub mod http;
pub mod metrics;
#[cfg(feature = "etcd")]
pub mod migrate;
pub mod promotions;
#[cfg(test)]
mod props;
pub mod releases;
pub mod render;
pub mod resources;
pub mod server;
pub mod shared_state;
pub mod status;
pub mod store;
