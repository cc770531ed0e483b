//! One owner per object on a data plane, and the agent's own resource policy, with the real
//! `troupe` and `troupe-agent` (directory applier): two components whose templates render
//! the same ConfigMap, and an agent that allows fewer kinds than the control plane.
//!
//! Each test asserts what a user sees: the bindings' `Degraded` condition and its message,
//! and the files under the agent's target.

use std::path::Path;

use serde_json::Value;
use troupe_tests::{PATIENCE, Platform, Server, check, eventually, release_files};

/// A ComponentType whose every component also renders one fixed-name ConfigMap in the
/// environment's namespace, saying which component wrote it; components alpha and beta of
/// that type.
const SHARED: &str = r#"
apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {name: with-shared-config, namespace: acme}
spec:
  workloadType: deployment
  resources:
    - id: deployment
      template:
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: "${{ metadata.name }}", namespace: "${{ metadata.namespace }}"}
        spec:
          selector: {matchLabels: "${{ metadata.podSelectors }}"}
          template:
            metadata: {labels: "${{ metadata.podSelectors }}"}
            spec:
              containers:
                - {name: main, image: "${{ workload.container.image }}"}
    - id: shared
      template:
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: shared-settings, namespace: "${{ metadata.namespace }}"}
        data: {writtenBy: "${{ metadata.componentName }}"}
---
apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: alpha, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/with-shared-config}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {name: alpha, namespace: acme}
spec:
  owner: {projectName: shop, componentName: alpha}
  container: {image: "ghcr.io/acme/alpha:1"}
---
apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: beta, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/with-shared-config}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {name: beta, namespace: acme}
spec:
  owner: {projectName: shop, componentName: beta}
  container: {image: "ghcr.io/acme/beta:1"}
"#;

/// The binding's condition of `type`, or `Null`.
fn condition(server: &Server, binding: &str, kind: &str) -> Value {
    let rb = server
        .get_json("rb", "acme", binding)
        .unwrap_or(Value::Null);
    rb["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or(Value::Null)
}

fn is_true(condition: &Value) -> bool {
    condition["status"] == "True"
}

/// The text of the shared ConfigMap's file in `release`'s folder, if it has one.
fn shared_file(target: &Path, release: &str) -> Option<String> {
    release_files(target, "acme", release)
        .into_iter()
        .find(|(file, _)| file.starts_with("configmap_") && file.ends_with("_shared-settings.yaml"))
        .map(|(_, text)| text)
}

fn has_deployment(target: &Path, release: &str) -> bool {
    release_files(target, "acme", release)
        .keys()
        .any(|file| file.starts_with("deployment.apps_"))
}

#[test]
fn an_object_two_releases_render_belongs_to_the_first_until_it_lets_go() {
    let platform = Platform::builder()
        .examples()
        .apply(SHARED)
        .agent("acme/local", "a")
        .start();
    let target = platform.agent("a").target.clone();
    let alpha = platform.cut_release("alpha");
    platform.bind("alpha", "development", &alpha, "");
    eventually("alpha is ready in development", PATIENCE, || {
        is_true(&condition(&platform, "alpha-development", "Ready"))
    });
    assert!(
        shared_file(&target, "alpha-development")
            .unwrap()
            .contains("writtenBy: alpha")
    );

    // Beta renders the same ConfigMap: that object fails, naming its owner; the rest applies.
    let beta = platform.cut_release("beta");
    platform.bind("beta", "development", &beta, "");
    let degraded = eventually("beta is degraded in development", PATIENCE, || {
        check(
            condition(&platform, "beta-development", "Degraded"),
            is_true,
        )
    });
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("ConfigMap shared-settings: owned by release acme/alpha-development"),
        "{degraded}"
    );
    assert!(has_deployment(&target, "beta-development"));
    assert_eq!(shared_file(&target, "beta-development"), None);
    assert!(
        shared_file(&target, "alpha-development")
            .unwrap()
            .contains("writtenBy: alpha")
    );
    assert!(is_true(&condition(&platform, "alpha-development", "Ready")));

    // Undeploying beta leaves alpha's object alone.
    success_cli(
        &platform,
        &["delete", "rb", "beta-development", "-n", "acme"],
    );
    eventually("beta's files are gone", PATIENCE, || {
        !target.join("acme/beta-development").exists()
    });
    assert!(
        shared_file(&target, "alpha-development")
            .unwrap()
            .contains("writtenBy: alpha")
    );

    // Beta again, then alpha goes: alpha's file goes with it and beta takes the object over.
    platform.bind("beta", "development", &beta, "");
    eventually("beta is degraded again", PATIENCE, || {
        is_true(&condition(&platform, "beta-development", "Degraded"))
    });
    success_cli(
        &platform,
        &["delete", "rb", "alpha-development", "-n", "acme"],
    );
    eventually("beta owns the ConfigMap", PATIENCE, || {
        check(shared_file(&target, "beta-development"), |f| {
            f.as_deref().is_some_and(|t| t.contains("writtenBy: beta"))
        })
    });
    assert!(!target.join("acme/alpha-development").exists());
    eventually("beta is ready in development", PATIENCE, || {
        check(condition(&platform, "beta-development", "Ready"), is_true)
    });
}

#[test]
fn an_agent_allowing_fewer_kinds_refuses_the_others_alone() {
    let platform = Platform::builder().examples().start();
    let agent = platform.register_agent_with(
        "acme/local",
        "narrow",
        &[
            "--allow-kinds",
            "apps/*,/Service,gateway.networking.k8s.io/HTTPRoute",
        ],
    );
    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");
    let degraded = eventually("api is degraded in development", PATIENCE, || {
        check(condition(&platform, "api-development", "Degraded"), is_true)
    });
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains(
            "ConfigMap api-files: kind ConfigMap (core group) is not allowed by this agent"
        ) && message.contains("--allow-kinds"),
        "{degraded}"
    );
    let files = release_files(&agent.target, "acme", "api-development");
    assert!(
        files.keys().any(|f| f.starts_with("deployment.apps_")),
        "{files:?}"
    );
    assert!(files.keys().any(|f| f.starts_with("service_")), "{files:?}");
    assert!(
        !files.keys().any(|f| f.starts_with("configmap_")),
        "{files:?}"
    );
}

fn success_cli(server: &Server, args: &[&str]) {
    troupe_tests::success(&server.cli(args));
}
