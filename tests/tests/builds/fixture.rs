//! The platform the build tests share: the examples, a data plane `acme/builder` whose agent
//! runs builds as local processes (`--workflows process`), workflows whose steps wait on a
//! file, fail, sleep past their timeout or echo a parameter, and a component type `built`
//! that allows them. Each test builds its own component, so tests do not see each other's
//! runs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{Value, json};
use troupe_control_plane::builds::webhook::hmac_sha256;
use troupe_tests::{PATIENCE, Platform, check, eventually, free_port, stdout, success};

/// The build data plane, a component type allowing the test workflows, and the workflows.
pub const BUILD_YAML: &str = r#"apiVersion: troupe.dev/v1alpha1
kind: DataPlane
metadata: {name: builder, namespace: acme}
spec: {planeId: builder}
---
apiVersion: troupe.dev/v1alpha1
kind: Workflow
metadata: {name: gated, namespace: acme}
spec:
  parameters:
    type: object
    properties:
      gate: {type: string}
      registry: {type: string, default: registry.local/acme}
    required: [gate]
  retries: 1
  steps:
    - name: wait
      env: {GATE: "${{ parameters.gate }}"}
      script: |
        echo "waiting for the gate"
        i=0
        while [ ! -e "$GATE" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
        echo "through the gate"
    - name: publish
      env:
        IMAGE: "${{ parameters.registry }}/${{ component.name }}:${{ source.commit }}"
      script: |
        for i in 1 2 3; do echo "layer $i pushed"; done
        echo "image=$IMAGE" >> "$TROUPE_OUTPUTS"
        echo "digest=sha256:0123456789abcdef" >> "$TROUPE_OUTPUTS"
---
apiVersion: troupe.dev/v1alpha1
kind: Workflow
metadata: {name: fails, namespace: acme}
spec:
  steps:
    - {name: compile, script: "echo compiling; exit 3"}
    - {name: never, script: "echo never runs"}
---
apiVersion: troupe.dev/v1alpha1
kind: Workflow
metadata: {name: slow, namespace: acme}
spec:
  steps:
    - {name: test, timeout: 1s, script: "echo testing; sleep 30"}
---
apiVersion: troupe.dev/v1alpha1
kind: Workflow
metadata: {name: sleeps, namespace: acme}
spec:
  parameters:
    type: object
    properties: {pidfile: {type: string}}
  steps:
    - name: sleep
      env: {PIDFILE: "${{ parameters.pidfile }}"}
      script: |
        echo $$ > "$PIDFILE"
        echo sleeping
        exec sleep 1000
---
apiVersion: troupe.dev/v1alpha1
kind: Workflow
metadata: {name: echoes, namespace: acme}
spec:
  parameters:
    type: object
    properties: {message: {type: string, default: hello}}
  steps:
    - name: say
      command: [printf, "%s\n", "${{ parameters.message }}"]
    - name: publish
      env: {MESSAGE: "${{ parameters.message }}"}
      script: |
        printf '%s\n' "$MESSAGE" > "$TROUPE_WORKSPACE/message"
        echo "image=registry.local/acme/echo:1" >> "$TROUPE_OUTPUTS"
---
apiVersion: troupe.dev/v1alpha1
kind: Workflow
metadata: {name: brief, namespace: acme}
spec:
  ttlAfterCompletion: 1s
  steps:
    - {name: say, script: "echo short-lived; echo image=registry.local/acme/brief:1 >> \"$TROUPE_OUTPUTS\""}
---
apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {name: built, namespace: acme}
spec:
  workloadType: deployment
  allowedWorkflows:
    - {name: gated}
    - {name: fails}
    - {name: slow}
    - {name: sleeps}
    - {name: echoes}
    - {name: brief}
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
              containers: [{name: main, image: "${{ workload.container.image }}"}]
"#;

/// A component of type `built` in project shop, built by `workflow` with `parameters`
/// (a YAML flow mapping), deployed on every change when `auto_deploy`.
pub fn component(name: &str, workflow: &str, parameters: &str, auto_deploy: bool) -> String {
    format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: {name}, namespace: acme}}
