//! OIDC end to end: `troupe server --oidc-issuer` trusting a loopback identity provider
//! ([`FakeIssuer`]) with a real P-256 key. A JWT from it proves a user and groups that role
//! bindings then judge; a JWT that is forged, for another audience, expired, from another
//! issuer or signed with a key the issuer no longer publishes is `UNAUTHENTICATED` with the
//! reason.

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use troupe_tests::{FakeIssuer, Platform, eventually, stderr, stdout, success};

/// `troupe auth whoami -o json` with `token`.
fn whoami(server: &Platform, token: &str) -> Output {
    server.cli_as(token, &["auth", "whoami", "-o", "json"])
}

/// Asserts that `out` failed UNAUTHENTICATED with `reason` in its message.
fn refused(out: &Output, reason: &str) {
    assert!(!out.status.success(), "accepted: {}", stdout(out));
    let err = stderr(out);
    assert!(
        err.contains("Unauthenticated") && err.contains(reason),
        "wanted UNAUTHENTICATED with {reason:?}, got: {err}"
    );
}

fn start(issuer: &FakeIssuer) -> Platform {
    let args = issuer.server_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Platform::builder()
        .examples()
        .apply(include_str!("../../examples/access/access.yaml"))
        .args(&args)
        .start()
}

#[test]
fn a_jwt_from_the_issuer_proves_a_user_and_groups_that_roles_then_judge() {
    let issuer = FakeIssuer::start();
    let server = start(&issuer);
    let token = issuer.token("dana", &["shop-team"]);

    let me: Value = serde_json::from_str(&success(&whoami(&server, &token))).unwrap();
    assert_eq!(me["user"], "dana");
    assert_eq!(me["groups"], json!(["shop-team"]));
    assert_eq!(
        me["authenticatedBy"],
        format!("oidc:{}", issuer.url()),
        "{me}"
    );

    // examples/access makes group shop-team a developer of project shop, and nothing more.
    let api = success(&server.cli_as(&token, &["get", "component", "api", "-n", "acme"]));
    assert!(api.contains("api"), "{api}");
    let env = server.cli_as(&token, &["get", "environment", "staging", "-n", "acme"]);
    assert!(!env.status.success());
    assert!(
        stderr(&env).contains("dana may not get Environment acme/staging")
            && stderr(&env).contains("PermissionDenied"),
        "{}",
        stderr(&env)
    );
}

#[test]
fn forged_foreign_expired_and_misaddressed_jwts_are_refused_with_the_reason() {
    let issuer = FakeIssuer::start();
    let server = start(&issuer);

    // Another user's signature under dana's claims.
    let dana = issuer.token("dana", &["shop-team"]);
    let admin = issuer.token("root", &["system:admins"]);
    let (head_and_claims, _) = admin.rsplit_once('.').unwrap();
    let (_, dana_signature) = dana.rsplit_once('.').unwrap();
    let forged = format!("{head_and_claims}.{dana_signature}");
    refused(&whoami(&server, &forged), "OIDC token: bad signature");

    let mut claims = issuer.claims("dana", &[]);
    claims["aud"] = json!("grafana");
    refused(
        &whoami(&server, &issuer.sign(&claims)),
        "OIDC token: wrong audience",
    );

    let mut claims = issuer.claims("dana", &[]);
    let now = claims["iat"].as_u64().unwrap();
    claims["iat"] = json!(now - 7200);
    claims["exp"] = json!(now - 3600);
    refused(
        &whoami(&server, &issuer.sign(&claims)),
        "OIDC token: expired at",
    );

    let mut claims = issuer.claims("dana", &[]);
    claims["iss"] = json!("https://accounts.example.com");
    refused(
        &whoami(&server, &issuer.sign(&claims)),
        "OIDC token: unknown issuer URL \"https://accounts.example.com\"",
    );

    // A token whose header is not a JWT header is malformed, not a crash.
    refused(&whoami(&server, "e30.e30.e30"), "OIDC token: malformed");
}

#[test]
fn a_rotated_key_is_fetched_and_the_old_one_stops_working() {
    let issuer = FakeIssuer::start();
    let server = start(&issuer);
    let before = issuer.token("dana", &["shop-team"]);
    success(&whoami(&server, &before));
    let fetched = issuer.jwks_requests();

    issuer.rotate();
    let after = issuer.token("dana", &["shop-team"]);
    // The server refetches the key set for the unknown key id (at most once every 10 s per
    // issuer, so the first try may come too soon after the first fetch).
    eventually(
        "a token signed with the rotated key is accepted",
        Duration::from_secs(30),
        || {
            let out = whoami(&server, &after);
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| stderr(&out))
        },
    );
    assert!(issuer.jwks_requests() > fetched);
    refused(&whoami(&server, &before), "OIDC token: no key");
}
