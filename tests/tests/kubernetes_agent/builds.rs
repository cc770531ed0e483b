//! A build through the real agent with `--workflows kubernetes`: `troupe build` makes a run,
//! the agent runs it as a Job in its cluster (the test playing the kubelet), `troupe logs`
//! shows what the containers wrote, and the image the last step reported lands on the
//! Workload.

use serde_json::Value;
use troupe_tests::{PATIENCE, Platform, check, eventually, stdout, success};

use super::mk_cluster;

/// The build data plane, a workflow of two container steps, a type allowing it, a component.
const YAML: &str = r#"apiVersion: troupe.dev/v1alpha1
kind: DataPlane
metadata: {name: builder, namespace: acme}
spec: {planeId: builder}
---
apiVersion: troupe.dev/v1alpha1
kind: Workflow
metadata: {name: containers, namespace: acme}
spec:
  parameters:
    type: object
    properties: {registry: {type: string, default: registry.local/acme}}
  outputs: [image]
  steps:
    - name: compile
      image: golang:1.23
      command: [go, build, ./...]
    - name: publish
      image: gcr.io/kaniko-project/executor:v1.23.2
      command: [/kaniko/executor, "--destination=${{ parameters.registry }}/${{ component.name }}:${{ source.commit }}"]
---
apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {name: contained, namespace: acme}
spec:
  workloadType: deployment
  allowedWorkflows: [{name: containers}]
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
---
apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: kiln, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/contained}
  workflow: {name: containers, repository: https://github.com/acme/kiln}
"#;

const COMMIT: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

fn run(platform: &Platform, name: &str) -> Value {
    platform
        .get_json("workflowrun", "acme", name)
        .expect("the run")
}

#[test]
fn a_build_runs_as_a_job_and_its_image_lands_on_the_workload() {
    let (_runtime, kube) = mk_cluster();
    let platform = Platform::builder().examples().apply(YAML).start();
    let _agent = platform.register_kube_agent_with(
        "acme/builder",
        "builder",
        &kube,
        1,
        &["--workflows", "kubernetes", "--build-namespace", "ci"],
    );
    let out = success(&platform.cli(&["build", "kiln", "-n", "acme", "--commit", COMMIT]));
    let name = out
        .trim()
        .strip_prefix("workflowrun/")
        .and_then(|rest| rest.strip_suffix(" created"))
        .unwrap_or_else(|| panic!("troupe build printed {out:?}"))
        .to_string();

    let (job, pod) = eventually("the run's Job and Pod in namespace ci", PATIENCE, || {
        let jobs = kube.list("jobs", "ci");
        let job = check(jobs, |j| j.len() == 1)?[0]["metadata"]["name"].clone();
        let job = job.as_str().unwrap().to_string();
        let pods = check(kube.pods_of_job("ci", &job), |p| p.len() == 1)?;
        Ok::<_, String>((
            job,
            pods[0]["metadata"]["name"].as_str().unwrap().to_string(),
        ))
    });
    let spec = kube.get("jobs", "ci", &job).unwrap()["spec"]["template"]["spec"].clone();
    let destination = format!("--destination=registry.local/acme/kiln:{COMMIT}");
    assert_eq!(spec["containers"][0]["command"][1], destination.as_str());
    assert_eq!(spec["initContainers"][0]["image"], "golang:1.23");

    kube.start_container("ci", &pod, "compile");
    kube.write_log("ci", &pod, "compile", &["ok  \tgithub.com/acme/kiln\t0.4s"]);
    eventually("the run is Running with its first line", PATIENCE, || {
        let logs = stdout(&platform.cli(&["logs", &name, "-n", "acme"]));
        check(logs, |l| l.contains("[compile] ok"))
    });
    assert_eq!(run(&platform, &name)["status"]["phase"], "Running");
    kube.finish_container("ci", &pod, "compile", 0, "");
    kube.start_container("ci", &pod, "publish");
    kube.write_log("ci", &pod, "publish", &["pushed"]);
    let image = format!("registry.local/acme/kiln:{COMMIT}");
    let outputs = format!("image={image}\ndigest=sha256:feed\n");
    kube.finish_container("ci", &pod, "publish", 0, &outputs);

    let done = eventually("the run Succeeds", PATIENCE, || {
        check(run(&platform, &name), |r| {
            r["status"]["phase"] == "Succeeded"
        })
    });
    assert_eq!(done["status"]["outputs"]["image"], image.as_str());
    let logs = stdout(&platform.cli(&["logs", &name, "-n", "acme"]));
    assert_eq!(
        logs,
        "[compile] ok  \tgithub.com/acme/kiln\t0.4s\n[publish] pushed\n"
    );
    let workload = platform
        .get_json("workload", "acme", "kiln")
        .expect("kiln's Workload");
    assert_eq!(workload["spec"]["container"]["image"], image.as_str());
    assert_eq!(workload["spec"]["build"]["digest"], "sha256:feed");
    eventually("the finished Job is deleted", PATIENCE, || {
        check(kube.get("jobs", "ci", &job), Option::is_none)
    });
}