spec:
  owner: {{projectName: shop}}
  componentType: {{name: deployment/built}}
  autoDeploy: {auto_deploy}
  workflow:
    name: {workflow}
    parameters: {parameters}
    repository: https://github.com/acme/{name}
"
    )
}

/// The shared platform: directory agent `local` for `acme/local`, build agent `builder`.
pub struct Fixture {
    pub platform: Platform,
    /// The push webhook's address.
    pub webhook: std::net::SocketAddr,
    /// Where tests put their gate files and pid files.
    pub scratch: tempfile::TempDir,
}

/// The fixture, started by the first test that asks and shared while any test holds it.
pub fn fixture() -> Arc<Fixture> {
    static SHARED: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(fixture) = shared.upgrade() {
        return fixture;
    }
    let webhook = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let platform = Platform::builder()
        .args(&["--webhook-addr", &webhook.to_string()])
        .examples()
        .apply(BUILD_YAML)
        .agent("acme/local", "local")
        .start();
    let builder = platform.register_agent_with(
        "acme/builder",
        "builder",
        &["--workflows", "process", "--build-capacity", "4"],
    );
    let mut platform = platform;
    platform.agents.push(builder);
    let fixture = Arc::new(Fixture {
        platform,
        webhook,
        scratch: tempfile::tempdir().expect("a scratch directory"),
    });
    *shared = Arc::downgrade(&fixture);
    fixture
}

impl Fixture {
    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

/// `troupe build COMPONENT -n acme ARGS…`; the run's name.
pub fn build(platform: &Platform, component: &str, args: &[&str]) -> String {
    let mut all = vec!["build", component, "-n", "acme"];
    all.extend_from_slice(args);
    let out = success(&platform.cli(&all));
    out.trim()
        .strip_prefix("workflowrun/")
        .and_then(|rest| rest.strip_suffix(" created"))
        .unwrap_or_else(|| panic!("troupe build printed {out:?}"))
        .to_string()
}

/// The run, as `troupe get -o json` shows it.
pub fn run(platform: &Platform, name: &str) -> Value {
    platform
        .get_json("workflowrun", "acme", name)
        .unwrap_or_else(|| panic!("workflowrun {name} is missing"))
}

/// Waits until run `name` is in `phase`; returns it.
pub fn wait_phase(platform: &Platform, name: &str, phase: &str) -> Value {
    wait_phase_for(platform, name, phase, PATIENCE)
}

/// [`wait_phase`] with its own patience.
pub fn wait_phase_for(platform: &Platform, name: &str, phase: &str, patience: Duration) -> Value {
    eventually(&format!("run {name} is {phase}"), patience, || {
        check(run(platform, name), |r| r["status"]["phase"] == phase)
    })
}

/// `troupe logs RUN -n acme ARGS…`, its standard output.
pub fn logs(platform: &Platform, name: &str, args: &[&str]) -> String {
    let mut all = vec!["logs", name, "-n", "acme"];
    all.extend_from_slice(args);
    stdout(&platform.cli(&all))
}

/// The GitHub signature of `body` with `secret` (`X-Hub-Signature-256`).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mac = hmac_sha256(secret.as_bytes(), body);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A GitHub push of `commit` to `repository`'s main branch, as `acme/hooked`.
pub fn push(repository: &str, commit: &str) -> Vec<u8> {
    json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": commit,
        "repository": {
            "full_name": "acme/hooked",
            "html_url": repository,
            "clone_url": format!("{repository}.git"),
        },
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
    })
    .to_string()
    .into_bytes()
}

/// The WorkflowRuns of `component` in acme.
pub fn runs_of(p: &Platform, component: &str) -> Vec<Value> {
    let label = format!("troupe.dev/component={component}");
    let out = success(&p.cli(&[
        "get",
        "workflowruns",
        "-n",
        "acme",
        "-l",
        &label,
        "-o",
        "json",
    ]));
    let listed: Value = serde_json::from_str(&out).expect("JSON from troupe get");
    listed["items"].as_array().cloned().unwrap_or_default()
}
