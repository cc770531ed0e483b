//! Golden renders: every case rendered by both providers matches a reviewed YAML file in
//! `testdata/<provider>/<case>.yaml`, so a change to the policies shows up as a diff to review.
//! `TROUPE_UPDATE_GOLDEN=1` rewrites the files (as for the other golden files of Troupe).

use std::path::PathBuf;

use troupe_common::document::json_to_yaml;

use super::*;

/// The cases, by file name. Each stands for one thing a user declares.
fn cases() -> Vec<(&'static str, Case)> {
    let http = |visibility: &[&str]| mk_endpoint("http", "HTTP", 80, 8080, visibility);
    let with = |endpoints: Vec<pb::Endpoint>| Case {
        endpoints,
        gateways: mk_gateways(),
        ..mk_case("shop", "api")
    };
    let mut cross_project = with(vec![http(&["namespace"])]);
    cross_project.consumers = vec![
        // Permitted: `namespace` on both sides; and the same project, always.
        mk_consumer("billing", "invoices", "http", "namespace"),
        // Not permitted: the connection goes through `project`; adds nothing.
        mk_consumer("billing", "ledger", "http", "project"),
        mk_consumer("shop", "web", "http", "project"),
    ];
    let mut refused = with(vec![http(&["project"])]);
    refused.consumers = vec![mk_consumer("billing", "invoices", "http", "namespace")];
    let mut egress = with(vec![http(&["project"])]);
    egress.egress = Some(Egress {
        destinations: vec![
            mk_destination("shop", "db", 5432, "TCP"),
            mk_destination("billing", "ledger", 7070, "TCP"),
            mk_destination("shop", "metrics", 8125, "UDP"),
        ],
        rules: vec![
            mk_cidr("10.20.0.0/16", &[5432, 6379]),
            mk_cidr("2001:db8::/32", &[]),
            mk_host("api.stripe.com", &[443]),
            mk_host("*.example.com", &[]),
        ],
    });
    let mut dns_only = mk_case("shop", "worker");
    dns_only.egress = Some(Egress::default());
    vec![
        ("project", with(vec![http(&["project"])])),
        ("namespace", with(vec![http(&["namespace"])])),
        ("internal", with(vec![http(&["internal"])])),
        ("external", with(vec![http(&["external"])])),
        (
            "namespace-external",
            with(vec![
                http(&["namespace", "external"]),
                mk_endpoint("stats", "UDP", 8125, 0, &[]),
            ]),
        ),
        ("cross-project", cross_project),
        ("cross-project-refused", refused),
        ("no-endpoints", mk_case("shop", "worker")),
        ("egress", egress),
        ("egress-dns-only", dns_only),
    ]
}

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/render/network/tests/testdata")
}

/// The output as a reviewer reads it: the objects as a YAML stream, then each unenforced
/// rule as a comment.
fn to_text(output: &NetworkOutput) -> String {
    let docs: Vec<String> = output.objects.iter().map(json_to_yaml).collect();
    let mut text = docs.join("---\n");
    for rule in &output.unenforced {
        text.push_str(&format!("# unenforced: {rule}\n"));
    }
    text
}

/// The lines that differ, `-` expected and `+` rendered, with the line numbers: enough to
/// see the change without a diff tool.
fn line_diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        let (old, new) = (e.get(i), a.get(i));
        if old != new {
            old.into_iter()
                .for_each(|l| out.push_str(&format!("{:>4} - {l}\n", i + 1)));
            new.into_iter()
                .for_each(|l| out.push_str(&format!("{:>4} + {l}\n", i + 1)));
        }
    }
    out
}

#[test]
fn renders_match_their_golden_files() {
    let update = std::env::var_os("TROUPE_UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for provider in [Provider::Kubernetes, Provider::Cilium] {
        let folder = testdata().join(format!("{provider:?}").to_lowercase());
        for (name, case) in cases() {
            let text = to_text(&case.with_provider(provider).render());
            let path = folder.join(format!("{name}.yaml"));
            if update {
                std::fs::create_dir_all(&folder).unwrap();
                std::fs::write(&path, &text).unwrap();
            }
            match std::fs::read_to_string(&path) {
                Ok(expected) if expected == text => {}
                Ok(expected) => failures.push(format!(
                    "{} differs from the render:\n{}",
                    path.display(),
                    line_diff(&expected, &text)
                )),
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nreview the change; TROUPE_UPDATE_GOLDEN=1 rewrites the files",
        failures.join("\n")
    );
}

/// A golden file no case writes would stay unreviewed forever.
#[test]
fn every_golden_file_belongs_to_a_case() {
    let names: Vec<String> = cases().iter().map(|(n, _)| format!("{n}.yaml")).collect();
    for provider in ["kubernetes", "cilium"] {
        let folder = testdata().join(provider);
        let files = std::fs::read_dir(&folder).expect("the golden files are checked in");
        for file in files {
            let file = file.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                names.contains(&file),
                "{provider}/{file} belongs to no case"
            );
        }
    }
}

/// What no render may do, whatever the case: admit everyone through an empty `from` (or
/// `fromEndpoints`), or name a peer twice in one rule.
#[test]
fn no_rule_admits_everyone_or_repeats_a_peer() {
    for provider in [Provider::Kubernetes, Provider::Cilium] {
        for (name, case) in cases() {
            let output = case.with_provider(provider).render();
            assert_eq!(output.objects.len(), 1, "{name}");
            let spec = &output.objects[0]["spec"];
            for rule in spec["ingress"].as_array().into_iter().flatten() {
                let peers = rule
                    .get("from")
                    .or_else(|| rule.get("fromEndpoints"))
                    .and_then(|p| p.as_array());
                // Only Cilium's deny-all rule `{}` has no peers; it has no ports either.
                let Some(peers) = peers else {
                    assert_eq!(rule, &serde_json::json!({}), "{provider:?} {name}");
                    continue;
                };
                assert!(!peers.is_empty(), "{provider:?} {name}: {rule}");
                for (i, peer) in peers.iter().enumerate() {
                    assert!(!peers[..i].contains(peer), "{provider:?} {name}: {peer}");
                }
            }
        }
    }
}
