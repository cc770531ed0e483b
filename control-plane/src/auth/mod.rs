//! Identity and access control on the API endpoint.
//!
//! Every RPC except health and reflection starts with [`Auth::caller`]: the bearer token in the
//! `authorization` metadata becomes a [`Principal`] (a Troupe token, [`tokens`], or an OIDC
//! JWT, [`oidc`]), or the call ends `UNAUTHENTICATED`. The handler then asks
//! [`Auth::allow`] whether that principal may do one [`Verb`] to one [`Target`]; the answer
//! comes from Role and RoleBinding objects ([`rbac`]), allow-only and fail-closed, and a
//! denial is `PERMISSION_DENIED` naming the verb, kind, namespace and scope that was missing.
//! Every mutating call and every denial is one line of the [`audit`] log.
//!
//! Impersonation follows kubectl: metadata `troupe-impersonate-user` (and
//! `troupe-impersonate-group`, repeatable) make the call run as that user, which needs the
//! `impersonate` verb on kind `User` (and `Group`); the principal then carries both names.

pub mod audit;
pub mod oidc;
pub mod rbac;
pub mod tokens;

use std::fmt;

/// Metadata key naming the user a call impersonates.
pub const IMPERSONATE_USER: &str = "troupe-impersonate-user";
/// Metadata key naming a group of the impersonated user (repeatable).
pub const IMPERSONATE_GROUP: &str = "troupe-impersonate-group";

pub use troupe_common::access::{Verb, pseudo_kind};

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A Troupe API token, by its name.
    Token(String),
    /// A JWT from the OIDC issuer at this URL.
    Oidc(String),
    /// The server itself (authentication turned off in an embedded server).
    Internal,
}

/// Who makes a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name role bindings and pipeline approvers match.
    pub name: String,
    /// Groups, matched by group subjects and pipeline approvers.
    pub groups: Vec<String>,
    /// How the caller authenticated.
    pub via: Via,
    /// When impersonating: the principal who really made the call.
    pub impersonated_by: Option<Box<Principal>>,
}

impl Principal {
    /// The name a record keeps: `alice`, or `alice (impersonated by admin)`.
    pub fn display_name(&self) -> String {
        match &self.impersonated_by {
            Some(real) => format!("{} (impersonated by {})", self.name, real.name),
            None => self.name.clone(),
        }
    }

    /// The caller of an embedded server with authentication turned off.
    pub fn internal() -> Self {
        Principal {
            name: "troupe".into(),
            groups: vec![],
            via: Via::Internal,
            impersonated_by: None,
        }
    }
}

/// What a call acts on: a kind (or a [`pseudo_kind`]) in a namespace, and, for objects that
/// belong to one, its project and component. Empty strings mean "not narrowed": a target with
/// an empty project needs a grant for the whole namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Canonical kind name (`Component`) or a pseudo-kind.
    pub kind: String,
    /// Namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// Project the object belongs to, if any.
    pub project: String,
    /// Component the object belongs to, if any.
    pub component: String,
    /// Object name; empty for list, watch and create-by-RPC calls.
    pub name: String,
}

impl fmt::Display for Target {
    /// `Component acme/api (project shop, component api)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        match (self.namespace.is_empty(), self.name.is_empty()) {
            (true, true) => f.write_str(" (cluster-wide)")?,
            (true, false) => write!(f, " {}", self.name)?,
            (false, true) => write!(f, " in namespace {}", self.namespace)?,
            (false, false) => write!(f, " {}/{}", self.namespace, self.name)?,
        }
        match (self.project.is_empty(), self.component.is_empty()) {
            (true, _) => Ok(()),
            (false, true) => write!(f, " (project {})", self.project),
            (false, false) => write!(
                f,
                " (project {}, component {})",
                self.project, self.component
            ),
        }
    }
}

/// How the API endpoint authenticates and where it audits.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Whether calls need credentials. Only an embedded server (benchmarks) turns this off;
    /// `troupe server` always authenticates.
    pub enabled: bool,
    /// Trusted OIDC issuers.
    pub oidc: Vec<oidc::IssuerConfig>,
    /// Where audit lines go: a file, or `None` for the log stream.
    pub audit_log: Option<std::path::PathBuf>,
}

/// Authentication, authorization and audit for the API endpoint's handlers.
pub struct Auth {
    enabled: bool,
    tokens: tokens::ApiTokens,
    oidc: oidc::Oidc,
    rbac: std::sync::Arc<rbac::Rbac>,
    audit: audit::Audit,
}

/// The `UNAUTHENTICATED` answer to a call without a token.
const NO_TOKEN: &str =
    "no credentials: send `authorization: Bearer TOKEN` (a Troupe API token or an OIDC JWT)";

impl Auth {
    /// Authentication over `tokens`, authorization by `rbac`, audit as `config` says, each
    /// audit line naming `server`.
    pub fn new(
        config: &AuthConfig,
        tokens: tokens::ApiTokens,
        rbac: std::sync::Arc<rbac::Rbac>,
        server: &str,
    ) -> anyhow::Result<Self> {
        let audit = match &config.audit_log {
            Some(path) => audit::Audit::to_file(path, server)?,
            None => audit::Audit::to_log(server),
        };
        Ok(Auth {
            enabled: config.enabled,
            tokens,
            oidc: oidc::Oidc::new(config.oidc.clone())?,
            rbac,
            audit,
        })
    }

