//! The egress allow lists: which list is in force, the project's ceiling, and what a
//! well-formed rule is.

use super::*;

fn on(allow: Vec<pb::EgressRule>) -> pb::EgressPolicy {
    mk_policy(true, allow)
}

fn off(allow: Vec<pb::EgressRule>) -> pb::EgressPolicy {
    mk_policy(false, allow)
}

#[test]
fn egress_is_uncontrolled_unless_the_project_or_the_component_turns_it_on() {
    let rules = vec![mk_cidr("10.0.0.0/8", &[])];
    assert_eq!(effective_egress(None, None), Ok(None));
    assert_eq!(
        effective_egress(Some(&off(rules.clone())), Some(&off(rules.clone()))),
        Ok(None)
    );
}

#[test]
fn a_component_alone_uses_its_own_rules() {
    let mine = vec![mk_host("api.example.com", &[443])];
    for project in [None, Some(off(vec![mk_cidr("10.0.0.0/8", &[])]))] {
        assert_eq!(
            effective_egress(project.as_ref(), Some(&on(mine.clone()))),
            Ok(Some(mine.clone()))
        );
    }
}

#[test]
fn a_project_alone_sets_the_rules_of_its_components() {
    let project = on(vec![mk_cidr("10.0.0.0/8", &[443])]);
    let component_off = off(vec![mk_cidr("192.168.0.0/16", &[])]);
    for component in [None, Some(&component_off)] {
        assert_eq!(
            effective_egress(Some(&project), component),
            Ok(Some(project.allow.clone()))
        );
    }
    // Turned on with nothing listed: only DNS and the connections.
    assert_eq!(effective_egress(Some(&on(vec![])), None), Ok(Some(vec![])));
}

#[test]
fn a_component_within_its_project_narrows_the_rules() {
    let project = on(vec![
        mk_cidr("10.0.0.0/8", &[]),
        mk_cidr("2001:db8::/32", &[443, 8443]),
        mk_host("*.example.com", &[443]),
        mk_host("api.stripe.com", &[]),
    ]);
    let narrower = vec![
        mk_cidr("10.20.0.0/16", &[5432]),
        mk_cidr("10.0.0.0/8", &[]),
        mk_cidr("2001:db8:1::/48", &[443]),
        mk_host("api.example.com", &[443]),
        mk_host("*.example.com", &[443]),
        mk_host("api.stripe.com", &[443]),
    ];
    assert_eq!(
        effective_egress(Some(&project), Some(&on(narrower.clone()))),
        Ok(Some(narrower))
    );
    assert_eq!(
        effective_egress(Some(&project), Some(&on(vec![]))),
        Ok(Some(vec![]))
    );
}

/// Each way out of the ceiling is refused, naming the component's rule by its index and
/// what the project allows.
#[test]
fn a_component_rule_beyond_its_project_is_refused_by_index() {
    let project = on(vec![
        mk_cidr("10.0.0.0/8", &[]),
        mk_cidr("2001:db8::/32", &[443]),
        mk_host("*.example.com", &[443]),
    ]);
    let inside = mk_cidr("10.1.0.0/16", &[]);
    for (beyond, shown) in [
        (mk_cidr("11.0.0.0/8", &[]), "11.0.0.0/8 on every port"),
        (mk_cidr("0.0.0.0/0", &[]), "0.0.0.0/0 on every port"),
        (mk_cidr("::/0", &[]), "::/0 on every port"),
        (mk_cidr("2001:db8::/32", &[]), "2001:db8::/32 on every port"),
        (mk_cidr("2001:db8::/32", &[80]), "2001:db8::/32 on port 80"),
        (mk_host("example.com", &[443]), "example.com on port 443"),
        (
            mk_host("a.b.example.com", &[443]),
            "a.b.example.com on port 443",
        ),
        (
            mk_host("evilexample.com", &[443]),
            "evilexample.com on port 443",
        ),
        (
            mk_host("api.example.com", &[443, 80]),
            "api.example.com on ports 443, 80",
        ),
    ] {
        let component = on(vec![inside.clone(), beyond]);
        let err = effective_egress(Some(&project), Some(&component)).unwrap_err();
        assert_eq!(
            err,
            format!(
                "spec.egress.allow[1] ({shown}) is not within the project's egress allow list \
                 (10.0.0.0/8 on every port; 2001:db8::/32 on port 443; *.example.com on port \
                 443): narrow it, or widen the project's"
            )
        );
    }
}

