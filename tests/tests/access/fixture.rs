//! The platform the access tests share: the examples' project shop (component api) and a
//! project billing (component ledger) in namespace acme, a pipeline whose first edge only
//! alice approves, role bindings for each built-in role, and an API token per caller.

use std::collections::HashMap;
use std::process::Output;
use std::sync::{Arc, Mutex, Weak};

use serde_json::{Value, json};
use troupe_tests::probes::cli_as;
use troupe_tests::{Platform, success};

/// Project billing with component ledger (and its workload), beside the examples' shop/api.
pub const BILLING_YAML: &str = "apiVersion: troupe.dev/v1alpha1
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
pub const LEDGER_TWO: &str = "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: ledger-two, namespace: acme}
spec:
  owner: {projectName: billing}
  componentType: {name: deployment/service}
";

/// development → staging needs alice's approval; staging → production needs nothing.
pub const PIPELINE_YAML: &str = "apiVersion: troupe.dev/v1alpha1
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
pub const ACCESS_YAML: &str = "apiVersion: troupe.dev/v1alpha1
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
pub enum Role {
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
    pub const MATRIX: [Role; 5] = [
        Role::Admin,
        Role::PlatformEngineer,
        Role::Developer,
        Role::Viewer,
        Role::Ci,
    ];
}

/// The platform every test of this file shares, and a token per role.
pub struct Fixture {
    /// The running platform.
    pub platform: Platform,
    tokens: HashMap<Role, String>,
}

/// The shared fixture: started by the first test that needs it, stopped when the last test
/// holding it ends (a static would never stop the server).
pub fn fixture() -> Arc<Fixture> {
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
        let admin = platform
            .admin_token()
            .expect("the server writes the admin token");
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

    pub fn token(&self, role: Role) -> &str {
        &self.tokens[&role]
    }

    /// The CLI as the admin.
    pub fn admin_cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        cli_as(&self.platform, self.token(Role::Admin), args, stdin)
    }

    /// `troupe token create NAME --groups GROUPS --ttl TTL` by the admin: the token.
    pub fn create_token(&self, name: &str, groups: &str, ttl: &str) -> String {
        let mut args = vec!["token", "create", name, "--ttl", ttl];
        if !groups.is_empty() {
            args.extend(["--groups", groups]);
        }
        success(&self.admin_cli(&args, None)).trim().to_string()
    }
}

/// Workload shop/api as the examples have it.
pub fn workload_api() -> Value {
    json!({"apiVersion": "troupe.dev/v1alpha1", "kind": "Workload",
        "metadata": {"name": "api", "namespace": "acme"},
        "spec": {"owner": {"projectName": "shop", "componentName": "api"},
            "container": {"image": "ghcr.io/acme/api:1.0.0",
                "env": [{"key": "LOG_LEVEL", "value": "info"}]},
            "endpoints": [{"name": "http", "type": "HTTP", "port": 8080,
                "visibility": ["external"], "basePath": "/"}]}})
}

/// Workload billing/ledger as this file's fixture has it.
pub fn workload_ledger() -> Value {
    json!({"apiVersion": "troupe.dev/v1alpha1", "kind": "Workload",
        "metadata": {"name": "ledger", "namespace": "acme"},
        "spec": {"owner": {"projectName": "billing", "componentName": "ledger"},
            "container": {"image": "ghcr.io/acme/ledger:1.0.0"}}})
}

/// Component shop/api as the examples have it.
pub fn component_api() -> Value {
    json!({"apiVersion": "troupe.dev/v1alpha1", "kind": "Component",
        "metadata": {"name": "api", "namespace": "acme"},
        "spec": {"owner": {"projectName": "shop"},
            "componentType": {"name": "deployment/service"},
            "parameters": {"port": 8080},
            "traits": [{"name": "ingress", "instanceName": "public",
                "parameters": {"host": "api.acme.example.com"}}]}})
}

/// A new Environment qa in acme.
pub fn environment_qa() -> Value {
    json!({"apiVersion": "troupe.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": "qa", "namespace": "acme"},
        "spec": {"dataPlaneRef": {"kind": "DataPlane", "name": "local"}}})
}

/// Namespace acme as the examples have it.
pub fn namespace_acme() -> Value {
    json!({"apiVersion": "troupe.dev/v1alpha1", "kind": "Namespace",
        "metadata": {"name": "acme"},
        "spec": {"displayName": "ACME Corp",
            "description": "Tenant for the ACME engineering organization."}})
}
