//! Build logs on servers sharing one etcd (feature `etcd`): a build whose agent is on server
//! A streams its log through server B while it runs, and B still shows the whole log, in
//! order, once A is gone; a push webhook signed with the secret made through A starts a build
//! through B.
#![cfg(feature = "etcd")]

#[path = "builds/fixture.rs"]
#[allow(
    dead_code,
    reason = "this test uses a part of the build tests' fixture"
)]
mod fixture;

use std::process::Stdio;

use fixture::{BUILD_YAML, build, component, logs, push, runs_of, sign, wait_phase};
use troupe_control_plane::builds::webhook::PATH;
use troupe_tests::http::post;
use troupe_tests::{LocalEtcd, PATIENCE, Platform, check, eventually, free_port, stdout, success};

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

#[test]
fn a_push_signed_with_a_secret_made_through_one_server_builds_through_another() {
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = etcd.url("webhooks");
    let hook_b = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let a = Platform::builder()
        .args(&["--store", &url])
        .examples()
        .apply(BUILD_YAML)
        .start();
    let _b = Platform::builder()
        .args(&["--store", &url, "--webhook-addr", &hook_b.to_string()])
        .start();
    let yaml = component("hooked", "echoes", "{}", false);
    success(&a.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml)));
    let secret = stdout(&a.cli(&["webhook-secret", "hooked", "-n", "acme"]));
    let secret = secret.trim();
    let commit = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
    let body = push("https://github.com/acme/hooked", commit);
    let send = |signature: &str| {
        let headers = [
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", signature),
        ];
        post(hook_b, PATH, &headers, &body).expect("an answer from B's webhook")
    };
    assert_eq!(send(&sign("not-the-secret", &body)).code, 401);
    let started = send(&sign(secret, &body));
    assert_eq!(started.code, 201, "{started:?}");
    eventually("A lists the run B started", PATIENCE, || {
        let runs = runs_of(&a, "hooked");
        check(runs, |r| r.len() == 1 && r[0]["spec"]["commit"] == commit)
    });
}
