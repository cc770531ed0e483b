//! The evaluator's decisions over an index built from role and binding objects (no store),
//! and the whole of [`Rbac`] over the in-memory store: built-in roles, following changes,
//! references checked when bindings are written, and the example access file.

use std::time::Duration;

use troupe_common::ObjectKey;
use troupe_common::pb::v1alpha1 as pb;

use super::builtin::BUILTINS;
use super::*;

// ---------------------------------------------------------------- builders

fn mk_user(name: &str, groups: &[&str]) -> Principal {
    Principal {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        via: Via::Oidc("https://issuer.example".into()),
        impersonated_by: None,
    }
}

fn mk_token(name: &str) -> Principal {
    Principal {
        name: name.into(),
        groups: vec![],
        via: Via::Token(name.into()),
        impersonated_by: None,
    }
}

fn mk_target(kind: &str, namespace: &str, project: &str, component: &str) -> Target {
    Target {
        kind: kind.into(),
        namespace: namespace.into(),
        project: project.into(),
        component: component.into(),
        name: if component.is_empty() {
            project
        } else {
            component
        }
        .into(),
    }
}

fn mk_meta(namespace: &str, name: &str) -> Option<pb::ObjectMeta> {
    Some(pb::ObjectMeta {
        name: name.into(),
        namespace: namespace.into(),
        ..Default::default()
    })
}

fn mk_subjects(subjects: &[(&str, &str)]) -> Vec<pb::Subject> {
    subjects
        .iter()
        .map(|(kind, name)| pb::Subject {
            kind: kind.to_string(),
            name: name.to_string(),
        })
        .collect()
}

fn mk_role(namespace: &str, name: &str, rules: &[(&[&str], &[&str])]) -> Object {
    let spec = Some(pb::RoleSpec {
        rules: rules
            .iter()
            .map(|(kinds, verbs)| pb::AccessRule {
                kinds: kinds.iter().map(|k| k.to_string()).collect(),
                verbs: verbs.iter().map(|v| v.to_string()).collect(),
            })
            .collect(),
    });
    if namespace.is_empty() {
        pb::ClusterRole {
            metadata: mk_meta("", name),
            spec,
            ..Default::default()
        }
        .into()
    } else {
        pb::Role {
            metadata: mk_meta(namespace, name),
            spec,
            ..Default::default()
        }
        .into()
    }
}

/// A RoleBinding of `role` (`Role/NAME` or `ClusterRole/NAME`) in `namespace`, scoped to
/// `scope` (`""`, `PROJECT` or `PROJECT/COMPONENT`).
fn mk_binding(
    namespace: &str,
    name: &str,
    role: &str,
    subjects: &[(&str, &str)],
    scope: &str,
) -> Object {
    let (kind, role) = role.split_once('/').expect("KIND/NAME");
    let scope = (!scope.is_empty()).then(|| {
        let (project, component) = scope.split_once('/').unwrap_or((scope, ""));
        pb::AccessScope {
            project: project.into(),
            component: component.into(),
        }
    });
    pb::RoleBinding {
        metadata: mk_meta(namespace, name),
        spec: Some(pb::RoleBindingSpec {
            role_ref: Some(pb::RoleRef {
                kind: kind.into(),
                name: role.into(),
            }),
            subjects: mk_subjects(subjects),
            scope,
        }),
        ..Default::default()
    }
    .into()
}

fn mk_cluster_binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Object {
    pb::ClusterRoleBinding {
        metadata: mk_meta("", name),
        spec: Some(pb::ClusterRoleBindingSpec {
            role_ref: Some(pb::RoleRef {
                kind: "ClusterRole".into(),
                name: role.into(),
            }),
            subjects: mk_subjects(subjects),
        }),
        ..Default::default()
    }
    .into()
}

/// An index of the built-in roles and `objects`.
fn mk_index(objects: &[Object]) -> Index {
    let mut index = Index::default();
    for builtin in BUILTINS {
        index.apply(&builtin.to_object());
    }
    for object in objects {
        index.apply(object);
    }
    index
}

