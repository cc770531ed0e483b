//! `troupe server --store etcd://…` end to end (feature `etcd`): a real etcd, a real server
//! keeping its objects there, the example platform and an app applied by a directory agent;
//! the server killed and started again finds everything where it was, and the agent comes
//! back to it. The data directory keeps no objects (no sled store). A project of
//! thousands of objects is deleted whole, although one etcd transaction takes 128 operations
//! at most. A store URL of an unknown scheme is refused before anything starts. A server on an
//! etcd that takes only TLS clients with a certificate works with `ca=`, `cert=` and `key=` in
//! the URL, and without the certificate is refused, saying so. An object larger than one etcd
//! request is refused with OUT_OF_RANGE naming the limit; an etcd out of space (its NOSPACE
//! alarm) fails writes with RESOURCE_EXHAUSTED saying what frees space, while reads and
//! deletes go on, and the server writes again once an operator has freed it. With etcd
//! down, writes fail with UNAVAILABLE naming it, reads go on, and writes go again once it is
//! back. On three etcd members, the death of the leading one, and then of another, stops
//! nothing for long: writes go on through the members left and the agent deploys on.
#![cfg(feature = "etcd")]

use troupe_tests::{
    Agent, LocalEtcd, PATIENCE, Platform, Server, eventually, release_files, stderr, stdout,
    success, troupe_server,
};

/// Files of the sample `api`'s release on a directory agent.
const API_FILES: usize = 6;

/// Whether `env` is ready for `api`; while it is not, its status entry.
fn ready(server: &Server, env: &str) -> Result<(), serde_json::Value> {
    let out = success(&server.cli(&["status", "api", "-n", "acme", "-o", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entry = doc["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["environment"] == env)
        .cloned()
        .unwrap_or_default();
    if entry["ready"] == true {
        Ok(())
    } else {
        Err(entry)
    }
}

/// A server on the store `url` with the example platform and a directory agent, `api`'s
/// release cut and ready in development; the agent endpoint keeps its port across restarts.
fn deployed(url: &str) -> (Platform, Agent, String) {
    let server = Platform::builder()
        .examples()
        .fixed_agent_port()
        .args(&["--store", url])
        .start();
    let agent = server.register_agent("acme/local", "a");
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    eventually("development is ready", PATIENCE, || {
        ready(&server, "development")
    });
    (server, agent, release)
}

/// Whether applying `yaml` through `server` succeeds; if not, what the CLI said.
fn applied(server: &Server, yaml: &str) -> Result<(), String> {
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(yaml));
    if out.status.success() {
        Ok(())
    } else {
        Err(stderr(&out))
    }
}

/// How many objects etcd holds under `prefix`.
fn objects_in_etcd(etcd: &LocalEtcd, prefix: &str) -> i64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = etcd.client().await.unwrap();
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only();
        client
            .get(format!("/{prefix}/o/"), Some(options))
            .await
            .unwrap()
            .count()
    })
}

/// Each key under `/PREFIX/t/` (a Release's manifests) with its version and size, and the
/// version and size of its Release's own key.
fn tails_in_etcd(etcd: &LocalEtcd, prefix: &str) -> Vec<((i64, usize), (i64, usize))> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = etcd.client().await.unwrap();
        let options = etcd_client::GetOptions::new().with_prefix();
        let tails = client
            .get(format!("/{prefix}/t/"), Some(options))
            .await
            .unwrap();
        let mut out = Vec::new();
        for tail in tails.kvs() {
            let object = tail.key_str().unwrap().replacen(
                &format!("/{prefix}/t/"),
                &format!("/{prefix}/o/"),
                1,
            );
            let head = client.get(object, None).await.unwrap();
            let head = &head.kvs()[0];
            out.push((
                (tail.version(), tail.value().len()),
                (head.version(), head.value().len()),
            ));
        }
        out
    })
}

