//! `dataplane-agent/deploy/` against the real `troupe-agent`: every manifest parses, the RBAC is
//! what `--print-rbac` prints, the Deployment names only flags and variables the binary
//! accepts and objects the other manifests define, and the probe paths it asks for are the
//! ones the agent answers: `/healthz` while it runs, `/readyz` only while it holds a synced
//! stream to a control plane.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use troupe_tests::{PATIENCE, Platform, eventually, success, troupe_agent_bin, workspace_root};

fn deploy_dir() -> PathBuf {
    workspace_root().join("dataplane-agent/deploy")
}

fn read(name: &str) -> String {
    let path = deploy_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The YAML documents of `name`.
fn documents(name: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(name))
        .unwrap_or_else(|e| panic!("{name} does not parse: {e}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The one document of `kind` in `name`.
fn document(name: &str, kind: &str) -> Value {
    let found: Vec<Value> = documents(name)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "{name}: expected one {kind}");
    found.into_iter().next().unwrap()
}

fn yaml_files() -> BTreeSet<String> {
    std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect()
}

fn agent_container() -> Value {
    let deployment = document("deployment.yaml", "Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0].clone()
}

/// The value of `--flag=VALUE` in the container's arguments.
fn arg(container: &Value, flag: &str) -> String {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix(&format!("{flag}=")))
        .next()
        .unwrap_or_else(|| panic!("no {flag}=… in the Deployment's args"))
        .to_string()
}

#[test]
fn every_manifest_parses_and_the_kustomization_installs_all_but_the_secret() {
    for name in yaml_files() {
        let docs = documents(&name);
        assert!(!docs.is_empty(), "{name} holds no document");
        for doc in docs {
            assert!(doc["apiVersion"].is_string(), "{name}: no apiVersion");
            assert!(doc["kind"].is_string(), "{name}: no kind");
            if doc["kind"] == "Kustomization" {
                continue;
            }
            assert!(doc["metadata"]["name"].is_string(), "{name}: no name");
            let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"];
            if !cluster_scoped.iter().any(|k| doc["kind"] == *k) {
                assert_eq!(doc["metadata"]["namespace"], "troupe-system", "{name}");
            }
        }
    }
    let kustomization = document("kustomization.yaml", "Kustomization");
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let mut expected = yaml_files();
    // The token is created by hand: applying the template would overwrite it.
    expected.remove("secret.yaml");
    expected.remove("kustomization.yaml");
    assert_eq!(listed, expected);
    assert!(deploy_dir().join("Containerfile").is_file());
}

#[test]
fn rbac_yaml_is_what_print_rbac_prints() {
    let printed = success(
        &Command::new(troupe_agent_bin())
            .arg("--print-rbac")
            .output()
            .unwrap(),
    );
    assert!(
        read("rbac.yaml") == printed,
        "dataplane-agent/deploy/rbac.yaml is stale: regenerate it with \
         `troupe-agent --print-rbac > dataplane-agent/deploy/rbac.yaml`; it prints:\n{printed}"
    );
    let binding = document("rbac.yaml", "ClusterRoleBinding");
    let account = document("serviceaccount.yaml", "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        account["metadata"]["namespace"]
    );
    let deployment = document("deployment.yaml", "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );
}

#[test]
fn the_deployment_names_only_flags_variables_and_objects_that_exist() {
    let help = success(
        &Command::new(troupe_agent_bin())
            .arg("--help")
            .output()
            .unwrap(),
    );
    let flags: BTreeSet<&str> = help
        .split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .filter(|w| w.starts_with("--"))
        .collect();
    let container = agent_container();
    let args = container["args"].as_array().unwrap();
    assert!(!args.is_empty());
    for a in args {
        let flag = a.as_str().unwrap().split('=').next().unwrap();
        assert!(flags.contains(flag), "troupe-agent has no {flag}:\n{help}");
    }
    let env = container["env"].as_array().unwrap();
    for var in env {
        let name = var["name"].as_str().unwrap();
        assert!(
            help.contains(&format!("[env: {name}=")),
            "troupe-agent reads no {name}:\n{help}"
        );
    }

    // The objects it refers to are the ones the other manifests define.
    let token = env
        .iter()
        .find(|v| v["name"] == "TROUPE_AGENT_TOKEN")
        .expect("the token comes from the environment");
    let secret = document("secret.yaml", "Secret");
    let key = &token["valueFrom"]["secretKeyRef"];
    assert_eq!(key["name"], secret["metadata"]["name"]);
    assert!(secret["stringData"][key["key"].as_str().unwrap()].is_string());
    assert_eq!(
        key["optional"], true,
        "the token is needed on the first start only"
    );
    let pod = document("deployment.yaml", "Deployment")["spec"]["template"]["spec"].clone();
    let pvc = document("pvc.yaml", "PersistentVolumeClaim");
    let volumes = pod["volumes"].as_array().unwrap();
    let state_volume = volumes
        .iter()
        .find(|v| v["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"])
        .expect("a volume of the state claim");
    let mounted_at = |volume: &Value| {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume["name"])
            .map(|m| PathBuf::from(m["mountPath"].as_str().unwrap()))
    };
    assert_eq!(
        mounted_at(state_volume),
        Some(PathBuf::from(arg(&container, "--state-dir"))),
        "--state-dir is the state claim's mount"
    );
    let ca = env
        .iter()
        .find(|v| v["name"] == "TROUPE_AGENT_CA_CERT")
        .expect("the CA file");
    let ca_path = PathBuf::from(ca["value"].as_str().unwrap());
    assert!(
        volumes
            .iter()
            .filter(|v| v["configMap"].is_object())
            .filter_map(mounted_at)
            .any(|dir| ca_path.parent() == Some(dir.as_path())),
        "{} is not in a mounted ConfigMap",
        ca_path.display()
    );

    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let deployment = document("deployment.yaml", "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
}

/// The probe paths of the Deployment, and the port its `--health-addr` serves them on.
fn probe_paths() -> (String, String) {
    let container = agent_container();
    let health_port: u16 = arg(&container, "--health-addr")
        .parse::<SocketAddr>()
        .expect("--health-addr is HOST:PORT")
        .port();
    let port_named = |name: &Value| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *name)
            .and_then(|p| p["containerPort"].as_u64())
    };
    let path = |probe: &str| {
        let get = &container[probe]["httpGet"];
        assert_eq!(
            port_named(&get["port"]),
            Some(u64::from(health_port)),
            "{probe} asks another port than --health-addr's"
        );
        get["path"].as_str().unwrap().to_string()
    };
    (path("livenessProbe"), path("readinessProbe"))
}

/// `GET path` on `addr`: the status code and the body, or why there is none.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    troupe_tests::http::get(addr, path).map(|r| (r.code, r.body.trim_end().to_string()))
}

