//! The Job an attempt runs as: one Pod, one container per step, the steps in order as init
//! containers and the last as the Pod's container, so each starts only once the one before it
//! exited 0, and the first that fails ends the Pod. The steps share an `emptyDir` workspace;
//! each reports its outputs in its own termination message. Nothing goes through a shell:
//! a step's argv is the container's `command`, its environment the container's `env`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};

use super::KubeConfig;
use crate::builds::RunSpec;

/// Where the workspace volume is mounted in every step's container.
pub(super) const WORKSPACE: &str = "/workspace";

/// Where a step writes `NAME=VALUE` output lines: its container's termination message,
/// which the kubelet reports in the Pod's status when it exits (4 KiB at most).
pub(super) const OUTPUTS: &str = "/dev/termination-log";

/// The label every build Job and Pod carries.
pub(super) const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "troupe-agent");

/// The annotation naming the run (`NAMESPACE/NAME`: a label value cannot hold the `/`).
pub(super) const RUN_ANNOTATION: &str = "troupe.dev/run";

/// The longest Job name: its Pods carry it as a label value.
const MAX_NAME: usize = 63;

/// The Job's name for an attempt: `build-`, the run's name as far as it fits, a hash of the
/// whole run id (two runs never share a name) and the attempt: `build-api-7-1f0c9a2e-2`.
pub(super) fn job_name(run: &str, attempt: u32) -> String {
    let hash = troupe_common::fnv::fnv1a(run.as_bytes());
    let tail = format!("-{:08x}-{attempt}", hash as u32);
    let base = run.rsplit('/').next().unwrap_or(run);
    let mut slug: String = base
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    slug.truncate(MAX_NAME - "build-".len() - tail.len());
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        format!("build{tail}")
    } else {
        format!("build-{slug}{tail}")
    }
}

/// Whether `name` can name a container: a DNS label.
pub(super) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The Job of `spec` in `config.namespace`, named `name`.
pub(super) fn build(spec: &RunSpec, name: &str, config: &KubeConfig) -> Job {
    let labels = json!({
        MANAGED_BY.0: MANAGED_BY.1,
        "troupe.dev/build-attempt": spec.attempt.to_string(),
    });
    let annotations = json!({ RUN_ANNOTATION: spec.run });
    let mut containers: Vec<Value> = spec
        .steps
        .iter()
        .map(|step| {
            let mut env = vec![
                ("TROUPE_RUN", spec.run.clone()),
                ("TROUPE_ATTEMPT", spec.attempt.to_string()),
                ("TROUPE_STEP", step.name.clone()),
                ("TROUPE_WORKSPACE", WORKSPACE.to_string()),
                ("TROUPE_OUTPUTS", OUTPUTS.to_string()),
            ];
            if !step.env.iter().any(|(n, _)| n == "HOME") {
                env.push(("HOME", WORKSPACE.to_string()));
            }
            let env: Vec<Value> = env
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .chain(step.env.iter().cloned())
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect();
            let working_dir = match &step.working_dir {
                Some(dir) => format!("{WORKSPACE}/{}", dir.display()),
                None => WORKSPACE.to_string(),
            };
            json!({
                "name": step.name,
                "image": step.image.as_deref().unwrap_or(&config.default_image),
                "imagePullPolicy": "IfNotPresent",
                "command": step.command,
                "env": env,
                "workingDir": working_dir,
                "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
                "terminationMessagePath": OUTPUTS,
                "terminationMessagePolicy": "File",
            })
        })
        .collect();
    let last = containers.pop().expect("a validated run has a step");
    let mut pod = json!({
        "restartPolicy": "Never",
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": config.cancel_grace.as_secs(),
        "initContainers": containers,
        "containers": [last],
        "volumes": [{"name": "workspace", "emptyDir": {}}],
    });
    match &config.service_account {
        Some(account) => pod["serviceAccountName"] = json!(account),
        None => pod["automountServiceAccountToken"] = json!(false),
    }
    let mut job_spec = json!({
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": 3600,
        "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod},
    });
    if let Some(timeout) = spec.timeout {
        // A backstop if this agent goes away: the cluster ends the Pod a little after the
        // agent would have.
        let slack = config.cancel_grace + Duration::from_secs(60);
        job_spec["activeDeadlineSeconds"] = json!((timeout + slack).as_secs());
    }
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": config.namespace,
                     "labels": labels, "annotations": annotations},
        "spec": job_spec,
    });
    serde_json::from_value(job).expect("a Job built from known fields")
}

