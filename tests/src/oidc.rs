//! A fake OIDC identity provider for end-to-end tests: [`FakeIssuer`] serves discovery and a
//! JWKS over plain HTTP on 127.0.0.1:0 (which the server accepts from loopback issuers) and
//! signs ES256 tokens with a real P-256 key, so `troupe server --oidc-issuer` verifies them
//! exactly as it would a real provider's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// An identity provider on loopback, serving until dropped.
pub struct FakeIssuer {
    url: String,
    key: Arc<Mutex<SigningKey>>,
    jwks_requests: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The current key and its id.
struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    fn generate(kid: String) -> SigningKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generating a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("reading the generated key");
        SigningKey { kid, pair }
    }

    fn jwks(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        }]})
    }
}

impl FakeIssuer {
    /// The audience [`FakeIssuer::token`] puts in tokens and [`FakeIssuer::server_args`]
    /// configures.
    pub const AUDIENCE: &'static str = "troupe";

    /// Starts serving on a free loopback port.
    pub fn start() -> FakeIssuer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the issuer");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let url = format!("http://{}", listener.local_addr().expect("issuer address"));
        let key = Arc::new(Mutex::new(SigningKey::generate("key-1".into())));
        let jwks_requests = Arc::new(AtomicUsize::new(0));
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let (served, counter) = (key.clone(), jwks_requests.clone());
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    axum::Json(served.lock().unwrap().jwks())
                }),
            );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the issuer's runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        FakeIssuer {
            url,
            key,
            jwks_requests,
            stop: Some(stop),
        }
    }

    /// The issuer URL: the `iss` of its tokens and the `--oidc-issuer` value.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `--oidc-issuer URL --oidc-audience troupe`, to add to `troupe server`.
    pub fn server_args(&self) -> Vec<String> {
        [
            "--oidc-issuer",
            &self.url,
            "--oidc-audience",
            Self::AUDIENCE,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Claims of a token for `user` in `groups`, from this issuer for [`FakeIssuer::AUDIENCE`],
    /// valid for an hour: change them and [`FakeIssuer::sign`] them to test refusals.
    pub fn claims(&self, user: &str, groups: &[&str]) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_secs();
        json!({
            "iss": self.url, "aud": Self::AUDIENCE, "sub": user, "groups": groups,
            "iat": now, "exp": now + 3600,
        })
    }

    /// A valid token for `user` in `groups`.
    pub fn token(&self, user: &str, groups: &[&str]) -> String {
        self.sign(&self.claims(user, groups))
    }

    /// `claims` as an ES256 JWT signed with the current key.
    pub fn sign(&self, claims: &Value) -> String {
        let key = self.key.lock().unwrap();
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": key.kid});
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("JSON"));
        let signed = format!("{}.{}", part(&header), part(claims));
        let signature = key
            .pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("signing");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// Replaces the signing key with a new one under a new key id; the JWKS then publishes
    /// only the new key, so tokens signed before are refused once the server refetches.
    /// The server refetches keys at most once every 10 s per issuer: poll for acceptance.
    pub fn rotate(&self) {
        let mut key = self.key.lock().unwrap();
        let next = key
            .kid
            .strip_prefix("key-")
            .and_then(|n| n.parse::<u32>().ok())
            .map_or(1, |n| n + 1);
        *key = SigningKey::generate(format!("key-{next}"));
    }

    /// How many times the key set has been fetched.
    pub fn jwks_requests(&self) -> usize {
        self.jwks_requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeIssuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_control_plane::auth::Via;
    use troupe_control_plane::auth::oidc::{IssuerConfig, Oidc};

    fn mk_oidc(issuer: &FakeIssuer) -> Oidc {
        Oidc::new(vec![IssuerConfig {
            url: issuer.url().into(),
            audiences: vec![FakeIssuer::AUDIENCE.into()],
            username_claim: "sub".into(),
            groups_claim: "groups".into(),
            prefix: String::new(),
        }])
        .unwrap()
    }

    #[tokio::test]
    async fn the_verifier_accepts_its_tokens_and_refuses_them_after_rotation() {
        let issuer = FakeIssuer::start();
        let oidc = mk_oidc(&issuer);
        let old = issuer.token("alice", &["dev"]);
        let alice = oidc.verify(&old).await.unwrap();
        assert_eq!(
            (alice.name.as_str(), alice.groups.as_slice()),
            ("alice", &["dev".to_string()][..])
        );
        assert_eq!(alice.via, Via::Oidc(issuer.url().into()));
        assert_eq!(issuer.jwks_requests(), 1);

        issuer.rotate();
        // A fresh verifier fetches the rotated set at once (a running one waits out its
        // refetch interval).
        let fresh = mk_oidc(&issuer);
        fresh.verify(&issuer.token("bob", &[])).await.unwrap();
        let err = fresh.verify(&old).await.unwrap_err();
        assert_eq!(err, r#"OIDC token: no key "key-1" in the issuer's key set"#);
    }
}
