//! Builds end to end, through a real server, a build agent running steps as local processes
//! and a directory agent: a build streams its logs while it runs, succeeds, records its image
//! on the Workload, which autoDeploy releases and the directory agent applies, and `troupe
//! trace` leads from the image back to the commit and the run, and from the commit to where
//! it runs. Then how runs end (`outcomes`), faults (`faults`) and the push webhook (`webhook`).

mod faults;
mod fixture;
mod outcomes;
mod webhook;

use std::process::Stdio;

use fixture::{build, component, fixture, run, wait_phase};
use troupe_tests::{PATIENCE, check, eventually, release_files, success};

const COMMIT: &str = "4f9c2a1b8e7d6c5b4a39281706f5e4d3c2b1a090";

#[test]
fn a_build_streams_its_logs_updates_the_workload_deploys_and_traces_back_to_its_commit() {
    let f = fixture();
    let p = &f.platform;
    let gate = f.path("web-gate");
    let yaml = component(
        "web",
        "gated",
        &format!("{{gate: {}}}", gate.display()),
        true,
    );
    success(&p.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml)));
    let name = build(
        p,
        "web",
        &[
            "--commit",
            COMMIT,
            "--ref",
            "refs/heads/main",
            "--repository",
            "https://github.com/acme/web",
        ],
    );

    // Follow the logs while the first step waits on its gate.
    let mut follower = p
        .cli_command(None)
        .args(["logs", &name, "-n", "acme", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("troupe logs -f");
    let lines = troupe_tests::stdout_lines(&mut follower);
    let first = lines
        .recv_timeout(PATIENCE)
        .expect("a first line while the step runs");
    assert_eq!(first, "[wait] waiting for the gate");
    let running = run(p, &name);
    assert_eq!(running["status"]["phase"], "Running", "{running:#}");
    assert_eq!(running["status"]["attempts"][0]["agent"], "acme/builder");
    assert_eq!(running["spec"]["trigger"]["type"], "manual");

    std::fs::write(&gate, "open").expect("opening the gate");
    let rest: Vec<String> = lines.iter().collect();
    assert!(follower.wait().expect("troupe logs -f exits").success());
    assert_eq!(
        rest,
        [
            "[wait] through the gate",
            "[publish] layer 1 pushed",
            "[publish] layer 2 pushed",
            "[publish] layer 3 pushed",
        ],
        "the rest of the log, each line once, in order"
    );

    let image = format!("registry.local/acme/web:{COMMIT}");
    let done = wait_phase(p, &name, "Succeeded");
    let status = &done["status"];
    assert_eq!(status["image"], image.as_str());
    assert_eq!(status["outputs"]["digest"], "sha256:0123456789abcdef");
    let steps: Vec<(&str, &str)> = status["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["phase"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("wait", "Succeeded"), ("publish", "Succeeded")]);

    // The image is on the Workload, with where it came from.
    let workload = p
        .get_json("workload", "acme", "web")
        .expect("web's Workload");
    assert_eq!(workload["spec"]["container"]["image"], image.as_str());
    let record = &workload["spec"]["build"];
    assert_eq!(record["run"], name.as_str());
    assert_eq!(record["commit"], COMMIT);
    assert_eq!(record["digest"], "sha256:0123456789abcdef");

    // autoDeploy released it into development, and the directory agent applied it.
    eventually("the directory agent applies web's build", PATIENCE, || {
        let files = release_files(&p.agent_target("local"), "acme", "web-development");
        check(files, |files| {
            files.values().any(|text| text.contains(&image))
        })
    });

    // From the image back to the commit and the run; from the commit to where it runs.
    for query in [image.as_str(), &COMMIT[..10]] {
        let traced = success(&p.cli(&["trace", query, "-n", "acme"]));
        for expected in [COMMIT, name.as_str(), "development", "web"] {
            assert!(
                traced.contains(expected),
                "trace {query} lacks {expected}:\n{traced}"
            );
        }
    }
}
