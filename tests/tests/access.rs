//! Who may do what on the API, as users of every client see it: one platform with two
//! projects in namespace acme (shop with component api from the examples, billing with
//! component ledger), API tokens for each built-in role, and the same questions asked through
//! grpcurl, a generated Python client, a generated Node client and the `troupe` CLI. Each
//! answer is OK or PERMISSION_DENIED as the role says, and a denial names the verb, the kind
//! and where. Then the edges: a developer of shop sees nothing of billing, pipeline approvers
//! and impersonation, tokens that stopped working, `troupe auth`, and the audit log.

use std::collections::{BTreeSet, HashMap};
use std::process::Output;
use std::sync::{Arc, Mutex, Weak};

use Expect::{Allowed, Denied};
use serde_json::{Value, json};
use troupe_tests::probes::{Answer, Client, Op, Tool, ask, cli_as, code, keys_of};
use troupe_tests::{PATIENCE, Platform, eventually, stderr, stdout, success};

/// Project billing with component ledger (and its workload), beside the examples' shop/api.
const BILLING_YAML: &str = "apiVersion: troupe.dev/v1alpha1
kind: Project
metadata: {name: billing, namespace: acme}
spec: {deploymentPipelineRef: default}
---
apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: ledger, namespace: acme}
spec:
  owner: {projectName: billing}
  componentType: {name: deployment/service}
  parameters: {port: 8080}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {name: ledger, namespace: acme}
spec:
  owner: {projectName: billing, componentName: ledger}
  container: {image: ghcr.io/acme/ledger:1.0.0}
";

/// A second component of billing, created while a developer of shop watches.
const LEDGER_TWO: &str = "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: ledger-two, namespace: acme}
spec:
  owner: {projectName: billing}
  componentType: {name: deployment/service}
";

/// development → staging needs alice's approval; staging → production needs nothing.
const PIPELINE_YAML: &str = "apiVersion: troupe.dev/v1alpha1
kind: DeploymentPipeline
metadata: {name: default, namespace: acme}
spec:
  promotionPaths:
    - sourceEnvironment: development
      targets: [{environment: staging, requiresApproval: true, approvers: [alice]}]
    - sourceEnvironment: staging
      targets: [{environment: production}]
";

/// Who holds which built-in role: the platform engineer by its token, shop's developers by
/// group (and alice and bob by name, for impersonation), the viewer by user name, CI by its
/// token and only for component shop/api.
const ACCESS_YAML: &str = "apiVersion: troupe.dev/v1alpha1
kind: ClusterRoleBinding
metadata: {name: platform-engineers}
spec:
  roleRef: {kind: ClusterRole, name: platform-engineer}
  subjects: [{kind: Token, name: pe}]
---
apiVersion: troupe.dev/v1alpha1
kind: RoleBinding
metadata: {name: shop-developers, namespace: acme}
spec:
  roleRef: {kind: ClusterRole, name: developer}
  subjects: [{kind: Group, name: shop-team}, {kind: User, name: alice}, {kind: User, name: bob}]
  scope: {project: shop}
---
apiVersion: troupe.dev/v1alpha1
kind: ClusterRoleBinding
metadata: {name: viewers}
spec:
  roleRef: {kind: ClusterRole, name: viewer}
  subjects: [{kind: User, name: viewer}]
---
apiVersion: troupe.dev/v1alpha1
kind: RoleBinding
metadata: {name: ci-api, namespace: acme}
spec:
  roleRef: {kind: ClusterRole, name: ci-publisher}
  subjects: [{kind: Token, name: ci}]
  scope: {project: shop, component: api}
";

/// The callers of the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    /// The bootstrap admin token.
    Admin,
    /// Token `pe`: platform-engineer everywhere.
    PlatformEngineer,
    /// Token `dev-shop` in group shop-team: developer of project shop.
    Developer,
    /// Token `dev-two` in group shop-team: another developer of project shop.
    SecondDeveloper,
    /// Token `viewer`: viewer everywhere.
    Viewer,
    /// Token `ci`: ci-publisher of component shop/api.
    Ci,
}