fn check(allow: Vec<pb::EgressRule>) -> Result<(), (String, String)> {
    check_egress("spec.egress", &on(allow))
}

fn refused(rule: pb::EgressRule) -> (String, String) {
    check(vec![mk_cidr("10.0.0.0/8", &[443]), rule]).unwrap_err()
}

#[test]
fn well_formed_rules_pass() {
    assert_eq!(
        check(vec![
            mk_cidr("10.0.0.0/8", &[1, 65535]),
            mk_cidr("192.168.1.7/32", &[]),
            mk_cidr("0.0.0.0/0", &[]),
            mk_cidr("2001:db8::/32", &[443]),
            mk_cidr("::/0", &[]),
            mk_host("api.example.com", &[443]),
            mk_host("*.example.com", &[]),
            mk_host("localhost", &[]),
            mk_host("x-1.example-2.com", &[]),
        ]),
        Ok(())
    );
    assert_eq!(check(vec![]), Ok(()));
}

#[test]
fn a_rule_sets_exactly_one_of_cidr_and_host() {
    let both = pb::EgressRule {
        cidr: "10.0.0.0/8".into(),
        host: "api.example.com".into(),
        ports: vec![],
    };
    for rule in [both, pb::EgressRule::default()] {
        assert_eq!(
            refused(rule),
            (
                "spec.egress.allow[1]".to_string(),
                "set exactly one of cidr and host".to_string()
            )
        );
    }
}

#[test]
fn a_malformed_cidr_is_refused_with_the_reason() {
    for (cidr, reason) in [
        ("10.0.0.0", "not in CIDR notation"),
        ("10.0.0/8", "10.0.0 is not an IPv4 or IPv6 address"),
        ("10.0.0.0/33", "prefix length 33 is not within 0–32"),
        ("2001:db8::/129", "prefix length 129 is not within 0–128"),
        ("10.0.0.0/+8", "prefix length +8 is not within 0–32"),
        ("10.0.0.0/", "prefix length  is not within 0–32"),
        (
            "example.com/8",
            "example.com is not an IPv4 or IPv6 address",
        ),
        ("10.0.0.1/8", "write 10.0.0.0/8"),
        ("2001:db8::1/32", "write 2001:db8::/32"),
    ] {
        let (field, message) = refused(mk_cidr(cidr, &[]));
        assert_eq!(field, "spec.egress.allow[1].cidr", "{cidr}");
        assert!(message.contains(reason), "{cidr}: {message}");
    }
}

#[test]
fn a_host_must_be_a_lowercase_dns_name_or_a_wildcard_over_one() {
    let long_label = format!("{}.com", "a".repeat(64));
    let long_name = format!("{}com", "abcdefghi.".repeat(26));
    for host in [
        "Api.example.com",
        "api_example.com",
        "-api.example.com",
        "api-.example.com",
        "api..example.com",
        "api.example.com.",
        "*",
        "*.",
        "**.example.com",
        "api.*.example.com",
        "https://api.example.com",
        &long_label,
        &long_name,
    ] {
        let (field, message) = refused(mk_host(host, &[]));
        assert_eq!(field, "spec.egress.allow[1].host", "{host}");
        assert!(
            message.contains("is not a lowercase DNS name"),
            "{host}: {message}"
        );
    }
}

#[test]
fn ports_must_be_within_range() {
    for port in [0, -1, 65536] {
        assert_eq!(
            refused(mk_cidr("10.0.0.0/8", &[443, port])),
            (
                "spec.egress.allow[1].ports[1]".to_string(),
                format!("port {port} is not within 1–65535")
            )
        );
    }
}
