//! The dependency graph (ReleaseService.Graph, `troupe graph`) is a read like List: it needs
//! `list` on Component, Workload and ReleaseBinding, and shows each caller only the
//! components it may list; asking for a project out of reach is PERMISSION_DENIED naming it,
//! whichever client asks.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use troupe_tests::probes::{Client, cli_as, code};
use troupe_tests::{stderr, stdout, success};

use crate::fixture::{Role, fixture};

/// `project/name` of each component of a graph in proto3 JSON.
fn components(graph: &Value) -> BTreeSet<String> {
    graph["components"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}/{}",
                c["project"].as_str().unwrap_or_default(),
                c["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn the_graph_shows_each_caller_what_it_may_list() {
    let f = fixture();
    let graph = |role: Role, args: &[&str]| {
        let mut all = vec!["graph", "-n", "acme", "-o", "json"];
        all.extend(args);
        cli_as(&f.platform, f.token(role), &all, None)
    };
    let seen = |role: Role| {
        let out = success(&graph(role, &[]));
        components(&serde_json::from_str(&out).expect("JSON from troupe graph"))
    };
    // Other tests of the file add billing components to the shared platform meanwhile.
    for role in [Role::Viewer, Role::PlatformEngineer] {
        let seen = seen(role);
        assert!(
            seen.contains("billing/ledger") && seen.contains("shop/api"),
            "{role:?} sees every project: {seen:?}"
        );
    }
    assert_eq!(
        seen(Role::Developer),
        BTreeSet::from(["shop/api".to_string()]),
        "shop's developer sees nothing of billing"
    );

    // ci-publisher lists workloads, not components.
    let out = graph(Role::Ci, &[]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("ci may not list Component in namespace acme")
            && stderr(&out).contains("PermissionDenied"),
        "{}",
        stderr(&out)
    );

    let call = json!([{"service": "ReleaseService", "method": "Graph",
                       "request": {"namespace": "acme", "project": "billing"}}]);
    for client in Client::ALL {
        let answer = &client.probe(&f.platform, f.token(Role::Developer), &call)[0];
        assert_eq!(
            answer.code,
            code::PERMISSION_DENIED,
            "{client:?}: {answer:?}"
        );
        for word in ["list", "Component", "acme", "billing"] {
            assert!(
                answer.message.contains(word),
                "{client:?}: {word} not in {answer:?}"
            );
        }
    }
    let answer = &Client::Python.probe(&f.platform, f.token(Role::Viewer), &call)[0];
    assert_eq!(answer.code, code::OK, "{answer:?}");
    let billing = components(&answer.body);
    assert!(
        billing.contains("billing/ledger") && billing.iter().all(|c| c.starts_with("billing/")),
        "{billing:?}"
    );
}
