//! The kubelet, played by the test: no container runs here, so a test says when each of a
//! Pod's containers starts, what it writes and how it ends, and the Pod's status follows as
//! a real kubelet reports it: init containers one after the other, each to completion,
//! before the app containers; the phase `Pending` until an app container runs, `Running`,
//! then `Succeeded` or `Failed`; a container that cannot start `Waiting` with its reason.
//! What containers write is kept per container for `pods/NAME/log` ([`super::logs`]).

use serde_json::{Value, json};

use super::KubeApi;
use super::store::{Key, Store, now};

/// The names of a Pod's containers in `field` (`initContainers` or `containers`), in order.
pub(crate) fn container_names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// A Pod's containers as `(init, name)`, init containers first, in order.
fn containers(pod: &Value) -> Vec<(bool, String)> {
    let init = container_names(pod, "initContainers")
        .into_iter()
        .map(|n| (true, n));
    let apps = container_names(pod, "containers")
        .into_iter()
        .map(|n| (false, n));
    init.chain(apps).collect()
}

/// The status array a container's status lives in.
fn statuses_field(init: bool) -> &'static str {
    if init {
        "initContainerStatuses"
    } else {
        "containerStatuses"
    }
}

/// The state of container `name` in `pod`'s status (`waiting`, `running` or `terminated`),
/// `Null` before the kubelet reported it.
pub(crate) fn container_state<'a>(pod: &'a Value, name: &str) -> &'a Value {
    for field in ["initContainerStatuses", "containerStatuses"] {
        if let Some(status) = pod["status"][field]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name)
        {
            return &status["state"];
        }
    }
    &Value::Null
}

impl Store {
    /// Sets container `name` of the Pod at `key` to `state` and derives the Pod's phase; the
    /// job controller hears of a Pod that ended. Panics on a test that breaks the kubelet's
    /// order (an app container before the init containers are done, say).
    fn set_container(&mut self, key: &Key, name: &str, state: Value) {
        let mut entry = self
            .objects
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("pod {}/{} does not exist", key.2, key.3));
        let pod = &mut entry.object;
        let all = containers(pod);
        let position = all
            .iter()
            .position(|(_, n)| n == name)
            .unwrap_or_else(|| panic!("pod {} has no container {name:?}", key.3));
        let starting = state.get("running").is_some();
        for (init, earlier) in &all[..position] {
            let done = container_state(pod, earlier)["terminated"]["exitCode"] == 0;
            assert!(
                !*init || !starting || done,
                "container {name:?} cannot start before init container {earlier:?} succeeded"
            );
        }
        let (init, _) = all[position];
        let image = pod["spec"][if init { "initContainers" } else { "containers" }]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .map(|c| c["image"].clone())
            .unwrap_or_default();
        let field = statuses_field(init);
        let mut statuses = pod["status"][field].as_array().cloned().unwrap_or_default();
        statuses.retain(|s| s["name"] != name);
        let running = state.get("running").is_some();
        statuses.push(json!({"name": name, "image": image, "imageID": "",
            "ready": running && !init, "started": running, "restartCount": 0, "state": state}));
        pod["status"][field] = Value::Array(statuses);
        let phase = phase(pod, &all);
        let ended =
            matches!(phase, "Succeeded" | "Failed") && pod["status"]["phase"] != json!(phase);
        pod["status"]["phase"] = json!(phase);
        let (object, _) = self.write(key, entry);
        if ended {
            self.job_pod_ended(&object);
        }
    }
}

/// The phase a Pod with restart policy `Never` is in.
fn phase(pod: &Value, all: &[(bool, String)]) -> &'static str {
    let states: Vec<(bool, &Value)> = all
        .iter()
        .map(|(init, name)| (*init, container_state(pod, name)))
        .collect();
    let exit = |state: &Value| state["terminated"]["exitCode"].as_i64();
    if states.iter().any(|(_, s)| exit(s).is_some_and(|c| c != 0)) {
        return "Failed";
    }
    let apps: Vec<&Value> = states.iter().filter(|(i, _)| !i).map(|(_, s)| *s).collect();
    if apps.iter().all(|s| exit(s) == Some(0)) {
        return "Succeeded";
    }
    if apps
        .iter()
        .any(|s| s.get("running").is_some() || exit(s).is_some())
    {
        return "Running";
    }
    "Pending"
}

/// Kubelet actions on Pods, for a test to play.
impl KubeApi {
    /// The Pods the job controller made for Job `job` in `namespace`.
    pub fn pods_of_job(&self, namespace: &str, job: &str) -> Vec<Value> {
        self.list("pods", namespace)
            .into_iter()
            .filter(|pod| pod["metadata"]["labels"][super::JOB_NAME_LABEL] == job)
            .collect()
    }

    /// Starts container `container` of Pod `namespace/pod`.
    pub fn start_container(&self, namespace: &str, pod: &str, container: &str) {
        self.kubelet(
            namespace,
            pod,
            container,
            json!({"running": {"startedAt": now()}}),
        );
    }

    /// Container `container` could not start: `Waiting` with `reason` (`ErrImagePull`,
    /// `ImagePullBackOff`, `CreateContainerConfigError`) and `message`.
    pub fn hold_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        reason: &str,
        message: &str,
    ) {
        let state = json!({"waiting": {"reason": reason, "message": message}});
        self.kubelet(namespace, pod, container, state);
    }

    /// Container `container` writes `lines` (to its log, as stdout).
    pub fn write_log(&self, namespace: &str, pod: &str, container: &str, lines: &[&str]) {
        {
            let mut store = self.shared.store.lock().unwrap();
            let log = store
                .logs
                .entry((namespace.into(), pod.into(), container.into()))
                .or_default();
            log.extend(lines.iter().map(|line| line.to_string()));
        }
        self.shared.wake();
    }

    /// Container `container` exits with `exit_code`, leaving `message` in its termination
    /// message file.
    pub fn finish_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        exit_code: i32,
        message: &str,
    ) {
        let started = {
            let store = self.shared.store.lock().unwrap();
            let key = pod_key(namespace, pod);
            store
                .objects
                .get(&key)
                .map(|e| container_state(&e.object, container)["running"]["startedAt"].clone())
                .unwrap_or_default()
        };
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        let mut terminated = json!({"exitCode": exit_code, "reason": reason,
            "startedAt": started, "finishedAt": now(), "containerID": ""});
        if !message.is_empty() {
            terminated["message"] = json!(message);
        }
        self.kubelet(
            namespace,
            pod,
            container,
            json!({ "terminated": terminated }),
        );
    }

    fn kubelet(&self, namespace: &str, pod: &str, container: &str, state: Value) {
        self.shared
            .store
            .lock()
            .unwrap()
            .set_container(&pod_key(namespace, pod), container, state);
        self.shared.wake();
    }
}

/// Where Pod `namespace/name` is kept.
pub(crate) fn pod_key(namespace: &str, name: &str) -> Key {
    (String::new(), "pods".into(), namespace.into(), name.into())
}
