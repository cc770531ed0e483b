//! `troupe.v1alpha1.ServerService`: which servers share the store, and which leads.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use troupe_common::pb::v1alpha1 as pb;

use crate::auth::{Auth, Target, Verb, pseudo_kind};

pub use pb::server_service_server::ServerServiceServer;

/// Where the list of servers comes from: the store's announcements, or this server alone.
#[tonic::async_trait]
pub trait Roster: Send + Sync + 'static {
    /// Every server announced now, ordered by name; `Err` says why they cannot be listed.
    async fn servers(&self) -> Result<Vec<pb::ServerInfo>, String>;

    /// The store's etcd members and whether this server reaches them now; none for a store
    /// of its own.
    async fn store_members(&self) -> Vec<pb::StoreMember> {
        Vec::new()
    }
}

/// The `troupe.v1alpha1.ServerService` implementation.
pub struct ServerApi {
    roster: Arc<dyn Roster>,
    auth: Arc<Auth>,
}

impl ServerApi {
    /// Lists what `roster` knows, to callers `auth` allows.
    pub fn new(roster: Arc<dyn Roster>, auth: Arc<Auth>) -> Self {
        Self { roster, auth }
    }
}

#[tonic::async_trait]
impl pb::server_service_server::ServerService for ServerApi {
    async fn list_servers(
        &self,
        request: Request<pb::ListServersRequest>,
    ) -> Result<Response<pb::ListServersResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let target = Target {
            kind: pseudo_kind::SERVER.to_string(),
            ..Target::default()
        };
        self.auth.allow(&who, Verb::List, &target)?;
        let (servers, store_members) =
            tokio::join!(self.roster.servers(), self.roster.store_members());
        let servers = servers.map_err(|e| {
            Status::unavailable(format!(
                "the servers could not be listed: {e}{}",
                unreachable(&store_members)
            ))
        })?;
        Ok(Response::new(pb::ListServersResponse {
            servers,
            store_members,
        }))
    }
}

/// `; etcd members this server does not reach: A, B`, or nothing when it reaches them all.
fn unreachable(members: &[pb::StoreMember]) -> String {
    let down: Vec<&str> = members
        .iter()
        .filter(|m| !m.reachable)
        .map(|m| m.endpoint.as_str())
        .collect();
    if down.is_empty() {
        return String::new();
    }
    format!(
        "; etcd members this server does not reach: {}",
        down.join(", ")
    )
}
