//! The verifier against a real identity provider: an HTTP server on 127.0.0.1:0 serving
//! discovery and a JWKS (counting key set requests), and tokens signed with real ECDSA P-256
//! keys and a fixed RSA 2048 key (`testdata/rsa2048.pk8.der`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use serde_json::{Value, json};

use super::*;

/// 2026-12-01T19:00:00Z, the time most tests verify at.
const NOW: i64 = 1_796_151_600;

/// A signing key and the JWK publishing it.
enum TestKey {
    Ec(String, EcdsaKeyPair),
    Rsa(String, RsaKeyPair),
}

impl TestKey {
    fn mk_ec(kid: &str) -> TestKey {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        TestKey::Ec(kid.into(), pair)
    }

    fn mk_rsa(kid: &str) -> TestKey {
        let der = include_bytes!("testdata/rsa2048.pk8.der");
        TestKey::Rsa(kid.into(), RsaKeyPair::from_pkcs8(der).unwrap())
    }

    fn jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match self {
            TestKey::Ec(kid, pair) => {
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                       "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            TestKey::Rsa(kid, pair) => {
                let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": b64(&public.n), "e": b64(&public.e)})
            }
        }
    }

    /// `claims` signed with this key, `alg` and `kid` in the header.
    fn sign(&self, claims: &Value) -> String {
        let (alg, kid) = match self {
            TestKey::Ec(kid, _) => ("ES256", kid),
            TestKey::Rsa(kid, _) => ("RS256", kid),
        };
        let signed = signing_input(&json!({"alg": alg, "kid": kid, "typ": "JWT"}), claims);
        let rng = SystemRandom::new();
        let sig = match self {
            TestKey::Ec(_, pair) => pair
                .sign(&rng, signed.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            TestKey::Rsa(_, pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    signed.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
        };
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!("{}.{}", b64(header), b64(claims))
}

/// An identity provider on 127.0.0.1:0 publishing whatever key set the test sets.
struct FakeIdp {
    url: String,
    jwks: Arc<Mutex<Value>>,
    jwks_requests: Arc<AtomicUsize>,
}

impl FakeIdp {
    async fn mk(keys: &[&TestKey]) -> FakeIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let jwks = Arc::new(Mutex::new(Value::Null));
        let jwks_requests = Arc::new(AtomicUsize::new(0));
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/keys")});
        let (served, counter) = (jwks.clone(), jwks_requests.clone());
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/keys",
                axum::routing::get(move || async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().clone();
                    match body {
                        Value::String(raw) => raw,
                        doc => doc.to_string(),
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let idp = FakeIdp {
            url,
            jwks,
            jwks_requests,
        };
        idp.publish(keys);
        idp
    }

    fn publish(&self, keys: &[&TestKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk()).collect();
        *self.jwks.lock().unwrap() = json!({ "keys": keys });
    }

    fn requests(&self) -> usize {
        self.jwks_requests.load(Ordering::SeqCst)
    }

    fn oidc(&self) -> Oidc {
        Oidc::new(vec![mk_issuer(&self.url)]).unwrap()
    }

    /// Claims of a token for `alice` in groups `dev` and `ops`, valid at [`NOW`].
    fn claims(&self) -> Value {
        json!({"iss": self.url, "aud": "troupe", "sub": "alice", "groups": ["dev", "ops"],
               "iat": NOW - 10, "exp": NOW + 300})
    }
}

fn mk_issuer(url: &str) -> IssuerConfig {
    IssuerConfig {
        url: url.into(),
        audiences: vec!["troupe".into()],
        username_claim: "sub".into(),
        groups_claim: "groups".into(),
        prefix: "oidc:".into(),
    }
}

/// `claims` with `changes` merged in (a `null` removes a claim).
fn with(mut claims: Value, changes: Value) -> Value {
    for (name, value) in changes.as_object().unwrap() {
        match value {
            Value::Null => claims.as_object_mut().unwrap().remove(name),
            _ => claims
                .as_object_mut()
                .unwrap()
                .insert(name.clone(), value.clone()),
        };
    }
    claims
}

#[tokio::test]
async fn es256_token_proves_its_subject_and_groups() {
    let key = TestKey::mk_ec("k1");
    let idp = FakeIdp::mk(&[&key]).await;
    let principal = idp
        .oidc()
        .verify_at(&key.sign(&idp.claims()), NOW)
        .await
        .unwrap();
    assert_eq!(principal.name, "oidc:alice");
    assert_eq!(principal.groups, ["oidc:dev", "oidc:ops"]);
    assert_eq!(principal.via, Via::Oidc(idp.url.clone()));
    assert_eq!(principal.impersonated_by, None);
}

#[tokio::test]
async fn rs256_token_is_accepted_and_the_real_clock_is_used() {
    let key = TestKey::mk_rsa("r1");
    let idp = FakeIdp::mk(&[&TestKey::mk_ec("k1"), &key]).await;
    let claims = with(
        idp.claims(),
        json!({"exp": now() + 300, "aud": ["other", "troupe"]}),
    );
    let principal = idp.oidc().verify(&key.sign(&claims)).await.unwrap();
    assert_eq!(principal.name, "oidc:alice");
}

#[tokio::test]
async fn a_signature_by_another_key_or_over_other_claims_is_refused() {
    let key = TestKey::mk_ec("k1");
    let idp = FakeIdp::mk(&[&key]).await;
    let oidc = idp.oidc();
    let impostor = TestKey::mk_ec("k1");
    let err = oidc
        .verify_at(&impostor.sign(&idp.claims()), NOW)
        .await
        .unwrap_err();
    assert_eq!(err, "OIDC token: bad signature");

    // Claims swapped under a genuine signature.
    let genuine = key.sign(&idp.claims());
    let forged = key.sign(&with(idp.claims(), json!({"sub": "admin"})));
    let (head, rest) = genuine.split_once('.').unwrap();
    let sig = rest.rsplit_once('.').unwrap().1;
    let forged_claims = forged.split('.').nth(1).unwrap();
    let spliced = format!("{head}.{forged_claims}.{sig}");
    let err = oidc.verify_at(&spliced, NOW).await.unwrap_err();
    assert_eq!(err, "OIDC token: bad signature");
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let key = TestKey::mk_ec("k1");
    let idp = FakeIdp::mk(&[&key]).await;
    let claims = with(idp.claims(), json!({"aud": ["grafana", "vault"]}));
    let err = idp
        .oidc()
        .verify_at(&key.sign(&claims), NOW)
        .await
        .unwrap_err();
    assert_eq!(err, r#"OIDC token: wrong audience ["grafana", "vault"]"#);
    let claims = with(idp.claims(), json!({"aud": null}));
    let err = idp
        .oidc()
        .verify_at(&key.sign(&claims), NOW)
        .await
        .unwrap_err();
    assert_eq!(err, "OIDC token: wrong audience []");
}

#[tokio::test]
async fn expiry_and_not_before_allow_a_minute_of_skew() {
    let key = TestKey::mk_ec("k1");
    let idp = FakeIdp::mk(&[&key]).await;
    let oidc = idp.oidc();
    let expired = key.sign(&with(idp.claims(), json!({"exp": NOW - 61})));
    let err = oidc.verify_at(&expired, NOW).await.unwrap_err();
    assert_eq!(err, "OIDC token: expired at 2026-12-01T18:58:59Z");
    let just_expired = key.sign(&with(idp.claims(), json!({"exp": NOW - 30})));
    oidc.verify_at(&just_expired, NOW).await.unwrap();

    let early = key.sign(&with(idp.claims(), json!({"nbf": NOW + 600})));
    let err = oidc.verify_at(&early, NOW).await.unwrap_err();
    assert_eq!(err, "OIDC token: not valid before 2026-12-01T19:10:00Z");
    let nearly = key.sign(&with(idp.claims(), json!({"nbf": NOW + 30})));
    oidc.verify_at(&nearly, NOW).await.unwrap();

    let forever = key.sign(&with(idp.claims(), json!({"exp": null})));
    let err = oidc.verify_at(&forever, NOW).await.unwrap_err();
    assert_eq!(err, "OIDC token: no exp claim");
}

#[tokio::test]
async fn an_unknown_issuer_is_refused_without_fetching_anything() {
    let key = TestKey::mk_ec("k1");
    let idp = FakeIdp::mk(&[&key]).await;
    let claims = with(idp.claims(), json!({"iss": "https://evil.example"}));
    let err = idp
        .oidc()
        .verify_at(&key.sign(&claims), NOW)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        r#"OIDC token: unknown issuer URL "https://evil.example""#
    );
    assert_eq!(idp.requests(), 0);
}

#[tokio::test]
async fn unsigned_hmac_and_mismatched_algorithms_are_refused() {
    let key = TestKey::mk_ec("k1");
    let idp = FakeIdp::mk(&[&key]).await;
    let oidc = idp.oidc();
    let none = format!("{}.", signing_input(&json!({"alg": "none"}), &idp.claims()));
    let err = oidc.verify_at(&none, NOW).await.unwrap_err();
    assert!(
        err.starts_with(r#"OIDC token: algorithm "none" is not accepted"#),
        "{err}"
    );
    let hs = format!(
        "{}.c2ln",
        signing_input(&json!({"alg": "HS256", "kid": "k1"}), &idp.claims())
    );
    let err = oidc.verify_at(&hs, NOW).await.unwrap_err();
    assert!(
        err.starts_with(r#"OIDC token: algorithm "HS256" is not accepted"#),
        "{err}"
    );

    // An RS256 header over an EC key: refused by name, whatever the signature bytes are.
    let genuine = key.sign(&idp.claims());
    let sig = genuine.rsplit_once('.').unwrap().1;
    let rs = format!(
        "{}.{sig}",
        signing_input(&json!({"alg": "RS256", "kid": "k1"}), &idp.claims())
    );
    let err = oidc.verify_at(&rs, NOW).await.unwrap_err();
    assert_eq!(
        err,
        r#"OIDC token: algorithm RS256 does not match the issuer's key "k1" (EC P-256)"#
    );
    assert_eq!(
        oidc.verify_at("a.b", NOW).await.unwrap_err(),
        "OIDC token: malformed: not three dot-separated parts"
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_a_removed_one_refused() {
    let old = TestKey::mk_ec("old");
    let idp = FakeIdp::mk(&[&old]).await;
    let mut oidc = idp.oidc();
    oidc.refetch_interval = Duration::ZERO;
    oidc.verify_at(&old.sign(&idp.claims()), NOW).await.unwrap();
    oidc.verify_at(&old.sign(&idp.claims()), NOW).await.unwrap();
    assert_eq!(idp.requests(), 1, "the key set is cached");

    let new = TestKey::mk_rsa("new");
    idp.publish(&[&new]);
    oidc.verify_at(&new.sign(&idp.claims()), NOW).await.unwrap();
    assert_eq!(idp.requests(), 2, "one fetch for the new key id");
    oidc.verify_at(&new.sign(&idp.claims()), NOW).await.unwrap();
    assert_eq!(idp.requests(), 2);

    let err = oidc
        .verify_at(&old.sign(&idp.claims()), NOW)
        .await
        .unwrap_err();
    assert_eq!(err, r#"OIDC token: no key "old" in the issuer's key set"#);
}

#[tokio::test]
async fn junk_key_ids_do_not_refetch_within_the_interval() {
    let key = TestKey::mk_ec("k1");
    let idp = FakeIdp::mk(&[&key]).await;
    let oidc = idp.oidc();
    // Concurrent first uses share one fetch.
    let tokens: Vec<String> = (0..8).map(|_| key.sign(&idp.claims())).collect();
    let results = futures::future::join_all(tokens.iter().map(|t| oidc.verify_at(t, NOW))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(idp.requests(), 1);

    let junk: Vec<String> = (0..20)
        .map(|i| TestKey::mk_ec(&format!("junk-{i}")).sign(&idp.claims()))
        .collect();
    let results = futures::future::join_all(junk.iter().map(|t| oidc.verify_at(t, NOW))).await;
    assert_eq!(
        results[7].as_ref().unwrap_err(),
        r#"OIDC token: no key "junk-7" in the issuer's key set"#
    );
    assert!(results.iter().all(Result::is_err));
    assert_eq!(
        idp.requests(),
        1,
        "junk key ids fetched nothing within {REFETCH_INTERVAL:?}"
    );
}

#[tokio::test]
async fn groups_may_be_one_string_or_absent_and_the_user_name_claim_is_required() {
    let key = TestKey::mk_ec("k1");
    let idp = FakeIdp::mk(&[&key]).await;
    let oidc = idp.oidc();
    let one = key.sign(&with(idp.claims(), json!({"groups": "dev"})));
    assert_eq!(
        oidc.verify_at(&one, NOW).await.unwrap().groups,
        ["oidc:dev"]
    );
    let none = key.sign(&with(idp.claims(), json!({"groups": null})));
    assert!(oidc.verify_at(&none, NOW).await.unwrap().groups.is_empty());
    let odd = key.sign(&with(idp.claims(), json!({"groups": {"dev": true}})));
    let err = oidc.verify_at(&odd, NOW).await.unwrap_err();
    assert_eq!(
        err,
        "OIDC token: claim groups is not a string or an array of strings"
    );

    let anonymous = key.sign(&with(idp.claims(), json!({"sub": null})));
    let err = oidc.verify_at(&anonymous, NOW).await.unwrap_err();
    assert_eq!(err, "OIDC token: no sub claim (the user name)");

    let mut config = mk_issuer(&idp.url);
    config.username_claim = "email".into();
    let by_email = Oidc::new(vec![config]).unwrap();
    let err = by_email.verify_at(&one, NOW).await.unwrap_err();
    assert_eq!(err, "OIDC token: no email claim (the user name)");
    let mail = key.sign(&with(idp.claims(), json!({"email": "alice@example.com"})));
    let principal = by_email.verify_at(&mail, NOW).await.unwrap();
    assert_eq!(principal.name, "oidc:alice@example.com");
}

#[tokio::test]
async fn an_unreachable_or_oversized_key_set_is_a_fetch_error() {
    let key = TestKey::mk_ec("k1");
    let idp = FakeIdp::mk(&[&key]).await;
    *idp.jwks.lock().unwrap() = Value::String("x".repeat(2 << 20));
    let oidc = idp.oidc();
    let token = key.sign(&idp.claims());
    let expected = format!(
        "OIDC token: cannot fetch the keys of issuer {0}: GET {0}/keys: the answer is larger than 1048576 bytes",
        idp.url
    );
    assert_eq!(oidc.verify_at(&token, NOW).await.unwrap_err(), expected);
    // The failure is remembered for the refetch interval: a retry costs the provider nothing.
    idp.publish(&[&key]);
    assert_eq!(oidc.verify_at(&token, NOW).await.unwrap_err(), expected);
    assert_eq!(idp.requests(), 1);

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let oidc = Oidc::new(vec![mk_issuer(&url)]).unwrap();
    let claims = with(idp.claims(), json!({"iss": url}));
    let err = oidc.verify_at(&key.sign(&claims), NOW).await.unwrap_err();
    let expected = format!(
        "OIDC token: cannot fetch the keys of issuer {url}: GET {url}/.well-known/openid-configuration: "
    );
    assert!(err.starts_with(&expected), "{err}");
}

#[tokio::test]
async fn a_discovery_document_for_another_issuer_is_refused() {
    let key = TestKey::mk_ec("k1");
    let idp = FakeIdp::mk(&[&key]).await;
    // The same provider under another spelling of its URL: its document names the real one.
    let alias = idp.url.replace("127.0.0.1", "localhost");
    let oidc = Oidc::new(vec![mk_issuer(&alias)]).unwrap();
    let claims = with(idp.claims(), json!({"iss": alias}));
    let err = oidc.verify_at(&key.sign(&claims), NOW).await.unwrap_err();
    assert_eq!(
        err,
        format!(
            "OIDC token: cannot fetch the keys of issuer {alias}: GET {alias}/.well-known/openid-configuration: the document is for issuer {:?}",
            idp.url
        )
    );
    assert_eq!(idp.requests(), 0);
}

#[test]
fn issuers_need_https_or_loopback_and_an_audience() {
    let err = |config| Oidc::new(vec![config]).err().unwrap().to_string();
    assert_eq!(
        err(mk_issuer("http://idp.example")),
        r#"OIDC issuer "http://idp.example" is plain HTTP; keys are fetched over HTTPS (HTTP only from a loopback address)"#
    );
    let mut config = mk_issuer("https://idp.example");
    config.audiences.clear();
    assert_eq!(
        err(config),
        "OIDC issuer https://idp.example needs at least one audience (--oidc-audience)"
    );
    Oidc::new(vec![
        mk_issuer("https://idp.example"),
        mk_issuer("http://[::1]:8080"),
    ])
    .unwrap();
}
