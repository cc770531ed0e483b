//! `troupe migrate` end to end (feature `etcd`): a server on sled with the example platform,
//! an app deployed by a directory agent, an API token and a webhook secret is stopped, moved
//! into a real etcd, and started again on it. Everything is there (the same objects, their
//! revisions after the old ones), the agent reconnects with the certificate it had and
//! deploys on, the token still works, a watch from an old revision is told it was compacted,
//! and the old data directory is refused by a server without `--store` and by a second move.
//! And back (`--from-etcd`): refused while a server runs on etcd, then everything is in the
//! data directory, served from sled, and a server on etcd is refused.
#![cfg(feature = "etcd")]

use std::path::Path;
use std::process::{Command, Output};

use troupe_tests::{
    Agent, LocalEtcd, PATIENCE, Platform, eventually, release_files, stderr, stdout, success,
    troupe_bin, troupe_server,
};

/// Files of the sample `api`'s release on a directory agent.
const API_FILES: usize = 6;

fn revision(object: &serde_json::Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .or_else(|| object["metadata"]["resourceVersion"].as_u64())
        .unwrap_or_else(|| panic!("no resourceVersion in {object}"))
}

/// `troupe migrate` of `data_dir` into `url`, run to its end.
fn migrate(data_dir: &Path, url: &str) -> Output {
    Command::new(troupe_bin())
        .args(["migrate", "--data-dir"])
        .arg(data_dir)
        .args(["--store", url])
        .output()
        .unwrap()
}

/// `troupe migrate --from-etcd` of `url` into `data_dir`, run to its end.
fn migrate_out(url: &str, data_dir: &Path) -> Output {
    Command::new(troupe_bin())
        .args(["migrate", "--from-etcd", "--store", url, "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap()
}

/// What a test moves and what it found before the move.
struct Before {
    agent: Agent,
    /// The release cut of `api`, bound in development.
    release: String,
    /// An admin API token made before the move.
    token: String,
    /// `api`'s Release in development, and component `api`, as JSON.
    rendered: serde_json::Value,
    component: serde_json::Value,
}

/// Deploys `api` to development through a directory agent and makes an API token and a
/// webhook secret, on `server` about to be moved.
fn set_up(server: &Platform) -> Before {
    let agent = server.register_agent("acme/local", "a");
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    eventually("development is ready", PATIENCE, || {
        server.ready("api", "development")
    });
    let token = success(&server.cli(&["token", "create", "ci", "--groups", "system:admins"]));
    success(&server.cli(&["webhook-secret", "api", "-n", "acme"]));
    Before {
        agent,
        release,
        token: token.trim().to_string(),
        rendered: server
            .get_json("release", "acme", "api-development")
            .unwrap(),
        component: server.get_json("comp", "acme", "api").unwrap(),
    }
}

/// What `troupe migrate` printed, checked for the tokens and secret [`set_up`] made.
fn check_said(said: &str) {
    assert!(said.contains("moved "), "{said}");
    // The admin token and ci.
    assert!(said.contains("2 API tokens"), "{said}");
    assert!(said.contains("1 webhook secrets"), "{said}");
}

/// Checks `server`, restarted on the store moved to, against what it held `before`: the same
/// objects at later revisions, the token working, a watch from an old revision told to list
/// again, and the agent back with the certificate it had, deploying on.
fn check_goes_on(server: &Platform, before: &Before) {
    let after = server
        .get_json("release", "acme", "api-development")
        .unwrap();
    assert_eq!(after["spec"], before.rendered["spec"]);
    assert_eq!(after["metadata"]["uid"], before.rendered["metadata"]["uid"]);
    assert!(revision(&after) > revision(&before.rendered));
    let component = server.get_json("comp", "acme", "api").unwrap();
    for field in ["spec", "status"] {
        assert_eq!(component[field], before.component[field], "{field}");
    }
    for field in ["uid", "generation", "creationTimestamp", "labels"] {
        assert_eq!(
            component["metadata"][field], before.component["metadata"][field],
            "{field}"
        );
    }
    success(&server.cli_as(&before.token, &["get", "comp", "-n", "acme"]));

    // A watch from a revision of the old store lists again, as after a compaction.
    let old = revision(&before.rendered).to_string();
    let watch = server.cli_for(5, &["watch", "comp", "--since", &old]);
    let said = stderr(&watch) + &stdout(&watch);
    assert!(said.contains("(OutOfRange)"), "{said}");
    assert!(said.contains("list again"), "{said}");

    eventually("development is ready after the move", PATIENCE, || {
        server.ready("api", "development")
    });
    server.bind("api", "staging", &before.release, "");
    eventually("staging is ready", PATIENCE, || {
        server.ready("api", "staging")
    });
    assert_eq!(
        release_files(&before.agent.target, "acme", "api-staging").len(),
        API_FILES
    );
}

#[test]
fn a_server_moved_from_its_data_directory_to_etcd_goes_on_with_everything() {
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = etcd.url("moved");
    let mut server = Platform::builder().examples().fixed_agent_port().start();
    let before = set_up(&server);

    assert!(server.terminate_server(), "the server did not stop cleanly");
    let data_dir = server.data_dir.clone();
    check_said(&success(&migrate(&data_dir, &url)));

    // The old store is not served again by mistake, nor moved twice.
    let stale = troupe_server(&data_dir).output().unwrap();
    assert!(!stale.status.success());
    assert!(
        stderr(&stale).contains("was moved to etcd://"),
        "{}",
        stderr(&stale)
    );
    let twice = migrate(&data_dir, &etcd.url("again"));
    assert!(!twice.status.success());
    assert!(
        stderr(&twice).contains("was moved already"),
        "{}",
        stderr(&twice)
    );

    server.restart_server_with(&["--store", &url]);
    check_goes_on(&server, &before);
}

#[test]
fn a_control_plane_moved_from_etcd_into_a_data_directory_goes_on_with_everything() {
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = etcd.url("out");
    let mut server = Platform::builder()
        .args(&["--store", &url])
        .examples()
        .fixed_agent_port()
        .start();
    let before = set_up(&server);
    let data_dir = server.data_dir.clone();

    // Not while a server runs on the store: it would go on writing there.
    let running = migrate_out(&url, &data_dir);
    assert!(!running.status.success());
    assert!(
        stderr(&running).contains("servers still run on the store"),
        "{}",
        stderr(&running)
    );

    assert!(server.terminate_server(), "the server did not stop cleanly");
    check_said(&success(&migrate_out(&url, &data_dir)));

    // The etcd store is not served again by mistake, and the data directory not filled twice.
    let stale = troupe_server(&data_dir)
        .args(["--store", &url])
        .output()
        .unwrap();
    assert!(!stale.status.success());
    assert!(
        stderr(&stale).contains("was moved into a data directory"),
        "{}",
        stderr(&stale)
    );
    let twice = migrate_out(&url, &data_dir);
    assert!(!twice.status.success());
    assert!(
        stderr(&twice).contains("holds a store already"),
        "{}",
        stderr(&twice)
    );

    server.restart_server_without(&["--store", &url]);
    check_goes_on(&server, &before);
}
