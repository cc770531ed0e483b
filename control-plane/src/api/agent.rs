//! `troupe.v1alpha1.AgentService` (registration and the agent stream, on the agent endpoint)
//! and `troupe.v1alpha1.DataPlaneService` (bootstrap tokens, on the API endpoint).

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};
use troupe_common::pb::v1alpha1::{self as pb, DataPlaneIdentity};
use troupe_common::{Kind, Object, ObjectKey};

use crate::agents::pki::{Pki, identity_of};
use crate::agents::tokens::{DEFAULT_TTL, TokenError, Tokens};
use crate::agents::{ControlStream, Hub};
use crate::resources::{Error, Origin};

pub use pb::agent_service_server::AgentServiceServer;
pub use pb::data_plane_service_server::DataPlaneServiceServer;

/// The agent endpoint's services.
pub struct AgentApi {
    hub: Arc<Hub>,
    pki: Arc<Pki>,
    tokens: Arc<Tokens>,
}

impl AgentApi {
    /// Serves registration with `pki` and `tokens`, and streams through `hub`.
    pub fn new(hub: Arc<Hub>, pki: Arc<Pki>, tokens: Arc<Tokens>) -> Self {
        Self { hub, pki, tokens }
    }
}

/// The key of the object a data plane identity names.
pub fn plane_key(id: &DataPlaneIdentity) -> ObjectKey {
    if id.namespace.is_empty() {
        ObjectKey::new(Kind::ClusterDataPlane, "", &id.name)
    } else {
        ObjectKey::new(Kind::DataPlane, &id.namespace, &id.name)
    }
}

fn identity(field: &str, id: Option<DataPlaneIdentity>) -> Result<DataPlaneIdentity, Status> {
    let id = id.unwrap_or_default();
    DataPlaneIdentity::parse(&id.to_string())
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        let id = identity("dataPlane", request.data_plane)?;
        self.tokens
            .verify(&request.token, &id)
            .map_err(|e| match e {
                TokenError::Unauthenticated(m) => Status::unauthenticated(m),
                TokenError::PermissionDenied(m) => Status::permission_denied(m),
            })?;
        let certificate_pem = self
            .pki
            .sign_agent(&request.csr_pem, &id)
            .map_err(|e| Status::invalid_argument(format!("csrPem: {e}")))?;
        // Create the data plane on first registration; claim it if it exists.
        let key = plane_key(&id);
        let resources = self.hub.resources();
        match resources.get(&key) {
            Ok(_) => {}
            Err(Error::NotFound(_)) => {
                let meta = pb::ObjectMeta {
                    name: id.name.clone(),
                    namespace: id.namespace.clone(),
                    ..Default::default()
                };
                let spec = pb::DataPlaneSpec {
                    plane_id: id.name.clone(),
                    ..Default::default()
                };
                let object = if id.namespace.is_empty() {
                    Object::ClusterDataPlane(pb::ClusterDataPlane {
                        metadata: Some(meta),
                        spec: Some(spec),
                        ..Default::default()
                    })
                } else {
                    Object::DataPlane(pb::DataPlane {
                        metadata: Some(meta),
                        spec: Some(spec),
                        ..Default::default()
                    })
                };
                resources.apply(object, Origin::ControlPlane, false).await?;
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(data_plane = %id, agent = %request.agent_version, "agent registered");
        Ok(Response::new(pb::RegisterResponse {
            certificate_pem,
            ca_certificate_pem: self.pki.ca_pem().to_string(),
        }))
    }

    type SessionStream = ControlStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let id = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| identity_of(c)))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "Session needs the client certificate issued by Register (troupe-agent \
                     registers with --token on its first start)",
                )
            })?;
        let stream = self
            .hub
            .connect(plane_key(&id), Box::pin(request.into_inner()))?;
        Ok(Response::new(stream))
    }
}

/// The `troupe.v1alpha1.DataPlaneService` implementation.
pub struct DataPlaneApi {
    pki: Arc<Pki>,
    tokens: Arc<Tokens>,
    auth: Arc<crate::auth::Auth>,
}

impl DataPlaneApi {
    /// Serves token creation with `pki`'s pin, to whom `auth` allows (verb `token` on the
    /// DataPlane or ClusterDataPlane).
    pub fn new(pki: Arc<Pki>, tokens: Arc<Tokens>, auth: Arc<crate::auth::Auth>) -> Self {
        Self { pki, tokens, auth }
    }
}

#[tonic::async_trait]
impl pb::data_plane_service_server::DataPlaneService for DataPlaneApi {
    async fn create_bootstrap_token(
        &self,
        request: Request<pb::CreateBootstrapTokenRequest>,
    ) -> Result<Response<pb::CreateBootstrapTokenResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let request = request.into_inner();
        let id = identity("dataPlane", request.data_plane)?;
        let kind = if id.namespace.is_empty() {
            troupe_common::Kind::ClusterDataPlane
        } else {
            troupe_common::Kind::DataPlane
        };
        let target = crate::auth::Target {
            kind: kind.name().to_string(),
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            ..Default::default()
        };
        self.auth.allow(&who, crate::auth::Verb::Token, &target)?;
        let ttl = crate::auth::tokens::ttl_from_request(request.ttl_seconds, DEFAULT_TTL)
            .map_err(Status::invalid_argument)?;
        let (token, expires) = self
            .tokens
            .create(&id, ttl, self.pki.ca_pin())
            .map_err(|e| match e.downcast::<crate::store::StoreError>() {
                Ok(e) => super::status::store_failure("storing the token", e),
                Err(e) => {
                    tracing::error!(error = %e, "could not store a bootstrap token");
                    Status::internal("could not store the token; see the control plane's log")
                }
            })?;
        self.auth
            .record(&who, crate::auth::Verb::Token, &target, None);
        Ok(Response::new(pb::CreateBootstrapTokenResponse {
            token: token.to_string(),
            expire_time: Some(pbjson_types::Timestamp {
                nanos: 0,
                ..troupe_common::timestamp::at(expires)
            }),
            ca_certificate_pem: self.pki.ca_pem().to_string(),
        }))
    }
}
