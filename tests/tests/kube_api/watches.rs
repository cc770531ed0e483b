//! Lists and watches: selectors, lists from the cache, watch timeouts, compaction (410) and
//! expiry, and the request log that tells them apart.

use super::*;

fn mk_configmap(name: &str, tier: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "default", "labels": {"tier": tier}}})
}

fn names(list: Vec<DynamicObject>) -> Vec<String> {
    list.into_iter().filter_map(|o| o.metadata.name).collect()
}

#[tokio::test]
async fn lists_select_by_label_and_the_log_tells_cached_lists_apart() {
    let kube = KubeApi::start().await;
    kube.create(mk_configmap("a", "front"));
    kube.create(mk_configmap("b", "back"));
    let configmaps = api(&kube, "v1", "ConfigMap", "configmaps", "default");
    kube.clear_requests();
    let select = |selector: &'static str| {
        let configmaps = configmaps.clone();
        async move {
            names(
                configmaps
                    .list(&ListParams::default().labels(selector))
                    .await
                    .unwrap()
                    .items,
            )
        }
    };
    assert_eq!(select("tier=front").await, ["a"]);
    assert_eq!(select("tier!=front").await, ["b", "kube-root-ca.crt"]);
    assert_eq!(select("tier").await, ["a", "b"]);
    assert_eq!(select("tier,tier!=back").await, ["a"]);
    let cached = configmaps
        .list(&ListParams::default().match_any())
        .await
        .unwrap();
    assert_eq!(cached.items.len(), 3);

    let log = kube.request_log();
    assert_eq!(log.len(), 5);
    assert!(
        log.iter()
            .all(|r| r.verb == "LIST" && r.path == "/api/v1/namespaces/default/configmaps")
    );
    let from_cache: Vec<bool> = log
        .iter()
        .map(|r| r.query.get("resourceVersion").is_some_and(|v| v == "0"))
        .collect();
    assert_eq!(from_cache, [false, false, false, false, true]);
    assert_eq!(
        kube.requests()[0],
        "LIST /api/v1/namespaces/default/configmaps"
    );
}

#[tokio::test]
async fn watches_stream_after_a_version_end_on_timeout_or_expiry_and_refuse_compacted_versions() {
    let kube = KubeApi::start().await;
    let configmaps = api(&kube, "v1", "ConfigMap", "configmaps", "default");
    let first = kube.create(mk_configmap("a", "front"));
    let old = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // From a version: what came after, in order, only what the selector picks.
    let params = WatchParams::default().labels("tier=front");
    let mut events = configmaps.watch(&params, &old).await.unwrap().boxed();
    kube.create(mk_configmap("b", "back"));
    kube.create(mk_configmap("c", "front"));
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("c")),
        other => panic!("expected c ADDED, got {other:?}"),
    }
    kube.delete("configmaps", "default", "c");
    assert!(matches!(
        events.try_next().await.unwrap(),
        Some(WatchEvent::Deleted(_))
    ));

    // An API server restart ends every open watch.
    kube.expire_watches();
    assert!(
        events.try_next().await.unwrap().is_none(),
        "the watch ended"
    );
    assert!(
        kube.requests()
            .contains(&"WATCH /api/v1/namespaces/default/configmaps".to_string())
    );

    // timeoutSeconds ends it too.
    let brief = WatchParams::default().timeout(1);
    let mut events = configmaps.watch(&brief, &old).await.unwrap().boxed();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while events.try_next().await.unwrap().is_some() {}
    });
    ended.await.expect("the watch ends after its timeout");

    // After compaction, a watch from before gets one ERROR event, 410 Gone, and ends; one
    // from now works.
    kube.compact();
    let mut events = configmaps
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    let gone = match events.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => status,
        other => panic!("expected an ERROR event, got {other:?}"),
    };
    assert!(
        events.try_next().await.unwrap().is_none(),
        "the watch ended"
    );
    assert_eq!((gone.code, gone.reason.as_str()), (410, "Expired"));
    let newest = configmaps
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    assert_eq!(
        gone.message,
        format!("too old resource version: {old} ({newest})")
    );
    let mut events = configmaps
        .watch(&WatchParams::default(), &newest)
        .await
        .unwrap()
        .boxed();
    kube.create(mk_configmap("d", "front"));
    assert!(matches!(
        events.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
}

#[tokio::test]
async fn kubes_watcher_lists_again_when_its_version_was_compacted_away() {
    use kube::runtime::{WatchStreamExt, watcher};
    let kube = KubeApi::start().await;
    let configmaps = api(&kube, "v1", "ConfigMap", "configmaps", "default");
    let mut seen = watcher(configmaps, watcher::Config::default().labels("tier"))
        .applied_objects()
        .boxed();
    // Errors are part of the stream (the 410 below among them): the next name it yields.
    let mut next_name = async move || {
        let next = async {
            loop {
                if let Ok(Some(object)) = seen.try_next().await {
                    return object.metadata.name.unwrap();
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("the watcher yields an object")
    };
    kube.create(mk_configmap("a", "front"));
    assert_eq!(next_name().await, "a");

    // What the watch does not select moves the history on; once compacted, the watcher's
    // next watch (from the version of a) is 410 Gone, and it lists again.
    kube.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "unlabelled", "namespace": "default"}}));
    kube.compact();
    let lists = |kube: &KubeApi| {
        kube.request_log()
            .iter()
            .filter(|r| r.verb == "LIST")
            .count()
    };
    assert_eq!(lists(&kube), 1);
    kube.expire_watches();
    assert_eq!(next_name().await, "a", "listed again");
    assert_eq!(lists(&kube), 2);
    kube.create(mk_configmap("b", "front"));
    assert_eq!(next_name().await, "b", "watching again");
}
