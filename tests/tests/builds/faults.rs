//! Faults: a build agent killed mid-run loses its lease, and the attempt is offered to a
//! second agent with no log line of either attempt lost or repeated; a control plane killed
//! and restarted mid-run lets the run finish, its log whole.

use std::time::Duration;

use troupe_tests::{PATIENCE, Platform, check, eventually, success};

use crate::fixture::{BUILD_YAML, build, component, logs, run, wait_phase};

/// A second build data plane.
const SECOND_BUILDER: &str = "apiVersion: troupe.dev/v1alpha1
kind: DataPlane
metadata: {name: builder2, namespace: acme}
spec: {planeId: builder2}
";

const THE_WHOLE_LOG: &str = "[wait] waiting for the gate
[wait] through the gate
[publish] layer 1 pushed
[publish] layer 2 pushed
[publish] layer 3 pushed
";

fn builder(p: &Platform, data_plane: &str, name: &str) -> troupe_tests::Agent {
    p.register_agent_with(data_plane, name, &["--workflows", "process"])
}

#[test]
fn a_killed_build_agent_loses_its_lease_and_another_agent_runs_the_next_attempt() {
    let p = Platform::builder()
        .args(&["--build-lease-seconds", "3"])
        .examples()
        .apply(BUILD_YAML)
        .apply(SECOND_BUILDER)
        .start();
    let scratch = tempfile::tempdir().expect("scratch");
    let gate = scratch.path().join("gate");
    let yaml = component(
        "flaky",
        "gated",
        &format!("{{gate: {}}}", gate.display()),
        false,
    );
    success(&p.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml)));
    let first = builder(&p, "acme/builder", "builder");
    let name = build(&p, "flaky", &["--commit", "0a1b2c3d4e5f"]);
    eventually("the first attempt logs its first line", PATIENCE, || {
        logs(&p, &name, &[]) == "[wait] waiting for the gate\n"
    });
    let _second = builder(&p, "acme/builder2", "builder2");
    first.kill();

    let moved = eventually("attempt 2 runs on the second agent", PATIENCE, || {
        check(run(&p, &name), |r| {
            r["status"]["attempt"] == 2 && r["status"]["attempts"][1]["agent"] == "acme/builder2"
        })
    });
    let lost = &moved["status"]["attempts"][0];
    assert_eq!(lost["phase"], "Lost", "{lost:#}");
    assert!(
        lost["message"]
            .as_str()
            .unwrap_or_default()
            .contains("acme/builder"),
        "{lost:#}"
    );
    eventually("attempt 2 logs its first line", PATIENCE, || {
        logs(&p, &name, &["--attempt", "2"]) == "[wait] waiting for the gate\n"
    });
    std::fs::write(&gate, "open").expect("opening the gate");
    wait_phase(&p, &name, "Succeeded");
    assert_eq!(
        logs(&p, &name, &["--attempt", "1"]),
        "[wait] waiting for the gate\n"
    );
    assert_eq!(logs(&p, &name, &[]), THE_WHOLE_LOG);
}

#[test]
fn a_control_plane_restarted_mid_run_lets_the_run_finish_with_its_whole_log() {
    let mut p = Platform::builder()
        .fixed_agent_port()
        .examples()
        .apply(BUILD_YAML)
        .start();
    let scratch = tempfile::tempdir().expect("scratch");
    let gate = scratch.path().join("gate");
    let yaml = component(
        "steady",
        "gated",
        &format!("{{gate: {}}}", gate.display()),
        false,
    );
    success(&p.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml)));
    let _agent = builder(&p, "acme/builder", "builder");
    let name = build(&p, "steady", &["--commit", "0a1b2c3d4e5f"]);
    eventually("the run logs its first line", PATIENCE, || {
        logs(&p, &name, &[]) == "[wait] waiting for the gate\n"
    });

    p.kill_server();
    // The step goes on while no control plane listens: its lines wait in the agent.
    std::fs::write(&gate, "open").expect("opening the gate");
    std::thread::sleep(Duration::from_millis(300));
    p.restart_server();

    let done = wait_phase(&p, &name, "Succeeded");
    assert_eq!(
        done["status"]["attempt"], 1,
        "the same attempt finished: {done:#}"
    );
    assert_eq!(logs(&p, &name, &[]), THE_WHOLE_LOG);
}
