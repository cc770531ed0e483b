//! Durability: every write the server acknowledged survives SIGKILL.

use std::collections::BTreeSet;

use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::{ApplyRequest, ListRequest};
use troupe_tests::{Platform, success};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let mut server = Platform::builder().examples().start();
    let template = success(&server.cli(&["get", "comp", "api", "-n", "acme", "-o", "yaml"]));

    // A burst of concurrent writes; remember exactly those the server acknowledged.
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let mut client = server.client().await;
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                let name = format!("burst-{writer}-{i}");
                let yaml = template
                    .replace("name: api", &format!("name: {name}"))
                    .lines()
                    .filter(|l| !l.contains("resourceVersion") && !l.contains("uid:"))
                    .collect::<Vec<_>>()
                    .join("\n");
                let object = from_yaml(&yaml).unwrap().remove(0);
                if client
                    .apply(ApplyRequest {
                        resource: Some(object.into()),
                        dry_run: false,
                    })
                    .await
                    .is_ok()
                {
                    acked.push(name);
                }
            }
            acked
        }));
    }
    let mut acked = BTreeSet::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    assert_eq!(acked.len(), 320, "every write in the burst is acknowledged");
    server.kill_server();

    server.restart_server();
    let mut client = server.client().await;
    let request = ListRequest {
        kind: "comp".into(),
        namespace: "acme".into(),
        ..Default::default()
    };
    let listed = client.list(request).await.unwrap().into_inner();
    let found: BTreeSet<String> = listed
        .items
        .into_iter()
        .filter_map(|r| r.object)
        .map(|o| o.meta().name.clone())
        .filter(|n| n.starts_with("burst-"))
        .collect();
    let lost: Vec<_> = acked.difference(&found).collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost after SIGKILL: {lost:?}"
    );
}

/// A small generator for the kill moments; the seed is printed so a failing run replays.
struct Moments(u64);

impl Moments {
    fn next_millis(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_sigkills_under_concurrent_writers_loses_nothing_and_reuses_no_revision() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill moments seed: {seed}");
    let mut moments = Moments(seed);
    let mut server = Platform::builder().examples().start();
    let template = success(&server.cli(&["get", "comp", "api", "-n", "acme", "-o", "yaml"]));
    let template: String = template
        .lines()
        .filter(|l| !l.contains("resourceVersion") && !l.contains("uid:"))
        .collect::<Vec<_>>()
        .join("\n");
    // Every acknowledged write: its name and the revision the server gave it.
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut newest_before = 0;
    for cycle in 0..10 {
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let mut client = server.client().await;
            let template = template.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    let name = format!("storm-{cycle}-{writer}-{i}");
                    let yaml = template.replace("name: api", &format!("name: {name}"));
                    let object = from_yaml(&yaml).unwrap().remove(0);
                    let request = ApplyRequest {
                        resource: Some(object.into()),
                        dry_run: false,
                    };
                    match client.apply(request).await {
                        Ok(reply) => {
                            let stored = reply.into_inner().resource.and_then(|r| r.object);
                            let version = stored.map_or(0, |o| o.meta().resource_version);
                            acked.push((name, version));
                        }
                        // The server is gone: this writer's cycle is over.
                        Err(_) => break,
                    }
                }
                acked
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(
            50 + moments.next_millis(450),
        ))
        .await;
        server.kill_server();
        let mut this_cycle = Vec::new();
        for task in tasks {
            this_cycle.extend(task.await.unwrap());
        }
        // Revisions of acknowledged writes only grow, across restarts too.
        for (name, version) in &this_cycle {
            assert!(
                *version > newest_before,
                "cycle {cycle}: {name} got revision {version}, not above {newest_before} acknowledged before the last kill (seed {seed})"
            );
        }
        newest_before = this_cycle
            .iter()
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(newest_before);
        acked.extend(this_cycle);
        server.restart_server();
    }

    let mut client = server.client().await;
    let mut found = std::collections::BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let request = ListRequest {
            kind: "comp".into(),
            namespace: "acme".into(),
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = client.list(request).await.unwrap().into_inner();
        for object in page.items.into_iter().filter_map(|r| r.object) {
            found.insert(object.meta().name.clone(), object.meta().resource_version);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut versions = BTreeSet::new();
    for (name, version) in &acked {
        assert_eq!(
            found.get(name),
            Some(version),
            "{name}, acknowledged at revision {version}, after 10 SIGKILLs (seed {seed})"
        );
        assert!(
            versions.insert(*version),
            "revision {version} given twice (seed {seed})"
        );
    }
    assert!(
        acked.len() > 100,
        "the writers got some writes in: {}",
        acked.len()
    );
}
