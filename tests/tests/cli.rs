//! The `troupe` CLI against the real server: apply the examples, read them in every format,
//! round-trip YAML and JSON back through apply, delete with referrer checks and cascades, and
//! find everything again after a restart.

use std::process::{Child, Stdio};
use std::time::Duration;

use troupe_tests::{PATIENCE, Platform, Server, eventually, examples_dir, stderr, stdout, success};

fn apply_examples(server: &Server) -> String {
    success(&server.cli(&["apply", "-f", examples_dir().to_str().unwrap()]))
}

#[test]
fn apply_prints_one_line_per_object_and_reapply_is_unchanged() {
    let server = Platform::builder().start();
    let first = apply_examples(&server);
    assert!(first.contains("namespace/acme created"), "{first}");
    assert!(
        first.contains("component/api (namespace acme) created"),
        "{first}"
    );
    assert_eq!(first.lines().count(), 12, "{first}");
    let second = apply_examples(&server);
    assert_eq!(
        second.lines().filter(|l| l.ends_with(" unchanged")).count(),
        12,
        "{second}"
    );
}

#[test]
fn get_accepts_every_spelling_of_a_kind() {
    let server = Platform::builder().start();
    apply_examples(&server);
    for kind in ["Environment", "environments", "env", "ENV"] {
        let out = success(&server.cli(&["get", kind, "-n", "acme"]));
        let names: Vec<&str> = out
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            names,
            ["development", "production", "staging"],
            "{kind}: {out}"
        );
    }
    let all = success(&server.cli(&["get", "comp"]));
    assert!(
        all.starts_with("NAMESPACE"),
        "listing every namespace shows the column: {all}"
    );
    let unknown = server.cli(&["get", "gadgets"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("unknown kind \"gadgets\""),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn label_selector_filters_listings() {
    let server = Platform::builder().start();
    apply_examples(&server);
    let labelled = "apiVersion: troupe.dev/v1alpha1\nkind: Project\nmetadata:\n  name: billing\n  namespace: acme\n  labels: {team: payments}\nspec:\n  deploymentPipelineRef: default\n";
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(labelled)));
    let out = success(&server.cli(&["get", "projects", "-n", "acme", "-l", "team=payments"]));
    assert!(out.contains("billing") && !out.contains("shop"), "{out}");
    let out = success(&server.cli(&["get", "projects", "-n", "acme", "-l", "!team"]));
    assert!(out.contains("shop") && !out.contains("billing"), "{out}");
}

#[test]
fn get_yaml_then_apply_is_a_no_op() {
    let server = Platform::builder().start();
    apply_examples(&server);
    for kind in [
        "ns", "dp", "env", "pipeline", "ct", "trait", "proj", "comp", "wl",
    ] {
        let yaml = success(&server.cli(&["get", kind, "-o", "yaml"]));
        let out = success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml)));
        assert!(
            out.lines().all(|l| l.ends_with(" unchanged")),
            "re-applying `get {kind} -o yaml` must change nothing:\n{out}\n{yaml}"
        );
    }
    let json = success(&server.cli(&["get", "ct", "-n", "acme", "-o", "json"]));
    let out = success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&json)));
    assert_eq!(
        out.trim(),
        "componenttype/service (namespace acme) unchanged"
    );
    // Integral numbers stay integers in output, though Struct holds doubles.
    let yaml = success(&server.cli(&["get", "comp", "api", "-n", "acme", "-o", "yaml"]));
    assert!(yaml.contains("port: 8080\n"), "{yaml}");
}

#[test]
fn editing_yaml_output_and_applying_it_updates_the_object() {
    let server = Platform::builder().start();
    apply_examples(&server);
    let yaml = success(&server.cli(&["get", "comp", "api", "-n", "acme", "-o", "yaml"]));
    assert!(yaml.contains("generation: \"1\""), "{yaml}");
    let edited = yaml.replace("port: 8080", "port: 9090");
    let out = success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&edited)));
    assert_eq!(out.trim(), "component/api (namespace acme) configured");
    let after = success(&server.cli(&["get", "comp", "api", "-n", "acme", "-o", "yaml"]));
    assert!(
        after.contains("port: 9090") && after.contains("generation: \"2\""),
        "{after}"
    );
    // The edited file still carries the old resourceVersion: applying it again is stale.
    let stale = server.cli_with_stdin(&["apply", "-f", "-"], Some(&edited.replace("9090", "7070")));
    assert!(!stale.status.success());
    assert!(
        stderr(&stale).contains("was modified") && stderr(&stale).contains("Aborted"),
        "{}",
        stderr(&stale)
    );
}

