//! Three `troupe server`s on one etcd (feature `etcd`), as README's "Running several
//! replicas" starts them: a write through one is watched through another; one leads and runs
//! the controllers. The leader is killed with SIGKILL while bindings change through another
//! server: a new leader takes over, every acknowledged write is there, each binding's Release
//! is rendered once per change (no stale leader renders behind the new one), the agent that
//! was on the dead server reconnects to another and converges, and no Release is pruned or
//! made again. Then a server dies together with the agent it held: the leader marks the data
//! plane disconnected, naming the server.
#![cfg(feature = "etcd")]

use std::process::Stdio;

use serde_json::Value;
use troupe_tests::{LocalEtcd, PATIENCE, Platform, check, eventually, release_files, success};

/// The leader's lease in this test: a dead leader is replaced within about this.
const LEASE_SECONDS: &str = "2";

/// Server `name` on `url`, with the example platform applied if `examples`.
fn replica(url: &str, name: &str, examples: bool) -> Platform {
    let mut builder = Platform::builder().args(&[
        "--store",
        url,
        "--replica",
        name,
        "--leader-lease-seconds",
        LEASE_SECONDS,
    ]);
    if examples {
        builder = builder.examples();
    }
    builder.start()
}

/// The server that leads on `prefix`, as etcd says.
fn leader(etcd: &LocalEtcd, prefix: &str) -> Option<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
            .await
            .ok()?;
        let answer = client.get(format!("/{prefix}/leader"), None).await.ok()?;
        let kv = answer.kvs().first()?;
        Some(String::from_utf8_lossy(kv.value()).into_owned())
    })
}