fn allowed(grants: &Grants, who: &Principal, verb: Verb, target: &Target) -> bool {
    grants.allows(who, verb, target)
}

// ---------------------------------------------------------------- decisions

#[test]
fn each_builtin_role_allows_its_work_and_nothing_more() {
    let grants = mk_index(&[
        mk_cluster_binding("a", "admin", &[("User", "ada")]),
        mk_cluster_binding("p", "platform-engineer", &[("User", "pat")]),
        mk_cluster_binding("d", "developer", &[("User", "dev")]),
        mk_cluster_binding("v", "viewer", &[("User", "vic")]),
        mk_cluster_binding("c", "ci-publisher", &[("User", "cid")]),
    ])
    .grants();
    let comp = mk_target("Component", "acme", "shop", "api");
    let env = mk_target("Environment", "acme", "", "");
    let ns = mk_target("Namespace", "", "", "");
    let dp = mk_target("DataPlane", "acme", "", "");
    let promo = mk_target("Promotion", "acme", "shop", "api");
    let cr = mk_target("ComponentRelease", "acme", "shop", "api");
    let wl = mk_target("Workload", "acme", "shop", "api");
    let token = mk_target("ApiToken", "", "", "");
    let user = mk_target("User", "", "", "");
    #[rustfmt::skip]
    let table: &[(&str, Verb, &Target, bool)] = &[
        ("ada", Verb::Delete, &ns, true),
        ("ada", Verb::Token, &token, true),
        ("ada", Verb::Impersonate, &user, true),
        ("pat", Verb::Apply, &env, true),
        ("pat", Verb::Apply, &ns, true),
        ("pat", Verb::Token, &dp, true),
        ("pat", Verb::Get, &comp, true),
        ("pat", Verb::Apply, &comp, false),
        ("pat", Verb::Promote, &promo, false),
        ("pat", Verb::Impersonate, &user, false),
        ("dev", Verb::Apply, &comp, true),
        ("dev", Verb::Delete, &wl, true),
        ("dev", Verb::Render, &comp, true),
        ("dev", Verb::Apply, &cr, true),
        ("dev", Verb::Delete, &cr, false),
        ("dev", Verb::Promote, &promo, true),
        ("dev", Verb::Approve, &promo, true),
        ("dev", Verb::Rollback, &promo, true),
        ("dev", Verb::Check, &promo, false),
        ("dev", Verb::Get, &env, true),
        ("dev", Verb::Apply, &env, false),
        ("dev", Verb::Get, &dp, false),
        ("dev", Verb::Token, &token, false),
        ("vic", Verb::List, &comp, true),
        ("vic", Verb::Watch, &ns, true),
        ("vic", Verb::Apply, &comp, false),
        ("vic", Verb::Render, &comp, false),
        ("cid", Verb::Apply, &wl, true),
        ("cid", Verb::Get, &comp, true),
        ("cid", Verb::Apply, &cr, true),
        ("cid", Verb::Check, &promo, true),
        ("cid", Verb::Apply, &comp, false),
        ("cid", Verb::Promote, &promo, false),
        ("cid", Verb::Get, &cr, false),
    ];
    for (name, verb, target, expected) in table {
        assert_eq!(
            allowed(&grants, &mk_user(name, &[]), *verb, target),
            *expected,
            "{name} {verb} {target}"
        );
    }
}

#[test]
fn a_project_scope_covers_its_components_but_not_the_namespace() {
    let grants = mk_index(&[mk_binding(
        "acme",
        "shop-developers",
        "ClusterRole/developer",
        &[("Group", "shop-team")],
        "shop",
    )])
    .grants();
    let alice = mk_user("alice", &["shop-team"]);
    let yes = |verb, target: Target| assert!(allowed(&grants, &alice, verb, &target), "{target}");
    let no = |verb, target: Target| assert!(!allowed(&grants, &alice, verb, &target), "{target}");
    yes(Verb::Apply, mk_target("Component", "acme", "shop", "api"));
    yes(
        Verb::Apply,
        mk_target("ReleaseBinding", "acme", "shop", "web"),
    );
    yes(Verb::Get, mk_target("Project", "acme", "shop", ""));
    // Listing the project's components is narrowed to the project too.
    yes(Verb::List, mk_target("Component", "acme", "shop", ""));
    no(Verb::Apply, mk_target("Component", "acme", "books", "api"));
    no(Verb::Get, mk_target("Environment", "acme", "", ""));
    no(Verb::List, mk_target("Component", "acme", "", ""));
    no(Verb::Apply, mk_target("Component", "other", "shop", "api"));
    no(Verb::Get, mk_target("Namespace", "", "", ""));
}

