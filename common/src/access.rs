//! The words access control is written in: the [`Verb`]s a caller does, the
//! [`pseudo_kind`]s role rules name beside stored kinds, the [`SubjectKind`]s a binding grants
//! to, and the [`ANY`] wildcard. Defined here, below both, so the control plane's role
//! validation and its evaluator (and clients) spell them the same way.

use std::fmt;

/// The wildcard of role rules: every kind, or every verb.
pub const ANY: &str = "*";

/// Label the server puts on the roles it writes itself (value `"true"`).
pub const BUILTIN_LABEL: &str = "troupe.dev/builtin";

/// What a caller does. Role rules name verbs by [`Verb::as_str`], or `*` for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// Read one object.
    Get,
    /// List objects of a kind.
    List,
    /// Stream changes.
    Watch,
    /// Create or update (ResourceService.Apply; cutting a ComponentRelease).
    Apply,
    /// Delete.
    Delete,
    /// Ask for a promotion.
    Promote,
    /// Approve or reject a pending promotion.
    Approve,
    /// Report the result of a `check` gate.
    Check,
    /// Roll an environment back.
    Rollback,
    /// Render a component without storing anything.
    Render,
    /// Mint a token: an agent bootstrap token for a DataPlane, or an API token.
    Token,
    /// Act as another user or group.
    Impersonate,
}

impl Verb {
    /// Every verb, in the order help texts list them.
    pub const ALL: [Verb; 12] = [
        Verb::Get,
        Verb::List,
        Verb::Watch,
        Verb::Apply,
        Verb::Delete,
        Verb::Promote,
        Verb::Approve,
        Verb::Check,
        Verb::Rollback,
        Verb::Render,
        Verb::Token,
        Verb::Impersonate,
    ];

    /// The verb as roles and messages spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Apply => "apply",
            Verb::Delete => "delete",
            Verb::Promote => "promote",
            Verb::Approve => "approve",
            Verb::Check => "check",
            Verb::Rollback => "rollback",
            Verb::Render => "render",
            Verb::Token => "token",
            Verb::Impersonate => "impersonate",
        }
    }

    /// The verb `word` spells, if any.
    pub fn parse(word: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == word)
    }

    /// Whether the verb changes something (an audited call).
    pub fn mutates(self) -> bool {
        !matches!(self, Verb::Get | Verb::List | Verb::Watch | Verb::Render)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kinds that are not stored objects but appear in role rules: API tokens, and the users
/// and groups a caller may impersonate.
pub mod pseudo_kind {
    /// `troupe token create/list/revoke` (verbs `token`, `list`, `delete`; cluster scope).
    pub const API_TOKEN: &str = "ApiToken";
    /// Impersonating a user (verb `impersonate`).
    pub const USER: &str = "User";
    /// Impersonating a group (verb `impersonate`).
    pub const GROUP: &str = "Group";
    /// `troupe servers`: the control-plane servers of the store (verb `list`; cluster scope).
    pub const SERVER: &str = "Server";

    /// Every pseudo-kind.
    pub const ALL: [&str; 4] = [API_TOKEN, USER, GROUP, SERVER];
}

/// Whether `word` may stand in a rule's `kinds`: a canonical kind name, a pseudo-kind or
/// [`ANY`].
pub fn is_rule_kind(word: &str) -> bool {
    word == ANY
        || pseudo_kind::ALL.contains(&word)
        || crate::Kind::ALL.iter().any(|k| k.name() == word)
}

/// What a binding's subject names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKind {
    /// A user, by the name a caller authenticates as.
    User,
    /// A group the caller belongs to.
    Group,
    /// A Troupe API token, by its name.
    Token,
}

impl SubjectKind {
    /// Every subject kind.
    pub const ALL: [SubjectKind; 3] = [SubjectKind::User, SubjectKind::Group, SubjectKind::Token];

    /// The kind as bindings spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "User",
            SubjectKind::Group => "Group",
            SubjectKind::Token => "Token",
        }
    }

    /// The subject kind `word` spells, if any.
    pub fn parse(word: &str) -> Option<SubjectKind> {
        SubjectKind::ALL.into_iter().find(|k| k.as_str() == word)
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_parses_back() {
        for verb in Verb::ALL {
            assert_eq!(Verb::parse(verb.as_str()), Some(verb));
        }
        assert_eq!(Verb::parse("Get"), None);
        for kind in SubjectKind::ALL {
            assert_eq!(SubjectKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(SubjectKind::parse("ServiceAccount"), None);
    }

    #[test]
    fn rule_kinds_are_canonical_names_pseudo_kinds_or_the_wildcard() {
        assert!(is_rule_kind("Component"));
        assert!(is_rule_kind("ClusterRoleBinding"));
        assert!(is_rule_kind("ApiToken"));
        assert!(is_rule_kind("*"));
        assert!(!is_rule_kind("components"));
        assert!(!is_rule_kind("comp"));
        assert!(!is_rule_kind("Gadget"));
    }
}
