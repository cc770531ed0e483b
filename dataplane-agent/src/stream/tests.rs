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
