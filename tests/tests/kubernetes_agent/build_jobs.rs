//! The `kubernetes` build executor against the test API server, the test playing the kubelet:
//! an attempt is a Job with one container per step, the steps' lines come from their
//! containers' logs (once each, across a dropped stream), exit codes and termination messages
//! decide the run, and a cancel, a timeout, a dropped handle or a finished run takes the Job
//! and its Pod away.

use std::time::Duration;

use tokio::time::timeout;
use troupe_agent::builds::{
    KubeConfig, KubeExecutor, Phase, RunEvent, RunHandle, RunSpec, StepSpec,
};
use troupe_tests::kube_api::KubeApi;

/// Where the tests' build Jobs go; no namespace of that name exists at the start.
const NS: &str = "builds";

/// How long a test waits for one event or one change of the cluster.
const WAIT: Duration = Duration::from_secs(20);

fn mk_executor(kube: &KubeApi) -> KubeExecutor {
    let config = KubeConfig {
        namespace: NS.into(),
        cancel_grace: Duration::from_secs(3),
        pull_patience: Duration::from_secs(1),
        ..KubeConfig::default()
    };
    KubeExecutor::new(kube.client(), config)
}

/// The next event of `handle`, waiting at most [`WAIT`].
async fn next(handle: &mut RunHandle) -> RunEvent {
    timeout(WAIT, handle.next())
        .await
        .expect("an event in time")
        .expect("the run has not ended")
}

/// Events until (and with) `Finished`.
async fn rest(handle: &mut RunHandle) -> Vec<RunEvent> {
    let mut events = Vec::new();
    loop {
        let event = next(handle).await;
        let finished = matches!(event, RunEvent::Finished { .. });
        events.push(event);
        if finished {
            return events;
        }
    }
}

/// Polls until `what` gives a value.
async fn until<T>(description: &str, mut what: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = what() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {description}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Pod of the only build Job there is.
async fn the_pod(kube: &KubeApi) -> (String, String) {
    until("a build Job and its Pod", || {
        let jobs = kube.list("jobs", NS);
        let job = jobs.first()?["metadata"]["name"].as_str()?.to_string();
        let pods = kube.pods_of_job(NS, &job);
        let pod = pods.first()?["metadata"]["name"].as_str()?.to_string();
        Some((job, pod))
    })
    .await
}

async fn gone(kube: &KubeApi, job: &str, pod: &str) {
    until("the Job and its Pod to be deleted", || {
        (kube.get("jobs", NS, job).is_none() && kube.get("pods", NS, pod).is_none()).then_some(())
    })
    .await;
}

fn lines(events: &[RunEvent]) -> Vec<(u64, String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Log {
                seq, step, line, ..
            } => Some((*seq, step.clone(), line.clone())),
            _ => None,
        })
        .collect()
}

fn finished(events: &[RunEvent]) -> (Phase, String, Vec<(String, String)>) {
    match events.last() {
        Some(RunEvent::Finished {
            phase,
            message,
            outputs,
        }) => (
            *phase,
            message.clone(),
            outputs.clone().into_iter().collect(),
        ),
        other => panic!("the run did not finish: {other:?}"),
    }
}

