//! The roles and bindings as the evaluator reads them. [`Index`] holds the objects' content
//! (rules per role, role, subjects and scope per binding) and takes one change at a time;
//! [`Index::grants`] compiles it into [`Grants`]: for each user, group and token name, the
//! rules it holds and where. A check then looks up the caller's few names and scans only
//! their grants, without allocating; the compile, which walks every binding, runs once per
//! burst of role or binding changes, which are rare next to checks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use troupe_common::access::{ANY, SubjectKind, Verb};
use troupe_common::kind::scoped_kind;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use super::Reach;
use crate::auth::{Principal, Target, Via};

/// A role's identity: its namespace (empty for a ClusterRole) and name.
type RoleKey = (String, String);

/// One rule: the verbs it allows, as bits of [`Verb`], on the kinds it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    kinds: Kinds,
    verbs: u16,
}

/// The kinds a rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kinds {
    /// `*`.
    Any,
    /// Canonical kind names and pseudo-kinds.
    Only(Box<[Box<str>]>),
}

impl Rule {
    /// The rule as written. Words validation would refuse (in objects stored before a word
    /// was dropped) match nothing: an unknown verb sets no bit, an unknown kind equals no
    /// target's.
    fn from_spec(rule: &pb::AccessRule) -> Self {
        let kinds = if rule.kinds.iter().any(|k| k == ANY) {
            Kinds::Any
        } else {
            Kinds::Only(rule.kinds.iter().map(|k| k.as_str().into()).collect())
        };
        let verbs = rule.verbs.iter().fold(0, |bits, word| {
            if word == ANY {
                u16::MAX
            } else {
                bits | Verb::parse(word).map_or(0, bit)
            }
        });
        Self { kinds, verbs }
    }

    /// Whether the rule allows `verb` on `kind`.
    fn allows(&self, kind: &str, verb: Verb) -> bool {
        self.verbs & bit(verb) != 0
            && match &self.kinds {
                Kinds::Any => true,
                Kinds::Only(kinds) => kinds.iter().any(|k| &**k == kind),
            }
    }
}

/// The bit of `verb` in [`Rule::verbs`].
fn bit(verb: Verb) -> u16 {
    1 << verb as u16
}

/// Where a grant holds. Cascades down: each covers what is inside it, never what is around.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// Everywhere: every namespace and every cluster-scoped object (a ClusterRoleBinding).
    Cluster,
    /// Everything in one namespace (a RoleBinding without scope).
    Namespace(Box<str>),
    /// One project of a namespace and what belongs to it.
    Project(Box<str>, Box<str>),
    /// One component (of a project of a namespace) and what belongs to it.
    Component(Box<str>, Box<str>, Box<str>),
}

impl Scope {
    /// Whether the scope covers `target`. A target outside any namespace needs a cluster
    /// grant; one not narrowed to a project (namespace-level objects, listings of the whole
    /// namespace) needs a namespace grant.
    fn covers(&self, target: &Target) -> bool {
        match self {
            Scope::Cluster => true,
            Scope::Namespace(ns) => !target.namespace.is_empty() && **ns == *target.namespace,
            Scope::Project(ns, project) => {
                **ns == *target.namespace && **project == *target.project
            }
            Scope::Component(ns, project, component) => {
                **ns == *target.namespace
                    && **project == *target.project
                    && **component == *target.component
            }
        }
    }

    /// How much of a namespace (empty: of everything) the scope covers.
    fn reach(&self, namespace: &str) -> Reach {
        match self {
            Scope::Cluster => Reach::Everything,
            Scope::Namespace(ns) if **ns == *namespace => Reach::Everything,
            Scope::Project(ns, _) | Scope::Component(ns, _, _) if **ns == *namespace => Reach::Some,
            _ if namespace.is_empty() => Reach::Some,
            _ => Reach::Nothing,
        }
    }
}

/// A binding as the index keeps it.
#[derive(Debug, Clone)]
struct Binding {
    role: RoleKey,
    subjects: Vec<(SubjectKind, String)>,
    scope: Scope,
}

/// Every role's rules and every binding, changed one object at a time.
#[derive(Debug, Default)]
pub(super) struct Index {
    roles: HashMap<RoleKey, Arc<[Rule]>>,
    bindings: BTreeMap<ObjectKey, Binding>,
}

impl Index {
    /// Takes in the current state of `object` (created or changed); other kinds are ignored.
    pub(super) fn apply(&mut self, object: &Object) {
        let key = object.key();
        match object {
            Object::Role(role) => self.put_role(key, role.spec.as_ref()),
            Object::ClusterRole(role) => self.put_role(key, role.spec.as_ref()),
            Object::RoleBinding(binding) => {
                let binding = binding.spec.as_ref().and_then(|s| role_binding(&key, s));
                self.put_binding(key, binding);
            }
            Object::ClusterRoleBinding(binding) => {
                let binding = binding.spec.as_ref().and_then(cluster_role_binding);
                self.put_binding(key, binding);
            }
            _ => {}
        }
    }

    /// Forgets the object under `key`. A binding whose role goes grants nothing until a role
    /// of that name is written again.
    pub(super) fn remove(&mut self, key: &ObjectKey) {
        match key.kind {
            Kind::Role | Kind::ClusterRole => {
                self.roles
                    .remove(&(key.namespace.clone(), key.name.clone()));
            }
            _ => {
                self.bindings.remove(key);
            }
        }
    }

