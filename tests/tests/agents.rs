//! Real `troupe` and `troupe-agent` processes over TCP with mTLS: registration, delivery,
//! updates, prunes, undeploy, and the faults the agent protocol must survive (DESIGN §6):
//! a killed agent, a restarted control plane, cut connections, a second agent with the same
//! identity, foreign and expired credentials, an oversized release next to a normal one.
//!
//! Every test asserts the end state on the applier's side (files under the agent's target)
//! and in the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use troupe_tests::{
    Agent, PATIENCE, Platform, Proxy, Server, eventually, free_port, release_files, stderr, stdout,
    success, troupe_agent_bin, workspace_root,
};

/// Files of the sample `api`'s release on a directory agent: the five objects the example
/// platform renders for it, and its NetworkPolicy.
const API_FILES: usize = 6;

fn files(target: &Path, name: &str) -> BTreeMap<String, String> {
    release_files(target, "acme", name)
}

fn deployment(target: &Path, name: &str) -> String {
    files(target, name)
        .into_iter()
        .find(|(f, _)| f.starts_with("deployment.apps_"))
        .map(|(_, text)| text)
        .unwrap_or_default()
}

/// `troupe status api -n acme -o json`, the entry of `env`.
fn status_of(server: &Server, env: &str) -> Value {
    let out = success(&server.cli(&["status", "api", "-n", "acme", "-o", "json"]));
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["environment"] == env)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Whether `env` is ready; while it is not, its status entry, for a wait to report.
fn ready(server: &Server, env: &str) -> Result<(), Value> {
    let status = status_of(server, env);
    if status["ready"] == true {
        Ok(())
    } else {
        Err(status)
    }
}

fn get_json(server: &Server, kind: &str, name: &str) -> Option<Value> {
    server.get_json(kind, "acme", name)
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn release_dir(agent: &Agent, name: &str) -> PathBuf {
    agent.target.join("acme").join(name)
}

#[test]
fn an_agent_registers_receives_its_releases_and_prunes_only_what_left() {
    // Production is bound directly below: its edge requires nothing here.
    let server = Platform::builder().examples().ungated().start();
    let agent = server.register_agent("acme/local", "a");
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    server.bind("api", "staging", &release, "");

    eventually("both environments are ready", PATIENCE, || {
        ready(&server, "development").and_then(|()| ready(&server, "staging"))
    });
    assert!(deployment(&agent.target, "api-development").contains("kind: Deployment"));
    assert_eq!(files(&agent.target, "api-staging").len(), API_FILES);
    let dp = get_json(&server, "dp", "local").unwrap();
    assert_eq!(dp["status"]["agentConnection"]["connected"], true, "{dp}");
    assert_eq!(
        dp["status"]["conditions"][0]["reason"], "AgentConnected",
        "{dp}"
    );
    let rel = get_json(&server, "release", "api-staging").unwrap();
    assert_eq!(
        rel["status"]["appliedGeneration"], rel["metadata"]["generation"],
        "{rel}"
    );
    assert_eq!(
        rel["status"]["resources"].as_array().unwrap().len(),
        API_FILES,
        "{rel}"
    );

    // An override reaches the files; the other environment's files are not rewritten.
    let staging_deployment = std::fs::read_dir(release_dir(&agent, "api-staging"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("deployment.apps_"))
        .unwrap();
    let before = modified(&staging_deployment);
    server.bind(
        "api",
        "development",
        &release,
        "  componentTypeEnvironmentConfigs: {replicas: 3}\n",
    );
    eventually("replicas 3 is applied", PATIENCE, || {
        deployment(&agent.target, "api-development").contains("replicas: 3")
    });
    eventually("development is ready again", PATIENCE, || {
        ready(&server, "development")
    });
    assert_eq!(modified(&staging_deployment), before);

    // Undeploy: the files go, then the Release leaves the store; the binding says why.
    server.bind("api", "development", &release, "  state: Undeploy\n");
    eventually("development is pruned", PATIENCE, || {
        !release_dir(&agent, "api-development").exists()
            && get_json(&server, "release", "api-development").is_none()
    });
    assert_eq!(status_of(&server, "development")["reason"], "Undeployed");

    // Deleting a binding prunes its release too; nothing else moves.
    let out = success(&server.cli(&["delete", "rb", "api-staging", "-n", "acme"]));
    assert!(
        out.contains("Release acme/api-staging deleted once its data plane has pruned its objects"),
        "{out}"
    );
    eventually("staging is pruned", PATIENCE, || {
        !release_dir(&agent, "api-staging").exists()
            && get_json(&server, "release", "api-staging").is_none()
    });
    assert!(
        !agent.target.join("acme").exists(),
        "empty folders are removed too"
    );

    // Deleting the project takes the bindings with it, and the agent prunes their releases.
    server.bind("api", "production", &release, "");
    eventually("production is ready", PATIENCE, || {
        ready(&server, "production")
    });
    success(&server.cli(&["delete", "project", "shop", "-n", "acme"]));
    eventually("production is pruned", PATIENCE, || {
        !release_dir(&agent, "api-production").exists()
            && get_json(&server, "release", "api-production").is_none()
    });
}

#[test]
fn a_killed_agent_catches_up_on_restart_without_reapplying_what_is_unchanged() {
    let server = Platform::builder().examples().start();
    let agent = server.register_agent("acme/local", "a");
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    eventually("development is ready", PATIENCE, || {
        ready(&server, "development")
    });
    let dev = release_dir(&agent, "api-development");
    let times: Vec<_> = std::fs::read_dir(&dev)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), modified(&e.path())))
        .collect();
    agent.kill();

    // While the agent is away, its files stay and the new binding waits for it.
    server.bind("api", "staging", &release, "");
    eventually("staging says it waits for the agent", PATIENCE, || {
        status_of(&server, "staging")["reason"] == "AgentDisconnected"
    });
    let dp = get_json(&server, "dp", "local").unwrap();
    assert_ne!(dp["status"]["agentConnection"]["connected"], true, "{dp}");

    // Restarted without a token: it reuses its identity and catches up.
    let agent = server.restart_agent("acme/local", "a");
    eventually("staging is ready", PATIENCE, || ready(&server, "staging"));
    assert_eq!(files(&agent.target, "api-staging").len(), API_FILES);
    for (path, time) in times {
        assert_eq!(modified(&path), time, "{} was rewritten", path.display());
    }
}