#[tokio::test]
async fn steps_run_in_order_as_containers_of_one_job_and_report_their_outputs() {
    let kube = KubeApi::start().await;
    let hostile = "$(touch /tmp/pwned); `id`";
    let spec = RunSpec::new(
        "acme/api-7",
        1,
        vec![
            StepSpec::new("fetch", ["git", "clone", hostile])
                .with_image("alpine/git:2.47")
                .with_env("REF", hostile),
            StepSpec::new("publish", ["sh", "-eu", "-c", "make push"]),
        ],
    )
    .with_outputs(["image", "digest"]);
    let mut handle = mk_executor(&kube).start(spec).expect("started");
    let (job, pod) = the_pod(&kube).await;

    // The build namespace was made; the Job runs the steps as written, no shell around them.
    let namespace = kube.get("namespaces", "", NS).expect("the build namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "troupe-agent"
    );
    let stored = kube.get("jobs", NS, &job).unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["troupe.dev/run"],
        "acme/api-7"
    );
    let template = &stored["spec"]["template"]["spec"];
    assert_eq!(template["initContainers"][0]["command"][2], hostile);
    assert_eq!(template["initContainers"][0]["image"], "alpine/git:2.47");
    assert_eq!(template["containers"][0]["name"], "publish");
    assert_eq!(template["containers"][0]["image"], "busybox:1.37");

    kube.start_container(NS, &pod, "fetch");
    assert!(
        matches!(next(&mut handle).await, RunEvent::StepStarted { ref step, .. } if step == "fetch")
    );
    kube.write_log(NS, &pod, "fetch", &["cloning", "done"]);
    kube.finish_container(NS, &pod, "fetch", 0, "digest=sha256:old\n");
    kube.start_container(NS, &pod, "publish");
    kube.write_log(NS, &pod, "publish", &["pushing"]);
    kube.finish_container(
        NS,
        &pod,
        "publish",
        0,
        "image=registry.local/api:7\ndigest=sha256:77",
    );
    let events = rest(&mut handle).await;
    assert_eq!(
        lines(&events),
        [
            (1, "fetch".into(), "cloning".into()),
            (2, "fetch".into(), "done".into()),
            (3, "publish".into(), "pushing".into()),
        ]
    );
    let steps: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepStarted { step, .. } => Some(format!("start {step}")),
            RunEvent::StepFinished {
                step,
                phase,
                exit_code,
                ..
            } => Some(format!("end {step} {} {exit_code:?}", phase.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        [
            "end fetch Succeeded Some(0)",
            "start publish",
            "end publish Succeeded Some(0)"
        ]
    );
    let (phase, message, outputs) = finished(&events);
    assert_eq!(
        (phase, message.as_str()),
        (Phase::Succeeded, "2 steps succeeded")
    );
    assert_eq!(
        outputs,
        [
            ("digest".to_string(), "sha256:77".to_string()),
            ("image".into(), "registry.local/api:7".into())
        ]
    );
    gone(&kube, &job, &pod).await;
}

#[tokio::test]
async fn a_failing_step_ends_the_run_with_its_exit_code_and_a_missing_output_fails_it() {
    let kube = KubeApi::start().await;
    let executor = mk_executor(&kube);
    let spec = RunSpec::new(
        "acme/broken",
        1,
        vec![
            StepSpec::new("compile", ["make"]),
            StepSpec::new("never", ["true"]),
        ],
    );
    let mut handle = executor.start(spec).unwrap();
    let (job, pod) = the_pod(&kube).await;
    kube.start_container(NS, &pod, "compile");
    kube.write_log(NS, &pod, "compile", &["error: no rule"]);
    kube.finish_container(NS, &pod, "compile", 3, "");
    let events = rest(&mut handle).await;
    assert!(events.iter().any(|e| matches!(e,
        RunEvent::StepFinished { step, phase: Phase::Failed, exit_code: Some(3), .. } if step == "compile")));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RunEvent::StepStarted { step, .. } if step == "never"))
    );
    let (phase, message, _) = finished(&events);
    assert_eq!(
        (phase, message.as_str()),
        (Phase::Failed, "step \"compile\" exited with code 3")
    );
    assert_eq!(lines(&events).len(), 1);
    gone(&kube, &job, &pod).await;

    // Every step exits 0 but the image is not reported.
    let spec = RunSpec::new("acme/quiet", 1, vec![StepSpec::new("build", ["true"])])
        .with_outputs(["image"]);
    let mut handle = executor.start(spec).unwrap();
    let (_, pod) = the_pod(&kube).await;
    kube.start_container(NS, &pod, "build");
    kube.finish_container(NS, &pod, "build", 0, "");
    let (phase, message, _) = finished(&rest(&mut handle).await);
    assert_eq!(phase, Phase::Failed);
    assert!(message.contains("required output `image`"), "{message}");
}

#[tokio::test]
async fn a_log_stream_cut_midway_is_read_again_without_a_line_lost_or_repeated() {
    let kube = KubeApi::start().await;
    let spec = RunSpec::new("acme/chatty", 1, vec![StepSpec::new("talk", ["talk"])]);
    let mut handle = mk_executor(&kube).start(spec).unwrap();
    let (_, pod) = the_pod(&kube).await;
    kube.start_container(NS, &pod, "talk");
    kube.write_log(NS, &pod, "talk", &["one", "two"]);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let RunEvent::Log { line, .. } = next(&mut handle).await {
            seen.push(line);
        }
    }
    // An API server restart: every watch and log stream ends at once.
    kube.expire_watches();
    kube.write_log(NS, &pod, "talk", &["three", "four"]);
    kube.finish_container(NS, &pod, "talk", 0, "");
    let events = rest(&mut handle).await;
    let after: Vec<(u64, String)> = lines(&events).into_iter().map(|(s, _, l)| (s, l)).collect();
    assert_eq!(after, [(3, "three".to_string()), (4, "four".to_string())]);
    assert_eq!(finished(&events).0, Phase::Succeeded);
    let reads = kube
        .requests()
        .into_iter()
        .filter(|r| r.ends_with(&format!("/pods/{pod}/log")))
        .count();
    assert!(
        reads >= 2,
        "the log was read again after the cut: {reads} reads"
    );
}