#[test]
fn a_component_scope_covers_only_that_component() {
    let grants = mk_index(&[mk_binding(
        "acme",
        "api-owners",
        "ClusterRole/developer",
        &[("User", "bob")],
        "shop/api",
    )])
    .grants();
    let bob = mk_user("bob", &[]);
    assert!(allowed(
        &grants,
        &bob,
        Verb::Apply,
        &mk_target("Workload", "acme", "shop", "api")
    ));
    assert!(allowed(
        &grants,
        &bob,
        Verb::Promote,
        &mk_target("Promotion", "acme", "shop", "api")
    ));
    assert!(!allowed(
        &grants,
        &bob,
        Verb::Apply,
        &mk_target("Workload", "acme", "shop", "web")
    ));
    assert!(!allowed(
        &grants,
        &bob,
        Verb::Get,
        &mk_target("Project", "acme", "shop", "")
    ));
    assert!(!allowed(
        &grants,
        &bob,
        Verb::Get,
        &mk_target("Environment", "acme", "", "")
    ));
}

#[test]
fn cluster_scoped_objects_need_a_cluster_binding() {
    let grants = mk_index(&[mk_binding(
        "acme",
        "root",
        "ClusterRole/admin",
        &[("User", "ns-admin")],
        "",
    )])
    .grants();
    let who = mk_user("ns-admin", &[]);
    assert!(allowed(
        &grants,
        &who,
        Verb::Delete,
        &mk_target("Environment", "acme", "", "")
    ));
    assert!(!allowed(
        &grants,
        &who,
        Verb::Get,
        &mk_target("Namespace", "", "", "")
    ));
    assert!(!allowed(
        &grants,
        &who,
        Verb::Apply,
        &mk_target("ClusterTrait", "", "", "")
    ));
    assert!(!allowed(
        &grants,
        &who,
        Verb::Get,
        &mk_target("Environment", "other", "", "")
    ));
}

#[test]
fn users_groups_and_tokens_are_matched_by_their_own_kind() {
    let grants = mk_index(&[
        mk_cluster_binding("u", "viewer", &[("User", "carol")]),
        mk_cluster_binding("g", "viewer", &[("Group", "readers")]),
        mk_cluster_binding("t", "ci-publisher", &[("Token", "builder")]),
    ])
    .grants();
    let wl = mk_target("Workload", "acme", "shop", "api");
    assert!(allowed(&grants, &mk_user("carol", &[]), Verb::Get, &wl));
    assert!(allowed(
        &grants,
        &mk_user("dan", &["x", "readers"]),
        Verb::Get,
        &wl
    ));
    assert!(allowed(&grants, &mk_token("builder"), Verb::Apply, &wl));
    // A group's name is not a user's, nor a token's an OIDC user's.
    assert!(!allowed(&grants, &mk_user("readers", &[]), Verb::Get, &wl));
    assert!(!allowed(
        &grants,
        &mk_user("builder", &[]),
        Verb::Apply,
        &wl
    ));
    assert!(!allowed(
        &grants,
        &mk_user("erin", &["carol"]),
        Verb::Get,
        &wl
    ));
}

