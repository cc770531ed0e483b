//! What an idle agent costs the API server: 100 releases applied, then drift passes every
//! second for 20 seconds (as many passes as ten minutes at the default 30 s interval), and
//! the requests counted.

use std::time::{Duration, Instant};

use troupe_tests::kube_api::KubeApi;
use troupe_tests::{Platform, check, eventually, service_component};

use super::{TARGET, mk_cluster};

const RELEASES: usize = 100;

/// Components `c0..c{RELEASES}` deploying on their own to development: a Deployment, a
/// ConfigMap of files and a Service each.
fn components() -> String {
    (0..RELEASES)
        .map(|i| service_component(i, 0))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Waits for a drift pass over every release: an object deleted by hand comes back.
fn one_drift_pass(kube: &KubeApi) {
    assert!(kube.delete("configmaps", TARGET, "c0-files"));
    eventually(
        "a drift pass re-creates the ConfigMap",
        Duration::from_secs(60),
        || check(kube.get("configmaps", TARGET, "c0-files"), Option::is_some),
    );
}

#[test]
fn an_idle_agent_with_a_hundred_releases_sends_no_request() {
    let (_runtime, kube) = mk_cluster();
    let platform = Platform::builder().examples().apply(&components()).start();
    let _agent = platform.register_kube_agent("acme/local", "k8s", &kube, 1);
    eventually("every release is applied", Duration::from_secs(120), || {
        check(
            (
                kube.list("deployments", TARGET).len(),
                kube.list("configmaps", TARGET).len(),
                kube.list("services", TARGET).len(),
            ),
            // The namespace's own kube-root-ca.crt is a ConfigMap too.
            |n| *n == (RELEASES, RELEASES + 1, RELEASES),
        )
    });
    one_drift_pass(&kube);
    one_drift_pass(&kube);

    kube.clear_requests();
    let window = Duration::from_secs(20);
    let start = Instant::now();
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_millis(500));
    }
    let requests = kube.requests();
    assert_eq!(
        requests,
        Vec::<String>::new(),
        "{} requests in {} drift passes over {RELEASES} releases",
        requests.len(),
        window.as_secs()
    );
    // And it still corrects drift: the window held no pass that had anything to do.
    one_drift_pass(&kube);
    let requests = kube.requests();
    assert!(
        requests.iter().all(|r| r.contains("/configmaps/c0-files")),
        "only the deleted object is sent: {requests:?}"
    );
}
