//! Promotion end to end over real processes: a `troupe server`, a `troupe-agent` with the
//! directory applier, and the `troupe` CLI. A release moves development → staging (after a
//! soak) → production (after an approval and an external check), every refusal says why, an
//! environment rolls back, `troupe history` has the record, and a ComponentType change reaches
//! exactly the first environment of the components that auto-deploy.

use serde_json::Value;
use troupe_tests::{Agent, PATIENCE, Platform, Server, eventually, release_files, stderr, success};

/// Soak in development before staging, in seconds: long enough to observe, short for a test.
const SOAK: u64 = 3;

/// The sample platform with a pipeline that has every kind of gate, and an agent for
/// DataPlane acme/local named `agent`.
fn platform() -> Platform {
    let pipeline = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: DeploymentPipeline
metadata: {{name: default, namespace: acme}}
spec:
  promotionPaths:
    - sourceEnvironment: development
      targets:
        - environment: staging
          gates:
            - {{name: soak-in-development, type: soak, soakDurationSeconds: {SOAK}}}
    - sourceEnvironment: staging
      targets:
        - environment: production
          requiresApproval: true
          approvers: [alice, bob]
          gates:
            - {{name: healthy-in-staging, type: healthy}}
            - {{name: e2e, type: check}}
"
    );
    Platform::builder()
        .examples()
        .people()
        .apply(&pipeline)
        .agent("acme/local", "agent")
        .start()
}

/// The release `component`'s binding in `env` points at.
fn promotion(server: &Server, name: &str) -> Value {
    server.get_json("promotion", "acme", name).unwrap()
}

/// The name in `promotion/NAME: PHASE: …`, the first line `promote` prints.
fn promotion_name(out: &str) -> String {
    out.lines()
        .next()
        .and_then(|l| l.strip_prefix("promotion/"))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no promotion in {out:?}"))
        .to_string()
}

fn deployment(agent: &Agent, release: &str) -> String {
    release_files(&agent.target, "acme", release)
        .into_iter()
        .find(|(f, _)| f.starts_with("deployment.apps_"))
        .map(|(_, text)| text)
        .unwrap_or_default()
}

fn set_image(server: &Server, image: &str) {
    let out = success(&server.cli(&["get", "workload", "api", "-n", "acme", "-o", "yaml"]));
    let changed = out.replace("ghcr.io/acme/api:1.0.0", image);
    assert_ne!(changed, out, "the workload names the 1.0.0 image");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&changed)));
}

