//! Build logs on servers sharing one etcd (feature `etcd`): a build whose agent is on server
//! A streams its log through server B while it runs, and B still shows the whole log, in
//! order, once A is gone.
#![cfg(feature = "etcd")]

#[path = "builds/fixture.rs"]
#[allow(
    dead_code,
    reason = "this test uses a part of the build tests' fixture"
)]
mod fixture;

use std::process::Stdio;

use fixture::{BUILD_YAML, build, component, logs, wait_phase};
use troupe_tests::{LocalEtcd, PATIENCE, Platform, success};

#[test]
fn a_build_on_one_server_is_followed_and_read_through_another() {
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = etcd.url("builds");
    let mut a = Platform::builder()
        .args(&["--store", &url])
        .examples()
        .apply(BUILD_YAML)
        .start();
    let b = Platform::builder().args(&["--store", &url]).start();
    let _builder = a.register_agent_with("acme/builder", "builder", &["--workflows", "process"]);
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let gate = scratch.path().join("gate");
    let yaml = component(
        "web",
        "gated",
        &format!("{{gate: {}}}", gate.display()),
        false,
    );
    success(&b.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml)));
    let name = build(
        &b,
        "web",
        &["--commit", "4f9c2a1b8e7d6c5b4a39281706f5e4d3c2b1a090"],
    );

    // Follow through B while the agent, on A, runs the first step.
    let mut follower = b
        .cli_command(None)
        .args(["logs", &name, "-n", "acme", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("troupe logs -f");
    let lines = troupe_tests::stdout_lines(&mut follower);
    let first = lines
        .recv_timeout(PATIENCE)
        .expect("a first line through B while the step runs on A's agent");
    assert_eq!(first, "[wait] waiting for the gate");
    std::fs::write(&gate, "open").expect("opening the gate");
    let rest: Vec<String> = lines.iter().collect();
    assert!(follower.wait().expect("troupe logs -f exits").success());
    let expected = [
        "[wait] waiting for the gate",
        "[wait] through the gate",
        "[publish] layer 1 pushed",
        "[publish] layer 2 pushed",
        "[publish] layer 3 pushed",
    ];
    assert_eq!(
        rest,
        expected[1..],
        "followed through B: each line once, in order"
    );
    wait_phase(&b, &name, "Succeeded");

    // A, which stored the lines, dies: B still has them all.
    a.kill_server();
    let read: Vec<String> = logs(&b, &name, &[]).lines().map(str::to_string).collect();
    assert_eq!(read, expected, "read through B after A died");
}
