//! The built-in ClusterRoles, written by the server when they are missing (labelled
//! `troupe.dev/builtin: "true"`), so a fresh platform has the usual roles to bind. They are
//! ordinary ClusterRoles: an administrator may change them (a changed one is kept) or
//! delete them (a deleted one comes back at the next start).

use std::sync::Arc;

use troupe_common::access::{ANY, BUILTIN_LABEL, Verb};
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object};

use crate::auth::tokens::ADMINS_GROUP;
use crate::resources::{Error, Origin, Resources};

/// Words of a built-in rule: all of them, or these.
#[derive(Debug, Clone, Copy)]
pub enum Words<T: 'static> {
    /// `*`.
    Any,
    /// Just these.
    Only(&'static [T]),
}

/// One rule of a built-in role.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinRule {
    /// The kinds.
    pub kinds: Words<Kind>,
    /// The verbs.
    pub verbs: Words<Verb>,
}

/// One built-in ClusterRole.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Its name.
    pub name: &'static str,
    /// Its rules.
    pub rules: &'static [BuiltinRule],
}

const READ: Words<Verb> = Words::Only(&[Verb::Get, Verb::List, Verb::Watch]);

const fn rule(kinds: &'static [Kind], verbs: &'static [Verb]) -> BuiltinRule {
    BuiltinRule {
        kinds: Words::Only(kinds),
        verbs: Words::Only(verbs),
    }
}

/// `admin`: every verb on every kind, pseudo-kinds included (API tokens, impersonation).
/// Bind it with a ClusterRoleBinding to run the platform, with a RoleBinding to run one
/// namespace.
pub const ADMIN: Builtin = Builtin {
    name: "admin",
    rules: &[BuiltinRule {
        kinds: Words::Any,
        verbs: Words::Any,
    }],
};

/// `platform-engineer`: every verb (minting agent bootstrap tokens with `token` included) on
/// the platform's kinds (component types, traits, workflows and their cluster twins,
/// environments, pipelines, data planes, namespaces); read access to everything else.
pub const PLATFORM_ENGINEER: Builtin = Builtin {
    name: "platform-engineer",
    rules: &[
        BuiltinRule {
            kinds: Words::Only(&[
                Kind::ComponentType,
                Kind::ClusterComponentType,
                Kind::Trait,
                Kind::ClusterTrait,
                Kind::Workflow,
                Kind::ClusterWorkflow,
                Kind::Environment,
                Kind::DeploymentPipeline,
                Kind::DataPlane,
                Kind::ClusterDataPlane,
                Kind::Namespace,
            ]),
            verbs: Words::Any,
        },
        BuiltinRule {
            kinds: Words::Any,
            verbs: READ,
        },
    ],
};

/// `developer`: an application team's work. Reads projects; writes and deletes components,
/// workloads, release bindings and workflow runs; reads and cuts component releases;
/// renders components; asks for, approves (where the pipeline names them) and rolls back
/// promotions; reads the platform kinds it builds on and the rendered releases. Usually
/// bound with a RoleBinding scoped to the team's project.
pub const DEVELOPER: Builtin = Builtin {
    name: "developer",
    rules: &[
        rule(
            &[
                Kind::Project,
                Kind::ComponentType,
                Kind::ClusterComponentType,
                Kind::Trait,
                Kind::ClusterTrait,
                Kind::Workflow,
                Kind::ClusterWorkflow,
                Kind::Environment,
                Kind::DeploymentPipeline,
                Kind::Release,
            ],
            &[Verb::Get, Verb::List, Verb::Watch],
        ),
        rule(
            &[
                Kind::Component,
                Kind::Workload,
                Kind::ReleaseBinding,
                Kind::WorkflowRun,
            ],
            &[
                Verb::Get,
                Verb::List,
                Verb::Watch,
                Verb::Apply,
                Verb::Delete,
            ],
        ),
        rule(
            &[Kind::ComponentRelease],
            &[Verb::Get, Verb::List, Verb::Watch, Verb::Apply],
        ),
        rule(
            &[Kind::Promotion],
            &[
                Verb::Get,
                Verb::List,
                Verb::Watch,
                Verb::Promote,
                Verb::Approve,
                Verb::Rollback,
            ],
        ),
        rule(&[Kind::Component], &[Verb::Render]),
    ],
};

