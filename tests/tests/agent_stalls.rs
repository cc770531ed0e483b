//! Agents that stop answering must not stop the others: a session that never acknowledges
//! gives its resync turn back after three heartbeat intervals, and a session whose agent does
//! not read its stream is ended. One agent here is the real `troupe_agent` code in this process
//! with an applier that never finishes; the other is a `troupe-agent` process.

use std::sync::Arc;

use futures::future::BoxFuture;
use troupe_agent::apply::{Applied, Applier, Error};
use troupe_common::pb::v1alpha1::{ClusterInfo, DataPlaneIdentity, ReleaseResource};
use troupe_tests::{PATIENCE, Platform, check, eventually};

/// An applier whose every apply hangs: the agent acknowledges nothing.
struct Hanging;

impl Applier for Hanging {
    fn apply<'a>(
        &'a self,
        _release: &'a str,
        _resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<Applied, Error>> {
        Box::pin(std::future::pending())
    }

    fn prune<'a>(&'a self, _release: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::pending())
    }

    fn info(&self) -> BoxFuture<'_, ClusterInfo> {
        Box::pin(async { ClusterInfo::default() })
    }
}

const OTHER: &str = "apiVersion: troupe.dev/v1alpha1
kind: DataPlane
metadata: {name: other, namespace: acme}
spec: {planeId: other}
";

fn connected(platform: &Platform, name: &str) -> Result<(), String> {
    let plane = platform.get_json("dataplane", "acme", name);
    check(plane, |p| {
        p.as_ref()
            .is_some_and(|p| p["status"]["agentConnection"]["connected"] == true)
    })
    .map(|_| ())
}

#[test]
fn an_agent_that_acknowledges_nothing_does_not_hold_the_others_resync() {
    // One resync at a time, one release in flight per agent, a heartbeat a second.
    let platform = Platform::builder()
        .ungated()
        .examples()
        .apply(OTHER)
        .args(&[
            "--agent-heartbeat-seconds",
            "1",
            "--agent-window",
            "1",
            "--agent-concurrent-resyncs",
            "1",
        ])
        .start();
    // Two releases for acme/local: the first is sent and never acknowledged, so the second
    // and the end of the initial diff wait behind it.
    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");
    platform.bind("api", "staging", &release, "");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = troupe_agent::Config::new(
        platform.agent_url(),
        DataPlaneIdentity::parse("acme/local").unwrap(),
        platform.agent_state_dir("hanging"),
        Arc::new(Hanging),
    );
    config.token = Some(platform.token("acme/local", "1h"));
    config.ca_cert = Some(platform.ca_path());
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    runtime.spawn(troupe_agent::run(config, stopping));
    eventually("the hanging agent is connected", PATIENCE, || {
        connected(&platform, "local")
    });

    // The other data plane's agent gets its turn all the same.
    let _other = platform.register_agent("acme/other", "other");
    eventually("the other agent is connected", PATIENCE, || {
        connected(&platform, "other")
    });
    // And the hanging agent is still connected: it heartbeats, it just applies nothing.
    connected(&platform, "local").unwrap();
}