impl Role {
    /// The roles of the matrix.
    const MATRIX: [Role; 5] = [
        Role::Admin,
        Role::PlatformEngineer,
        Role::Developer,
        Role::Viewer,
        Role::Ci,
    ];
}

/// The platform every test of this file shares, and a token per role.
struct Fixture {
    platform: Platform,
    tokens: HashMap<Role, String>,
}

/// The shared fixture: started by the first test that needs it, stopped when the last test
/// holding it ends (a static would never stop the server).
fn fixture() -> Arc<Fixture> {
    static SHARED: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(fixture) = shared.upgrade() {
        return fixture;
    }
    let fixture = Arc::new(Fixture::start());
    *shared = Arc::downgrade(&fixture);
    fixture
}

impl Fixture {
    fn start() -> Fixture {
        let platform = Platform::builder()
            .examples()
            .apply(PIPELINE_YAML)
            .apply(BILLING_YAML)
            .apply(ACCESS_YAML)
            .start();
        let admin = std::fs::read_to_string(platform.data_dir.join("admin.token"))
            .expect("the server writes the admin token")
            .trim()
            .to_string();
        let mut fixture = Fixture {
            platform,
            tokens: HashMap::from([(Role::Admin, admin)]),
        };
        for (role, name, groups) in [
            (Role::PlatformEngineer, "pe", ""),
            (Role::Developer, "dev-shop", "shop-team"),
            (Role::SecondDeveloper, "dev-two", "shop-team"),
            (Role::Viewer, "viewer", ""),
            (Role::Ci, "ci", ""),
        ] {
            let token = fixture.create_token(name, groups, "1h");
            fixture.tokens.insert(role, token);
        }
        fixture
    }

    fn token(&self, role: Role) -> &str {
        &self.tokens[&role]
    }

    /// The CLI as the admin.
    fn admin_cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        cli_as(&self.platform, self.token(Role::Admin), args, stdin)
    }

    /// `troupe token create NAME --groups GROUPS --ttl TTL` by the admin: the token.
    fn create_token(&self, name: &str, groups: &str, ttl: &str) -> String {
        let mut args = vec!["token", "create", name, "--ttl", ttl];
        if !groups.is_empty() {
            args.extend(["--groups", groups]);
        }
        success(&self.admin_cli(&args, None)).trim().to_string()
    }
}

/// Workload shop/api as the examples have it.
fn workload_api() -> Value {
    json!({"apiVersion": "troupe.dev/v1alpha1", "kind": "Workload",
        "metadata": {"name": "api", "namespace": "acme"},
        "spec": {"owner": {"projectName": "shop", "componentName": "api"},
            "container": {"image": "ghcr.io/acme/api:1.0.0",
                "env": [{"key": "LOG_LEVEL", "value": "info"}]},
            "endpoints": [{"name": "http", "type": "HTTP", "port": 8080,
                "visibility": ["external"], "basePath": "/"}]}})
}

/// Workload billing/ledger as this file's fixture has it.
fn workload_ledger() -> Value {
    json!({"apiVersion": "troupe.dev/v1alpha1", "kind": "Workload",
        "metadata": {"name": "ledger", "namespace": "acme"},
        "spec": {"owner": {"projectName": "billing", "componentName": "ledger"},
            "container": {"image": "ghcr.io/acme/ledger:1.0.0"}}})
}

/// Component shop/api as the examples have it.
fn component_api() -> Value {
    json!({"apiVersion": "troupe.dev/v1alpha1", "kind": "Component",
        "metadata": {"name": "api", "namespace": "acme"},
        "spec": {"owner": {"projectName": "shop"},
            "componentType": {"name": "deployment/service"},
            "parameters": {"port": 8080},
            "traits": [{"name": "ingress", "instanceName": "public",
                "parameters": {"host": "api.acme.example.com"}}]}})
}

/// A new Environment qa in acme.
fn environment_qa() -> Value {
    json!({"apiVersion": "troupe.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": "qa", "namespace": "acme"},
        "spec": {"dataPlaneRef": {"kind": "DataPlane", "name": "local"}}})
}

