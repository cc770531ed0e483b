//! `troupe migrate` end to end (feature `etcd`): a server on sled with the example platform,
//! an app deployed by a directory agent, an API token and a webhook secret is stopped, moved
//! into a real etcd, and started again on it. Everything is there (the same objects, their
//! revisions after the old ones), the agent reconnects with the certificate it had and
//! deploys on, the token still works, a watch from an old revision is told it was compacted,
//! and the old data directory is refused by a server without `--store` and by a second move.
#![cfg(feature = "etcd")]

use std::path::Path;
use std::process::{Command, Output};

use troupe_tests::{
    LocalEtcd, PATIENCE, Platform, eventually, release_files, stderr, stdout, success, troupe_bin,
    troupe_server,
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

#[test]
fn a_server_moved_from_its_data_directory_to_etcd_goes_on_with_everything() {
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = etcd.url("moved");
    let mut server = Platform::builder().examples().fixed_agent_port().start();
    let agent = server.register_agent("acme/local", "a");
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    eventually("development is ready", PATIENCE, || {
        server.ready("api", "development")
    });
    let token = success(&server.cli(&["token", "create", "ci", "--groups", "system:admins"]));
    let token = token.trim().to_string();
    success(&server.cli(&["webhook-secret", "api", "-n", "acme"]));
    let before = server
        .get_json("release", "acme", "api-development")
        .unwrap();
    let component = server.get_json("comp", "acme", "api").unwrap();

    assert!(server.terminate_server(), "the server did not stop cleanly");
    let data_dir = server.data_dir.clone();
    let said = success(&migrate(&data_dir, &url));
    assert!(said.contains("moved "), "{said}");
    // The admin token and ci.
    assert!(said.contains("2 API tokens"), "{said}");
    assert!(said.contains("1 webhook secrets"), "{said}");

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
    let after = server
        .get_json("release", "acme", "api-development")
        .unwrap();
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert!(revision(&after) > revision(&before));
    let moved_component = server.get_json("comp", "acme", "api").unwrap();
    for field in ["spec", "status"] {
        assert_eq!(moved_component[field], component[field], "{field}");
    }
    for field in ["uid", "generation", "creationTimestamp", "labels"] {
        assert_eq!(
            moved_component["metadata"][field], component["metadata"][field],
            "{field}"
        );
    }
    success(&server.cli_as(&token, &["get", "comp", "-n", "acme"]));

    // A watch from a revision of the old store lists again, as after a compaction.
    let old = revision(&before).to_string();
    let watch = server.cli_for(5, &["watch", "comp", "--since", &old]);
    let said = stderr(&watch) + &stdout(&watch);
    assert!(said.contains("(OutOfRange)"), "{said}");
    assert!(said.contains("list again"), "{said}");

    // The agent is back with the certificate the moved CA signed, and deploys on.
    eventually("development is ready on etcd", PATIENCE, || {
        server.ready("api", "development")
    });
    server.bind("api", "staging", &release, "");
    eventually("staging is ready", PATIENCE, || {
        server.ready("api", "staging")
    });
    assert_eq!(
        release_files(&agent.target, "acme", "api-staging").len(),
        API_FILES
    );
}
