//! OIDC JWTs from configured issuers.
//!
//! A bearer token shaped like a JWT goes through [`Oidc::verify`]: [`jwt`] splits it and
//! refuses algorithms other than RS256/384/512 and ES256/384, its `iss` picks one configured
//! issuer, that issuer's key set ([`jwks`], fetched by [`fetch`] and cached) checks the
//! signature, then the times and the audience are checked and the configured claims become a
//! [`Principal`]. Every refusal is a sentence fit for an `UNAUTHENTICATED` status
//! (`OIDC token: expired at 2026-12-01T19:00:00Z`); none says which part of a key matched.
//!
//! Key sets are fetched on first use and again when a token names a key id the cached set
//! lacks (the issuer rotated its keys), at most once per [`REFETCH_INTERVAL`] per issuer, so
//! tokens with made-up key ids cannot make the server hammer the identity provider.
//! Verifications waiting for the same issuer share one fetch.

mod fetch;
mod jwks;
mod jwt;
#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Principal, Via};
use fetch::Fetcher;
use jwks::KeySet;

/// Least time between two fetches of one issuer's keys.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// How far `exp` and `nbf` may be off, for clocks that disagree a little.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// One trusted issuer, as `--oidc-issuer URL --oidc-audience AUD` configure it.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The `iss` value tokens carry; the JWKS is found through
    /// `URL/.well-known/openid-configuration`.
    pub url: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// Claim holding the user name (`sub` by default).
    pub username_claim: String,
    /// Claim holding the groups (`groups` by default); absent means no groups.
    pub groups_claim: String,
    /// Prefix added to user and group names from this issuer (empty by default).
    pub prefix: String,
}

/// Why a token proves nothing. The text follows `OIDC token: ` in the status message.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("algorithm {0:?} is not accepted (RS256, RS384, RS512, ES256 and ES384 are)")]
    Algorithm(String),
    #[error("no iss claim")]
    NoIssuer,
    #[error("unknown issuer URL {0:?}")]
    UnknownIssuer(String),
    #[error("cannot fetch the keys of issuer {issuer}: {reason}")]
    Fetch { issuer: String, reason: String },
    #[error("no key {0:?} in the issuer's key set")]
    UnknownKey(String),
    #[error("algorithm {alg} does not match the issuer's {key}")]
    KeyMismatch { alg: &'static str, key: String },
    #[error("bad signature")]
    BadSignature,
    #[error("no exp claim")]
    NoExpiry,
    #[error("expired at {0}")]
    Expired(String),
    #[error("not valid before {0}")]
    NotYetValid(String),
    #[error("wrong audience {0:?}")]
    WrongAudience(Vec<String>),
    #[error("no {0} claim (the user name)")]
    NoUsername(String),
    #[error("claim {0} is not {1}")]
    ClaimType(String, &'static str),
}

/// The configured issuers and their cached key sets.
pub struct Oidc {
    issuers: Vec<Issuer>,
    fetcher: Fetcher,
    /// [`REFETCH_INTERVAL`], shorter in tests.
    refetch_interval: Duration,
}

/// One issuer and what is known of its keys.
struct Issuer {
    config: IssuerConfig,
    /// The last key set fetched. Read without waiting; replaced whole after a fetch.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// The last fetch. Held across the fetch itself, so concurrent verifications that need
    /// new keys wait for that one fetch instead of starting their own.
    last_fetch: tokio::sync::Mutex<Option<Fetched>>,
}

/// When keys were last fetched, and why that failed if it did.
struct Fetched {
    at: Instant,
    error: Option<String>,
}

impl Oidc {
    /// Verifies tokens from `issuers`. Key sets are fetched on first use. Fails when an
    /// issuer URL is not HTTPS (plain HTTP is allowed to loopback addresses), names no
    /// audience or no user name claim, or is configured twice.
    pub fn new(issuers: Vec<IssuerConfig>) -> anyhow::Result<Self> {
        let mut checked: Vec<Issuer> = Vec::with_capacity(issuers.len());
        for config in issuers {
            fetch::check_url(&config.url).map_err(|e| anyhow::anyhow!("OIDC issuer {e}"))?;
            anyhow::ensure!(
                !config.audiences.is_empty(),
                "OIDC issuer {} needs at least one audience (--oidc-audience)",
                config.url
            );
            anyhow::ensure!(
                !config.username_claim.is_empty(),
                "OIDC issuer {} needs a user name claim",
                config.url
            );
            anyhow::ensure!(
                checked.iter().all(|i| i.config.url != config.url),
                "OIDC issuer {} is configured twice",
                config.url
            );
            checked.push(Issuer {
                config,
                keys: RwLock::new(None),
                last_fetch: tokio::sync::Mutex::new(None),
            });
        }
        let https = checked.iter().any(|i| i.config.url.starts_with("https:"));
        Ok(Self {
            issuers: checked,
            fetcher: Fetcher::new(https),
            refetch_interval: REFETCH_INTERVAL,
        })
    }

    /// Whether `token` has the shape of a JWT (three base64url parts), so it is verified
    /// here rather than looked up as a Troupe token.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// The principal a JWT proves, or why it proves nothing (expired, unknown issuer, bad
    /// signature, wrong audience …), as the `UNAUTHENTICATED` message says it.
    pub async fn verify(&self, token: &str) -> Result<Principal, String> {
        self.verify_at(token, now()).await
    }

    /// [`Oidc::verify`] at time `now` (seconds since the epoch).
    async fn verify_at(&self, token: &str, now: i64) -> Result<Principal, String> {
        self.check(token, now)
            .await
            .map_err(|e| format!("OIDC token: {e}"))
    }

    async fn check(&self, token: &str, now: i64) -> Result<Principal, Error> {
        let jwt = jwt::parse(token)?;
        let iss = jwt::string_claim(&jwt.claims, "iss")?.ok_or(Error::NoIssuer)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.url == iss)
            .ok_or_else(|| Error::UnknownIssuer(iss.to_string()))?;
        let keys = issuer
            .keys_for(jwt.kid.as_deref(), &self.fetcher, self.refetch_interval)
            .await?;
        keys.verify(&jwt)?;
        // Only now are the claims the issuer's word.
        check_times(&jwt.claims, now)?;
        let audiences = jwt::strings_claim(&jwt.claims, "aud")?;
        if !audiences
            .iter()
            .any(|a| issuer.config.audiences.contains(a))
        {
            return Err(Error::WrongAudience(audiences));
        }
        issuer.principal(&jwt.claims)
    }
}

