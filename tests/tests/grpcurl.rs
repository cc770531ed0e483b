//! The real grpcurl against the real server, over TLS trusting the server's CA: services are
//! discoverable by reflection with no proto files at hand, and a Component can be created,
//! read, listed, watched and deleted with plain JSON.

use std::process::Stdio;

use troupe_tests::{PATIENCE, Platform, eventually, stderr, success};

const SERVICE: &str = "troupe.v1alpha1.ResourceService";

const COMPONENT: &str = r#"{"resource": {"component": {
  "apiVersion": "troupe.dev/v1alpha1", "kind": "Component",
  "metadata": {"name": "worker", "namespace": "acme", "labels": {"tier": "backend"}},
  "spec": {"owner": {"projectName": "shop"}, "componentType": {"name": "deployment/service"},
           "parameters": {"port": 9000}}}}}"#;

#[test]
fn reflection_lists_and_describes_the_services() {
    let server = Platform::builder().start();
    let out = success(&server.grpcurl(&[&server.addr, "list"]));
    for service in [
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            out.lines().any(|l| l == service),
            "{service} missing from:\n{out}"
        );
    }
    let described = success(&server.grpcurl(&[&server.addr, "describe", SERVICE]));
    for rpc in [
        "rpc Apply",
        "rpc Get",
        "rpc List",
        "rpc Delete",
        "rpc Watch",
    ] {
        assert!(described.contains(rpc), "{rpc} missing from:\n{described}");
    }
    let health = success(&server.grpcurl(&[
        "-d",
        &format!(r#"{{"service":"{SERVICE}"}}"#),
        &server.addr,
        "grpc.health.v1.Health/Check",
    ]));
    assert!(health.contains("SERVING"), "{health}");
}

#[test]
fn component_lifecycle_with_grpcurl_json() {
    let server = Platform::builder().examples().start();
    // Start from a platform without the example component, so grpcurl creates it.
    success(&server.cli(&["delete", "component", "api", "-n", "acme"]));
    let start: u64 = {
        let list = success(&server.grpcurl(&[
            "-d",
            r#"{"kind":"components","namespace":"acme"}"#,
            &server.addr,
            &format!("{SERVICE}/List"),
        ]));
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        v["revision"].as_str().unwrap().parse().unwrap()
    };
    // Watch from the listing's revision in the background while the component changes.
    let mut watch = server
        .grpcurl_command(server.admin_token().as_deref())
        .args(["-v", "-max-time", "4", "-d"])
        .arg(format!(
            r#"{{"kind":"comp","namespace":"acme","sinceRevision":"{start}"}}"#
        ))
        .args([&server.addr, &format!("{SERVICE}/Watch")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let printed = troupe_tests::stdout_lines(&mut watch);
    // With -v, grpcurl reports the response headers once the server has opened the stream.
    let mut text = String::new();
    eventually("the watch is open", PATIENCE, || {
        text.extend(printed.try_iter().map(|line| line + "\n"));
        if text.contains("Response headers received:") {
            Ok(())
        } else {
            Err(text.clone())
        }
    });

    let applied =
        success(&server.grpcurl(&["-d", COMPONENT, &server.addr, &format!("{SERVICE}/Apply")]));
    let v: serde_json::Value = serde_json::from_str(&applied).unwrap();
    assert_eq!(v["outcome"], "APPLY_OUTCOME_CREATED", "{applied}");
    assert_eq!(
        v["resource"]["component"]["metadata"]["generation"], "1",
        "{applied}"
    );

    let got = success(&server.grpcurl(&[
        "-d",
        r#"{"kind":"Component","namespace":"acme","name":"worker"}"#,
        &server.addr,
        &format!("{SERVICE}/Get"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(
        v["resource"]["component"]["spec"]["parameters"]["port"], 9000,
        "{got}"
    );

    let listed = success(&server.grpcurl(&[
        "-d",
        r#"{"kind":"comp","labelSelector":"tier=backend"}"#,
        &server.addr,
        &format!("{SERVICE}/List"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["component"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["worker"], "{listed}");

    let deleted = success(&server.grpcurl(&[
        "-d",
        r#"{"kind":"components","namespace":"acme","name":"worker"}"#,
        &server.addr,
        &format!("{SERVICE}/Delete"),
    ]));
    assert!(deleted.contains("\"worker\""), "{deleted}");
    let missing = server.grpcurl(&[
        "-d",
        r#"{"kind":"comp","namespace":"acme","name":"worker"}"#,
        &server.addr,
        &format!("{SERVICE}/Get"),
    ]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("NotFound")
            && stderr(&missing).contains("Component acme/worker not found"),
        "{}",
        stderr(&missing)
    );

    watch.wait().unwrap();
    // The rest of what the watch printed, up to its end.
    text.extend(printed.iter().map(|line| line + "\n"));
    let types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"type\": \""))
        .map(|l| l.trim_end_matches(['"', ',']))
        .collect();
    assert_eq!(
        types,
        ["EVENT_TYPE_ADDED", "EVENT_TYPE_DELETED"],
        "watch output:\n{text}"
    );
}

#[test]
fn promotion_with_grpcurl_json() {
    let server = Platform::builder().examples().start();
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    // development → staging has no gates: the promotion succeeds in the call.
    let out = success(&server.grpcurl(&[
        "-d",
        r#"{"namespace":"acme","component":"api","toEnvironment":"staging"}"#,
        &server.addr,
        "troupe.v1alpha1.PromotionService/Promote",
    ]));
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    let promotion = &answer["promotion"];
    assert_eq!(promotion["status"]["phase"], "Succeeded", "{out}");
    assert_eq!(
        promotion["spec"]["sourceEnvironment"], "development",
        "{out}"
    );
    assert_eq!(promotion["spec"]["releaseName"], release, "{out}");
    // The requester is who the token proves, not what the request says.
    assert_eq!(promotion["spec"]["requestedBy"], "admin", "{out}");
    // A check no gate names is refused with the field named.
    let out = server.grpcurl(&[
        "-d",
        r#"{"namespace":"acme","promotion":"api-staging-1","check":"e2e","passed":true}"#,
        &server.addr,
        "troupe.v1alpha1.PromotionService/ReportCheck",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("FailedPrecondition") && stderr(&out).contains("is Succeeded"),
        "{}",
        stderr(&out)
    );
}
