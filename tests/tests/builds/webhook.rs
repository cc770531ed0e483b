//! The push webhook: a push signed with the component's secret starts one run of the pushed
//! commit, a redelivery starts nothing new, a bad signature is refused and a repository no
//! component builds is ignored.

use troupe_control_plane::builds::webhook::PATH;
use troupe_tests::http::post;
use troupe_tests::{stdout, success};

use crate::fixture::{component, fixture, push, runs_of, sign};

#[test]
fn a_signed_push_builds_its_commit_once_and_nothing_else_builds() {
    let f = fixture();
    let p = &f.platform;
    success(&p.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&component("hooked", "echoes", "{}", false)),
    ));
    let secret = stdout(&p.cli(&["webhook-secret", "hooked", "-n", "acme"]));
    let secret = secret.trim();
    assert!(secret.len() >= 32, "{secret:?}");
    let commit = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a291807";
    let body = push("https://github.com/acme/hooked", commit);
    let headers = |signature: &str| {
        vec![
            ("Content-Type", "application/json".to_string()),
            ("X-GitHub-Event", "push".to_string()),
            ("X-Hub-Signature-256", signature.to_string()),
        ]
    };
    let send = |signature: &str, body: &[u8]| {
        let owned = headers(signature);
        let borrowed: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post(f.webhook, PATH, &borrowed, body).expect("an answer from the webhook")
    };

    let bad = send(&sign("not-the-secret", &body), &body);
    assert_eq!(bad.code, 401, "{bad:?}");
    assert!(runs_of(p, "hooked").is_empty());

    let good = send(&sign(secret, &body), &body);
    assert_eq!(good.code, 201, "{good:?}");
    let started = runs_of(p, "hooked");
    assert_eq!(started.len(), 1, "{started:#?}");
    let spec = &started[0]["spec"];
    assert_eq!(spec["commit"], commit);
    assert_eq!(spec["trigger"]["type"], "webhook");
    assert_eq!(spec["trigger"]["by"], "octocat");
    assert_eq!(spec["source"]["ref"], "refs/heads/main");

    let again = send(&sign(secret, &body), &body);
    assert_eq!(again.code, 202, "{again:?}");
    assert!(again.body.contains("exists already"), "{again:?}");
    assert_eq!(
        runs_of(p, "hooked").len(),
        1,
        "a redelivery starts nothing new"
    );

    let elsewhere = push("https://github.com/acme/unknown", commit);
    let ignored = send(&sign(secret, &elsewhere), &elsewhere);
    assert_eq!(ignored.code, 202, "{ignored:?}");
    assert!(ignored.body.contains("ignored"), "{ignored:?}");
    assert_eq!(runs_of(p, "hooked").len(), 1);
}