#[test]
fn a_control_plane_restart_prunes_nothing_and_the_agent_comes_back() {
    let mut server = Platform::builder().examples().fixed_agent_port().start();
    let agent = server.register_agent("acme/local", "a");
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    eventually("development is ready", PATIENCE, || {
        ready(&server, "development")
    });
    server.kill_server();

    // The agent keeps its files while the control plane is gone (it resyncs every second):
    // an observation window, not a wait.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(files(&agent.target, "api-development").len(), API_FILES);

    server.restart_server();
    server.bind("api", "staging", &release, "");
    eventually("staging is ready after the restart", PATIENCE, || {
        ready(&server, "staging")
    });
    success(&server.cli(&["delete", "rb", "api-development", "-n", "acme"]));
    eventually("development is pruned", PATIENCE, || {
        !release_dir(&agent, "api-development").exists()
            && get_json(&server, "release", "api-development").is_none()
    });
    assert_eq!(files(&agent.target, "api-staging").len(), API_FILES);
}

#[test]
fn cut_and_slow_connections_lose_no_update() {
    let server = Platform::builder().examples().start();
    let proxy = Proxy::start(&server.agent_addr);
    let token = server.token("acme/local", "1h");
    let agent = server.start_agent(&proxy.url(), "acme/local", "a", Some(&token));
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    eventually("development is ready", PATIENCE, || {
        ready(&server, "development")
    });

    for replicas in 2..=6 {
        if replicas == 4 {
            proxy.delay(100);
        }
        server.bind(
            "api",
            "development",
            &release,
            &format!("  componentTypeEnvironmentConfigs: {{replicas: {replicas}}}\n"),
        );
        // The cut lands at a different point of each update's delivery.
        std::thread::sleep(Duration::from_millis(30 * replicas));
        proxy.cut();
    }
    proxy.delay(0);
    eventually(
        "the last update is applied and acknowledged",
        PATIENCE,
        || {
            let rel = get_json(&server, "release", "api-development").unwrap();
            deployment(&agent.target, "api-development").contains("replicas: 6")
                && rel["status"]["appliedGeneration"] == rel["metadata"]["generation"]
                && ready(&server, "development").is_ok()
        },
    );
}

