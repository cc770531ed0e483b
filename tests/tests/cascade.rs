//! Deletion cascades end to end: a project with two components bound in three environments
//! on two data planes (two real agents writing files) is deleted, and nothing is left: not a
//! file on either data plane, not an object of the project in the store. The same holds when
//! the control plane is killed mid-cascade and restarted, and an environment being deleted
//! waits for its bindings' objects to be pruned.

use troupe_tests::{
    PATIENCE, Platform, Server, check, eventually, release_files, stderr, stdout, success,
};

/// Components, environments, and the data plane each environment is on.
const COMPONENTS: [&str; 2] = ["api", "web"];
const ENVIRONMENTS: [(&str, &str); 3] = [
    ("development", "local"),
    ("staging", "local"),
    ("eu", "edge"),
];

/// The sample platform plus DataPlane `edge` with Environment `eu`, agents for both data
/// planes (each named after its plane), and `api` and `web` running in development, staging
/// and eu.
fn platform() -> Platform {
    let yaml = "apiVersion: troupe.dev/v1alpha1
kind: DataPlane
metadata: {name: edge, namespace: acme}
spec:
  planeId: edge
  gateway:
    external: {name: gw, namespace: gw, virtualHost: apps.eu.example.com, httpPort: 80}
    internal: {name: gwi, namespace: gw, virtualHost: internal.eu.example.com, httpPort: 80}
---
apiVersion: troupe.dev/v1alpha1
kind: Environment
metadata: {name: eu, namespace: acme}
spec:
  dataPlaneRef: {kind: DataPlane, name: edge}
---
apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: web, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/service}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {name: web, namespace: acme}
spec:
  owner: {projectName: shop, componentName: web}
  container: {image: ghcr.io/acme/web:1.0.0}
";
    let platform = Platform::builder()
        .examples()
        .apply(yaml)
        .fixed_agent_port()
        .agent("acme/local", "local")
        .agent("acme/edge", "edge")
        .start();
    for component in COMPONENTS {
        let release = platform.cut_release(component);
        for (env, _) in ENVIRONMENTS {
            platform.bind(component, env, &release, "");
        }
    }
    eventually(
        "every release is applied on its data plane",
        PATIENCE,
        || {
            check(deployed(&platform), |d| {
                d.len() == COMPONENTS.len() * ENVIRONMENTS.len()
            })
        },
    );
    platform
}

/// The releases whose files are on a data plane, as `plane/release`.
fn deployed(platform: &Platform) -> Vec<String> {
    let mut out = Vec::new();
    for component in COMPONENTS {
        for (env, plane) in ENVIRONMENTS {
            let release = format!("{component}-{env}");
            if !release_files(&platform.agent_target(plane), "acme", &release).is_empty() {
                out.push(format!("{plane}/{release}"));
            }
        }
    }
    out
}

/// Objects of these kinds left in namespace acme.
fn left_in_store(server: &Server, kinds: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for kind in kinds {
        let listed = server.cli(&["get", kind, "-n", "acme", "-o", "json"]);
        let text = stdout(&listed);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let items = doc
            .as_array()
            .cloned()
            .or_else(|| doc["items"].as_array().cloned())
            .unwrap_or_default();
        for item in items {
            out.push(format!(
                "{kind}/{}",
                item["metadata"]["name"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

const PROJECT_KINDS: [&str; 7] = [
    "components",
    "workloads",
    "workflowruns",
    "componentreleases",
    "releasebindings",
    "releases",
    "promotions",
];

#[test]
fn deleting_a_project_leaves_nothing_on_any_data_plane_or_in_the_store() {
    let platform = platform();
    let server: &Server = &platform;

    // What is still used is refused, with the referrers named.
    let out = server.cli(&["delete", "dp", "edge", "-n", "acme"]);
    assert!(
        stderr(&out).contains("DataPlane acme/edge is still referenced by Environment acme/eu"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["delete", "env", "staging", "-n", "acme"]);
    assert!(
        stderr(&out).contains("DeploymentPipeline acme/default"),
        "{}",
        stderr(&out)
    );

    let out = success(&server.cli(&["delete", "project", "shop", "-n", "acme", "--wait", "30"]));
    assert!(out.contains("Project acme/shop deleted"), "{out}");
    assert!(
        out.contains("Release acme/web-eu deleted once its data plane has pruned its objects"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("pruned 6 of 6"), "{out}");
    // (A Release whose acknowledgement was still on its way left the store at once; its
    // removal reaches the agent right after.)
    eventually("both data planes pruned everything", PATIENCE, || {
        check(deployed(&platform), Vec::is_empty)
    });
    assert_eq!(left_in_store(server, &PROJECT_KINDS), Vec::<String>::new());
    // With nothing left on it, the data plane can go once its environment has.
    success(&server.cli(&["delete", "env", "eu", "-n", "acme"]));
    success(&server.cli(&["delete", "dp", "edge", "-n", "acme"]));
}

#[test]
fn a_cascade_interrupted_by_a_killed_control_plane_finishes_after_the_restart() {
    let mut platform = platform();
    // The edge agent is away, so its releases cannot be pruned before the kill.
    platform.agents.pop().unwrap().kill();
    success(&platform.cli(&["delete", "project", "shop", "-n", "acme"]));
    platform.kill_server();
    platform.restart_server();
    let edge = platform.restart_agent("acme/edge", "edge");
    platform.agents.push(edge);
    eventually("both data planes pruned everything", PATIENCE, || {
        check(deployed(&platform), Vec::is_empty)
    });
    eventually("the store holds nothing of the project", PATIENCE, || {
        check(left_in_store(&platform, &PROJECT_KINDS), Vec::is_empty)
    });
}

#[test]
fn an_environment_being_deleted_takes_its_bindings_and_waits_for_their_prune() {
    let mut platform = platform();
    let edge = platform.agents.pop().unwrap();
    edge.kill();
    let server: &Server = &platform;
    let out = success(&server.cli(&["delete", "env", "eu", "-n", "acme"]));
    assert!(
        out.contains("Environment acme/eu deleted once its data plane has pruned its objects")
            && out.contains("ReleaseBinding acme/api-eu deleted"),
        "{out}"
    );
    // While it waits, nothing new may land in it.
    let yaml = "apiVersion: troupe.dev/v1alpha1
kind: ReleaseBinding
metadata: {name: api-eu, namespace: acme}
spec:
  owner: {projectName: shop, componentName: api}
  environment: eu
";
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(yaml));
    assert!(
        stderr(&out).contains("Environment acme/eu is being deleted"),
        "{}",
        stderr(&out)
    );
    assert!(server.get_json("env", "acme", "eu").is_some());
    let edge = platform.restart_agent("acme/edge", "edge");
    platform.agents.push(edge);
    let server: &Server = &platform;
    eventually("eu is gone", PATIENCE, || {
        server.get_json("env", "acme", "eu").is_none()
    });
    // A Release the agent applied but whose acknowledgement had not reached the store when
    // the agent was killed left the store at once; the agent prunes it when it comes back.
    eventually("only eu's releases were pruned", PATIENCE, || {
        check(deployed(&platform), |d| {
            d == &[
                "local/api-development",
                "local/api-staging",
                "local/web-development",
                "local/web-staging",
            ]
        })
    });
    success(&server.cli(&["delete", "dp", "edge", "-n", "acme"]));
}
