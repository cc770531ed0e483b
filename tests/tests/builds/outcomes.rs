//! How runs end: a failing step names itself and its exit code, and a retry runs the same
//! steps again as a new attempt; a step over its timeout times out; a cancel stops the step's
//! process within the grace period; a hostile parameter reaches its step as one literal
//! argument; a type that stops allowing the workflow refuses the build; a finished run goes
//! with its logs once its workflow's `ttlAfterCompletion` is over; deleting a component stops
//! its running build and takes its runs and their logs.

use troupe_tests::{PATIENCE, eventually, stderr, stdout, success};

use crate::fixture::{build, component, fixture, logs, run, wait_phase};

#[test]
fn a_failing_step_names_itself_and_its_exit_code_and_a_retry_runs_the_same_steps_again() {
    let f = fixture();
    let p = &f.platform;
    success(&p.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&component("broken", "fails", "{}", false)),
    ));
    let name = build(p, "broken", &[]);
    let failed = wait_phase(p, &name, "Failed");
    let status = &failed["status"];
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("compile") && message.contains("3"),
        "{message}"
    );
    let tasks = status["tasks"].as_array().expect("tasks");
    assert_eq!(
        tasks.len(),
        1,
        "the step after the failure never ran: {tasks:#?}"
    );
    assert_eq!(tasks[0]["phase"], "Failed");
    assert_eq!(tasks[0]["exitCode"], 3);
    assert_eq!(logs(p, &name, &[]), "[compile] compiling\n");

    let retried = success(&p.cli(&["retry", &name, "-n", "acme"]));
    // The scheduler may have offered (or even finished) the new attempt by the time the
    // answer is read back: only that it is the run is certain.
    assert!(
        retried.starts_with(&format!("workflowrun/{name}: ")),
        "{retried}"
    );
    let again = eventually("the retry's attempt 2 fails", PATIENCE, || {
        let seen = run(p, &name);
        (seen["status"]["attempt"] == 2 && seen["status"]["phase"] == "Failed").then_some(seen)
    });
    assert_eq!(
        again["status"]["plan"], failed["status"]["plan"],
        "the same steps"
    );
    let attempts = again["status"]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        (attempts[0]["phase"].clone(), attempts[1]["phase"].clone()),
        ("Failed".into(), "Failed".into())
    );
    assert_eq!(logs(p, &name, &["--attempt", "2"]), "[compile] compiling\n");

    // A running or pending run cannot be retried; a finished one cannot be cancelled.
    let refused = p.cli(&["cancel", &name, "-n", "acme"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("already ended Failed"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn a_step_over_its_timeout_times_out() {
    let f = fixture();
    let p = &f.platform;
    success(&p.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&component("sluggish", "slow", "{}", false)),
    ));
    let name = build(p, "sluggish", &[]);
    let done = wait_phase(p, &name, "TimedOut");
    let message = done["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("test") && message.contains("timeout"),
        "{message}"
    );
    assert_eq!(done["status"]["tasks"][0]["phase"], "TimedOut");
}

#[test]
fn cancel_stops_the_step_within_the_grace_period() {
    let f = fixture();
    let p = &f.platform;
    let pidfile = f.path("sleepy.pid");
    let parameters = format!("{{pidfile: {}}}", pidfile.display());
    success(&p.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&component("sleepy", "sleeps", &parameters, false)),
    ));
    let name = build(p, "sleepy", &[]);
    let pid: u32 = eventually("the step wrote its pid", PATIENCE, || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    let alive = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(alive.exists(), "the step runs");
    let answer = success(&p.cli(&["cancel", &name, "-n", "acme"]));
    assert!(answer.contains("cancel requested"), "{answer}");
    let done = wait_phase(p, &name, "Cancelled");
    assert_eq!(done["status"]["tasks"][0]["phase"], "Cancelled");
    eventually("the step's process is gone", PATIENCE, || !alive.exists());
}

#[test]
fn a_hostile_parameter_reaches_its_step_as_one_literal_argument() {
    let f = fixture();
    let p = &f.platform;
    success(&p.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&component("parrot", "echoes", "{}", false)),
    ));
    let marker = f.path("pwned");
    let hostile = format!(
        "$(touch {0}); `touch {0}` \"q\" 'r' ; touch {0} | x",
        marker.display()
    );
    let name = build(p, "parrot", &["--set", &format!("message={hostile}")]);
    wait_phase(p, &name, "Succeeded");
    assert_eq!(
        logs(p, &name, &["--step", "say"]),
        format!("[say] {hostile}\n")
    );
    assert!(!marker.exists(), "a parameter ran as shell");
}

