//! An offer as the executor takes it: the control plane's resolved `BuildStep`s become
//! [`StepSpec`]s, argv and environment passed as they are (nothing goes through a shell).
//!
//! A step's `image` is for executors that run containers (`kubernetes`); the `process`
//! executor runs its command on this machine and ignores it. Timeouts of zero or less mean none.

use std::path::PathBuf;
use std::time::Duration;

use troupe_common::pb::v1alpha1 as pb;

use crate::builds::{RunSpec, StepSpec};

/// The run the executor is to start for `offer`.
pub(super) fn to_run_spec(offer: &pb::BuildOffer) -> RunSpec {
    let steps = offer.steps.iter().map(to_step_spec).collect();
    let mut spec = RunSpec::new(offer.run.clone(), offer.attempt, steps);
    spec.timeout = seconds(offer.timeout_seconds);
    spec.outputs = offer.outputs.clone();
    spec
}

fn to_step_spec(step: &pb::BuildStep) -> StepSpec {
    // Sorted by name: the protocol's map has no order, and a step's environment should not
    // change from one attempt to the next.
    let mut env: Vec<(String, String)> = step
        .env
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    env.sort();
    StepSpec {
        name: step.name.clone(),
        image: (!step.image.is_empty()).then(|| step.image.clone()),
        command: step.command.clone(),
        env,
        working_dir: (!step.working_dir.is_empty()).then(|| PathBuf::from(&step.working_dir)),
        timeout: seconds(step.timeout_seconds),
    }
}

fn seconds(seconds: i64) -> Option<Duration> {
    u64::try_from(seconds)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_keep_their_argv_and_get_a_sorted_environment() {
        let step = pb::BuildStep {
            name: "compile".into(),
            image: "golang:1.23".into(),
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo \"$1\"".into(),
                "$(rm -rf /)".into(),
            ],
            env: [("Z", "1"), ("A", "; true"), ("M", "x")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            working_dir: "src/app".into(),
            timeout_seconds: 30,
        };
        let offer = pb::BuildOffer {
            run: "acme/api-7".into(),
            attempt: 2,
            steps: vec![step, pb::BuildStep::default()],
            timeout_seconds: -1,
            outputs: vec!["image".into()],
            ..Default::default()
        };
        let spec = to_run_spec(&offer);
        assert_eq!((spec.run.as_str(), spec.attempt), ("acme/api-7", 2));
        assert_eq!(spec.timeout, None);
        assert_eq!(spec.outputs, ["image"]);
        let first = &spec.steps[0];
        assert_eq!(first.command[3], "$(rm -rf /)");
        let names: Vec<&str> = first.env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["A", "M", "Z"]);
        assert_eq!(first.working_dir, Some(PathBuf::from("src/app")));
        assert_eq!(first.timeout, Some(Duration::from_secs(30)));
        assert_eq!(first.image.as_deref(), Some("golang:1.23"));
        assert_eq!(spec.steps[1].image, None);
        assert_eq!(spec.steps[1].working_dir, None);
        assert_eq!(spec.steps[1].timeout, None);
    }
}
