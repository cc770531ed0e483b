//! A watch from revision 0 under concurrent writes, over the on-disk store (whose listings
//! are not snapshots, so the watch must make one).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object};

use super::{WatchEvent, WatchEventType, WatchRequest};
use crate::resources::{Origin, Resources};
use crate::store::{Revision, SledStore};

pub(super) fn mk_namespace(name: &str, generation: usize) -> Object {
    pb::Namespace {
        metadata: Some(pb::ObjectMeta {
            name: name.into(),
            labels: [("generation".to_string(), generation.to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into()
}

/// Name → resourceVersion, as a client following events would hold it.
type State = BTreeMap<String, Revision>;

fn fold(state: &mut State, event: &WatchEvent) {
    let Some(object) = &event.object else { return };
    let meta = object.meta();
    match event.kind {
        WatchEventType::Deleted => state.remove(&meta.name),
        _ => state.insert(meta.name.clone(), meta.resource_version),
    };
}

async fn next(rx: &mut crate::resources::WatchEvents) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("an event within 30 s")
        .expect("the watch goes on")
        .expect("no error")
}

/// Events of a watch until one at revision `head` or later has arrived.
async fn events_until(
    resources: &Arc<Resources>,
    since: Revision,
    head: Revision,
) -> Vec<WatchEvent> {
    let mut rx = resources
        .watch(WatchRequest {
            kinds: vec![Kind::Namespace],
            since,
            ..Default::default()
        })
        .unwrap();
    let mut events = Vec::new();
    if since == head {
        return events;
    }
    loop {
        let event = next(&mut rx).await;
        let done = event.revision >= head && event.kind != WatchEventType::Bookmark;
        events.push(event);
        if done {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_from_zero_is_one_snapshot_then_every_later_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let resources = Arc::new(Resources::new(store));
    for i in 0..500 {
        resources
            .apply(mk_namespace(&format!("ns-{i:04}"), 0), Origin::User, false)
            .await
            .unwrap();
    }

    // 2,000 writes from 8 writers: new namespaces and new generations of old ones.
    let mut writers = Vec::new();
    for writer in 0..8 {
        let resources = resources.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..250 {
                let n = (writer * 250 + i) * 7 % 1_000;
                resources
                    .apply(
                        mk_namespace(&format!("ns-{n:04}"), i + 1),
                        Origin::User,
                        false,
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    // Open the watch once the writers are under way.
    let start = resources.revision();
    while resources.revision() < start + 100 {
        tokio::task::yield_now().await;
    }
    let mut rx = resources
        .watch(WatchRequest {
            kinds: vec![Kind::Namespace],
            ..Default::default()
        })
        .unwrap();
    let mut snapshot = Vec::new();
    let bookmark = loop {
        let event = next(&mut rx).await;
        if event.kind == WatchEventType::Bookmark {
            break event.revision;
        }
        snapshot.push(event);
    };
    for writer in writers {
        writer.await.unwrap();
    }
    let head = resources.revision();
    assert!(
        bookmark > start && bookmark < head,
        "the snapshot is taken amid the writes"
    );

    let mut state = State::new();
    for event in &snapshot {
        assert_eq!(event.kind, WatchEventType::Added);
        assert_eq!(
            event.revision, bookmark,
            "every event of the snapshot carries the snapshot's revision"
        );
        let version = event.object.as_ref().unwrap().meta().resource_version;
        assert!(
            version <= bookmark,
            "{version} is newer than the snapshot at {bookmark}"
        );
        fold(&mut state, event);
    }
    assert_eq!(
        state.len(),
        snapshot.len(),
        "each object once in the snapshot"
    );
    let at_snapshot = state.clone();

    let mut later = Vec::new();
    if bookmark < head {
        loop {
            let event = next(&mut rx).await;
            let done = event.revision >= head && event.kind != WatchEventType::Bookmark;
            later.push(event);
            if done {
                break;
            }
        }
    }
    for event in &later {
        assert!(
            event.revision > bookmark,
            "{} replays the snapshot",
            event.revision
        );
        if event.kind == WatchEventType::Added {
            let name = &event.object.as_ref().unwrap().meta().name;
            assert!(
                !at_snapshot.contains_key(name),
                "{name} was in the snapshot and is ADDED again"
            );
        }
        fold(&mut state, event);
    }
    let listed = resources
        .list(Kind::Namespace, "", &Default::default(), 0, "")
        .await
        .unwrap();
    let truth: State = listed
        .items
        .iter()
        .map(|o| (o.meta().name.clone(), o.meta().resource_version))
        .collect();
    assert_eq!(state, truth, "the stream ends at the store's state");

    // A client holding the snapshot resumes from the revision of any of its events.
    for event in [
        snapshot.first(),
        snapshot.get(snapshot.len() / 2),
        snapshot.last(),
    ]
    .into_iter()
    .flatten()
    {
        let mut resumed = at_snapshot.clone();
        for e in events_until(&resources, event.revision, head).await {
            fold(&mut resumed, &e);
        }
        assert_eq!(resumed, truth, "resuming from {}", event.revision);
    }
}