#[test]
fn a_type_that_stops_allowing_the_workflow_refuses_the_build() {
    let f = fixture();
    let p = &f.platform;
    let narrow = |allowed: &str| {
        format!(
            "apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {{name: narrow, namespace: acme}}
spec:
  workloadType: deployment
  allowedWorkflows: [{allowed}]
  resources:
    - id: deployment
      template:
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: \"${{{{ metadata.name }}}}\", namespace: \"${{{{ metadata.namespace }}}}\"}}
"
        )
    };
    success(&p.cli_with_stdin(&["apply", "-f", "-"], Some(&narrow("{name: echoes}"))));
    let yaml = component("narrowed", "echoes", "{}", false)
        .replace("deployment/built", "deployment/narrow");
    success(&p.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml)));
    success(&p.cli_with_stdin(&["apply", "-f", "-"], Some(&narrow(""))));
    let refused = p.cli(&["build", "narrowed", "-n", "acme"]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let error = stderr(&refused);
    assert!(
        error.contains("spec.workflow")
            && error.contains("allowedWorkflows")
            && error.contains("echoes"),
        "{error}"
    );
}

#[test]
fn a_finished_run_goes_with_its_logs_after_its_workflows_ttl() {
    let f = fixture();
    let p = &f.platform;
    success(&p.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&component("fleeting", "brief", "{}", false)),
    ));
    let name = build(p, "fleeting", &[]);
    wait_phase(p, &name, "Succeeded");
    assert_eq!(logs(p, &name, &[]), "[say] short-lived\n");
    eventually("the run is deleted after its TTL", PATIENCE, || {
        p.get_json("workflowrun", "acme", &name).is_none()
    });
    let gone = p.cli(&["logs", &name, "-n", "acme"]);
    assert!(!gone.status.success(), "{}", stdout(&gone));
    assert!(
        stderr(&gone).contains("not found") || stderr(&gone).contains("NotFound"),
        "{}",
        stderr(&gone)
    );
}

#[test]
fn a_run_written_by_hand_is_held_to_the_types_allowed_workflows() {
    let f = fixture();
    let p = &f.platform;
    success(&p.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&component("direct", "echoes", "{}", false)),
    ));
    // The examples' shell-build is allowed by type `service`, not by `built`.
    let run_yaml = "apiVersion: troupe.dev/v1alpha1
kind: WorkflowRun
metadata: {name: direct-by-hand, namespace: acme}
spec:
  owner: {projectName: shop, componentName: direct}
  workflow: {name: shell-build}
  commit: 0a1b2c3
";
    success(&p.cli_with_stdin(&["apply", "-f", "-"], Some(run_yaml)));
    let failed = wait_phase(p, "direct-by-hand", "Failed");
    let message = failed["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("allowedWorkflows") && message.contains("shell-build"),
        "{message}"
    );
    assert!(
        failed["status"]["attempts"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "it never ran: {failed:#}"
    );
}

#[test]
fn deleting_a_component_stops_its_running_build_and_takes_its_runs_and_logs() {
    let f = fixture();
    let p = &f.platform;
    let pidfile = f.path("doomed.pid");
    let parameters = format!("{{pidfile: {}}}", pidfile.display());
    success(&p.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&component("doomed", "sleeps", &parameters, false)),
    ));
    let name = build(p, "doomed", &[]);
    let pid: u32 = eventually("the step wrote its pid", PATIENCE, || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    eventually("the first line is stored", PATIENCE, || {
        logs(p, &name, &[]) == "[sleep] sleeping\n"
    });
    let logs_dir = p.root().join("data/build-logs/acme").join(&name);
    assert!(logs_dir.exists(), "{}", logs_dir.display());

    success(&p.cli(&["delete", "component", "doomed", "-n", "acme"]));
    assert!(
        p.get_json("workflowrun", "acme", &name).is_none(),
        "the run went with its component"
    );
    let alive = std::path::PathBuf::from(format!("/proc/{pid}"));
    eventually("the step's process is stopped", PATIENCE, || {
        !alive.exists()
    });
    eventually("the run's logs are gone", PATIENCE, || !logs_dir.exists());
}