#[test]
fn an_agent_given_several_endpoints_registers_and_reconnects_through_any_that_answers() {
    let server = Platform::builder().examples().start();
    let (a, b) = (
        Proxy::start(&server.agent_addr),
        Proxy::start(&server.agent_addr),
    );
    // The first endpoint never answers; registration and streams go on past it.
    let dead = format!("https://127.0.0.1:{}", free_port());
    let token = server.token("acme/local", "1h");
    let endpoints = format!("{dead}, {},{}", a.url(), b.url());
    let agent = server.start_agent(&endpoints, "acme/local", "a", Some(&token));
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    eventually("development is ready", PATIENCE, || {
        ready(&server, "development")
    });
    // Each replica goes down in turn, so whichever the agent was on, it moves to the other.
    for (down, up, replicas) in [(&a, &b, 2), (&b, &a, 3)] {
        up.set_down(false);
        down.set_down(true);
        server.bind(
            "api",
            "development",
            &release,
            &format!("  componentTypeEnvironmentConfigs: {{replicas: {replicas}}}\n"),
        );
        eventually(
            "the update arrives through the other endpoint",
            PATIENCE,
            || {
                deployment(&agent.target, "api-development")
                    .contains(&format!("replicas: {replicas}"))
            },
        );
    }
}

#[test]
fn credentials_are_checked_and_an_agent_sees_only_its_own_data_plane() {
    let server = Platform::builder().examples().start();
    let dir = server.root();
    let run_agent = |data_plane: &str, token: &str, name: &str| {
        Command::new(troupe_agent_bin())
            .args([
                "--control-plane",
                &server.agent_url(),
                "--dataplane",
                data_plane,
            ])
            .args(["--token", token, "--apply"])
            .arg(format!("dir:{}", dir.join(name).display()))
            .arg("--state-dir")
            .arg(dir.join(format!("{name}-state")))
            .output()
            .unwrap()
    };
    // A token made for another data plane.
    let edge_token = server.token("acme/edge", "1h");
    let out = run_agent("acme/local", &edge_token, "x");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("registers data plane acme/edge, not acme/local")
            && stderr(&out).contains("PermissionDenied"),
        "{}",
        stderr(&out)
    );
    // An expired token.
    let short = server.token("acme/local", "1s");
    // The token's lifetime running out is the point, so this is time passing, not a wait.
    std::thread::sleep(Duration::from_millis(2100));
    let out = run_agent("acme/local", &short, "y");
    assert!(
        stderr(&out).contains("has expired") && stderr(&out).contains("Unauthenticated"),
        "{}",
        stderr(&out)
    );
    // No client certificate: the stream is refused.
    let out = Command::new(troupe_tests::grpcurl_bin())
        .args(["-insecure", "-import-path"])
        .arg(workspace_root().join("proto"))
        .args(["-proto", "troupe/v1alpha1/agent_service.proto", "-d", "{}"])
        .args([&server.agent_addr, "troupe.v1alpha1.AgentService/Session"])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("Unauthenticated"), "{}", stderr(&out));

    // The edge agent (registered as DataPlane acme/edge, created at registration) gets
    // nothing of acme/local's releases.
    let local = server.register_agent("acme/local", "local");
    let edge = server.start_agent(&server.agent_url(), "acme/edge", "edge", Some(&edge_token));
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    eventually("edge is connected and development ready", PATIENCE, || {
        let edge = get_json(&server, "dp", "edge");
        edge.is_some_and(|dp| dp["status"]["agentConnection"]["connected"] == true)
            && ready(&server, "development").is_ok()
    });
    assert_eq!(files(&local.target, "api-development").len(), API_FILES);
    assert!(!edge.target.join("acme").exists());

    // A second agent with local's identity displaces the first; one session at a time, and
    // the survivor gets every later change.
    copy_dir(&local.state_dir, &server.agent_state_dir("twin"));
    let twin = server.restart_agent("acme/local", "twin");
    eventually("the twin holds development too", PATIENCE, || {
        files(&twin.target, "api-development").len() == API_FILES
    });
    let dp = get_json(&server, "dp", "local").unwrap();
    assert_eq!(
        dp["status"]["agentConnection"]["connectedAgents"], 1,
        "{dp}"
    );
    local.kill();
    server.bind("api", "staging", &release, "");
    eventually("the twin gets staging", PATIENCE, || {
        files(&twin.target, "api-staging").len() == API_FILES && ready(&server, "staging").is_ok()
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn an_oversized_release_fails_alone() {
    let server = Platform::builder()
        .examples()
        .args(&["--agent-max-release-bytes", "40000"])
        .start();
    let agent = server.register_agent("acme/local", "a");
    let release = server.cut_release("api");
    let big = "x".repeat(60_000);
    server.bind(
        "api",
        "development",
        &release,
        &format!("  workloadOverrides: {{container: {{env: [{{key: BIG, value: {big}}}]}}}}\n"),
    );
    server.bind("api", "staging", &release, "");
    eventually("staging is ready and development failed", PATIENCE, || {
        ready(&server, "staging").is_ok()
            && status_of(&server, "development")["reason"] == "ApplyFailed"
    });
    let dev = status_of(&server, "development");
    assert!(
        dev["message"]
            .as_str()
            .unwrap()
            .contains("--agent-max-release-bytes"),
        "{dev}"
    );
    let rb = get_json(&server, "rb", "api-development").unwrap();
    let degraded = rb["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap();
    assert_eq!(degraded["status"], "True", "{rb}");
    assert!(files(&agent.target, "api-development").is_empty());

    // Shrunk back under the limit, it goes through.
    server.bind("api", "development", &release, "");
    eventually("development is ready", PATIENCE, || {
        ready(&server, "development")
    });
}

#[test]
fn dev_mode_applies_a_new_component_to_its_local_directory() {
    let server = Platform::builder().dev().start();
    let component = "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: hello, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/service}
  autoDeploy: true
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {name: hello, namespace: acme}
spec:
  owner: {projectName: shop, componentName: hello}
  container: {image: ghcr.io/acme/hello:1.0.0}
";
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(component)));
    let local = server.data_dir.join("dataplane-local").join("acme");
    eventually("hello is ready in development", PATIENCE, || {
        let out = server.cli(&["status", "hello", "-n", "acme", "-o", "json"]);
        let Ok(doc) = serde_json::from_str::<Value>(&stdout(&out)) else {
            return false;
        };
        doc["environments"][0]["environment"] == "development"
            && doc["environments"][0]["ready"] == true
    });
    let written: Vec<String> = std::fs::read_dir(&local)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        written.iter().any(|d| d.starts_with("hello")),
        "{written:?}"
    );
}

