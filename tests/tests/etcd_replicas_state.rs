//! Two `troupe server`s on one etcd prefix share the server's own state (feature `etcd`): they
//! present one CA and one admin token; a data-plane token made through one registers an agent through the other, whose
//! certificate the first accepts too; an API token made through one authenticates through
//! the other, and once revoked through the first is refused by the second within a second.
#![cfg(feature = "etcd")]

use std::time::Duration;

use troupe_tests::{
    LocalEtcd, PATIENCE, Platform, check, eventually, examples_dir, stderr, success,
};

/// Starts two servers on `url`, one after the other. (Two starting at the same moment agree
/// on the CA and the admin token, see `shared_state`'s tests, but writing the built-in roles
/// at once fails one of them today.)
fn pair(url: &str) -> (Platform, Platform) {
    let start = || Platform::builder().args(&["--store", url]).start();
    (start(), start())
}

#[test]
fn two_servers_on_one_etcd_present_one_ca_and_one_admin_token() {
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let (a, b) = pair(&etcd.url("pair"));
    let ca = |p: &Platform| std::fs::read_to_string(p.ca_path()).unwrap();
    assert!(ca(&a).contains("BEGIN CERTIFICATE"));
    assert_eq!(ca(&a), ca(&b), "the servers made a CA each");
    let (admin_a, admin_b) = (a.admin_token().unwrap(), b.admin_token().unwrap());
    assert_eq!(admin_a, admin_b, "the servers made an admin token each");
    // The admin token A wrote works through B, over B's certificate from the shared CA.
    success(&a.cli(&["apply", "-f", examples_dir().to_str().unwrap()]));
    assert!(b.get_json("comp", "acme", "api").is_some());
    // The key of the CA is in etcd, not in the data directory.
    assert!(!a.data_dir.join("pki/ca.key").exists());
}

#[test]
fn tokens_made_through_one_server_work_through_the_other() {
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let (a, b) = pair(&etcd.url("tokens"));
    success(&a.cli(&["apply", "-f", examples_dir().to_str().unwrap()]));

    // An API token made through A authenticates through B at once.
    let token = success(&a.cli(&["token", "create", "ci", "--groups", "system:admins"]));
    let token = token.trim();
    success(&b.cli_as(token, &["get", "comp", "-n", "acme"]));
    success(&a.cli(&["token", "revoke", "ci"]));
    eventually(
        "B refuses the token revoked through A",
        Duration::from_secs(2),
        || {
            let out = b.cli_as(token, &["get", "comp", "-n", "acme"]);
            check(stderr(&out), |e| {
                !out.status.success() && e.contains("ci was revoked")
            })
        },
    );

    // A data-plane token made through A registers an agent through B…
    let join = a.token("acme/local", "1h");
    let agent = b.start_agent(&b.agent_url(), "acme/local", "edge", Some(&join));
    let release = a.cut_release("api");
    a.bind("api", "development", &release, "");
    eventually("development is ready (agent on B)", PATIENCE, || {
        a.ready("api", "development")
    });
    // …and the certificate B signed is good at A's agent endpoint.
    agent.kill();
    let _agent = b.start_agent(&a.agent_url(), "acme/local", "edge", None);
    a.bind("api", "staging", &release, "");
    eventually("staging is ready (agent on A)", PATIENCE, || {
        a.ready("api", "staging")
    });
    let files = troupe_tests::release_files(&b.agent_target("edge"), "acme", "api-staging");
    assert!(!files.is_empty());
}

/// Integrity holds between servers: a delete through one server sees what another server
/// made refer to the object since the first last looked: a referrer it does not own refuses
/// the delete, one it owns goes with it.
#[test]
fn a_delete_through_one_server_sees_referrers_made_through_the_other() {
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let (a, b) = pair(&etcd.url("integrity"));
    success(&a.cli(&["apply", "-f", examples_dir().to_str().unwrap()]));
    let apply_b = |yaml: &str| success(&b.cli_with_stdin(&["apply", "-f", "-"], Some(yaml)));
    apply_b(
        "apiVersion: troupe.dev/v1alpha1
kind: Environment
metadata: {name: qa, namespace: acme}
spec:
  dataPlaneRef: {kind: DataPlane, name: local}
",
    );
    // A looks: nothing refers to qa yet.
    eventually("A sees qa", PATIENCE, || {
        check(a.get_json("env", "acme", "qa"), |e| e.is_some())
    });
    success(&a.cli(&["delete", "env", "qa", "-n", "acme", "--dry-run"]));

    // B makes a pipeline promote into qa: A must refuse to delete qa, naming it.
    apply_b(
        "apiVersion: troupe.dev/v1alpha1
kind: DeploymentPipeline
metadata: {name: to-qa, namespace: acme}
spec:
  promotionPaths:
    - sourceEnvironment: development
      targets: [{environment: qa}]
",
    );
    eventually("A sees the pipeline", PATIENCE, || {
        check(a.get_json("deploymentpipeline", "acme", "to-qa"), |p| {
            p.is_some()
        })
    });
    let out = a.cli(&["delete", "env", "qa", "-n", "acme"]);
    assert!(
        !out.status.success(),
        "A deleted qa while B's pipeline refers to it"
    );
    assert!(stderr(&out).contains("to-qa"), "{}", stderr(&out));
    assert!(b.get_json("env", "acme", "qa").is_some());

    // B binds into qa and drops the pipeline: deleting qa through A takes the binding along.
    let release = b.cut_release("api");
    b.bind("api", "qa", &release, "");
    success(&b.cli(&["delete", "deploymentpipeline", "to-qa", "-n", "acme"]));
    eventually("A sees the binding and not the pipeline", PATIENCE, || {
        let binding = a.get_json("releasebinding", "acme", "api-qa");
        let pipeline = a.get_json("deploymentpipeline", "acme", "to-qa");
        check((binding, pipeline), |(b, p)| b.is_some() && p.is_none())
    });
    success(&a.cli(&["delete", "env", "qa", "-n", "acme"]));
    assert!(
        b.get_json("releasebinding", "acme", "api-qa").is_none(),
        "the binding into qa outlived it"
    );
}