impl Issuer {
    /// The cached key set if it may hold key `kid`, else a fresh one unless keys were
    /// fetched less than `interval` ago.
    async fn keys_for(
        &self,
        kid: Option<&str>,
        fetcher: &Fetcher,
        interval: Duration,
    ) -> Result<Arc<KeySet>, Error> {
        if let Some(keys) = self.cached().filter(|k| k.has(kid)) {
            return Ok(keys);
        }
        let mut last = self.last_fetch.lock().await;
        // A fetch that finished while this call waited may have brought the key.
        let cached = self.cached();
        if let Some(keys) = cached.clone().filter(|k| k.has(kid)) {
            return Ok(keys);
        }
        if let Some(fetched) = last.as_ref().filter(|f| f.at.elapsed() < interval) {
            return match (&fetched.error, cached) {
                (Some(reason), _) => Err(self.fetch_error(reason.clone())),
                // The set is fresh and lacks the key: the verifier says which.
                (None, Some(keys)) => Ok(keys),
                (None, None) => Err(self.fetch_error("no key set".into())),
            };
        }
        let result = fetcher.key_set(&self.config.url).await;
        *last = Some(Fetched {
            at: Instant::now(),
            error: result.as_ref().err().map(ToString::to_string),
        });
        match result {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(keys.clone());
                tracing::info!(issuer = %self.config.url, "fetched the OIDC key set");
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.config.url, error = %e, "cannot fetch the OIDC key set");
                Err(self.fetch_error(e.to_string()))
            }
        }
    }

    fn cached(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn fetch_error(&self, reason: String) -> Error {
        Error::Fetch {
            issuer: self.config.url.clone(),
            reason,
        }
    }

    /// The principal verified `claims` name.
    fn principal(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Principal, Error> {
        let config = &self.config;
        let name = jwt::string_claim(claims, &config.username_claim)?
            .filter(|name| !name.is_empty())
            .ok_or_else(|| Error::NoUsername(config.username_claim.clone()))?;
        let groups = jwt::strings_claim(claims, &config.groups_claim)?;
        Ok(Principal {
            name: format!("{}{name}", config.prefix),
            groups: groups
                .into_iter()
                .map(|g| format!("{}{g}", config.prefix))
                .collect(),
            via: Via::Oidc(config.url.clone()),
            impersonated_by: None,
        })
    }
}

/// Checks `exp` (required) and `nbf` (optional) against `now`, allowing [`CLOCK_SKEW`].
fn check_times(claims: &serde_json::Map<String, serde_json::Value>, now: i64) -> Result<(), Error> {
    let skew = CLOCK_SKEW.as_secs() as i64;
    let exp = jwt::time_claim(claims, "exp")?.ok_or(Error::NoExpiry)?;
    if exp.saturating_add(skew) <= now {
        return Err(Error::Expired(jwt::rfc3339(exp)));
    }
    if let Some(nbf) = jwt::time_claim(claims, "nbf")?
        && nbf.saturating_sub(skew) > now
    {
        return Err(Error::NotYetValid(jwt::rfc3339(nbf)));
    }
    Ok(())
}

/// Seconds since the epoch.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