/// `viewer`: reads every kind (get, list, watch), changes nothing.
pub const VIEWER: Builtin = Builtin {
    name: "viewer",
    rules: &[BuiltinRule {
        kinds: Words::Any,
        verbs: READ,
    }],
};

/// `ci-publisher`: what a build pipeline's token needs: reads components, writes workloads
/// (the new image) and workflow runs, cuts component releases and reports `check` gates of
/// promotions.
pub const CI_PUBLISHER: Builtin = Builtin {
    name: "ci-publisher",
    rules: &[
        rule(
            &[Kind::Workload, Kind::WorkflowRun],
            &[Verb::Get, Verb::List, Verb::Watch, Verb::Apply],
        ),
        rule(&[Kind::Component], &[Verb::Get]),
        rule(&[Kind::ComponentRelease], &[Verb::Apply]),
        rule(&[Kind::Promotion], &[Verb::Check]),
    ],
};

/// Every built-in role.
pub const BUILTINS: [Builtin; 5] = [ADMIN, PLATFORM_ENGINEER, DEVELOPER, VIEWER, CI_PUBLISHER];

impl Builtin {
    /// The ClusterRole as the server writes it.
    pub fn to_object(self) -> Object {
        let rules = self
            .rules
            .iter()
            .map(|r| pb::AccessRule {
                kinds: words(r.kinds, |k| k.name()),
                verbs: words(r.verbs, Verb::as_str),
            })
            .collect();
        pb::ClusterRole {
            metadata: Some(pb::ObjectMeta {
                name: self.name.into(),
                labels: [(BUILTIN_LABEL.to_string(), "true".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(pb::RoleSpec { rules }),
            ..Default::default()
        }
        .into()
    }
}

fn words<T: Copy>(words: Words<T>, spell: impl Fn(T) -> &'static str) -> Vec<String> {
    match words {
        Words::Any => vec![ANY.to_string()],
        Words::Only(list) => list.iter().map(|w| spell(*w).to_string()).collect(),
    }
}

/// Writes the built-in roles that are missing; returns the names written.
pub async fn write_missing(resources: &Arc<Resources>) -> Result<Vec<&'static str>, Error> {
    let mut written = Vec::new();
    let objects = BUILTINS
        .iter()
        .map(|b| (b.name, b.to_object()))
        .chain([(ADMINS_BINDING, admins_binding())]);
    for (name, object) in objects {
        match resources.get(&object.key()) {
            Ok(_) => continue,
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let key = object.key();
        match resources.apply(object, Origin::ControlPlane, false).await {
            Ok(_) => written.push(name),
            // Another server on the same store, starting at the same time, wrote it first.
            Err(_) if resources.get(&key).is_ok() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Name of the built-in ClusterRoleBinding that makes the group of the bootstrap admin
/// token ([`ADMINS_GROUP`]) `admin`.
pub const ADMINS_BINDING: &str = "admins";

/// ClusterRoleBinding `admins`: group [`ADMINS_GROUP`] (the bootstrap admin token's) gets
/// ClusterRole `admin`. Give a person or CI system the whole platform by adding them to it,
/// or by a ClusterRoleBinding of their own.
fn admins_binding() -> Object {
    pb::ClusterRoleBinding {
        metadata: Some(pb::ObjectMeta {
            name: ADMINS_BINDING.into(),
            labels: [(BUILTIN_LABEL.to_string(), "true".to_string())].into(),
            ..Default::default()
        }),
        spec: Some(pb::ClusterRoleBindingSpec {
            role_ref: Some(pb::RoleRef {
                kind: Kind::ClusterRole.name().into(),
                name: ADMIN.name.into(),
            }),
            subjects: vec![pb::Subject {
                kind: "Group".into(),
                name: ADMINS_GROUP.into(),
            }],
        }),
        ..Default::default()
    }
    .into()
}
