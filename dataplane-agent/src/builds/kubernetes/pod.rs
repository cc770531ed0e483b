//! What a build Pod's status says about one step's container.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Reasons a container waits for that will not pass on their own: the step fails at once.
const HOPELESS: &[&str] = &[
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Reasons a container waits for an image: the step fails if it lasts past the patience.
const PULLING: &[&str] = &["ErrImagePull", "ImagePullBackOff"];

/// Where one container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Container {
    /// Not started, for no reason worth reporting (scheduling, earlier steps, creating).
    Waiting,
    /// Waiting for an image that could not be pulled (yet).
    Pulling(String),
    /// It cannot start: the reason and message.
    Hopeless(String),
    /// Started, not ended.
    Running,
    /// Ended.
    Terminated {
        /// Its exit code.
        exit_code: i32,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
        /// Why (`Completed`, `Error`, `OOMKilled`).
        reason: String,
        /// The termination message: its outputs.
        message: String,
    },
}

/// The state of container `name` in `pod`.
pub(super) fn container(pod: &Pod, name: &str) -> Container {
    let Some(status) = find(pod, name) else {
        return Container::Waiting;
    };
    let Some(state) = &status.state else {
        return Container::Waiting;
    };
    if let Some(done) = &state.terminated {
        return Container::Terminated {
            exit_code: done.exit_code,
            signal: done.signal,
            reason: done.reason.clone().unwrap_or_default(),
            message: done.message.clone().unwrap_or_default(),
        };
    }
    if state.running.is_some() {
        return Container::Running;
    }
    let Some(waiting) = &state.waiting else {
        return Container::Waiting;
    };
    let reason = waiting.reason.as_deref().unwrap_or_default();
    let why = || match &waiting.message {
        Some(message) if !message.is_empty() => format!("{reason}: {message}"),
        _ => reason.to_string(),
    };
    if HOPELESS.contains(&reason) {
        Container::Hopeless(why())
    } else if PULLING.contains(&reason) {
        Container::Pulling(why())
    } else {
        Container::Waiting
    }
}

/// Why the Pod failed as a whole (evicted, past the Job's deadline), if it did.
pub(super) fn failed(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Failed") {
        return None;
    }
    let reason = status.reason.as_deref().unwrap_or("Failed");
    Some(match status.message.as_deref() {
        Some(message) if !message.is_empty() => format!("{reason}: {message}"),
        _ => reason.to_string(),
    })
}

fn find<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    let init = status.init_container_statuses.iter().flatten();
    let apps = status.container_statuses.iter().flatten();
    init.chain(apps).find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mk_pod(init: serde_json::Value, apps: serde_json::Value, phase: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"phase": phase,
            "initContainerStatuses": init, "containerStatuses": apps}}))
        .unwrap()
    }

    fn status(name: &str, state: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
               "state": state})
    }

    #[test]
    fn states_are_read_from_init_and_app_containers() {
        let pod = mk_pod(
            json!([
                status(
                    "fetch",
                    json!({"terminated": {"exitCode": 0, "reason": "Completed",
                                              "message": "image=a"}})
                ),
                status(
                    "test",
                    json!({"terminated": {"exitCode": 137, "signal": 9,
                                              "reason": "OOMKilled"}})
                )
            ]),
            json!([status(
                "build",
                json!({"waiting": {"reason": "PodInitializing"}})
            )]),
            "Failed",
        );
        assert_eq!(
            container(&pod, "fetch"),
            Container::Terminated {
                exit_code: 0,
                signal: None,
                reason: "Completed".into(),
                message: "image=a".into()
            }
        );
        assert!(matches!(container(&pod, "test"),
            Container::Terminated { exit_code: 137, signal: Some(9), ref reason, .. } if reason == "OOMKilled"));
        assert_eq!(container(&pod, "build"), Container::Waiting);
        assert_eq!(container(&pod, "absent"), Container::Waiting);
        assert_eq!(failed(&pod).as_deref(), Some("Failed"));
    }

    #[test]
    fn image_trouble_is_told_apart() {
        let pod = mk_pod(
            json!([
                status(
                    "a",
                    json!({"waiting": {"reason": "ImagePullBackOff",
                                          "message": "Back-off pulling image \"x\""}})
                ),
                status("b", json!({"waiting": {"reason": "InvalidImageName"}}))
            ]),
            json!([status(
                "c",
                json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}})
            )]),
            "Pending",
        );
        assert_eq!(
            container(&pod, "a"),
            Container::Pulling("ImagePullBackOff: Back-off pulling image \"x\"".into())
        );
        assert_eq!(
            container(&pod, "b"),
            Container::Hopeless("InvalidImageName".into())
        );
        assert_eq!(container(&pod, "c"), Container::Running);
        assert_eq!(failed(&pod), None);
    }
}