#[test]
fn a_release_moves_along_the_pipeline_through_its_gates_and_rolls_back() {
    let server = platform();
    let agent = server.agent("agent");
    let first = server.cut_release("api");
    server.bind("api", "development", &first, "");

    // Asked before development is ready: pending on the soak gate, then done by itself.
    let out = success(&server.cli(&[
        "promote", "api", "-n", "acme", "--to", "staging", "--as", "carol", "-m", "ship it",
    ]));
    assert!(
        out.contains(": Pending: gate soak-in-development:"),
        "{out}"
    );
    let to_staging = promotion_name(&out);
    eventually("the staging promotion succeeds", PATIENCE, || {
        promotion(&server, &to_staging)["status"]["phase"] == "Succeeded"
    });
    let record = promotion(&server, &to_staging);
    assert_eq!(record["spec"]["sourceEnvironment"], "development");
    assert_eq!(record["spec"]["releaseName"], first.as_str());
    assert_eq!(record["spec"]["requestedBy"], "carol");
    // The soak was honoured: it ended at least SOAK seconds after development became ready.
    let binding = server.get_json("rb", "acme", "api-development").unwrap();
    let ready_time = binding["status"]["releaseHistory"][0]["readyTime"]
        .as_str()
        .unwrap()
        .to_string();
    let done = record["status"]["completionTime"].as_str().unwrap();
    assert!(
        seconds(done) - seconds(&ready_time) >= SOAK as f64 - 1.0,
        "soaked from {ready_time} to {done}"
    );
    // The same release, not a re-render of the component.
    assert_eq!(server.bound("api", "staging"), first);
    eventually("staging is ready", PATIENCE, || {
        server.ready("api", "staging")
    });
    assert!(deployment(agent, "api-staging").contains("ghcr.io/acme/api:1.0.0"));

    // Refused outright, recorded, and nothing moves.
    let out = server.cli(&[
        "promote",
        "api",
        "-n",
        "acme",
        "--from",
        "development",
        "--to",
        "production",
        "--as",
        "carol",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pipeline default does not promote development to production")
            && stderr(&out).contains("FailedPrecondition"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&[
        "promote", "api", "-n", "acme", "--to", "staging", "--as", "carol",
    ]);
    assert!(
        stderr(&out).contains("staging already runs"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["promote", "api", "-n", "acme", "--to", "development"]);
    assert!(
        stderr(&out).contains("development is the pipeline's first environment"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["promote", "api", "-n", "acme", "--to", "qa"]);
    assert!(
        stderr(&out).contains("no environment qa"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.bound("api", "production"), "");

    // Production waits for an approver and the e2e check; a rejection ends it.
    let out = success(&server.cli(&[
        "promote",
        "api",
        "-n",
        "acme",
        "--to",
        "production",
        "--as",
        "carol",
    ]));
    assert!(
        out.contains(
            "Pending: waiting for 1 more approval from alice, bob; gate e2e: waiting for a report"
        ),
        "{out}"
    );
    let rejected = promotion_name(&out);
    success(&server.cli(&[
        "reject",
        &rejected,
        "-n",
        "acme",
        "--as",
        "bob",
        "-m",
        "not today",
    ]));
    let record = promotion(&server, &rejected);
    assert_eq!(record["status"]["phase"], "Refused");
    assert_eq!(record["status"]["message"], "rejected by bob: not today");

    // Asked again, twice: the second supersedes the first.
    let superseded = promotion_name(&success(&server.cli(&[
        "promote",
        "api",
        "-n",
        "acme",
        "--to",
        "production",
        "--as",
        "carol",
    ])));
    let to_production = promotion_name(&success(&server.cli(&[
        "promote",
        "api",
        "-n",
        "acme",
        "--to",
        "production",
        "--as",
        "carol",
    ])));
    assert_eq!(
        promotion(&server, &superseded)["status"]["phase"],
        "Superseded"
    );
    // Only an approver other than the requester may approve.
    for (user, why) in [
        ("carol", "carol asked for this promotion"),
        (
            "mallory",
            "mallory may not approve promotions to production (approvers: alice, bob)",
        ),
    ] {
        let out = server.cli(&["approve", &to_production, "-n", "acme", "--as", user]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(why) && stderr(&out).contains("PermissionDenied"),
            "{}",
            stderr(&out)
        );
    }
    let out = success(&server.cli(&["approve", &to_production, "-n", "acme", "--as", "alice"]));
    assert!(
        out.contains("Pending: gate e2e: waiting for a report"),
        "{out}"
    );
    let out = server.cli(&["check", &to_production, "smoke", "--passed", "-n", "acme"]);
    assert!(
        stderr(&out).contains("has no check gate \"smoke\""),
        "{}",
        stderr(&out)
    );
    let out = success(&server.cli(&[
        "check",
        &to_production,
        "e2e",
        "--failed",
        "-m",
        "3 tests failed",
        "-n",
        "acme",
        "--as",
        "ci",
    ]));
    assert!(
        out.contains("gate e2e: failed (reported by ci): 3 tests failed"),
        "{out}"
    );
    assert_eq!(server.bound("api", "production"), "");
    let out = success(&server.cli(&[
        "check",
        &to_production,
        "e2e",
        "--passed",
        "-n",
        "acme",
        "--as",
        "ci",
    ]));
    assert!(out.contains(": Succeeded: production runs"), "{out}");
    assert_eq!(server.bound("api", "production"), first);
    eventually("production is ready", PATIENCE, || {
        server.ready("api", "production")
    });
    let out = server.cli(&["approve", &to_production, "-n", "acme", "--as", "bob"]);
    assert!(
        stderr(&out).contains("the promotion is Succeeded"),
        "{}",
        stderr(&out)
    );

    // A second release reaches staging; rolling staging back returns to the first.
    set_image(&server, "ghcr.io/acme/api:2.0.0");
    let second = server.cut_release("api");
    server.bind("api", "development", &second, "");
    let out = success(&server.cli(&[
        "promote", "api", "-n", "acme", "--to", "staging", "--as", "carol", "--wait", "30",
    ]));
    assert!(out.contains("Succeeded"), "{out}");
    eventually("staging runs 2.0.0", PATIENCE, || {
        deployment(agent, "api-staging").contains("ghcr.io/acme/api:2.0.0")
    });
    let out = success(&server.cli(&[
        "rollback",
        "api",
        "-n",
        "acme",
        "--env",
        "staging",
        "--as",
        "dave",
        "-m",
        "bad build",
    ]));
    assert!(
        out.contains(&format!("Succeeded: staging runs {first} (was {second})")),
        "{out}"
    );
    eventually("staging runs 1.0.0 again", PATIENCE, || {
        deployment(agent, "api-staging").contains("ghcr.io/acme/api:1.0.0")
    });
    let out = success(&server.cli(&[
        "rollback", "api", "-n", "acme", "--env", "staging", "--to", &second,
    ]));
    assert!(out.contains(&format!("staging runs {second}")), "{out}");
    let out = server.cli(&["rollback", "api", "-n", "acme", "--env", "production"]);
    assert!(
        stderr(&out).contains("production has no earlier release"),
        "{}",
        stderr(&out)
    );

    // Every promotion and rollback is on record, in order.
    let out = success(&server.cli(&["history", "api", "-n", "acme", "-o", "json"]));
    let history: Vec<Value> = serde_json::from_str(&out).unwrap();
    let summary: Vec<(String, String, String, String)> = history
        .iter()
        .map(|p| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            (
                s(&p["spec"]["action"]),
                s(&p["spec"]["targetEnvironment"]),
                s(&p["spec"]["releaseName"]),
                s(&p["status"]["phase"]),
            )
        })
        .collect();
    let row = |a: &str, to: &str, r: &str, phase: &str| {
        (
            a.to_string(),
            to.to_string(),
            r.to_string(),
            phase.to_string(),
        )
    };
    assert_eq!(
        summary,
        vec![
            row("Promote", "staging", &first, "Succeeded"),
            row("Promote", "production", &first, "Refused"),
            row("Promote", "production", &first, "Refused"),
            row("Promote", "production", &first, "Superseded"),
            row("Promote", "production", &first, "Succeeded"),
            row("Promote", "staging", &second, "Succeeded"),
            row("Rollback", "staging", &first, "Succeeded"),
            row("Rollback", "staging", &second, "Succeeded"),
        ]
    );
    assert_eq!(history[0]["spec"]["message"], "ship it");
    assert_eq!(history[4]["status"]["approvals"][0]["user"], "alice");
    assert_eq!(history[6]["spec"]["requestedBy"], "dave");
    let table = success(&server.cli(&["history", "api", "-n", "acme"]));
    assert!(table.starts_with("TIME"), "{table}");
    assert_eq!(table.lines().count(), 9, "{table}");
}

#[test]
fn a_component_type_change_reaches_the_first_environment_of_auto_deployed_components_only() {
    let server = platform();
    let agent = server.agent("agent");
    // Three more components like api: two auto-deploy, one does not. One keeps two releases.
    for (name, auto, limit) in [("a1", true, 2), ("a2", true, 0), ("m1", false, 0)] {
        let yaml = format!(
            "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: {name}, namespace: acme}}
spec:
  owner: {{projectName: shop}}
  componentType: {{name: deployment/service}}
  autoDeploy: {auto}
  releaseHistoryLimit: {limit}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: {name}, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: {name}}}
  container: {{image: ghcr.io/acme/{name}:1.0.0}}
"
        );
        success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml)));
    }
    let m1 = server.cut_release("m1");
    server.bind("m1", "development", &m1, "");
    eventually("a1 and a2 are deployed to development", PATIENCE, || {
        server
            .ready("a1", "development")
            .and_then(|()| server.ready("a2", "development"))
    });
    let a1_before = server.bound("a1", "development");
    let a2_before = server.bound("a2", "development");
    // a1 also runs in staging, promoted there.
    let out = success(&server.cli(&[
        "promote", "a1", "-n", "acme", "--to", "staging", "--wait", "30",
    ]));
    assert!(out.contains("Succeeded"), "{out}");
    eventually("m1 is ready", PATIENCE, || {
        server.ready("m1", "development")
    });
    let out = success(&server.cli(&["status", "m1", "-n", "acme"]));
    assert!(!out.contains("newer release available"), "{out}");

    // The platform team changes the type: every Deployment gets 2 replicas by default.
    let out = success(&server.cli(&["get", "ct", "service", "-n", "acme", "-o", "yaml"]));
    let changed = out.replacen("default: 1", "default: 2", 1);
    assert_ne!(changed, out);
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&changed)));

    eventually(
        "a1 and a2 run new releases in development",
        PATIENCE,
        || {
            let (a1, a2) = (
                server.bound("a1", "development"),
                server.bound("a2", "development"),
            );
            a1 != a1_before
                && a2 != a2_before
                && deployment(agent, "a1-development").contains("replicas: 2")
                && deployment(agent, "a2-development").contains("replicas: 2")
        },
    );
    // Nothing else moved: staging waits for a promotion, m1 does not auto-deploy, api neither.
    assert_eq!(server.bound("a1", "staging"), a1_before);
    assert!(deployment(agent, "a1-staging").contains("replicas: 1"));
    assert_eq!(server.bound("m1", "development"), m1);
    assert!(deployment(agent, "m1-development").contains("replicas: 1"));
    assert_eq!(server.bound("api", "development"), "");
    eventually("m1 says a newer release is available", PATIENCE, || {
        let out = success(&server.cli(&["status", "m1", "-n", "acme", "-o", "json"]));
        let doc: Value = serde_json::from_str(&out).unwrap();
        doc["newerReleaseAvailable"] == true && doc["latestRelease"] != m1.as_str()
    });
    let out = success(&server.cli(&["status", "m1", "-n", "acme"]));
    assert!(
        out.contains("newer release available: m1-")
            && out.contains(&format!("development runs {m1}")),
        "{out}"
    );

    // Retention: a1 keeps its two newest releases, and the one staging still runs.
    for version in ["2", "3", "4"] {
        let yaml = format!(
            "apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: a1, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: a1}}
  container: {{image: ghcr.io/acme/a1:{version}.0.0}}
"
        );
        success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml)));
        eventually("a1 runs the new image", PATIENCE, || {
            deployment(agent, "a1-development").contains(&format!("a1:{version}.0.0"))
        });
    }
    let out = success(&server.cli(&[
        "get",
        "cr",
        "-n",
        "acme",
        "-l",
        "troupe.dev/component=a1",
        "-o",
        "json",
    ]));
    let releases: Value = serde_json::from_str(&out).unwrap();
    let mut names: Vec<String> = releases
        .as_array()
        .or_else(|| releases["items"].as_array())
        .unwrap()
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let development = server.bound("a1", "development");
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names.contains(&a1_before),
        "staging's release is kept: {names:?}"
    );
    assert!(names.contains(&development), "{names:?}");
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`2026-11-24T10:00:03.5Z` or
/// `…+00:00`).
fn seconds(timestamp: &str) -> f64 {
    let utc = timestamp.trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, time) = utc
        .split_once('T')
        .unwrap_or_else(|| panic!("{timestamp:?}"));
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}
