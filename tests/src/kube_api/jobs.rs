//! Jobs and their Pods, as the cluster's own actors handle them: the API server validates a
//! new Job's pod template; the job controller gives each new Job one Pod and mirrors the
//! Pod's end in the Job's status; the garbage collector takes a deleted Job's Pods with it,
//! unless the delete orphans them (the default for `batch/v1` Jobs when no propagation policy
//! is given, as on a real cluster). What runs in the Pod is played by the test through
//! [`super::KubeApi`]'s kubelet methods ([`super::kubelet`]).

use serde_json::{Value, json};

use super::kinds::Kind;
use super::store::{Entry, Failure, Key, Store, now};

/// The label the job controller puts on a Job's Pods (besides the older `job-name`).
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// Refuses a new Job whose pod template a real API server refuses: a restart policy other
/// than `Never` or `OnFailure`, no containers, a container without a name or image, or two
/// containers (init containers included) with one name.
pub(crate) fn check_new(kind: &Kind, name: &str, job: &Value) -> Result<(), Failure> {
    if !kind.is("batch", "Job") {
        return Ok(());
    }
    let spec = &job["spec"]["template"]["spec"];
    let invalid = |field: &str, cause: String| {
        Failure::new(
            422,
            "Invalid",
            format!("Job.batch \"{name}\" is invalid: {field}: {cause}"),
        )
        .with_details(json!({"name": name, "group": "batch", "kind": "Job",
            "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": field}]}))
    };
    let policy = spec["restartPolicy"].as_str().unwrap_or_default();
    if !matches!(policy, "Never" | "OnFailure") {
        return Err(invalid(
            "spec.template.spec.restartPolicy",
            format!("Unsupported value: {policy:?}: supported values: \"OnFailure\", \"Never\""),
        ));
    }
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        return Err(invalid(
            "spec.template.spec.containers",
            "Required value".into(),
        ));
    }
    let mut names = Vec::new();
    for (list, field) in [
        (spec["initContainers"].as_array(), "initContainers"),
        (Some(&containers), "containers"),
    ] {
        for (index, container) in list.into_iter().flatten().enumerate() {
            let at = format!("spec.template.spec.{field}[{index}]");
            let Some(name) = container["name"].as_str().filter(|n| !n.is_empty()) else {
                return Err(invalid(&format!("{at}.name"), "Required value".into()));
            };
            if container["image"].as_str().is_none_or(str::is_empty) {
                return Err(invalid(&format!("{at}.image"), "Required value".into()));
            }
            if names.contains(&name) {
                return Err(invalid(
                    &format!("{at}.name"),
                    format!("Duplicate value: {name:?}"),
                ));
            }
            names.push(name);
        }
    }
    Ok(())
}

impl Store {
    /// What the job controller does for a new Job at `key`: one Pod of its template, owned
    /// by it, labelled with its name and uid, `Pending` until the kubelet starts it.
    pub(crate) fn start_job(&mut self, key: &Key, job: &Value) {
        let (namespace, name) = (&key.2, &key.3);
        let uid = job["metadata"]["uid"].clone();
        let template = &job["spec"]["template"];
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels[JOB_NAME_LABEL] = json!(name);
        labels["job-name"] = json!(name);
        labels["batch.kubernetes.io/controller-uid"] = uid.clone();
        labels["controller-uid"] = uid.clone();
        let pod_name = format!("{name}-{}", suffix(self.resource_version));
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": namespace, "labels": labels,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                    "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": template["spec"],
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        });
        let pod_key = (
            String::new(),
            "pods".to_string(),
            namespace.clone(),
            pod_name,
        );
        self.write(
            &pod_key,
            Entry {
                object: pod,
                managers: Vec::new(),
            },
        );
        let mut entry = self
            .objects
            .get(key)
            .cloned()
            .expect("the Job just written");
        entry.object["status"] = json!({"active": 1, "startTime": now()});
        self.write(key, entry);
    }

    /// The Pods a Job owns, by the uid in their controller reference.
    pub(crate) fn pods_of(&self, namespace: &str, job_uid: &Value) -> Vec<Key> {
        self.objects
            .iter()
            .filter(|((group, plural, ns, _), entry)| {
                group.is_empty()
                    && plural == "pods"
                    && ns == namespace
                    && entry.object["metadata"]["ownerReferences"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|owner| owner["uid"] == *job_uid && owner["controller"] == true)
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// What the garbage collector does with a Job's Pods once the Job is deleted with
    /// `policy`: `Background` and `Foreground` delete them (and their logs); anything else
    /// orphans them, removing their owner reference.
    pub(crate) fn release_dependents(&mut self, job: &Value, policy: &str) {
        let namespace = job["metadata"]["namespace"].as_str().unwrap_or_default();
        let uid = &job["metadata"]["uid"];
        for pod in self.pods_of(namespace, uid) {
            if matches!(policy, "Background" | "Foreground") {
                self.remove(&pod);
                self.logs
                    .retain(|(ns, name, _), _| (ns, name) != (&pod.2, &pod.3));
            } else if let Some(mut entry) = self.objects.get(&pod).cloned() {
                entry.object["metadata"]
                    .as_object_mut()
                    .expect("an object's metadata")
                    .remove("ownerReferences");
                self.write(&pod, entry);
            }
        }
    }

    /// What the job controller does when one of its Pods ends: the Job's status says so.
    pub(crate) fn job_pod_ended(&mut self, pod: &Value) {
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        let Some(owner) = pod["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|owner| owner["kind"] == "Job" && owner["controller"] == true)
        else {
            return;
        };
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = owner["name"].as_str().unwrap_or_default();
        let key = (
            "batch".to_string(),
            "jobs".to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        let Some(mut entry) = self.objects.get(&key).cloned() else {
            return;
        };
        let status = &mut entry.object["status"];
        status["active"] = json!(0);
        let condition = |kind: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": "True", "reason": reason, "message": message,
                   "lastTransitionTime": now(), "lastProbeTime": now()})
        };
        match phase {
            "Succeeded" => {
                status["succeeded"] = json!(1);
                status["completionTime"] = json!(now());
                status["conditions"] = json!([
                    condition(
                        "SuccessCriteriaMet",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods"
                    ),
                    condition(
                        "Complete",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods"
                    ),
                ]);
            }
            "Failed" => {
                status["failed"] = json!(1);
                status["conditions"] = json!([
                    condition(
                        "FailureTarget",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit"
                    ),
                    condition(
                        "Failed",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit"
                    ),
                ]);
            }
            _ => return,
        }
        self.write(&key, entry);
    }
}

/// Five lowercase letters and digits from `n`, as the random suffix of a Pod's name.
fn suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}
