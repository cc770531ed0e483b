//! An API server that hangs on one object: the agent keeps its stream and applies the other
//! releases meanwhile, one slow release holding up only itself.

use std::time::{Duration, Instant};

use serde_json::Value;
use troupe_tests::{PATIENCE, Platform, check, eventually, service_component, success};

use super::{TARGET, mk_cluster};

/// The data plane's `status.agentConnection`.
fn connection(platform: &Platform) -> Value {
    let plane = platform
        .get_json("dataplane", "acme", "local")
        .expect("the DataPlane");
    plane["status"]["agentConnection"].clone()
}

#[test]
fn a_release_whose_apply_hangs_holds_up_only_itself_and_the_stream_stays() {
    let (_runtime, kube) = mk_cluster();
    // c0's Deployment is not answered while the test runs.
    kube.delay("PATCH", "deployments", "c0", Duration::from_secs(3600));
    // A heartbeat a second: three missed end the stream within three seconds.
    let platform = Platform::builder()
        .examples()
        .apply(&service_component(0, 0))
        .args(&["--agent-heartbeat-seconds", "1"])
        .start();
    let _agent = platform.register_kube_agent("acme/local", "k8s", &kube, 30);
    let patch = format!("PATCH /apis/apps/v1/namespaces/{TARGET}/deployments/c0");
    eventually("the agent is stuck applying c0", PATIENCE, || {
        check(kube.requests(), |r| r.contains(&patch))
    });
    let hung = Instant::now();
    let connected = connection(&platform);
    assert_eq!(connected["connected"], true, "{connected}");

    // Another release comes while c0's apply hangs: it is applied and acknowledged.
    success(&platform.cli_with_stdin(&["apply", "-f", "-"], Some(&service_component(1, 0))));
    eventually("c1 is applied", PATIENCE, || {
        check(kube.get("deployments", TARGET, "c1"), Option::is_some)
    });
    eventually("c1's Release is recorded as applied", PATIENCE, || {
        check(
            platform.get_json("release", "acme", "c1-development"),
            |r| {
                r.as_ref()
                    .is_some_and(|r| r["status"]["appliedGeneration"] == "1")
            },
        )
    });

    // The stream outlives more than three heartbeat intervals of the hang: never dropped,
    // never opened again.
    eventually(
        "four heartbeat intervals of the hang pass",
        PATIENCE,
        || {
            let now = connection(&platform);
            assert_eq!(now["connected"], true, "{now}");
            assert!(now["lastDisconnectedTime"].is_null(), "{now}");
            assert_eq!(
                now["lastConnectedTime"], connected["lastConnectedTime"],
                "the agent reconnected"
            );
            check(hung.elapsed(), |e| *e > Duration::from_secs(4))
        },
    );
    let release = platform
        .get_json("release", "acme", "c0-development")
        .expect("c0's Release");
    assert!(
        release["status"]["appliedGeneration"].is_null()
            || release["status"]["appliedGeneration"] == "0",
        "c0's apply still hangs: {release}"
    );
}