#[test]
fn wildcards_match_every_kind_or_every_verb() {
    let grants = mk_index(&[
        mk_role("acme", "reader", &[(&["*"], &["get"])]),
        mk_role("acme", "shaper", &[(&["Component", "ApiToken"], &["*"])]),
        mk_binding("acme", "r", "Role/reader", &[("User", "r")], ""),
        mk_binding("acme", "s", "Role/shaper", &[("User", "s")], ""),
    ])
    .grants();
    let comp = mk_target("Component", "acme", "shop", "api");
    let env = mk_target("Environment", "acme", "", "");
    let token = mk_target("ApiToken", "acme", "", "");
    let (r, s) = (mk_user("r", &[]), mk_user("s", &[]));
    assert!(allowed(&grants, &r, Verb::Get, &env));
    assert!(allowed(&grants, &r, Verb::Get, &token));
    assert!(!allowed(&grants, &r, Verb::List, &env));
    assert!(allowed(&grants, &s, Verb::Delete, &comp));
    assert!(allowed(&grants, &s, Verb::Token, &token));
    assert!(!allowed(&grants, &s, Verb::Get, &env));
}

#[test]
fn a_binding_to_a_missing_role_grants_nothing() {
    let mut index = mk_index(&[
        mk_role("acme", "deployer", &[(&["ReleaseBinding"], &["apply"])]),
        mk_binding("acme", "d", "Role/deployer", &[("User", "dee")], ""),
    ]);
    let (dee, rb) = (
        mk_user("dee", &[]),
        mk_target("ReleaseBinding", "acme", "shop", "api"),
    );
    assert!(allowed(&index.grants(), &dee, Verb::Apply, &rb));
    index.remove(&ObjectKey::new(Kind::Role, "acme", "deployer"));
    assert!(!allowed(&index.grants(), &dee, Verb::Apply, &rb));
    // A Role of that name in another namespace is another role.
    index.apply(&mk_role("other", "deployer", &[(&["*"], &["*"])]));
    assert!(!allowed(&index.grants(), &dee, Verb::Apply, &rb));
    index.apply(&mk_role(
        "acme",
        "deployer",
        &[(&["ReleaseBinding"], &["apply"])],
    ));
    assert!(allowed(&index.grants(), &dee, Verb::Apply, &rb));
}

#[test]
fn a_changed_binding_or_role_replaces_the_old_one() {
    let mut index = mk_index(&[mk_binding(
        "acme",
        "b",
        "ClusterRole/viewer",
        &[("User", "fay")],
        "",
    )]);
    let comp = mk_target("Component", "acme", "shop", "api");
    assert!(allowed(
        &index.grants(),
        &mk_user("fay", &[]),
        Verb::Get,
        &comp
    ));
    index.apply(&mk_binding(
        "acme",
        "b",
        "ClusterRole/viewer",
        &[("User", "gus")],
        "",
    ));
    assert!(!allowed(
        &index.grants(),
        &mk_user("fay", &[]),
        Verb::Get,
        &comp
    ));
    assert!(allowed(
        &index.grants(),
        &mk_user("gus", &[]),
        Verb::Get,
        &comp
    ));
    index.apply(&mk_role("", "viewer", &[(&["Project"], &["get"])]));
    assert!(!allowed(
        &index.grants(),
        &mk_user("gus", &[]),
        Verb::Get,
        &comp
    ));
}

#[test]
fn reach_says_whether_a_listing_needs_filtering() {
    let grants = mk_index(&[
        mk_binding(
            "acme",
            "shop",
            "ClusterRole/developer",
            &[("Group", "shop-team")],
            "shop",
        ),
        mk_binding(
            "acme",
            "plat",
            "ClusterRole/platform-engineer",
            &[("Group", "platform")],
            "",
        ),
        mk_cluster_binding("audit", "viewer", &[("Group", "auditors")]),
    ])
    .grants();
    let reach =
        |groups: &[&str], verb, kind, ns| grants.reach(&mk_user("x", groups), verb, kind, ns);
    assert_eq!(
        reach(&["auditors"], Verb::List, "Component", ""),
        Reach::Everything
    );
    assert_eq!(
        reach(&["auditors"], Verb::List, "Component", "acme"),
        Reach::Everything
    );
    assert_eq!(
        reach(&["platform"], Verb::List, "Component", "acme"),
        Reach::Everything
    );
    assert_eq!(
        reach(&["platform"], Verb::List, "Component", ""),
        Reach::Some
    );
    assert_eq!(
        reach(&["platform"], Verb::List, "Component", "other"),
        Reach::Nothing
    );
    assert_eq!(
        reach(&["shop-team"], Verb::Watch, "Component", "acme"),
        Reach::Some
    );
    assert_eq!(
        reach(&["shop-team"], Verb::Watch, "Component", ""),
        Reach::Some
    );
    assert_eq!(
        reach(&["shop-team"], Verb::List, "DataPlane", "acme"),
        Reach::Nothing
    );
    assert_eq!(
        reach(&["shop-team", "platform"], Verb::List, "Component", "acme"),
        Reach::Everything
    );
    assert_eq!(reach(&[], Verb::List, "Component", "acme"), Reach::Nothing);
}

