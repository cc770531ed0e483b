//! Fetching an issuer's key set: `ISSUER/.well-known/openid-configuration` names the
//! `jwks_uri`, which holds the [`KeySet`]. Each request is bounded in time and size, so a slow
//! or hostile identity provider cannot stall or fill the server; plain HTTP is allowed only
//! to loopback addresses (local test issuers), anything else must be HTTPS.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::jwks::KeySet;

/// How long one request (connect, headers and body) may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery or key set document read.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why an issuer's keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    /// The URL is not one keys may be fetched from.
    #[error("{0}")]
    Url(String),
    /// No complete answer within [`TIMEOUT`].
    #[error("GET {0} timed out after {secs} s", secs = TIMEOUT.as_secs())]
    Timeout(String),
    /// Connecting or talking HTTP failed.
    #[error("GET {url}: {reason}")]
    Http {
        /// The URL requested.
        url: String,
        /// What failed, with its causes.
        reason: String,
    },
    /// The answer was not 200 OK.
    #[error("GET {0} answered {1}")]
    Status(String, StatusCode),
    /// The answer did not fit in [`MAX_BODY_BYTES`].
    #[error("GET {0}: the answer is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge(String),
    /// The answer was not the document expected.
    #[error("GET {0}: {1}")]
    Document(String, String),
}

/// The part of the discovery document used.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The HTTP client keys are fetched with.
pub(super) struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Fetcher {
    /// A client trusting the platform's root certificates, loaded only when `https` (some
    /// issuer needs them). Without any (a bare container), HTTPS issuers fail at fetch time
    /// with a certificate error, and loopback HTTP still works.
    pub(super) fn new(https: bool) -> Fetcher {
        let provider = || Arc::new(rustls::crypto::ring::default_provider());
        let native = match https {
            true => hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(provider())
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "no platform root certificates: HTTPS OIDC issuers will fail");
                })
                .ok(),
            false => None,
        };
        let builder = native.unwrap_or_else(|| {
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        });
        let connector = builder.https_or_http().enable_http1().build();
        Fetcher {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Discovers the `jwks_uri` of `issuer` and reads the key set there.
    pub(super) async fn key_set(&self, issuer: &str) -> Result<KeySet, FetchError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let discovery: Discovery = serde_json::from_slice(&body).map_err(|e| {
            FetchError::Document(url.clone(), format!("not a discovery document: {e}"))
        })?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was asked for,
        // or keys of one issuer could be taken for another's.
        if discovery.issuer != issuer {
            return Err(FetchError::Document(
                url,
                format!("the document is for issuer {:?}", discovery.issuer),
            ));
        }
        let body = self.get(&discovery.jwks_uri).await?;
        KeySet::from_json(&body).map_err(|e| FetchError::Document(discovery.jwks_uri, e))
    }

    /// The body of a 200 answer to `GET url`.
    async fn get(&self, url: &str) -> Result<Bytes, FetchError> {
        let uri = check_url(url).map_err(FetchError::Url)?;
        let http = |e: &dyn std::error::Error| FetchError::Http {
            url: url.to_string(),
            reason: error_chain(e),
        };
        let exchange = async {
            let response = self.client.get(uri).await.map_err(|e| http(&e))?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status(url.to_string(), response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES);
            match body.collect().await {
                Ok(collected) => Ok(collected.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    Err(FetchError::TooLarge(url.to_string()))
                }
                Err(e) => Err(http(e.as_ref())),
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout(url.to_string()))?
    }
}

/// `url` if keys may be fetched from it: HTTPS, or plain HTTP to a loopback host.
pub(super) fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(format!(
            "{url:?} is plain HTTP; keys are fetched over HTTPS (HTTP only from a loopback address)"
        )),
        _ => Err(format!("{url:?} is not an https:// URL")),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `e` and its sources, `: `-separated (hyper's top-level errors alone say little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
