//! The scheduler with a build agent played by the test: an offer the agent refuses for lack
//! of room puts the run back to `Pending` without counting the attempt, the agent is offered
//! nothing for a while, and then the run is offered again. On a store two servers share, the
//! server without the agent never declares its attempt lost; the one with it does, once the
//! agent falls silent; and when the agent died with its server, any server does, once the
//! agent's data plane has shown no connection for a lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use troupe_common::pb::v1alpha1::{self as pb, control_message};
use troupe_common::{Kind, Object, ObjectKey};

use super::{BuildConfig, Builds};
use crate::resources::{Origin, Resources};
use crate::store::MemoryStore;
use troupe_common::agent::Outgoing;

const YAML: &str = "apiVersion: troupe.dev/v1alpha1
kind: Namespace
metadata: {name: acme}
---
apiVersion: troupe.dev/v1alpha1
kind: Workflow
metadata: {name: say, namespace: acme}
spec:
  retries: 0
  steps:
    - {name: say, command: [echo, hello]}
---
apiVersion: troupe.dev/v1alpha1
kind: WorkflowRun
metadata: {name: say-1, namespace: acme}
spec:
  workflow: {name: say}
";

/// The next offer sent to the agent, waiting at most `wait`.
async fn offer(rx: &mut mpsc::Receiver<Outgoing>, wait: Duration) -> Option<pb::BuildOffer> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, rx.recv()).await.ok()??;
        if let Ok(pb::ControlMessage {
            message: Some(control_message::Message::BuildOffer(offer)),
        }) = *message
        {
            return Some(offer);
        }
    }
}

fn status(resources: &Resources) -> pb::WorkflowRunStatus {
    let key = ObjectKey::new(Kind::WorkflowRun, "acme", "say-1");
    match resources.get(&key) {
        Ok(Object::WorkflowRun(run)) => run.status.unwrap_or_default(),
        other => panic!("the run: {other:?}"),
    }
}