/// Among ten thousand bindings of other users, a check finds the caller's own grant and
/// nothing else. (What a check costs is measured by `troupe-bench write`, not here.)
#[test]
fn among_ten_thousand_bindings_a_check_finds_the_callers_grants() {
    let mut objects: Vec<Object> = (0..10_000)
        .map(|i| {
            let ns = format!("ns{}", i % 100);
            mk_binding(
                &ns,
                &format!("b{i}"),
                "ClusterRole/developer",
                &[("User", &format!("u{i}"))],
                "shop",
            )
        })
        .collect();
    objects.push(mk_binding(
        "acme",
        "shop",
        "ClusterRole/developer",
        &[("Group", "shop-team")],
        "shop",
    ));
    let grants = mk_index(&objects).grants();
    let alice = mk_user("alice", &["staff", "oncall", "shop-team"]);
    assert!(grants.allows(
        &alice,
        Verb::Apply,
        &mk_target("Component", "acme", "shop", "api")
    ));
    assert!(!grants.allows(
        &alice,
        Verb::Apply,
        &mk_target("Environment", "acme", "", "")
    ));
    assert!(!grants.allows(
        &alice,
        Verb::Apply,
        &mk_target("Component", "ns7", "shop", "api")
    ));
    let u7 = mk_user("u7", &[]);
    assert!(grants.allows(
        &u7,
        Verb::Apply,
        &mk_target("Component", "ns7", "shop", "api")
    ));
    assert!(!grants.allows(
        &u7,
        Verb::Apply,
        &mk_target("Component", "acme", "shop", "api")
    ));
}

// ---------------------------------------------------------------- over the store

use crate::resources::{Error, Origin};
use crate::store::MemoryStore;

fn mk_resources() -> Arc<Resources> {
    Arc::new(Resources::new(Arc::new(MemoryStore::new())))
}

async fn mk_apply(resources: &Arc<Resources>, object: Object) -> Result<u64, String> {
    let (stored, _) = resources
        .apply(object, Origin::User, false)
        .await
        .map_err(|e| e.to_string())?;
    Ok(stored.meta().resource_version)
}

async fn mk_load(resources: &Arc<Resources>, yaml: &str) {
    for object in troupe_common::document::from_yaml(yaml).expect("parses") {
        let key = object.key();
        mk_apply(resources, object)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}

async fn mk_caught_up(rbac: &Rbac, revision: u64) {
    tokio::time::timeout(Duration::from_secs(10), rbac.caught_up(revision))
        .await
        .expect("the index catches up");
}

fn mk_namespace(name: &str) -> Object {
    pb::Namespace {
        metadata: mk_meta("", name),
        ..Default::default()
    }
    .into()
}

#[tokio::test]
async fn start_writes_missing_builtin_roles_and_keeps_changed_ones() {
    let resources = mk_resources();
    let _rbac = Rbac::start(resources.clone()).await.unwrap();
    let roles = resources
        .list_as::<pb::ClusterRole>("", &Default::default())
        .await
        .unwrap();
    let names: Vec<&str> = roles
        .iter()
        .map(|r| r.metadata.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "admin",
            "ci-publisher",
            "developer",
            "platform-engineer",
            "viewer"
        ]
    );
    for role in &roles {
        let labels = &role.metadata.as_ref().unwrap().labels;
        assert_eq!(
            labels.get("troupe.dev/builtin").map(String::as_str),
            Some("true")
        );
    }
    mk_apply(
        &resources,
        mk_role("", "viewer", &[(&["Project"], &["get"])]),
    )
    .await
    .unwrap();
    resources
        .delete(
            &ObjectKey::new(Kind::ClusterRole, "", "ci-publisher"),
            Origin::User,
            0,
            false,
        )
        .await
        .unwrap();
    let _rbac = Rbac::start(resources.clone()).await.unwrap();
    let viewer: pb::ClusterRole = resources
        .get_as(&ObjectKey::new(Kind::ClusterRole, "", "viewer"))
        .unwrap();
    assert_eq!(viewer.spec.unwrap().rules[0].kinds, ["Project"]);
    assert!(
        resources
            .get(&ObjectKey::new(Kind::ClusterRole, "", "ci-publisher"))
            .is_ok()
    );
}

