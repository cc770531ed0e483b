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

    /// Whether `subject` names this principal: the user's own name or one of its groups
    /// (`approvers` entries of a pipeline edge; a group is written `group:NAME`).
    pub fn is(&self, subject: &str) -> bool {
        match subject.strip_prefix("group:") {
            Some(group) => self.groups.iter().any(|g| g == group),
            None => self.name == subject,
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