/// `troupe servers` through `server`: each server's name and whether it leads.
fn roster(server: &Platform) -> Vec<(String, bool)> {
    let out = success(&server.cli(&["servers", "-o", "json"]));
    let listed: Value = serde_json::from_str(&out).unwrap();
    listed["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["leader"] == true))
        .collect()
}

/// The api Deployment an agent applied for `binding`.
fn deployment(platform: &Platform, agent: &str, binding: &str) -> String {
    release_files(&platform.agent_target(agent), "acme", binding)
        .into_iter()
        .find(|(file, _)| file.starts_with("deployment.apps_"))
        .map(|(_, text)| text)
        .unwrap_or_default()
}

/// `metadata.uid` and `metadata.generation` of Release `name`.
fn release_identity(server: &Platform, name: &str) -> (String, i64) {
    let release = server
        .get_json("release", "acme", name)
        .expect("the Release");
    let generation = &release["metadata"]["generation"];
    // int64 in JSON is a string.
    let generation = generation
        .as_i64()
        .or_else(|| generation.as_str()?.parse().ok())
        .expect("a generation");
    (
        release["metadata"]["uid"].as_str().unwrap().to_string(),
        generation,
    )
}

/// The agent connection of DataPlane acme/local, as `server` reads it.
fn connection(server: &Platform) -> Value {
    server
        .get_json("dataplane", "acme", "local")
        .expect("the DataPlane")["status"]["agentConnection"]
        .clone()
}

fn binding_extra(replicas: usize) -> String {
    format!("  componentTypeEnvironmentConfigs: {{replicas: {replicas}}}\n")
}

#[test]
fn three_servers_share_one_store_and_survive_the_death_of_the_leader() {
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = etcd.url("three");
    let mut servers = vec![
        replica(&url, "a", true),
        replica(&url, "b", false),
        replica(&url, "c", false),
    ];
    let names = ["a", "b", "c"];
    let first = eventually("a server leads", PATIENCE, || {
        leader(&etcd, "three").ok_or("no leader key")
    });
    let lead = names
        .iter()
        .position(|n| *n == first)
        .expect("a known leader");
    let (x, y) = ((lead + 1) % 3, (lead + 2) % 3);

    // A write through one server is watched through another.
    let mut watch = servers[x]
        .cli_command(None)
        .args(["watch", "components", "-n", "acme"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = troupe_tests::stdout_lines(&mut watch);
    let web = "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: web, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/service}
";
    success(&servers[y].cli_with_stdin(&["apply", "-f", "-"], Some(web)));
    let seen = loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("the watch through another server sees the write");
        if line.contains("acme/web") {
            break line;
        }
    };
    assert!(seen.starts_with("ADDED"), "{seen}");
    let _ = watch.kill();
    let _ = watch.wait();

    // The agent is given every server's agent endpoint and starts on the leader's.
    let start = (troupe_common::fnv::fnv1a(b"acme/local") % 3) as usize;
    let mut endpoints = vec![String::new(); 3];
    for i in 0..3 {
        endpoints[(start + i) % 3] = servers[(lead + i) % 3].agent_url();
    }
    let token = servers[y].token("acme/local", "1h");
    let agent = servers[y].start_agent(&endpoints.join(","), "acme/local", "edge", Some(&token));
    let release = servers[y].cut_release("api");
    servers[y].bind("api", "staging", &release, "");
    servers[y].bind("api", "development", &release, &binding_extra(1));
    for env in ["staging", "development"] {
        eventually(&format!("{env} is ready"), PATIENCE, || {
            servers[y].ready("api", env)
        });
    }
    assert_eq!(
        connection(&servers[y])["server"],
        first,
        "the agent is on the leader"
    );
    let staging_before = release_identity(&servers[y], "api-staging");
    let development_before = release_identity(&servers[y], "api-development");

    // Bindings change through y while the leader is killed.
    const WRITES: usize = 12;
    for replicas in 2..=WRITES {
        if replicas == 5 {
            servers[lead].kill_server();
        }
        servers[y].bind("api", "development", &release, &binding_extra(replicas));
    }
    let second = eventually("another server leads", PATIENCE, || {
        leader(&etcd, "three")
            .filter(|l| *l != first)
            .ok_or("the dead leader's key")
    });
    assert!(second == names[x] || second == names[y], "{second}");
    let mut survivors: Vec<(String, bool)> = [names[x], names[y]]
        .iter()
        .map(|n| (n.to_string(), *n == second))
        .collect();
    survivors.sort();
    eventually("`troupe servers` lists the survivors", PATIENCE, || {
        check(roster(&servers[y]), |listed| *listed == survivors)
    });
    // The CLI given every server, the dead one first, is served by a live one.
    let every: Vec<String> = [lead, x, y].iter().map(|&i| servers[i].url()).collect();
    let out = servers[y]
        .cli_command(None)
        .env("TROUPE_SERVER", every.join(","))
        .args(["get", "component", "api", "-n", "acme"])
        .output()
        .unwrap();
    let listed = success(&out);
    assert!(listed.contains("api"), "{listed}");

    // The last write is rendered, applied and reported, through whichever server the agent
    // reconnected to.
    let last = format!("replicas: {WRITES}");
    eventually("the agent applies the last write", PATIENCE, || {
        check(deployment(&servers[y], "edge", "api-development"), |d| {
            d.contains(&last)
        })
    });
    eventually("development is ready again", PATIENCE, || {
        servers[y].ready("api", "development")
    });
    let moved = connection(&servers[x]);
    assert_eq!(moved["connected"], true, "{moved}");
    assert!(
        moved["server"] == names[x] || moved["server"] == names[y],
        "{moved}"
    );

    // Every write acknowledged is there; each change rendered once; nothing pruned.
    let binding = servers[x]
        .get_json("releasebinding", "acme", "api-development")
        .unwrap();
    assert_eq!(
        binding["spec"]["componentTypeEnvironmentConfigs"]["replicas"], WRITES,
        "{binding}"
    );
    let (uid, generation) = release_identity(&servers[x], "api-development");
    assert_eq!(uid, development_before.0, "the Release was made again");
    assert!(
        generation <= development_before.1 + (WRITES as i64 - 1),
        "generation {generation} after {} changes from {}: renders beyond one per change",
        WRITES - 1,
        development_before.1
    );
    assert_eq!(
        release_identity(&servers[x], "api-staging"),
        staging_before,
        "staging's Release changed in the failover"
    );
    assert!(!release_files(&servers[y].agent_target("edge"), "acme", "api-staging").is_empty());

    // The server holding the agent dies with it: the leader marks the data plane
    // disconnected, naming that server. The agent is frozen first, so that it neither closes
    // its stream (which its server would record as a disconnect of its own) nor moves to
    // the survivor.
    let holder = moved["server"].as_str().unwrap().to_string();
    let holder_index = names.iter().position(|n| *n == holder).unwrap();
    agent.freeze();
    servers[holder_index].kill_server();
    agent.kill();
    let survivor = &servers[if holder_index == x { y } else { x }];
    eventually("the data plane shows the server gone", PATIENCE, || {
        let connection = connection(survivor);
        check(connection, |c| {
            // `false` is left out of the JSON.
            c["connected"] != true
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("server {holder}")) && m.contains("gone"))
        })
    });
    servers.clear();
}