#[test]
fn a_server_on_etcd_deploys_and_finds_everything_again_after_a_restart() {
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let (mut server, agent, release) = deployed(&etcd.url("e2e"));
    assert_eq!(
        release_files(&agent.target, "acme", "api-development").len(),
        API_FILES
    );
    let stored = objects_in_etcd(&etcd, "e2e");
    assert!(stored > 10, "only {stored} objects in etcd");
    // The Release's status was written as it deployed; its manifests, once.
    let tails = tails_in_etcd(&etcd, "e2e");
    let [((tail_version, tail_bytes), (head_version, head_bytes))] = tails[..] else {
        panic!("not one Release's manifests in etcd: {tails:?}");
    };
    assert_eq!(
        tail_version, 1,
        "the manifests were written again: {tails:?}"
    );
    assert!(
        head_version > 1 && head_bytes < tail_bytes,
        "no status write, or one with the manifests: {tails:?}"
    );
    for sled_file in ["db", "conf"] {
        assert!(
            !server.data_dir.join(sled_file).exists(),
            "a sled store in the data directory"
        );
    }
    let before = server
        .get_json("release", "acme", "api-development")
        .unwrap();
    let component = server.get_json("comp", "acme", "api").unwrap();

    server.kill_server();
    server.restart_server();
    let after = server
        .get_json("release", "acme", "api-development")
        .unwrap();
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    // Loading rewrites nothing: the Component is at the revision it was. (The Release's
    // status may have moved on meanwhile, with the agent's last reports.)
    let reloaded = server.get_json("comp", "acme", "api").unwrap();
    assert_eq!(
        reloaded["metadata"]["resourceVersion"],
        component["metadata"]["resourceVersion"]
    );
    eventually("development is ready after the restart", PATIENCE, || {
        ready(&server, "development")
    });
    // The agent is back on the restarted server, which deploys on.
    server.bind("api", "staging", &release, "");
    eventually("staging is ready", PATIENCE, || ready(&server, "staging"));
    assert_eq!(
        release_files(&agent.target, "acme", "api-staging").len(),
        API_FILES
    );
    assert!(objects_in_etcd(&etcd, "e2e") > stored);
}

/// The names of the objects of `kind` in namespace acme.
fn names(server: &Server, kind: &str) -> Vec<String> {
    let text = stdout(&server.cli(&["get", kind, "-n", "acme", "-o", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let items = doc
        .as_array()
        .cloned()
        .or_else(|| doc["items"].as_array().cloned())
        .unwrap_or_default();
    items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn a_project_of_thousands_of_objects_is_deleted_whole() {
    const COMPONENTS: usize = 1000;
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let server = Platform::builder()
        .examples()
        .args(&["--store", &etcd.url("cascade")])
        .start();
    // In batches: one apply takes 1024 documents at most.
    let ids: Vec<usize> = (0..COMPONENTS).collect();
    for batch in ids.chunks(250) {
        let yaml: String = batch
            .iter()
            .map(|i| {
                format!(
                    "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: c{i}, namespace: acme}}
spec:
  owner: {{projectName: shop}}
  componentType: {{name: deployment/service}}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: c{i}, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: c{i}}}
  container: {{image: ghcr.io/acme/c{i}:1.0.0}}
---
"
                )
            })
            .collect();
        success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml)));
    }
    assert_eq!(names(&server, "components").len(), COMPONENTS + 1);
    assert_eq!(names(&server, "workloads").len(), COMPONENTS + 1);

    let out = success(&server.cli(&["delete", "project", "shop", "-n", "acme"]));
    assert!(out.contains("Project acme/shop deleted"), "{out}");
    for kind in ["components", "workloads", "projects"] {
        assert_eq!(names(&server, kind), Vec::<String>::new(), "{kind} left");
    }
}