#[test]
fn delete_refuses_referenced_objects_and_cascades_projects() {
    let server = Platform::builder().start();
    apply_examples(&server);
    let refused = server.cli(&["delete", "dataplane", "local", "-n", "acme"]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains("DataPlane acme/local is still referenced by")
            && err.contains("Environment acme/development")
            && err.contains("FailedPrecondition"),
        "{err}"
    );
    let out = success(&server.cli(&["delete", "project", "shop", "-n", "acme"]));
    assert!(out.contains("Project acme/shop deleted"), "{out}");
    assert!(out.contains("Component acme/api deleted"), "{out}");
    assert!(out.contains("Workload acme/api deleted"), "{out}");
    let gone = server.cli(&["get", "comp", "api", "-n", "acme"]);
    assert!(
        stderr(&gone).contains("Component acme/api not found"),
        "{}",
        stderr(&gone)
    );
    // With the project gone, nothing references the pipeline any more.
    success(&server.cli(&["delete", "pipeline", "default", "-n", "acme"]));
}

/// A child process killed when dropped, so a failed test leaves none behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn open_watches_do_not_hold_a_shutdown_open() {
    let mut server = Platform::builder().start();
    let mut watcher = Reaped(
        server
            .cli_command(None)
            .args(["watch", "all"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The CLI prints its header once the server has opened the stream.
    let printed = troupe_tests::stdout_lines(&mut watcher.0);
    eventually("the watch is open", PATIENCE, || printed.try_recv());
    assert!(
        server.terminate_server(),
        "SIGTERM stops the server with a watch open"
    );
    // The watch ends with the server, and so does the CLI following it.
    eventually(
        "the watch CLI stops after the server stopped",
        Duration::from_secs(5),
        || watcher.0.try_wait().unwrap(),
    );
}

#[test]
fn everything_is_still_there_after_a_restart() {
    let mut server = Platform::builder().start();
    apply_examples(&server);
    let before = success(&server.cli(&["get", "comp", "api", "-n", "acme", "-o", "yaml"]));
    assert!(
        server.terminate_server(),
        "SIGTERM stops the server cleanly"
    );
    server.restart_server();
    let after = success(&server.cli(&["get", "comp", "api", "-n", "acme", "-o", "yaml"]));
    assert_eq!(before, after);
    let out = apply_examples(&server);
    assert!(out.lines().all(|l| l.ends_with(" unchanged")), "{out}");
}

#[test]
fn watch_streams_changes_from_a_revision() {
    let server = Platform::builder().start();
    apply_examples(&server);
    let yaml = success(&server.cli(&["get", "comp", "api", "-n", "acme", "-o", "yaml"]));
    let edited = yaml.replace("port: 8080", "port: 9090");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&edited)));
    success(&server.cli(&["delete", "project", "shop", "-n", "acme"]));
    // Replaying from revision 1 shows the history of components, then the stream stays open;
    // the CLI is stopped by the timeout.
    let out = server.cli_for(3, &["watch", "comp", "--since", "1"]);
    let text = stdout(&out);
    let events: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    // The edit is one MODIFIED; the control plane's status writes (the component's latest
    // release) may add more.
    assert_eq!(events.first(), Some(&"ADDED"), "{text}");
    assert_eq!(events.last(), Some(&"DELETED"), "{text}");
    assert!(
        events[1..events.len() - 1].iter().all(|e| *e == "MODIFIED") && events.len() >= 3,
        "{text}"
    );
    assert!(text.contains("Component acme/api"), "{text}");
}

#[test]
fn a_server_alone_on_its_store_lists_itself_as_the_leader() {
    let server = Platform::builder().args(&["--replica", "solo"]).start();
    let table = success(&server.cli(&["servers"]));
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "LEADER", "ENDPOINTS"], "{table}");
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(rows[1][..3], ["solo", "*", "yes"], "{table}");
    assert!(
        table.contains(&format!("agents {}", server.agent_addr)),
        "{table}"
    );
}

/// `https://` URL of a port on loopback that nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("https://{}", listener.local_addr().unwrap())
}

#[test]
fn the_cli_given_several_servers_uses_the_first_that_answers_and_names_each_when_none_does() {
    let server = Platform::builder().start();
    let (dead, also_dead) = (closed_port(), closed_port());
    let with_servers = |list: &str, args: &[&str]| {
        server
            .cli_command(None)
            .env("TROUPE_SERVER", list)
            .args(args)
            .output()
            .unwrap()
    };
    let listed = format!("{dead}, {}", server.url());
    let out = with_servers(&listed, &["servers"]);
    assert!(stdout(&out).contains(" * "), "{}", stderr(&out));
    success(&out);
    // A server that takes the connection and never answers (a paused process: the kernel
    // accepts for a listener that never does) is passed over after a while.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listed = format!("https://{},{}", silent.local_addr().unwrap(), server.url());
    success(&with_servers(&listed, &["get", "proj", "-n", "acme"]));

    let none = format!("{dead},{also_dead}");
    let out = with_servers(&none, &["get", "proj", "-n", "acme"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach any of the Troupe servers {none}")),
        "{err}"
    );
    assert!(err.contains(&format!("{dead}: ")), "{err}");
    assert!(err.contains(&format!("{also_dead}: ")), "{err}");
}