/// Waits until `GET path` answers `code`, and returns the body.
fn answers(addr: SocketAddr, path: &str, code: u16, what: &str) -> String {
    eventually(what, PATIENCE, || {
        get(addr, path).and_then(|(seen, body)| match seen == code {
            true => Ok(body),
            false => Err(format!("{seen} {body}")),
        })
    })
}

/// A `troupe-agent` serving probes on `health`, killed when dropped.
struct ProbedAgent(Child);

impl ProbedAgent {
    fn start(control_plane: &str, token: Option<&str>, root: &Path, health: SocketAddr) -> Self {
        let mut command = Command::new(troupe_agent_bin());
        command
            .args([
                "--control-plane",
                control_plane,
                "--dataplane",
                "acme/local",
            ])
            .arg("--state-dir")
            .arg(root.join("probed-state"))
            .arg("--apply")
            .arg(format!("dir:{}", root.join("probed-target").display()))
            .args(["--health-addr", &health.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        Self(command.spawn().expect("starting troupe-agent"))
    }
}

impl Drop for ProbedAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

#[test]
fn the_agent_is_live_while_it_runs_and_ready_only_while_connected_and_synced() {
    let (healthz, readyz) = probe_paths();
    let mut server = Platform::builder().examples().fixed_agent_port().start();
    let token = server.token("acme/local", "1h");
    let health = free_addr();
    let agent = ProbedAgent::start(&server.agent_url(), Some(&token), server.root(), health);
    answers(health, &healthz, 200, "the agent is live");
    answers(health, &readyz, 200, "the agent is ready");

    server.kill_server();
    let why = answers(
        health,
        &readyz,
        503,
        "the agent is unready without its control plane",
    );
    assert!(why.starts_with("not connected: "), "{why}");
    assert_eq!(get(health, &healthz), Ok((200, "ok".into())));

    // Started again with its identity while no control plane exists: live, never ready.
    drop(agent);
    let health = free_addr();
    let _agent = ProbedAgent::start(&server.agent_url(), None, server.root(), health);
    answers(health, &healthz, 200, "the restarted agent is live");
    let why = eventually(
        "the restarted agent has failed to connect, and says so",
        PATIENCE,
        || match get(health, &readyz) {
            Ok((503, why)) if why.starts_with("not connected: connecting to ") => Ok(why),
            seen => Err(format!("{seen:?}")),
        },
    );
    assert!(why.contains(&server.agent_url()), "{why}");

    server.restart_server();
    answers(
        health,
        &readyz,
        200,
        "the agent is ready once the control plane is back",
    );
    assert_eq!(get(health, "/nothing").map(|(code, _)| code), Ok(404));
}