#[tokio::test]
async fn caught_up_sees_a_new_binding_and_its_removal() {
    let resources = mk_resources();
    mk_apply(&resources, mk_namespace("acme")).await.unwrap();
    let rbac = Rbac::start(resources.clone()).await.unwrap();
    let alice = mk_user("alice", &[]);
    let target = mk_target("Component", "acme", "shop", "api");
    assert_eq!(
        rbac.check(&alice, Verb::Get, &target),
        Err(
            "alice may not get Component acme/api (project shop, component api): no role \
             grants \"get\" on Component there"
                .into()
        )
    );
    let revision = mk_apply(
        &resources,
        mk_binding("acme", "a", "ClusterRole/viewer", &[("User", "alice")], ""),
    )
    .await
    .unwrap();
    mk_caught_up(&rbac, revision).await;
    assert_eq!(rbac.check(&alice, Verb::Get, &target), Ok(()));
    assert_eq!(
        rbac.reach(&alice, Verb::List, "Component", "acme"),
        Reach::Everything
    );

    resources
        .delete(
            &ObjectKey::new(Kind::RoleBinding, "acme", "a"),
            Origin::User,
            0,
            false,
        )
        .await
        .unwrap();
    // The delete's revision is not returned; any later revision, of any kind, will do.
    let later = mk_apply(&resources, mk_namespace("other")).await.unwrap();
    mk_caught_up(&rbac, later).await;
    assert!(rbac.check(&alice, Verb::Get, &target).is_err());
    assert_eq!(
        rbac.reach(&alice, Verb::List, "Component", "acme"),
        Reach::Nothing
    );
}

/// On the test's single-threaded runtime the follower runs only when the test yields: a
/// binding committed straight to the store is not in the index until `caught_up` has waited
/// for it, and `caught_up` of a revision not yet written waits for that write.
#[tokio::test]
async fn caught_up_waits_until_the_index_holds_the_revision() {
    use prost::Message;

    use crate::store::{Store, Txn};

    let store = Arc::new(MemoryStore::new());
    let resources = Arc::new(Resources::new(store.clone()));
    let acme = mk_apply(&resources, mk_namespace("acme")).await.unwrap();
    let rbac = Rbac::start(resources.clone()).await.unwrap();
    let (alice, target) = (
        mk_user("alice", &[]),
        mk_target("Workload", "acme", "shop", "api"),
    );

    let next = rbac.shared.applied.borrow().max(acme) + 1;
    let waiting = rbac.caught_up(next);
    tokio::pin!(waiting);
    assert!(futures::poll!(waiting.as_mut()).is_pending());

    let binding = mk_cluster_binding("late", "viewer", &[("User", "alice")]);
    let revision = store
        .commit(Txn::default().put(binding.key(), binding.into_resource().encode_to_vec()))
        .unwrap();
    assert_eq!(revision, next);
    assert!(rbac.check(&alice, Verb::Get, &target).is_err());
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the index catches up");
    assert_eq!(rbac.check(&alice, Verb::Get, &target), Ok(()));
}