#[test]
fn a_store_url_of_an_unknown_scheme_is_refused_naming_the_forms() {
    let dir = tempfile::tempdir().unwrap();
    let out = troupe_server(dir.path())
        .args(["--store", "postgres://db:5432/troupe"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown store scheme `postgres`"), "{err}");
    assert!(err.contains("etcd://HOST:PORT"), "{err}");
}

#[test]
fn a_server_on_etcd_over_tls_with_a_client_certificate_keeps_the_examples_there() {
    let etcd = LocalEtcd::start_tls().unwrap_or_else(|e| panic!("{e:#}"));
    let server = Platform::builder()
        .examples()
        .args(&["--store", &etcd.url_tls("tls")])
        .start();
    let component = server.get_json("comp", "acme", "api").expect("acme/api");
    assert_eq!(component["metadata"]["name"], "api");
    assert!(objects_in_etcd(&etcd, "tls") > 10);

    // Without the client certificate, etcd refuses the server, which says how to fix it.
    let ca = etcd.tls().unwrap().ca.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = troupe_server(dir.path())
        .args(["--store", &format!("{}?ca={ca}", etcd.url("tls"))])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&etcd.endpoint()), "{err}");
    assert!(err.contains("name one with cert= and key="), "{err}");
}

#[test]
fn a_server_on_an_etcd_out_of_space_or_over_its_request_limit_says_so_and_writes_again_once_freed()
{
    let etcd = LocalEtcd::start_with_quota(4 * 1024 * 1024).unwrap_or_else(|e| panic!("{e:#}"));
    let server = Platform::builder()
        .examples()
        .args(&["--store", &etcd.url("full")])
        .start();
    let project_of = |name: &str, bytes: usize| {
        format!(
            "apiVersion: troupe.dev/v1alpha1\nkind: Project\nmetadata: {{name: {name}, namespace: acme}}\nspec: {{deploymentPipelineRef: default, description: \"{}\"}}\n",
            "x".repeat(bytes)
        )
    };
    // Larger than one etcd request: refused whole, naming the limit.
    let huge = server.cli_with_stdin(&["apply", "-f", "-"], Some(&project_of("huge", 2 << 20)));
    assert!(!huge.status.success());
    let huge = stderr(&huge);
    assert!(huge.contains("(OutOfRange)"), "{huge}");
    assert!(huge.contains("--max-request-bytes"), "{huge}");
    assert!(server.get_json("proj", "acme", "huge").is_none());

    let project = |name: &str| project_of(name, 100_000);
    let mut applied = Vec::new();
    let refused = loop {
        let name = format!("big{}", applied.len());
        let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(&project(&name)));
        if !out.status.success() {
            break stderr(&out);
        }
        applied.push(name);
        assert!(applied.len() < 200, "etcd never ran out of space");
    };
    for part in [
        "(ResourceExhausted)",
        "out of space",
        &etcd.endpoint(),
        "etcdctl alarm disarm",
    ] {
        assert!(refused.contains(part), "{part:?} missing from: {refused}");
    }
    // Reads answer; deletes go.
    assert!(server.get_json("proj", "acme", "shop").is_some());
    for name in &applied {
        success(&server.cli(&["delete", "project", name, "-n", "acme"]));
    }
    let again = server.cli_with_stdin(&["apply", "-f", "-"], Some(&project("again")));
    assert!(
        !again.status.success(),
        "a write before the alarm is disarmed"
    );

    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(etcd.free_space())
        .unwrap();
    // The same server, never restarted, takes writes again.
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&project("again"))));
    assert!(server.get_json("proj", "acme", "again").is_some());
}

