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