#[tokio::test]
async fn the_server_itself_may_do_anything() {
    let rbac = Rbac::start(mk_resources()).await.unwrap();
    let server = Principal {
        name: "troupe".into(),
        groups: vec![],
        via: Via::Internal,
        impersonated_by: None,
    };
    let target = mk_target("Namespace", "", "", "");
    assert_eq!(rbac.check(&server, Verb::Delete, &target), Ok(()));
    assert_eq!(
        rbac.reach(&server, Verb::List, "Namespace", ""),
        Reach::Everything
    );
}

const ACCESS: &str = include_str!("../../../../examples/access/access.yaml");
const SAMPLE_PLATFORM: &str = include_str!("../../../../examples/platform.yaml");

#[tokio::test]
async fn the_example_access_file_grants_what_it_says() {
    let resources = mk_resources();
    let rbac = Rbac::start(resources.clone()).await.unwrap();
    mk_load(&resources, SAMPLE_PLATFORM).await;
    mk_load(&resources, ACCESS).await;
    let head = mk_apply(&resources, mk_namespace("other")).await.unwrap();
    mk_caught_up(&rbac, head).await;

    let api = target_of(
        &resources
            .get(&ObjectKey::new(Kind::Component, "acme", "api"))
            .unwrap(),
    );
    let staging = target_of(
        &resources
            .get(&ObjectKey::new(Kind::Environment, "acme", "staging"))
            .unwrap(),
    );
    let acme = target_of(
        &resources
            .get(&ObjectKey::new(Kind::Namespace, "", "acme"))
            .unwrap(),
    );
    let (shop, platform, auditor) = (
        mk_user("alice", &["shop-team"]),
        mk_user("pia", &["platform"]),
        mk_user("otto", &["auditors"]),
    );
    assert_eq!(rbac.check(&shop, Verb::Apply, &api), Ok(()));
    assert_eq!(
        rbac.check(&shop, Verb::Apply, &staging),
        Err(
            "alice may not apply Environment acme/staging: no role grants \"apply\" on \
             Environment there"
                .into()
        )
    );
    assert_eq!(rbac.check(&platform, Verb::Apply, &staging), Ok(()));
    assert!(rbac.check(&platform, Verb::Apply, &api).is_err());
    assert!(rbac.check(&platform, Verb::Delete, &acme).is_err());
    assert_eq!(rbac.check(&auditor, Verb::Get, &acme), Ok(()));
    assert!(rbac.check(&auditor, Verb::Apply, &api).is_err());
}

#[tokio::test]
async fn bindings_name_roles_and_scopes_that_exist() {
    let resources = mk_resources();
    let _rbac = Rbac::start(resources.clone()).await.unwrap();
    mk_load(&resources, SAMPLE_PLATFORM).await;
    let bind = |role: &str, scope: &str| mk_binding("acme", "b", role, &[("Group", "g")], scope);
    assert_eq!(
        mk_apply(&resources, bind("Role/deployer", "")).await,
        Err(
            "RoleBinding acme/b: spec.roleRef refers to Role acme/deployer, which does not \
             exist; create it first"
                .into()
        )
    );
    assert_eq!(
        mk_apply(&resources, bind("ClusterRole/developer", "books")).await,
        Err(
            "RoleBinding acme/b: spec.scope.project refers to Project acme/books, which does \
             not exist; create it first"
                .into()
        )
    );
    assert_eq!(
        mk_apply(&resources, bind("ClusterRole/developer", "shop/web")).await,
        Err(
            "RoleBinding acme/b: spec.scope.component refers to Component acme/web, which \
             does not exist; create it first"
                .into()
        )
    );
    mk_load(
        &resources,
        "apiVersion: troupe.dev/v1alpha1\nkind: Project\nmetadata: {name: books, namespace: acme}\n\
         spec: {deploymentPipelineRef: default}\n",
    )
    .await;
    assert_eq!(
        mk_apply(&resources, bind("ClusterRole/developer", "books/api")).await,
        Err(
            "RoleBinding acme/b: spec.scope.component: Component acme/api belongs to project \
             \"shop\", not \"books\""
                .into()
        )
    );
    mk_apply(
        &resources,
        mk_role("acme", "deployer", &[(&["ReleaseBinding"], &["apply"])]),
    )
    .await
    .unwrap();
    mk_apply(&resources, bind("Role/deployer", "shop/api"))
        .await
        .unwrap();
    let refused = |key: ObjectKey| {
        let resources = resources.clone();
        async move {
            match resources.delete(&key, Origin::User, 0, false).await {
                Err(e @ Error::StillReferenced { .. }) => e.to_string(),
                other => panic!("{key}: {other:?}"),
            }
        }
    };
    assert_eq!(
        refused(ObjectKey::new(Kind::Role, "acme", "deployer")).await,
        "Role acme/deployer is still referenced by RoleBinding acme/b; delete or change them first"
    );
    assert_eq!(
        refused(ObjectKey::new(Kind::Project, "acme", "shop")).await,
        "Project acme/shop is still referenced by RoleBinding acme/b; delete or change them first"
    );
}