#[test]
fn a_server_whose_etcd_is_down_fails_writes_as_unavailable_keeps_reading_and_writes_again_when_it_is_back()
 {
    let mut etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let server = Platform::builder()
        .examples()
        .args(&["--store", &etcd.url("down")])
        .start();
    let project = |name: &str| {
        format!(
            "apiVersion: troupe.dev/v1alpha1\nkind: Project\nmetadata: {{name: {name}, namespace: acme}}\nspec: {{deploymentPipelineRef: default}}\n"
        )
    };
    etcd.kill();
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(&project("p1")));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("(Unavailable)"), "{err}");
    assert!(err.contains(&etcd.endpoint()), "{err}");
    // Tokens and webhook secrets live in etcd too: making one fails the same way, not as an
    // internal error.
    for args in [
        &["token", "create", "ci-down"][..],
        &["dataplane", "token", "create", "acme/down", "--ttl", "1h"],
        &["webhook-secret", "api", "-n", "acme"],
    ] {
        let out = server.cli(args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("(Unavailable)"), "{args:?}: {err}");
        assert!(err.contains(&etcd.endpoint()), "{args:?}: {err}");
    }
    // The servers cannot be listed; the answer says which member is out of reach.
    let out = server.cli(&["servers"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("(Unavailable)"), "{err}");
    assert!(
        err.contains(&format!(
            "etcd members this server does not reach: {}",
            etcd.endpoint()
        )),
        "{err}"
    );
    // Reads come from the server's copy.
    assert!(server.get_json("proj", "acme", "shop").is_some());

    etcd.restart().unwrap_or_else(|e| panic!("{e:#}"));
    eventually("a write once etcd is back", PATIENCE, || {
        applied(&server, &project("p1"))
    });
    assert!(server.get_json("proj", "acme", "p1").is_some());
}

#[test]
fn a_server_on_three_etcd_members_goes_on_when_any_one_of_them_dies() {
    let mut cluster = LocalEtcd::start_cluster(3).unwrap_or_else(|e| panic!("{e:#}"));
    let (server, agent, release) = deployed(&LocalEtcd::cluster_url(&cluster, "ha"));

    // The member leading etcd dies: etcd elects another, and the server writes on through the
    // members left, with no restart. Reads never stop.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let leader = (0..cluster.len())
        .find(|&i| runtime.block_on(cluster[i].is_leader()).unwrap_or(false))
        .expect("a leader among the members");
    cluster[leader].kill();
    assert!(server.get_json("comp", "acme", "api").is_some());
    // `troupe servers` says which member the server does not reach (once etcd has a leader
    // again: until then the listing fails, saying the same).
    let listed = eventually("the servers listed", PATIENCE, || {
        let out = server.cli(&["servers", "-o", "json"]);
        match out.status.success() {
            true => Ok(serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()),
            false => Err(stderr(&out)),
        }
    });
    let members: Vec<(String, bool)> = listed["storeMembers"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|m| {
            let endpoint = m["endpoint"].as_str().unwrap().to_string();
            (endpoint, m["reachable"] == true)
        })
        .collect();
    let expected: Vec<(String, bool)> = (0..cluster.len())
        .map(|i| (cluster[i].endpoint(), i != leader))
        .collect();
    assert_eq!(members, expected, "{listed}");
    let table = success(&server.cli(&["servers"]));
    assert!(
        table.lines().any(
            |l| l.split_whitespace().collect::<Vec<_>>() == [&cluster[leader].endpoint(), "no"]
        ),
        "{table}"
    );
    let yaml = |env: &str| {
        format!(
            "apiVersion: troupe.dev/v1alpha1\nkind: ReleaseBinding\nmetadata: {{name: api-{env}, namespace: acme}}\nspec: {{owner: {{projectName: shop, componentName: api}}, environment: {env}, releaseName: {release}}}\n"
        )
    };
    eventually("a write with the etcd leader dead", PATIENCE, || {
        applied(&server, &yaml("staging"))
    });
    eventually("staging is ready", PATIENCE, || ready(&server, "staging"));
    assert_eq!(
        release_files(&agent.target, "acme", "api-staging").len(),
        API_FILES
    );

    // The member comes back and catches up; then another one dies, and the cluster keeps its
    // majority with the one that came back.
    cluster[leader]
        .restart()
        .unwrap_or_else(|e| panic!("{e:#}"));
    let other = (leader + 1) % cluster.len();
    cluster[other].kill();
    let project = "apiVersion: troupe.dev/v1alpha1\nkind: Project\nmetadata: {name: after, namespace: acme}\nspec: {deploymentPipelineRef: default}\n";
    eventually("a write with another member dead", PATIENCE, || {
        applied(&server, project)
    });
    assert!(server.get_json("proj", "acme", "after").is_some());
}