#[tokio::test]
async fn an_offer_refused_for_lack_of_room_is_offered_again_later_and_not_counted() {
    let resources = Arc::new(Resources::new(Arc::new(MemoryStore::new())));
    for object in troupe_common::document::from_yaml(YAML).unwrap() {
        resources.apply(object, Origin::User, false).await.unwrap();
    }
    let config = BuildConfig {
        lease: Duration::from_secs(3),
        ..BuildConfig::default()
    };
    let (_stop, stopping) = watch::channel(false);
    let builds = Builds::start(
        resources.clone(),
        config,
        &crate::shared_state::StateHome::Local(None),
        stopping,
    )
    .unwrap();
    let plane = ObjectKey::new(Kind::DataPlane, "acme", "builder");
    let (tx, mut rx) = mpsc::channel(64);
    let build_plane = pb::BuildPlane {
        executor: "process".into(),
        capacity: 1,
        ..Default::default()
    };
    builds.connect(&plane, 1, &build_plane, tx.clone());

    let first = offer(&mut rx, Duration::from_secs(10))
        .await
        .expect("an offer");
    assert_eq!((first.run.as_str(), first.attempt), ("acme/say-1", 1));
    let refused = pb::BuildProgress {
        run: first.run.clone(),
        attempt: 1,
        phase: "Refused".into(),
        message: "the agent is at capacity: 1 of 1 build attempts running".into(),
        ..Default::default()
    };
    builds.progress(&plane, refused, &tx).await;
    let back = status(&resources);
    assert_eq!(back.phase, "Pending", "{back:?}");
    assert!(
        back.message.contains("refused attempt 1"),
        "{}",
        back.message
    );
    assert_eq!(back.attempts[0].phase, "Refused");

    // The agent said it is full: nothing for a third of the lease (1 s), then the run again,
    // though the workflow allows no retry.
    let started = tokio::time::Instant::now();
    let again = offer(&mut rx, Duration::from_secs(10))
        .await
        .expect("a second offer");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(again.attempt, 2);
    assert_eq!(status(&resources).phase, "Running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_store_only_the_server_holding_the_agent_keeps_its_lease() {
    let resources = Arc::new(Resources::new(Arc::new(MemoryStore::new())));
    for object in troupe_common::document::from_yaml(YAML).unwrap() {
        resources.apply(object, Origin::User, false).await.unwrap();
    }
    let lease = Duration::from_secs(2);
    let config = BuildConfig {
        lease,
        shared_store: true,
        ..BuildConfig::default()
    };
    let (_stop, stopping) = watch::channel(false);
    let server = || {
        Builds::start(
            resources.clone(),
            config.clone(),
            &crate::shared_state::StateHome::Local(None),
            stopping.clone(),
        )
        .unwrap()
    };
    // Two servers on one store; the build agent is connected to `holder` only.
    let (holder, other) = (server(), server());
    let plane = ObjectKey::new(Kind::DataPlane, "acme", "builder");
    let (tx, mut rx) = mpsc::channel(64);
    let build_plane = pb::BuildPlane {
        executor: "process".into(),
        capacity: 1,
        ..Default::default()
    };
    holder.connect(&plane, 1, &build_plane, tx.clone());
    let offered = offer(&mut rx, Duration::from_secs(10))
        .await
        .expect("an offer");
    let running = pb::BuildProgress {
        run: offered.run.clone(),
        attempt: offered.attempt,
        phase: "Running".into(),
        ..Default::default()
    };
    // The agent reports to its server for three leases: the other server, which sees the
    // run only in the store, leaves it alone.
    let until = tokio::time::Instant::now() + lease * 3;
    while tokio::time::Instant::now() < until {
        holder.progress(&plane, running.clone(), &tx).await;
        tokio::time::sleep(lease / 4).await;
    }
    let status = status(&resources);
    assert_eq!(
        (status.phase.as_str(), status.attempt),
        ("Running", 1),
        "{status:?}"
    );
    drop(other);
    // Silent, it is declared lost by the server that held it.
    let deadline = tokio::time::Instant::now() + lease * 5;
    while status_of_attempt(&resources) != "Lost" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            status_of_attempt(&resources)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The phase of the run's first attempt.
fn status_of_attempt(resources: &Resources) -> String {
    status(resources)
        .attempts
        .first()
        .map(|a| a.phase.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_store_an_attempt_whose_agent_died_with_its_server_is_lost() {
    let resources = Arc::new(Resources::new(Arc::new(MemoryStore::new())));
    let data_plane = include_str!("../../../examples/platform.yaml")
        .split("\n---\n")
        .find(|d| d.lines().any(|l| l == "kind: DataPlane"))
        .expect("the sample DataPlane");
    let yaml = format!("{YAML}---\n{data_plane}");
    for object in troupe_common::document::from_yaml(&yaml).unwrap() {
        resources.apply(object, Origin::User, false).await.unwrap();
    }
    let lease = Duration::from_secs(2);
    let config = BuildConfig {
        lease,
        shared_store: true,
        ..BuildConfig::default()
    };
    let server = |stopping| {
        Builds::start(
            resources.clone(),
            config.clone(),
            &crate::shared_state::StateHome::Local(None),
            stopping,
        )
        .unwrap()
    };
    let (stop_dead, stopping) = watch::channel(false);
    let dead = server(stopping);
    let plane = ObjectKey::new(Kind::DataPlane, "acme", "local");
    let (tx, mut rx) = mpsc::channel(64);
    let build_plane = pb::BuildPlane {
        executor: "process".into(),
        capacity: 1,
        ..Default::default()
    };
    dead.connect(&plane, 1, &build_plane, tx);
    offer(&mut rx, Duration::from_secs(10))
        .await
        .expect("an offer");
    assert_eq!(status(&resources).phase, "Running");
    // The server dies with its agent; another server sees the run in the store.
    stop_dead.send_replace(true);
    drop(dead);
    let (_stop, stopping) = watch::channel(false);
    let _other = server(stopping);
    let connected = |connected: bool, seconds_ago: i64| {
        let at = troupe_common::timestamp::now().seconds - seconds_ago;
        let resources = resources.clone();
        let plane = plane.clone();
        async move {
            resources
                .update_status(&plane, move |_, object| {
                    if let Object::DataPlane(dp) = object {
                        let connection = dp
                            .status
                            .get_or_insert_default()
                            .agent_connection
                            .get_or_insert_default();
                        connection.connected = connected;
                        connection.last_disconnected_time = Some(pbjson_types::Timestamp {
                            seconds: at,
                            nanos: 0,
                        });
                    }
                })
                .await
                .unwrap();
        }
    };
    // While the data plane shows its agent connected (to some server), nothing happens.
    connected(true, 60).await;
    tokio::time::sleep(lease * 2).await;
    assert_eq!(status_of_attempt(&resources), "Running");
    // Disconnected for longer than a lease: lost.
    connected(false, 10).await;
    let deadline = tokio::time::Instant::now() + lease * 5;
    while status_of_attempt(&resources) != "Lost" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            status(&resources)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = status(&resources).attempts[0].message.clone();
    assert!(message.contains("connected to no server"), "{message}");
}
