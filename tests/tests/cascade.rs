//! Deletion cascades end to end: a project with two components bound in three environments
//! on two data planes (two real agents writing files) is deleted, and nothing is left: not a
//! file on either data plane, not an object of the project in the store. The same holds when
//! the control plane is killed mid-cascade and restarted, and an environment being deleted
//! waits for its bindings' objects to be pruned.

use std::path::Path;

use troupe_tests::{
    Agent, Server, examples_dir, free_port, release_files, stderr, stdout, success, wait_until,
};

/// Components, environments, and the data plane each environment is on.
const COMPONENTS: [&str; 2] = ["api", "web"];
const ENVIRONMENTS: [(&str, &str); 3] = [
    ("development", "local"),
    ("staging", "local"),
    ("eu", "edge"),
];

struct Platform {
    server: Server,
    agents: Vec<Agent>,
    data: std::path::PathBuf,
    agent_listen: String,
    dir: tempfile::TempDir,
}

impl Platform {
    fn start_server(data: &Path, agent_listen: &str) -> Server {
        Server::start_with(data, &["--agent-listen", agent_listen])
    }

    fn agent(&self, plane: &str, token: Option<&str>) -> Agent {
        Agent::start(
            &self.server.agent_url(),
            &format!("acme/{plane}"),
            token,
            &self.dir.path().join(format!("{plane}-state")),
            &self.dir.path().join(format!("{plane}-target")),
        )
    }

    fn target(&self, plane: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{plane}-target"))
    }
}

/// The sample platform plus DataPlane `edge` with Environment `eu`, agents for both data
/// planes, and `api` and `web` running in development, staging and eu.
fn platform() -> Platform {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agent_listen = format!("127.0.0.1:{}", free_port());
    let server = Platform::start_server(&data, &agent_listen);
    success(&server.cli(&["apply", "-f", examples_dir().to_str().unwrap()]));
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
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(yaml)));
    let mut platform = Platform {
        server,
        agents: Vec::new(),
        data,
        agent_listen,
        dir,
    };
    for plane in ["local", "edge"] {
        let token = platform.server.token(&format!("acme/{plane}"), "1h");
        let agent = platform.agent(plane, Some(&token));
        platform.agents.push(agent);
    }
    for component in COMPONENTS {
        let release = platform.server.cut_release(component);
        for (env, _) in ENVIRONMENTS {
            platform.server.bind(component, env, &release, "");
        }
    }
    wait_until("every release is applied on its data plane", || {
        deployed(&platform).len() == COMPONENTS.len() * ENVIRONMENTS.len()
    });
    platform
}

/// The releases whose files are on a data plane, as `plane/release`.
fn deployed(platform: &Platform) -> Vec<String> {
    let mut out = Vec::new();
    for component in COMPONENTS {
        for (env, plane) in ENVIRONMENTS {
            let release = format!("{component}-{env}");
            if !release_files(&platform.target(plane), "acme", &release).is_empty() {
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
    let server = &platform.server;

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
    wait_until("both data planes pruned everything", || {
        deployed(&platform).is_empty()
    });
    assert_eq!(left_in_store(server, &PROJECT_KINDS), Vec::<String>::new());
    // With nothing left on it, the data plane can go once its environment has.
    success(&server.cli(&["delete", "env", "eu", "-n", "acme"]));
    success(&server.cli(&["delete", "dp", "edge", "-n", "acme"]));
}

#[test]
fn a_cascade_interrupted_by_a_killed_control_plane_finishes_after_the_restart() {
    let Platform {
        server,
        mut agents,
        data,
        agent_listen,
        dir,
    } = platform();
    // The edge agent is away, so its releases cannot be pruned before the kill.
    agents.pop().unwrap().kill();
    success(&server.cli(&["delete", "project", "shop", "-n", "acme"]));
    server.kill();
    let server = Platform::start_server(&data, &agent_listen);
    let mut platform = Platform {
        server,
        agents,
        data,
        agent_listen,
        dir,
    };
    let edge = platform.agent("edge", None);
    platform.agents.push(edge);
    wait_until("both data planes pruned everything", || {
        deployed(&platform).is_empty()
    });
    wait_until("the store holds nothing of the project", || {
        left_in_store(&platform.server, &PROJECT_KINDS).is_empty()
    });
}

#[test]
fn an_environment_being_deleted_takes_its_bindings_and_waits_for_their_prune() {
    let mut platform = platform();
    let edge = platform.agents.pop().unwrap();
    edge.kill();
    let server = &platform.server;
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
    let edge = platform.agent("edge", None);
    platform.agents.push(edge);
    let server = &platform.server;
    wait_until("eu is gone", || {
        server.get_json("env", "acme", "eu").is_none()
    });
    // A Release the agent applied but whose acknowledgement had not reached the store when
    // the agent was killed left the store at once; the agent prunes it when it comes back.
    wait_until("only eu's releases were pruned", || {
        deployed(&platform)
            == [
                "local/api-development",
                "local/api-staging",
                "local/web-development",
                "local/web-staging",
            ]
    });
    success(&server.cli(&["delete", "dp", "edge", "-n", "acme"]));
}
