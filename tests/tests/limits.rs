//! Edges a user can reach with ordinary input: token lifetimes too large to represent, listings
//! too large for one message, and a CLI whose reader stops reading.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::ApplyRequest;
use troupe_tests::{Platform, Server, stderr, success};

/// i64::MAX: the largest `ttlSeconds` a request can carry.
const HUGE_TTL: &str = "9223372036854775807";

fn assert_refused_naming_the_limit(out: &std::process::Output, field: &str) {
    assert!(!out.status.success(), "{}", success_text(out));
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(field), "names the field {field}: {err}");
    assert!(err.contains("3650d"), "names the largest TTL: {err}");
}

fn success_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn token_ttls_beyond_the_maximum_are_refused_not_fatal() {
    let server = Platform::builder().examples().start();
    let bootstrap = server.grpcurl(&[
        "-d",
        &format!(
            r#"{{"dataPlane":{{"namespace":"acme","name":"edge"}},"ttlSeconds":"{HUGE_TTL}"}}"#
        ),
        &server.addr,
        "troupe.v1alpha1.DataPlaneService/CreateBootstrapToken",
    ]);
    assert_refused_naming_the_limit(&bootstrap, "ttlSeconds");
    assert!(
        stderr(&bootstrap).contains("InvalidArgument"),
        "{}",
        stderr(&bootstrap)
    );
    let api = server.grpcurl(&[
        "-d",
        &format!(r#"{{"name":"forever","ttlSeconds":"{HUGE_TTL}"}}"#),
        &server.addr,
        "troupe.v1alpha1.AuthService/CreateToken",
    ]);
    assert_refused_naming_the_limit(&api, "ttlSeconds");
    assert!(stderr(&api).contains("InvalidArgument"), "{}", stderr(&api));
    // The server is still there, and the CLI refuses before asking it.
    for ttl in ["9223372036854775808", "213503982334601d", "3651d"] {
        let cli = server.cli(&["token", "create", "forever", "--ttl", ttl]);
        assert_refused_naming_the_limit(&cli, "--ttl");
        let cli = server.cli(&["dataplane", "token", "create", "acme/edge", "--ttl", ttl]);
        assert_refused_naming_the_limit(&cli, "--ttl");
    }
    success(&server.cli(&["token", "create", "decade", "--ttl", "3650d"]));
}

/// Creates `count` Projects named `p-00000`… in `acme`, concurrently.
async fn create_projects(server: &Server, count: usize) {
    let template = success(&server.cli(&["get", "project", "shop", "-n", "acme", "-o", "yaml"]));
    let template: String = template
        .lines()
        .filter(|l| !l.contains("resourceVersion") && !l.contains("uid:"))
        .collect::<Vec<_>>()
        .join("\n");
    let writers = 8;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let mut client = server.client().await;
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            for i in (writer..count).step_by(writers) {
                let yaml = template.replace("name: shop", &format!("name: p-{i:05}"));
                let object = from_yaml(&yaml).unwrap().remove(0);
                client
                    .apply(ApplyRequest {
                        resource: Some(object.into()),
                        dry_run: false,
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_come_in_pages_and_the_cli_reads_them_all() {
    let server = Platform::builder().examples().start();
    create_projects(&server, 3_000).await;

    let out = success(&server.cli(&["get", "projects", "-n", "acme"]));
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("p-"))
        .collect();
    assert_eq!(names.len(), 3_000, "the CLI pages through every project");

    // A reader that stops after one line: the CLI ends quietly.
    let mut child = server
        .cli_command(None)
        .args(["get", "projects", "-n", "acme"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("NAME"), "{line}");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.trim().is_empty(), "nothing on stderr: {err}");

    // A List without a page size gets the default page and a token for the next.
    let page = success(&server.grpcurl(&[
        "-d",
        r#"{"kind":"projects","namespace":"acme"}"#,
        &server.addr,
        "troupe.v1alpha1.ResourceService/List",
    ]));
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 500, "default page");
    let token = page["nextPageToken"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!token.is_empty(), "a token for the next page");
    let next = success(&server.grpcurl(&[
        "-d",
        &format!(r#"{{"kind":"projects","namespace":"acme","pageToken":"{token}"}}"#),
        &server.addr,
        "troupe.v1alpha1.ResourceService/List",
    ]));
    let next: serde_json::Value = serde_json::from_str(&next).unwrap();
    let first_of_next = next["items"][0]["project"]["metadata"]["name"].as_str();
    let last_of_page = page["items"][499]["project"]["metadata"]["name"].as_str();
    assert!(
        first_of_next > last_of_page,
        "{first_of_next:?} {last_of_page:?}"
    );

    // Asking for more than the maximum says to page.
    let big = server.grpcurl(&[
        "-d",
        r#"{"kind":"projects","namespace":"acme","pageSize":100000}"#,
        &server.addr,
        "troupe.v1alpha1.ResourceService/List",
    ]);
    assert!(!big.status.success());
    let err = stderr(&big);
    assert!(
        err.contains("InvalidArgument") && err.contains("pageSize"),
        "{err}"
    );
    assert!(
        err.contains("5000") && err.contains("nextPageToken"),
        "{err}"
    );
}

/// A watch of Projects in `acme` on `client`'s connection: its stream, or the status it was
/// refused with.
async fn open_watch(
    client: &mut troupe_tests::Client,
) -> Result<tonic::Streaming<troupe_common::pb::v1alpha1::WatchResponse>, tonic::Status> {
    let request = troupe_common::pb::v1alpha1::WatchRequest {
        kind: "projects".into(),
        namespace: "acme".into(),
        ..Default::default()
    };
    client.watch(request).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_holds_at_most_its_cap_of_watches() {
    let server = Platform::builder()
        .examples()
        .args(&["--max-watches-per-connection", "5"])
        .start();
    let mut first = server.client().await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(open_watch(&mut first).await.expect("within the cap"));
    }
    let refused = open_watch(&mut first).await.expect_err("one past the cap");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("--max-watches-per-connection"),
        "names the flag: {}",
        refused.message()
    );

    // Another connection counts its own.
    let mut second = server.client().await;
    let mut other = open_watch(&mut second).await.expect("another connection");
    assert!(
        other.message().await.unwrap().is_some(),
        "the watch streams"
    );

    // A watch the client closes gives its place back.
    drop(open.pop());
    let deadline = std::time::Instant::now() + troupe_tests::PATIENCE;
    loop {
        match open_watch(&mut first).await {
            Ok(_) => break,
            Err(status) if std::time::Instant::now() < deadline => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(status) => panic!("the closed watch's place never came back: {status:?}"),
        }
    }
}
