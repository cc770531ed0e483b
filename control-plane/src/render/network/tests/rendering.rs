//! What a user notices in the rendered policies beyond the golden files: which changes to
//! their declarations change the policy, and which do not.

use serde_json::{Value, json};

use super::*;

const PROVIDERS: [Provider; 2] = [Provider::Kubernetes, Provider::Cilium];

fn api(visibility: &[&str]) -> Case {
    Case {
        endpoints: vec![mk_endpoint("http", "HTTP", 80, 8080, visibility)],
        ..mk_case("shop", "api")
    }
}

fn policy(case: &Case) -> Value {
    let output = case.render();
    assert_eq!(output.objects.len(), 1, "{output:?}");
    output.objects[0].clone()
}

#[test]
fn the_none_provider_renders_nothing() {
    let mut case = api(&["external"]).with_provider(Provider::None);
    case.egress = Some(Egress {
        rules: vec![mk_host("api.example.com", &[])],
        ..Egress::default()
    });
    assert_eq!(case.render(), NetworkOutput::default());
}

#[test]
fn the_policy_is_named_for_the_component_in_its_cell_without_labels() {
    for provider in PROVIDERS {
        let metadata = &policy(&api(&[]).with_provider(provider))["metadata"];
        assert_eq!(
            metadata,
            &json!({"name": "troupe-api", "namespace": "acme-shop-development"}),
            "{provider:?}"
        );
    }
}

#[test]
fn an_endpoint_opens_the_port_its_pods_listen_on_with_its_protocol() {
    let mut case = api(&[]);
    case.endpoints = vec![
        mk_endpoint("http", "HTTP", 80, 8080, &[]),
        mk_endpoint("admin", "gRPC", 9000, 0, &[]),
        mk_endpoint("stats", "UDP", 8125, 0, &[]),
    ];
    let ingress = &policy(&case)["spec"]["ingress"];
    let ports: Vec<&Value> = ingress
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["ports"][0])
        .collect();
    assert_eq!(
        ports,
        [
            &json!({"port": 8080, "protocol": "TCP"}),
            &json!({"port": 9000, "protocol": "TCP"}),
            &json!({"port": 8125, "protocol": "UDP"}),
        ]
    );
    let cilium = policy(&case.with_provider(Provider::Cilium));
    assert_eq!(
        cilium["spec"]["ingress"][2]["toPorts"],
        json!([{"ports": [{"port": "8125", "protocol": "UDP"}]}])
    );
}

#[test]
fn endpoints_on_one_pod_port_share_one_rule_open_to_both_audiences() {
    let mut case = api(&[]);
    case.gateways = mk_gateways();
    case.endpoints = vec![
        mk_endpoint("http", "HTTP", 80, 8080, &["external"]),
        mk_endpoint("metrics", "HTTP", 8080, 0, &["namespace"]),
    ];
    for provider in PROVIDERS {
        let rendered = policy(&case.clone().with_provider(provider));
        let rules = rendered["spec"]["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 1, "{provider:?}: {rules:?}");
        let peers = rules[0]
            .get("from")
            .or(rules[0].get("fromEndpoints"))
            .unwrap();
        // Own cell, the tenant's cells, the external gateway.
        assert_eq!(peers.as_array().unwrap().len(), 3, "{provider:?}: {peers}");
    }
}

/// Declaring `internal` or `external` on a data plane without that gateway opens nothing.
#[test]
fn a_visibility_without_its_gateway_adds_nothing() {
    for provider in PROVIDERS {
        let project_only = policy(&api(&[]).with_provider(provider));
        let mut internal = api(&["internal"]).with_provider(provider);
        internal.gateways = vec![mk_gateway("external", "gateway-external", &[])];
        assert_eq!(policy(&internal), project_only, "{provider:?}");
        let external = api(&["external"]).with_provider(provider);
        assert_eq!(policy(&external), project_only, "{provider:?}");
    }
}

/// A connection the endpoint does not admit leaves the target's policy as it was: another
/// project through `project`, or through `namespace` to an endpoint that does not say
/// `namespace`.
#[test]
fn a_connection_the_endpoint_does_not_admit_changes_nothing() {
    for provider in PROVIDERS {
        for (visibility, connection) in [(&[][..], "namespace"), (&["namespace"][..], "project")] {
            let before = policy(&api(visibility).with_provider(provider));
            let mut case = api(visibility).with_provider(provider);
            case.consumers = vec![mk_consumer("billing", "ledger", "http", connection)];
            assert_eq!(policy(&case), before, "{provider:?} {visibility:?}");
        }
    }
}

/// Adding a permitted connection names the consumer in the target's policy (even where its
/// cell is admitted already); removing it restores the policy.
#[test]
fn a_permitted_connection_names_its_consumer_until_it_is_removed() {
    for provider in PROVIDERS {
        for (consumer, visibility) in [
            (mk_consumer("shop", "web", "http", "project"), &[][..]),
            (
                mk_consumer("billing", "invoices", "http", "namespace"),
                &["namespace"][..],
            ),
        ] {
            let before = policy(&api(visibility).with_provider(provider));
            let mut case = api(visibility).with_provider(provider);
            case.consumers = vec![consumer.clone()];
            let after = policy(&case);
            let text = after["spec"]["ingress"].to_string();
            assert!(
                text.contains(&format!(
                    r#""troupe.dev/component":"{}""#,
                    consumer.peer.component
                )),
                "{provider:?}: {text}"
            );
            case.consumers.clear();
            assert_eq!(policy(&case), before, "{provider:?}");
        }
    }
}

#[test]
fn host_names_are_unenforced_by_kubernetes_and_enforced_by_cilium() {
    let mut case = api(&[]);
    case.egress = Some(Egress {
        rules: vec![
            mk_host("api.example.com", &[443]),
            mk_cidr("10.0.0.0/8", &[]),
        ],
        ..Egress::default()
    });
    let output = case.render();
    assert_eq!(
        output.unenforced,
        [
            "egress to host api.example.com cannot be enforced by the kubernetes provider \
          (NetworkPolicy has no host names): its traffic is denied; use a CIDR, or the cilium \
          provider"
        ]
    );
    let egress = output.objects[0]["spec"]["egress"].to_string();
    assert!(!egress.contains("example.com"), "{egress}");
    assert!(egress.contains("10.0.0.0/8"), "{egress}");

    let cilium = case.with_provider(Provider::Cilium).render();
    assert!(cilium.unenforced.is_empty(), "{:?}", cilium.unenforced);
    assert_eq!(
        cilium.objects[0]["spec"]["egress"][1]["toFQDNs"],
        json!([{"matchName": "api.example.com"}])
    );
}

#[test]
fn egress_is_left_alone_unless_controlled() {
    for provider in PROVIDERS {
        let spec = &policy(&api(&[]).with_provider(provider))["spec"];
        assert!(spec.get("egress").is_none(), "{provider:?}: {spec}");
        if provider == Provider::Kubernetes {
            assert_eq!(spec["policyTypes"], json!(["Ingress"]));
        }
    }
}