/// Namespace acme as the examples have it.
fn namespace_acme() -> Value {
    json!({"apiVersion": "troupe.dev/v1alpha1", "kind": "Namespace",
        "metadata": {"name": "acme"},
        "spec": {"displayName": "ACME Corp",
            "description": "Tenant for the ACME engineering organization."}})
}

/// What a role should be answered.
enum Expect {
    /// OK, and among the objects in the answer every key in `has` and none matching `lacks`.
    Allowed {
        has: &'static [&'static str],
        lacks: &'static [&'static str],
    },
    /// PERMISSION_DENIED with a message naming each of these words.
    Denied(&'static [&'static str]),
}

/// What marks billing's objects among keys (`Project acme/billing`, `Component acme/ledger`).
const BILLING: &[&str] = &["billing", "ledger"];

/// The five questions asked of `role` (a read, a write in scope, a write out of scope, a list
/// across namespaces, a watch of everything), with the answers it should get.
fn cases(role: Role) -> Vec<(&'static str, Op, Expect)> {
    let everything = Allowed {
        has: &["Project acme/billing", "Component acme/api"],
        lacks: &[],
    };
    let components = Allowed {
        has: &["Component acme/api", "Component acme/ledger"],
        lacks: &[],
    };
    match role {
        Role::Admin => vec![
            (
                "read",
                Op::get("Component", "ledger"),
                components_one("ledger"),
            ),
            ("write", Op::Apply(workload_ledger()), ok()),
            ("write cluster-wide", Op::Apply(namespace_acme()), ok()),
            ("list all", Op::ListAll("Component"), components),
            ("watch all", Op::WatchAll, everything),
        ],
        Role::PlatformEngineer => vec![
            (
                "read",
                Op::get("Component", "ledger"),
                components_one("ledger"),
            ),
            ("write", Op::Apply(environment_qa()), ok()),
            (
                "write out of scope",
                Op::Apply(component_api()),
                Denied(&["apply", "Component", "acme"]),
            ),
            ("list all", Op::ListAll("Component"), components),
            ("watch all", Op::WatchAll, everything),
        ],
        Role::Developer | Role::SecondDeveloper => vec![
            ("read", Op::get("Component", "api"), components_one("api")),
            ("write", Op::Apply(workload_api()), ok()),
            (
                "write out of scope",
                Op::Apply(workload_ledger()),
                Denied(&["apply", "Workload", "acme", "billing"]),
            ),
            (
                "list all",
                Op::ListAll("Component"),
                Allowed {
                    has: &["Component acme/api"],
                    lacks: BILLING,
                },
            ),
            (
                "watch all",
                Op::WatchAll,
                Allowed {
                    has: &["Component acme/api", "Workload acme/api"],
                    lacks: BILLING,
                },
            ),
        ],
        Role::Viewer => vec![
            (
                "read",
                Op::get("Component", "ledger"),
                components_one("ledger"),
            ),
            (
                "write",
                Op::Apply(workload_api()),
                Denied(&["apply", "Workload", "acme", "shop"]),
            ),
            (
                "write cluster-wide",
                Op::Apply(namespace_acme()),
                Denied(&["apply", "Namespace", "acme"]),
            ),
            ("list all", Op::ListAll("Component"), components),
            ("watch all", Op::WatchAll, everything),
        ],
        Role::Ci => vec![
            ("read", Op::get("Component", "api"), components_one("api")),
            ("write", Op::Apply(workload_api()), ok()),
            (
                "write out of scope",
                Op::Apply(workload_ledger()),
                Denied(&["apply", "Workload", "acme", "billing"]),
            ),
            (
                "list all",
                Op::ListAll("Workload"),
                Allowed {
                    has: &["Workload acme/api"],
                    lacks: BILLING,
                },
            ),
            (
                "watch all",
                // ci-publisher watches Workloads and WorkflowRuns only, of component api.
                Op::WatchAll,
                Allowed {
                    has: &["Workload acme/api"],
                    lacks: &["billing", "ledger", "Component ", "Project "],
                },
            ),
        ],
    }
}

fn ok() -> Expect {
    Allowed {
        has: &[],
        lacks: &[],
    }
}