#[test]
fn a_cluster_data_plane_agent_serves_the_environments_on_it() {
    let server = Platform::builder().examples().start();
    // A ClusterDataPlane with the example's gateways, claimed by its agent at registration
    // (a token for a bare `NAME` is a ClusterDataPlane's); the `edge` environment is on it.
    let local = server.cli(&["get", "dp", "local", "-n", "acme", "-o", "json"]);
    let spec = serde_json::from_str::<Value>(&stdout(&local)).unwrap()["spec"].to_string();
    let shared = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: ClusterDataPlane
metadata: {{name: shared}}
spec: {spec}
---
apiVersion: troupe.dev/v1alpha1
kind: Environment
metadata: {{name: edge, namespace: acme}}
spec: {{dataPlaneRef: {{kind: ClusterDataPlane, name: shared}}}}
"
    );
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&shared)));
    let agent = server.register_agent("shared", "shared");
    let release = server.cut_release("api");
    server.bind("api", "edge", &release, "");
    server.bind("api", "development", &release, "");
    eventually("edge is ready", PATIENCE, || ready(&server, "edge"));
    assert_eq!(files(&agent.target, "api-edge").len(), API_FILES);
    // development is on acme/local, which has no agent: the shared agent never sees it.
    eventually("development waits for its own agent", PATIENCE, || {
        status_of(&server, "development")["reason"] == "AgentDisconnected"
    });
    assert!(files(&agent.target, "api-development").is_empty());
    let cdp = server.cli(&["get", "cdp", "shared", "-o", "json"]);
    let cdp: Value = serde_json::from_str(&stdout(&cdp)).unwrap();
    assert_eq!(cdp["status"]["agentConnection"]["connected"], true, "{cdp}");
}