    fn put_role(&mut self, key: ObjectKey, spec: Option<&pb::RoleSpec>) {
        let rules = spec.map_or(&[][..], |s| &s.rules);
        self.roles.insert(
            (key.namespace, key.name),
            rules.iter().map(Rule::from_spec).collect(),
        );
    }

    fn put_binding(&mut self, key: ObjectKey, binding: Option<Binding>) {
        match binding {
            Some(binding) => self.bindings.insert(key, binding),
            None => self.bindings.remove(&key),
        };
    }

    /// The grants of every subject, as the roles and bindings now stand.
    pub(super) fn grants(&self) -> Grants {
        let mut grants = Grants::default();
        for binding in self.bindings.values() {
            let Some(rules) = self.roles.get(&binding.role) else {
                continue;
            };
            for (kind, name) in &binding.subjects {
                let by_name = match kind {
                    SubjectKind::User => &mut grants.users,
                    SubjectKind::Group => &mut grants.groups,
                    SubjectKind::Token => &mut grants.tokens,
                };
                by_name.entry(name.clone()).or_default().push(Grant {
                    scope: binding.scope.clone(),
                    rules: rules.clone(),
                });
            }
        }
        grants
    }
}

/// A RoleBinding as the index keeps it; `None` when its role reference is unusable.
fn role_binding(key: &ObjectKey, spec: &pb::RoleBindingSpec) -> Option<Binding> {
    let role = spec.role_ref.as_ref()?;
    let role = match scoped_kind(&role.kind, Kind::Role, Kind::ClusterRole)? {
        Kind::Role => (key.namespace.clone(), role.name.clone()),
        _ => (String::new(), role.name.clone()),
    };
    let ns: Box<str> = key.namespace.as_str().into();
    let scope = match spec.scope.as_ref() {
        Some(s) if !s.project.is_empty() && !s.component.is_empty() => {
            Scope::Component(ns, s.project.as_str().into(), s.component.as_str().into())
        }
        Some(s) if !s.project.is_empty() => Scope::Project(ns, s.project.as_str().into()),
        _ => Scope::Namespace(ns),
    };
    Some(Binding {
        role,
        subjects: subjects(&spec.subjects),
        scope,
    })
}

/// A ClusterRoleBinding as the index keeps it; `None` when its role reference is unusable.
fn cluster_role_binding(spec: &pb::ClusterRoleBindingSpec) -> Option<Binding> {
    let role = spec.role_ref.as_ref()?;
    if !matches!(role.kind.as_str(), "" | "ClusterRole") {
        return None;
    }
    Some(Binding {
        role: (String::new(), role.name.clone()),
        subjects: subjects(&spec.subjects),
        scope: Scope::Cluster,
    })
}

fn subjects(subjects: &[pb::Subject]) -> Vec<(SubjectKind, String)> {
    subjects
        .iter()
        .filter_map(|s| Some((SubjectKind::parse(&s.kind)?, s.name.clone())))
        .collect()
}

/// One role held at one scope.
#[derive(Debug, Clone)]
struct Grant {
    scope: Scope,
    rules: Arc<[Rule]>,
}

impl Grant {
    fn allows(&self, kind: &str, verb: Verb) -> bool {
        self.rules.iter().any(|r| r.allows(kind, verb))
    }
}

/// What every user, group and token holds: the compiled index a check reads.
#[derive(Debug, Default)]
pub(super) struct Grants {
    users: HashMap<String, Vec<Grant>>,
    groups: HashMap<String, Vec<Grant>>,
    tokens: HashMap<String, Vec<Grant>>,
}

impl Grants {
    /// The grants of each of `who`'s names: its user name, its groups, and the token it
    /// authenticated with.
    fn of<'a>(&'a self, who: &'a Principal) -> impl Iterator<Item = &'a Grant> + 'a {
        let token = match &who.via {
            Via::Token(name) => self.tokens.get(name.as_str()),
            Via::Oidc(_) | Via::Internal => None,
        };
        let groups = who
            .groups
            .iter()
            .filter_map(|g| self.groups.get(g.as_str()));
        self.users
            .get(who.name.as_str())
            .into_iter()
            .chain(groups)
            .chain(token)
            .flatten()
    }

    /// Whether some grant of `who` allows `verb` on `target`'s kind at a scope covering it.
    pub(super) fn allows(&self, who: &Principal, verb: Verb, target: &Target) -> bool {
        self.of(who)
            .any(|g| g.scope.covers(target) && g.allows(&target.kind, verb))
    }

    /// How much of `kind` in `namespace` (empty: everywhere) the grants of `who` reach.
    pub(super) fn reach(&self, who: &Principal, verb: Verb, kind: &str, namespace: &str) -> Reach {
        let mut reach = Reach::Nothing;
        for grant in self.of(who).filter(|g| g.allows(kind, verb)) {
            match grant.scope.reach(namespace) {
                Reach::Everything => return Reach::Everything,
                Reach::Some => reach = Reach::Some,
                Reach::Nothing => {}
            }
        }
        reach
    }
}