    /// The API tokens.
    pub fn tokens(&self) -> &tokens::ApiTokens {
        &self.tokens
    }

    /// Who makes `request`: the principal its bearer token proves, or the user it
    /// impersonates (which the token's principal must be allowed to). `UNAUTHENTICATED` says
    /// what was wrong with the credentials.
    pub async fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
        if !self.enabled {
            return Ok(Principal::internal());
        }
        let metadata = request.metadata();
        let real = match self.authenticate(metadata).await {
            Ok(principal) => principal,
            Err(reason) => {
                self.audit.unauthenticated(&reason);
                return Err(tonic::Status::unauthenticated(reason));
            }
        };
        let Some(user) = metadata.get(IMPERSONATE_USER) else {
            if metadata.get(IMPERSONATE_GROUP).is_some() {
                return Err(tonic::Status::invalid_argument(format!(
                    "{IMPERSONATE_GROUP}: needs {IMPERSONATE_USER}"
                )));
            }
            return Ok(real);
        };
        let text = |v: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>, key: &str| {
            v.to_str().map(str::to_string).map_err(|_| {
                tonic::Status::invalid_argument(format!("{key}: must be printable ASCII"))
            })
        };
        let user = text(user, IMPERSONATE_USER)?;
        let groups = metadata
            .get_all(IMPERSONATE_GROUP)
            .iter()
            .map(|g| text(g, IMPERSONATE_GROUP))
            .collect::<Result<Vec<_>, _>>()?;
        self.impersonate(real, &user, groups)
    }

    /// `real` acting as `user` with `groups`, if `real` may impersonate them.
    pub fn impersonate(
        &self,
        real: Principal,
        user: &str,
        groups: Vec<String>,
    ) -> Result<Principal, tonic::Status> {
        if user.is_empty() || user == real.name && groups.is_empty() {
            return Ok(real);
        }
        let target = |kind: &str, name: &str| Target {
            kind: kind.to_string(),
            name: name.to_string(),
            ..Target::default()
        };
        self.allow(&real, Verb::Impersonate, &target(pseudo_kind::USER, user))?;
        for group in &groups {
            self.allow(&real, Verb::Impersonate, &target(pseudo_kind::GROUP, group))?;
        }
        Ok(Principal {
            name: user.to_string(),
            groups,
            via: real.via.clone(),
            impersonated_by: Some(Box::new(real)),
        })
    }

    async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Principal, String> {
        let header = metadata.get("authorization").ok_or(NO_TOKEN)?;
        let header = header
            .to_str()
            .map_err(|_| "authorization: must be printable ASCII".to_string())?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or("authorization: expected `Bearer TOKEN`")?;
        if oidc::Oidc::looks_like_jwt(token) {
            self.oidc.verify(token).await
        } else {
            self.tokens.verify(token).map_err(|e| e.to_string())
        }
    }

    /// Whether `who` may do `verb` to `target`: `PERMISSION_DENIED` naming what was missing
    /// (and an audit line) when not.
    pub fn allow(&self, who: &Principal, verb: Verb, target: &Target) -> Result<(), tonic::Status> {
        self.may(who, verb, target).map_err(|reason| {
            self.audit.denied(who, verb, target, &reason);
            tonic::Status::permission_denied(reason)
        })
    }

    /// The answer to "may `who` do `verb` to `target`", without auditing it (`can-i`).
    pub fn may(&self, who: &Principal, verb: Verb, target: &Target) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        self.rbac.check(who, verb, target)
    }

    /// Audits a call the domain refused with `PERMISSION_DENIED` after the roles allowed it
    /// (a kind only the control plane writes, an edge's approvers, a gated environment), and
    /// returns the status to answer with.
    pub fn refused(
        &self,
        who: &Principal,
        verb: Verb,
        target: &Target,
        status: tonic::Status,
    ) -> tonic::Status {
        if self.enabled && status.code() == tonic::Code::PermissionDenied {
            self.audit.denied(who, verb, target, status.message());
        }
        status
    }

    /// Records an allowed mutating call; `revision` is where it landed in the store.
    pub fn record(&self, who: &Principal, verb: Verb, target: &Target, revision: Option<u64>) {
        if self.enabled {
            self.audit.allowed(who, verb, target, revision);
        }
    }

    /// How much of `kind` in `namespace` (empty: all) `who` may `verb` (list, watch).
    pub fn reach(&self, who: &Principal, verb: Verb, kind: &str, namespace: &str) -> rbac::Reach {
        if !self.enabled {
            return rbac::Reach::Everything;
        }
        self.rbac.reach(who, verb, kind, namespace)
    }

    /// Returns once the roles and bindings written up to `revision` judge calls.
    pub async fn caught_up(&self, revision: u64) {
        self.rbac.caught_up(revision).await;
    }
}
