//! `troupe.v1alpha1.AuthService` handlers (who am I, may I, API tokens), and the targets the
//! other handlers ask about.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::auth_service_server::AuthService;
use troupe_common::{Kind, ObjectKey};

use crate::auth::rbac::target_of;
use crate::auth::tokens::{DEFAULT_TTL, TokenError, TokenInfo, ttl_from_request};
use crate::auth::{Auth, Principal, Target, Verb, audit, pseudo_kind};
use crate::promotions::Actor;
use crate::resources::Resources;

pub use pb::auth_service_server::AuthServiceServer;

/// The `troupe.v1alpha1.AuthService` implementation.
pub struct AuthApi {
    auth: Arc<Auth>,
    resources: Arc<Resources>,
}

impl AuthApi {
    /// Answers for `auth`, reading objects a question names from `resources`.
    pub fn new(auth: Arc<Auth>, resources: Arc<Resources>) -> Self {
        Self { auth, resources }
    }
}

/// The target "`kind` of component `component`" in `namespace`, narrowed to the project the
/// stored Component belongs to (to the namespace alone if there is no such component).
pub(crate) fn component_target(
    resources: &Resources,
    kind: Kind,
    namespace: &str,
    component: &str,
) -> Target {
    let key = ObjectKey::new(Kind::Component, namespace, component);
    match resources.get(&key) {
        Ok(object) => Target {
            kind: kind.name().to_string(),
            name: String::new(),
            ..target_of(&object)
        },
        Err(_) => Target {
            kind: kind.name().to_string(),
            namespace: namespace.to_string(),
            ..Target::default()
        },
    }
}

/// The stored object at `key` (or why there is none) and the target it is: judged by the
/// object's project and component when it exists, by its namespace otherwise, so a caller
/// without the grant learns nothing of whether it exists.
pub(crate) fn stored_target(
    resources: &Resources,
    key: &ObjectKey,
) -> (
    Result<troupe_common::Object, crate::resources::Error>,
    Target,
) {
    let stored = resources.get(key);
    let target = match &stored {
        Ok(object) => target_of(object),
        Err(_) => Target {
            kind: key.kind.name().to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            ..Target::default()
        },
    };
    (stored, target)
}

/// The actor a promotion records for `who`.
pub(crate) fn actor(who: &Principal) -> Actor {
    Actor {
        user: who.name.clone(),
        groups: who.groups.clone(),
        impersonated_by: who
            .impersonated_by
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
    }
}

fn api_token_target() -> Target {
    Target {
        kind: pseudo_kind::API_TOKEN.to_string(),
        ..Target::default()
    }
}

fn token_info(info: TokenInfo) -> pb::ApiToken {
    let at = |secs: u64| pbjson_types::Timestamp {
        seconds: secs as i64,
        nanos: 0,
    };
    pb::ApiToken {
        name: info.name,
        groups: info.groups,
        create_time: Some(at(info.created_unix)),
        expire_time: Some(at(info.expires_unix)),
        created_by: info.created_by,
        last_used_time: info.last_used_unix.map(at),
    }
}

fn token_status(e: TokenError) -> Status {
    match e {
        TokenError::Invalid(m) => Status::invalid_argument(m),
        TokenError::Unauthenticated(m) => Status::unauthenticated(m),
        TokenError::Contended(m) => Status::aborted(m),
        TokenError::Io(m) => {
            tracing::error!(error = %m, "could not store an API token");
            Status::internal("could not store the token; see the control plane's log")
        }
        TokenError::Store(e) => super::status::store_failure("storing the token", e),
    }
}

impl AuthApi {
    /// The target one question asks about: the stored object's when it names one.
    fn question_target(&self, q: &pb::AccessQuestion) -> Result<Target, Status> {
        let kind = match Kind::parse(&q.kind) {
            Ok(kind) => kind,
            Err(_)
                if [
                    pseudo_kind::API_TOKEN,
                    pseudo_kind::USER,
                    pseudo_kind::GROUP,
                ]
                .contains(&q.kind.as_str()) =>
            {
                return Ok(Target {
                    kind: q.kind.clone(),
                    name: q.name.clone(),
                    ..Target::default()
                });
            }
            Err(e) => return Err(Status::invalid_argument(format!("kind: {e}"))),
        };
        if !q.name.is_empty() {
            let key = ObjectKey::new(kind, &q.namespace, &q.name);
            if let Ok(object) = self.resources.get(&key) {
                return Ok(target_of(&object));
            }
        }
        Ok(Target {
            kind: kind.name().to_string(),
            namespace: q.namespace.clone(),
            project: q.project.clone(),
            component: q.component.clone(),
            name: q.name.clone(),
        })
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            authenticated_by: audit::via(&who),
            impersonated_by: who
                .impersonated_by
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            user: who.name,
            groups: who.groups,
        }))
    }

    async fn check_access(
        &self,
        request: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let questions = request.into_inner().questions;
        if questions.len() > 1000 {
            return Err(Status::invalid_argument(
                "questions: at most 1000 in one call",
            ));
        }
        let mut answers = Vec::with_capacity(questions.len());
        for (i, q) in questions.iter().enumerate() {
            let verb = Verb::parse(&q.verb).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "questions[{i}].verb: {:?} is not a verb (one of: {})",
                    q.verb,
                    Verb::ALL.map(Verb::as_str).join(", ")
                ))
            })?;
            let target = self
                .question_target(q)
                .map_err(|s| Status::invalid_argument(format!("questions[{i}].{}", s.message())))?;
            let answer = match self.auth.may(&who, verb, &target) {
                Ok(()) => pb::AccessAnswer {
                    allowed: true,
                    reason: String::new(),
                },
                Err(reason) => pb::AccessAnswer {
                    allowed: false,
                    reason,
                },
            };
            answers.push(answer);
        }
        Ok(Response::new(pb::CheckAccessResponse { answers }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let r = request.into_inner();
        let target = Target {
            name: r.name.clone(),
            ..api_token_target()
        };
        self.auth.allow(&who, Verb::Token, &target)?;
        let ttl = ttl_from_request(r.ttl_seconds, DEFAULT_TTL).map_err(Status::invalid_argument)?;
        let (token, info) = self
            .auth
            .tokens()
            .create(&r.name, &r.groups, ttl, &who.display_name())
            .map_err(token_status)?;
        self.auth.record(&who, Verb::Token, &target, None);
        Ok(Response::new(pb::CreateTokenResponse {
            token,
            info: Some(token_info(info)),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        self.auth.allow(&who, Verb::List, &api_token_target())?;
        let tokens = self.auth.tokens().list();
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.into_iter().map(token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let name = request.into_inner().name;
        let target = Target {
            name: name.clone(),
            ..api_token_target()
        };
        self.auth.allow(&who, Verb::Delete, &target)?;
        let info = match self.auth.tokens().revoke(&name) {
            Ok(info) => info,
            Err(TokenError::Invalid(m)) => return Err(Status::not_found(m)),
            Err(e) => return Err(token_status(e)),
        };
        self.auth.record(&who, Verb::Delete, &target, None);
        Ok(Response::new(pb::RevokeTokenResponse {
            token: Some(token_info(info)),
        }))
    }
}