#[tokio::test]
async fn cancel_and_timeouts_delete_the_job_and_end_the_run_so() {
    let kube = KubeApi::start().await;
    let executor = mk_executor(&kube);

    let spec = RunSpec::new(
        "acme/long",
        1,
        vec![StepSpec::new("sleep", ["sleep", "1000"])],
    );
    let mut handle = executor.start(spec).unwrap();
    let (job, pod) = the_pod(&kube).await;
    kube.start_container(NS, &pod, "sleep");
    assert!(matches!(
        next(&mut handle).await,
        RunEvent::StepStarted { .. }
    ));
    handle.cancel(Duration::from_secs(2));
    let events = rest(&mut handle).await;
    let (phase, message, _) = finished(&events);
    assert_eq!(phase, Phase::Cancelled);
    assert!(
        message.starts_with("step \"sleep\" was cancelled"),
        "{message}"
    );
    assert!(message.contains("grace of"), "{message}");
    gone(&kube, &job, &pod).await;

    let spec = RunSpec::new(
        "acme/slow",
        1,
        vec![StepSpec::new("test", ["sleep", "1000"]).with_timeout(Duration::from_secs(1))],
    );
    let mut handle = executor.start(spec).unwrap();
    let (job, pod) = the_pod(&kube).await;
    kube.start_container(NS, &pod, "test");
    let events = rest(&mut handle).await;
    let (phase, message, _) = finished(&events);
    assert_eq!(phase, Phase::TimedOut);
    assert!(message.contains("went over its timeout of 1s"), "{message}");
    assert!(events.iter().any(|e| matches!(e,
        RunEvent::StepFinished { step, phase: Phase::TimedOut, .. } if step == "test")));
    gone(&kube, &job, &pod).await;

    // Nobody listens any more: the Job goes at once.
    let spec = RunSpec::new(
        "acme/orphan",
        1,
        vec![StepSpec::new("wait", ["sleep", "1000"])],
    );
    let handle = executor.start(spec).unwrap();
    let (job, pod) = the_pod(&kube).await;
    drop(handle);
    gone(&kube, &job, &pod).await;
}

#[tokio::test]
async fn a_container_that_cannot_start_fails_its_step_with_the_reason() {
    let kube = KubeApi::start().await;
    let executor = mk_executor(&kube);
    let spec = RunSpec::new(
        "acme/typo",
        1,
        vec![StepSpec::new("build", ["make"]).with_image("Bad Image")],
    );
    let mut handle = executor.start(spec).unwrap();
    let (_, pod) = the_pod(&kube).await;
    kube.hold_container(
        NS,
        &pod,
        "build",
        "InvalidImageName",
        "couldn't parse image name \"Bad Image\"",
    );
    let (phase, message, _) = finished(&rest(&mut handle).await);
    assert_eq!(phase, Phase::Failed);
    assert!(
        message.contains("could not start: InvalidImageName"),
        "{message}"
    );

    // An image that cannot be pulled fails the step once that lasted the patience (1 s here).
    let spec = RunSpec::new(
        "acme/private",
        1,
        vec![StepSpec::new("build", ["make"]).with_image("private/app:1")],
    );
    let mut handle = executor.start(spec).unwrap();
    let (_, pod) = until("the second run's Pod", || {
        let job = kube.list("jobs", NS).into_iter().find(|j| {
            j["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.contains("private"))
        })?;
        let name = job["metadata"]["name"].as_str()?.to_string();
        let pod = kube.pods_of_job(NS, &name).first()?["metadata"]["name"]
            .as_str()?
            .to_string();
        Some((name, pod))
    })
    .await;
    kube.hold_container(
        NS,
        &pod,
        "build",
        "ImagePullBackOff",
        "Back-off pulling image \"private/app:1\"",
    );
    let (phase, message, _) = finished(&rest(&mut handle).await);
    assert_eq!(phase, Phase::Failed);
    assert!(
        message.contains("could not start for 1s: ImagePullBackOff"),
        "{message}"
    );

    // A step name that cannot name a container is refused before anything is created.
    let bad = RunSpec::new("acme/x", 1, vec![StepSpec::new("Build_It", ["make"])]);
    let refused = executor.start(bad).unwrap_err().to_string();
    assert!(refused.contains("DNS label"), "{refused}");
}