#[test]
fn targets_carry_the_project_and_component_objects_belong_to() {
    let owner = || {
        Some(pb::ComponentOwner {
            project_name: "shop".into(),
            component_name: "api".into(),
        })
    };
    let project: Object = pb::Project {
        metadata: mk_meta("acme", "shop"),
        ..Default::default()
    }
    .into();
    let workload: Object = pb::Workload {
        metadata: mk_meta("acme", "api"),
        spec: Some(pb::WorkloadSpec {
            owner: owner(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into();
    let promotion: Object = pb::Promotion {
        metadata: mk_meta("acme", "api-production-7"),
        spec: Some(pb::PromotionSpec {
            owner: owner(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into();
    let standalone: Object = pb::WorkflowRun {
        metadata: mk_meta("acme", "nightly"),
        ..Default::default()
    }
    .into();
    let shown = |o: &Object| target_of(o).to_string();
    assert_eq!(shown(&project), "Project acme/shop (project shop)");
    assert_eq!(
        shown(&workload),
        "Workload acme/api (project shop, component api)"
    );
    assert_eq!(
        shown(&promotion),
        "Promotion acme/api-production-7 (project shop, component api)"
    );
    assert_eq!(shown(&standalone), "WorkflowRun acme/nightly");
    assert_eq!(shown(&mk_namespace("acme")), "Namespace acme");
}

#[tokio::test]
async fn the_role_a_binding_grants_cannot_change_in_place() {
    let resources = mk_resources();
    let _rbac = Rbac::start(resources.clone()).await.unwrap();
    mk_load(&resources, SAMPLE_PLATFORM).await;
    let binding = |role: &str| {
        format!(
            "apiVersion: troupe.dev/v1alpha1
kind: RoleBinding
metadata: {{name: shop-readers, namespace: acme}}
spec:
  roleRef: {{kind: ClusterRole, name: {role}}}
  subjects: [{{kind: Group, name: shop-team}}]
"
        )
    };
    mk_load(&resources, &binding("viewer")).await;
    let widened = troupe_common::document::from_yaml(&binding("admin")).unwrap();
    let err = mk_apply(&resources, widened.into_iter().next().unwrap())
        .await
        .unwrap_err();
    assert!(
        err.contains("spec.roleRef") && err.contains("immutable"),
        "{err}"
    );
    let cluster = |role: &str| {
        format!(
            "apiVersion: troupe.dev/v1alpha1
kind: ClusterRoleBinding
metadata: {{name: readers}}
spec:
  roleRef: {{kind: ClusterRole, name: {role}}}
  subjects: [{{kind: Group, name: readers}}]
"
        )
    };
    mk_load(&resources, &cluster("viewer")).await;
    let widened = troupe_common::document::from_yaml(&cluster("admin")).unwrap();
    let err = mk_apply(&resources, widened.into_iter().next().unwrap())
        .await
        .unwrap_err();
    assert!(err.contains("spec.roleRef"), "{err}");
}