/// The outputs in a step's termination message, merged into `into` (a later step's value for
/// a name wins, as a later line does in the process executor's outputs file).
pub(super) fn merge_outputs(
    into: &mut BTreeMap<String, String>,
    step: &str,
    message: &str,
) -> Result<(), String> {
    let outputs = crate::builds::outputs::parse(message)
        .map_err(|why| format!("step {step:?} wrote a bad termination message: {why}"))?;
    into.extend(outputs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::StepSpec;

    fn mk_config() -> KubeConfig {
        KubeConfig {
            namespace: "troupe-builds".into(),
            ..KubeConfig::default()
        }
    }

    #[test]
    fn names_are_dns_labels_and_distinct() {
        assert_eq!(
            job_name("acme/api-7", 2).len(),
            "build-api-7-".len() + 8 + 2
        );
        assert!(job_name("acme/api-7", 2).starts_with("build-api-7-"));
        let long = format!("acme/{}", "Very_Long.Name".repeat(10));
        for name in [
            job_name(&long, 4_000_000_000),
            job_name("acme/---", 1),
            job_name("x/API", 1),
        ] {
            assert!(is_dns_label(&name), "{name}");
        }
        assert_ne!(job_name("acme/api", 1), job_name("shop/api", 1));
        assert_ne!(job_name("acme/api", 1), job_name("acme/api", 2));
        assert_eq!(job_name("acme/api", 1), job_name("acme/api", 1));
    }

    #[test]
    fn steps_are_init_containers_then_the_last_one_with_argv_and_env_as_given() {
        let hostile = "$(touch /tmp/pwned); `id` && echo \"x\"";
        let spec = RunSpec::new(
            "acme/api-7",
            3,
            vec![
                StepSpec::new("fetch", ["git", "clone", hostile])
                    .with_image("alpine/git:2.47")
                    .with_env("REF", hostile),
                StepSpec::new("build", ["make", "image"]).with_working_dir("src/app"),
            ],
        )
        .with_timeout(Duration::from_secs(600));
        let job = serde_json::to_value(build(&spec, "build-x", &mk_config())).unwrap();
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 600 + 10 + 60);
        let fetch = &pod["initContainers"][0];
        assert_eq!(fetch["name"], "fetch");
        assert_eq!(fetch["image"], "alpine/git:2.47");
        assert_eq!(fetch["command"], json!(["git", "clone", hostile]));
        assert!(fetch.get("args").is_none());
        let env = fetch["env"].as_array().unwrap();
        assert!(env.contains(&json!({"name": "REF", "value": hostile})));
        assert!(env.contains(&json!({"name": "TROUPE_STEP", "value": "fetch"})));
        assert!(env.contains(&json!({"name": "TROUPE_OUTPUTS", "value": OUTPUTS})));
        assert_eq!(fetch["terminationMessagePath"], OUTPUTS);
        let build = &pod["containers"][0];
        assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
        assert_eq!(build["name"], "build");
        assert_eq!(build["image"], KubeConfig::default().default_image);
        assert_eq!(build["workingDir"], "/workspace/src/app");
        assert_eq!(build["volumeMounts"][0]["mountPath"], WORKSPACE);
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(job["metadata"]["annotations"][RUN_ANNOTATION], "acme/api-7");
    }

    #[test]
    fn outputs_merge_in_step_order() {
        let mut outputs = BTreeMap::new();
        merge_outputs(&mut outputs, "a", "image=r/app:1\ndigest=sha256:1\n").unwrap();
        merge_outputs(&mut outputs, "b", "image=r/app:2").unwrap();
        assert_eq!(outputs["image"], "r/app:2");
        assert_eq!(outputs["digest"], "sha256:1");
        let bad = merge_outputs(&mut outputs, "c", "not a pair").unwrap_err();
        assert!(bad.contains("step \"c\""), "{bad}");
    }
}