fn components_one(name: &'static str) -> Expect {
    Allowed {
        has: match name {
            "api" => &["Component acme/api"],
            _ => &["Component acme/ledger"],
        },
        lacks: &[],
    }
}

fn judge(who: &str, expect: &Expect, answer: &Answer) -> Result<(), String> {
    match expect {
        Allowed { has, lacks } => {
            if answer.code != code::OK {
                return Err(format!("{who}: expected OK, got {answer:?}"));
            }
            let missing: Vec<_> = has.iter().filter(|k| !answer.keys.contains(**k)).collect();
            let leaked: Vec<_> = answer
                .keys
                .iter()
                .filter(|k| lacks.iter().any(|l| k.contains(l)))
                .collect();
            if !missing.is_empty() || !leaked.is_empty() {
                return Err(format!(
                    "{who}: missing {missing:?}, should not see {leaked:?}; saw {:?}",
                    answer.keys
                ));
            }
        }
        Denied(words) => {
            let unnamed: Vec<_> = words
                .iter()
                .filter(|w| !answer.message.contains(**w))
                .collect();
            if answer.code != code::PERMISSION_DENIED || !unnamed.is_empty() {
                return Err(format!(
                    "{who}: expected PERMISSION_DENIED naming {words:?}, got {answer:?}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn every_role_gets_the_same_answers_from_every_client() {
    let f = fixture();
    let mut failures = Vec::new();
    for role in Role::MATRIX {
        let cases = cases(role);
        let ops: Vec<&Op> = cases.iter().map(|(_, op, _)| op).collect();
        for client in Tool::ALL {
            let answers = ask(&f.platform, client, f.token(role), &ops);
            for ((what, _, expect), answer) in cases.iter().zip(&answers) {
                let who = format!("{role:?} {what} through {client:?}");
                if let Err(e) = judge(&who, expect, answer) {
                    failures.push(e);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_developer_of_shop_sees_and_touches_nothing_of_billing() {
    let f = fixture();
    let dev = f.token(Role::Developer);
    let read = &Client::Grpcurl.probe(
        &f.platform,
        dev,
        &json!([Op::get("Component", "ledger").call("grpcurl")]),
    )[0];
    assert_eq!(read.code, code::PERMISSION_DENIED, "{read:?}");
    for word in ["get", "Component", "acme/ledger", "billing"] {
        assert!(read.message.contains(word), "{word} not in {read:?}");
    }

    let list = json!([{"service": "ResourceService", "method": "List",
                       "request": {"kind": "Component", "namespace": "acme"}}]);
    let listed = &Client::Python.probe(&f.platform, dev, &list)[0];
    assert_eq!(listed.code, code::OK, "{listed:?}");
    assert_eq!(
        keys_of(&listed.body),
        BTreeSet::from(["Component acme/api".to_string()]),
        "the developer lists only shop's components"
    );

    // A watch of every kind from the list's revision on: billing gets a component, then shop
    // a workload change. The watch carries the second and never the first.
    let since = listed.body["revision"]
        .as_str()
        .expect("a revision")
        .to_string();
    let marker = "shop-change-seen-by-the-watch";
    let watch = json!([{"service": "ResourceService", "method": "Watch", "stream": true,
                        "request": {"kind": "", "namespace": "", "sinceRevision": since},
                        "until": marker, "timeoutMs": PATIENCE.as_millis() as u64}]);
    let watched = std::thread::scope(|s| {
        let watcher = s.spawn(|| Client::Node.probe(&f.platform, dev, &watch));
        success(&f.admin_cli(&["apply", "-f", "-"], Some(LEDGER_TWO)));
        let mut change = workload_api();
        change["metadata"]["labels"]["change"] = json!(marker);
        success(&f.admin_cli(&["apply", "-f", "-"], Some(&change.to_string())));
        watcher.join().expect("the watching thread")
    });
    let events = &watched[0];
    let seen = keys_of(&events.body);
    assert!(
        events.code == code::OK && events.body.to_string().contains(marker),
        "the shop change arrives: {events:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|k| k.contains("ledger") || k.contains("billing")),
        "a billing object reached shop's developer: {seen:?}"
    );

    let binding = "apiVersion: troupe.dev/v1alpha1
kind: ReleaseBinding
metadata: {name: ledger-development, namespace: acme}
spec:
  owner: {projectName: billing, componentName: ledger}
  environment: development
  releaseName: ledger-0000000000
";
    let refusals = [
        (
            cli_as(&f.platform, dev, &["apply", "-f", "-"], Some(binding)),
            ["apply", "ReleaseBinding"],
        ),
        (
            cli_as(
                &f.platform,
                dev,
                &["promote", "ledger", "-n", "acme", "--to", "staging"],
                None,
            ),
            ["promote", "Promotion"],
        ),
        (
            cli_as(
                &f.platform,
                dev,
                &["render", "ledger", "-n", "acme", "--env", "development"],
                None,
            ),
            ["render", "Component"],
        ),
    ];
    for (out, words) in refusals {
        let text = stderr(&out);
        assert!(!out.status.success(), "{}", stdout(&out));
        assert!(text.contains("PermissionDenied"), "{text}");
        for word in words.iter().chain(&["acme", "billing"]) {
            assert!(text.contains(word), "{word} not in {text}");
        }
    }
}

#[test]
fn approvers_and_impersonation_decide_who_moves_a_release() {
    let f = fixture();
    let release = f.platform.cut_release("api");
    f.platform.bind("api", "development", &release, "");
    let promote = [
        "promote", "api", "-n", "acme", "--to", "staging", "--as", "bob",
    ];

    let out = cli_as(&f.platform, f.token(Role::Developer), &promote, None);
    let text = stderr(&out);
    assert!(
        !out.status.success() && text.contains("PermissionDenied"),
        "{text}"
    );
    assert!(
        text.contains("impersonate") && text.contains("bob"),
        "{text}"
    );

    let out = success(&f.admin_cli(&promote, None));
    let name = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("promotion/"))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no promotion in {out:?}"))
        .to_string();
    let record = f
        .platform
        .get_json("promotion", "acme", &name)
        .expect("the promotion");
    assert_eq!(record["spec"]["requestedBy"], "bob", "{record:#}");
    assert_eq!(record["spec"]["impersonatedBy"], "admin", "{record:#}");

    // A developer of shop may approve promotions of shop, but this edge names its approvers.
    let calls = json!([{"service": "PromotionService", "method": "Approve",
                        "request": {"namespace": "acme", "promotion": name}}]);
    let refused = &Client::Python.probe(&f.platform, f.token(Role::SecondDeveloper), &calls)[0];
    assert_eq!(refused.code, code::PERMISSION_DENIED, "{refused:?}");
    assert!(
        refused.message.contains("approve") && refused.message.contains("alice"),
        "{refused:?}"
    );

    let approved = success(&f.admin_cli(&["approve", &name, "-n", "acme", "--as", "alice"], None));
    let record = f
        .platform
        .get_json("promotion", "acme", &name)
        .expect("the promotion");
    let approvals = &record["status"]["approvals"];
    assert_eq!(approvals[0]["user"], "alice", "{approved}\n{record:#}");
    assert_eq!(approvals[0]["impersonatedBy"], "admin", "{record:#}");
}

#[test]
fn tokens_that_prove_nothing_are_unauthenticated_with_the_reason() {
    let f = fixture();
    let whoami = json!([{"service": "AuthService", "method": "WhoAmI", "request": {}}]);
    let refused = |client: Client, token: &str| {
        let answer = client.probe(&f.platform, token, &whoami).remove(0);
        assert_eq!(answer.code, code::UNAUTHENTICATED, "{client:?}: {answer:?}");
        answer.message
    };

    let brief = f.create_token("brief", "", "1s");
    eventually("a one-second token is refused", PATIENCE, || {
        let out = cli_as(&f.platform, &brief, &["auth", "whoami"], None);
        (!out.status.success() && stderr(&out).contains("expired")).then_some(())
    });
    let message = refused(Client::Grpcurl, &brief);
    assert!(message.contains("API token brief expired at"), "{message}");

    let gone = f.create_token("gone", "", "1h");
    assert_eq!(
        Client::Python.probe(&f.platform, &gone, &whoami)[0].code,
        code::OK
    );
    success(&f.admin_cli(&["token", "revoke", "gone"], None));
    let message = refused(Client::Python, &gone);
    assert!(
        message.contains("API token gone was revoked at"),
        "{message}"
    );

    let unknown = format!("trp_{}", "0".repeat(64));
    assert!(refused(Client::Node, &unknown).contains("unknown API token"));

    let out = cli_as(
        &f.platform,
        "not-a-token",
        &["get", "components", "-n", "acme"],
        None,
    );
    let text = stderr(&out);
    assert!(
        text.contains("Unauthenticated") && text.contains("malformed token"),
        "{text}"
    );

    for client in Client::ALL {
        assert!(refused(client, "").contains("no credentials"), "{client:?}");
    }
}

#[test]
fn auth_whoami_and_can_i_answer_for_the_caller() {
    let f = fixture();
    let dev = f.token(Role::Developer);
    let out = success(&cli_as(
        &f.platform,
        dev,
        &["auth", "whoami", "-o", "json"],
        None,
    ));
    let me: serde_json::Value = serde_json::from_str(&out).expect("JSON from whoami");
    assert_eq!(me["user"], "dev-shop", "{me:#}");
    assert_eq!(me["groups"], json!(["shop-team"]), "{me:#}");
    assert_eq!(me["authenticatedBy"], "token:dev-shop", "{me:#}");

    let can_i = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend(args);
        cli_as(&f.platform, dev, &all, None)
    };
    let yes = can_i(&["apply", "workload", "api", "-n", "acme"]);
    assert_eq!(yes.status.code(), Some(0), "{}", stderr(&yes));
    assert_eq!(stdout(&yes).trim(), "yes");
    let no = can_i(&["apply", "workload", "ledger", "-n", "acme"]);
    assert_eq!(no.status.code(), Some(1), "{}", stderr(&no));
    let text = stdout(&no);
    assert!(
        text.starts_with("no: ") && text.contains("billing"),
        "{text}"
    );
    let no = can_i(&["delete", "environment", "development", "-n", "acme"]);
    assert_eq!(no.status.code(), Some(1), "{}", stdout(&no));
}

#[test]
fn the_audit_log_has_a_line_for_a_denial_and_for_an_apply() {
    let f = fixture();
    let mut change = workload_api();
    change["metadata"]["labels"]["audited"] = json!("yes");
    let calls = json!([
        Op::Apply(workload_ledger()).call("audit"),
        Op::Apply(change).call("audit"),
    ]);
    let answers = Client::Node.probe(&f.platform, f.token(Role::Developer), &calls);
    assert_eq!(answers[0].code, code::PERMISSION_DENIED, "{answers:?}");
    assert_eq!(answers[1].code, code::OK, "{answers:?}");
    let revision = answers[1].body["resource"]["workload"]["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse::<u64>().ok())
        .expect("the applied workload's revision");

    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(f.platform.data_dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let deny = lines().into_iter().find(|l| {
        l["decision"] == "deny"
            && l["principal"] == "dev-shop"
            && l["verb"] == "apply"
            && l["kind"] == "Workload"
            && l["name"] == "ledger"
    });
    let deny = deny.expect("a deny line for the developer's apply of billing's workload");
    assert_eq!(deny["project"], "billing", "{deny}");
    assert!(
        deny["reason"].as_str().is_some_and(|r| r.contains("apply")),
        "{deny}"
    );
    let allow = lines().into_iter().find(|l| {
        l["decision"] == "allow" && l["principal"] == "dev-shop" && l["revision"] == revision
    });
    let allow = allow.expect("an allow line with the apply's revision");
    assert_eq!(
        (
            &allow["verb"],
            &allow["kind"],
            &allow["name"],
            &allow["project"]
        ),
        (
            &json!("apply"),
            &json!("Workload"),
            &json!("api"),
            &json!("shop")
        ),
        "{allow}"
    );
}
