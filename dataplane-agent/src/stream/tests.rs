//! A session over in-memory channels instead of gRPC: what the agent sends while the worker
//! is busy applying.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use troupe_common::pb::v1alpha1::{
    self as pb, AgentMessage, ControlMessage, DataPlaneIdentity, agent_message, control_message,
};

use super::session::Session;
use crate::Config;
use crate::builds::{BuildPlaneConfig, Builds};
use crate::worker::tests::{Gated, mk_gated_worker};

fn mk_control(m: control_message::Message) -> Result<ControlMessage, tonic::Status> {
    Ok(ControlMessage { message: Some(m) })
}

fn mk_upsert(release: &str, generation: i64) -> control_message::Message {
    control_message::Message::Upsert(pb::ReleaseUpsert {
        release: release.into(),
        generation,
        content_hash: "h".into(),
        chunk_index: 0,
        chunk_count: 1,
        manifests: b"[]".to_vec(),
    })
}

fn is_heartbeat(m: &AgentMessage) -> bool {
    matches!(m.message, Some(agent_message::Message::Heartbeat(_)))
}

#[tokio::test]
async fn heartbeats_go_out_while_an_apply_runs_and_its_ack_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let applier = Arc::new(Gated::default());
    let (_stop, worker) = mk_gated_worker(dir.path(), &applier);
    let config = Config::new(
        "https://control-plane.invalid",
        DataPlaneIdentity::default(),
        dir.path(),
        applier.clone(),
    );
    let (session, mut sent) = Session::new(&config, &worker);
    assert!(session.connect().await.unwrap().is_empty());
    let (control, inbound) = mpsc::channel(8);
    let serving = session.serve(ReceiverStream::new(inbound));

    let script = async move {
        let welcome = pb::Welcome {
            heartbeat_interval_seconds: 1,
            ..Default::default()
        };
        control
            .send(mk_control(control_message::Message::Welcome(welcome)))
            .await
            .unwrap();
        control
            .send(mk_control(mk_upsert("acme/api-eu", 3)))
            .await
            .unwrap();
        applier.started.notified().await;
        let blocked = Instant::now();

        // The apply waits: the session goes on beating (the first beat may predate the
        // apply; the next two cannot) and, like the control plane, answers heartbeats.
        for _ in 0..3 {
            let m = sent.recv().await.unwrap();
            assert!(
                is_heartbeat(&m),
                "only heartbeats while the apply runs: {m:?}"
            );
            let beat = pb::Heartbeat::default();
            control
                .send(mk_control(control_message::Message::Heartbeat(beat)))
                .await
                .unwrap();
        }
        assert!(blocked.elapsed() >= Duration::from_secs(1));

        applier.release.notify_one();
        let answer = loop {
            let m = sent.recv().await.unwrap();
            if !is_heartbeat(&m) {
                break m;
            }
        };
        let ack = pb::Ack {
            release: "acme/api-eu".into(),
            generation: 3,
            ok: true,
            error: String::new(),
        };
        assert_eq!(answer.message, Some(agent_message::Message::Ack(ack)));
        // The control plane hangs up: the session ends quietly.
        drop(control);
    };
    let script = tokio::time::timeout(Duration::from_secs(20), script);
    let (served, scripted) = tokio::join!(serving, script);
    scripted.expect("the session answered in time");
    served.unwrap();
}

#[tokio::test]
async fn an_agent_that_takes_builds_says_so_in_hello_and_runs_what_its_session_is_offered() {
    let dir = tempfile::tempdir().unwrap();
    let applier = Arc::new(Gated::default());
    let (stop, mut worker) = mk_gated_worker(dir.path(), &applier);
    let mut builds = BuildPlaneConfig::new(dir.path().join("builds"));
    builds
        .labels
        .insert("troupe.dev/arch".into(), "amd64".into());
    builds.capacity = 3;
    worker.builds = Some(Builds::spawn(builds, stop.subscribe()));
    let config = Config::new(
        "https://control-plane.invalid",
        DataPlaneIdentity::default(),
        dir.path(),
        applier,
    );
    let (session, mut sent) = Session::open(&config, &worker).await.unwrap();
    let hello = sent.recv().await.unwrap();
    let Some(agent_message::Message::Hello(hello)) = hello.message else {
        panic!("Hello first, got {hello:?}");
    };
    let plane = hello.build_plane.expect("a build plane in Hello");
    assert_eq!((plane.executor.as_str(), plane.capacity), ("process", 3));
    assert_eq!(plane.labels["troupe.dev/arch"], "amd64");

    let (control, inbound) = mpsc::channel(8);
    let serving = session.serve(ReceiverStream::new(inbound));
    let script = async move {
        let welcome = pb::Welcome {
            heartbeat_interval_seconds: 5,
            ..Default::default()
        };
        control
            .send(mk_control(control_message::Message::Welcome(welcome)))
            .await
            .unwrap();
        let step = pb::BuildStep {
            name: "say".into(),
            command: vec!["/bin/sh".into(), "-c".into(), "echo built".into()],
            ..Default::default()
        };
        let offer = pb::BuildOffer {
            run: "acme/app-1".into(),
            attempt: 1,
            steps: vec![step],
            lease_seconds: 30,
            ..Default::default()
        };
        control
            .send(mk_control(control_message::Message::BuildOffer(offer)))
            .await
            .unwrap();
        let mut lines = Vec::new();
        loop {
            match sent.recv().await.unwrap().message.unwrap() {
                agent_message::Message::BuildLogs(logs) => lines.extend(logs.lines),
                agent_message::Message::BuildProgress(p) if p.phase == "Succeeded" => break,
                _ => {}
            }
        }
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["built"]);
        drop(control);
    };
    let script = tokio::time::timeout(Duration::from_secs(20), script);
    let (served, scripted) = tokio::join!(serving, script);
    scripted.expect("the build ran and was reported in time");
    served.unwrap();
}
