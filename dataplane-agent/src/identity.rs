//! The agent's identity: its key, the client certificate the control plane signed for it, and
//! the CA it trusts the agent endpoint by, kept in `STATE_DIR/identity/`.
//!
//! On first start the agent registers: it reads the CA pin from its bootstrap token, finds
//! the CA with that pin in the endpoint's TLS handshake (and checks the endpoint's
//! certificate chains to it), sends a CSR for a fresh key with the token, and stores what
//! comes back. Later starts reuse the stored identity; the token is not needed again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use troupe_common::agent::{BootstrapToken, sha256_hex};
use troupe_common::durable;
use troupe_common::pb::v1alpha1::agent_service_client::AgentServiceClient;
use troupe_common::pb::v1alpha1::{DataPlaneIdentity, RegisterRequest};

/// What the agent authenticates with.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    /// The data plane it speaks for.
    pub data_plane: DataPlaneIdentity,
    /// PEM of its client certificate.
    pub cert_pem: String,
    /// PEM of its private key.
    pub key_pem: String,
    /// PEM of the CA of the agent endpoint.
    pub ca_pem: String,
}

impl AgentIdentity {
    /// A TLS channel to the agent endpoint at `url`, authenticated as this agent.
    pub fn endpoint(&self, url: &str) -> anyhow::Result<Endpoint> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        Ok(Endpoint::from_shared(url.to_string())
            .with_context(|| format!("invalid control-plane URL {url:?}"))?
            .tls_config(tls)?
            .connect_timeout(std::time::Duration::from_secs(10))
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_while_idle(true))
    }
}

fn folder(state_dir: &Path) -> PathBuf {
    state_dir.join("identity")
}

/// Loads the stored identity, or registers with `token` when there is none (or it is for
/// another data plane), at the first of `urls` that takes it.
pub async fn load_or_register(
    state_dir: &Path,
    urls: &[&str],
    data_plane: &DataPlaneIdentity,
    token: Option<&str>,
    ca_file: Option<&Path>,
) -> anyhow::Result<AgentIdentity> {
    let dir = folder(state_dir);
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    if let (Ok(plane), Ok(cert_pem), Ok(key_pem), Ok(ca_pem)) = (
        read("dataplane"),
        read("agent.crt"),
        read("agent.key"),
        read("ca.crt"),
    ) {
        if plane.trim() == data_plane.to_string() {
            return Ok(AgentIdentity {
                data_plane: data_plane.clone(),
                cert_pem,
                key_pem,
                ca_pem,
            });
        }
        tracing::warn!(stored = plane.trim(), wanted = %data_plane, "stored identity is for another data plane; registering again");
    }
    let Some(token) = token else {
        bail!(
            "no identity in {} yet: pass --token (from `troupe dataplane token create {data_plane}`) to register",
            dir.display()
        );
    };
    let mut failures = Vec::new();
    let mut registered = None;
    for url in urls {
        match register_at(url, data_plane, token, ca_file).await {
            Ok(identity) => {
                registered = Some(identity);
                break;
            }
            Err(e) => {
                tracing::warn!(endpoint = url, error = %format!("{e:#}"), "registration failed here");
                failures.push(format!("{url}: {e:#}"));
            }
        }
    }
    let Some(identity) = registered else {
        bail!(
            "could not register at any endpoint: {}",
            failures.join("; ")
        );
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        ("agent.key", identity.key_pem.clone()),
        ("agent.crt", identity.cert_pem.clone()),
        ("ca.crt", identity.ca_pem.clone()),
        ("dataplane", data_plane.to_string()),
    ];
    for (name, contents) in files {
        let path = dir.join(name);
        durable::write(&path, contents.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(data_plane = %data_plane, "registered");
    Ok(identity)
}

/// Registers `data_plane` with `token` at the agent endpoint `url`.
async fn register_at(
    url: &str,
    data_plane: &DataPlaneIdentity,
    token: &str,
    ca_file: Option<&Path>,
) -> anyhow::Result<AgentIdentity> {
    let parsed = BootstrapToken::parse(token).map_err(anyhow::Error::msg)?;
    let ca_pem = match ca_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading --ca-cert {}", path.display()))?,
        None => fetch_pinned_ca(url, &parsed.ca_pin).await?,
    };
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    let channel: Channel = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("invalid control-plane URL {url:?}"))?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the agent endpoint at {url}"))?;
    let response = AgentServiceClient::new(channel)
        .register(RegisterRequest {
            data_plane: Some(data_plane.clone()),
            token: token.to_string(),
            csr_pem: csr,
            agent_version: crate::VERSION.into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("registration refused: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    Ok(AgentIdentity {
        data_plane: data_plane.clone(),
        cert_pem: response.certificate_pem,
        key_pem: key.serialize_pem(),
        ca_pem: response.ca_certificate_pem,
    })
}

/// Opens one TLS handshake with the agent endpoint and returns (as PEM) the CA certificate
/// in its chain whose SHA-256 is `pin`, having checked that the endpoint's certificate is
/// signed by it and valid for the host.
async fn fetch_pinned_ca(url: &str, pin: &str) -> anyhow::Result<String> {
    let uri: tonic::codegen::http::Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    if uri.scheme_str() != Some("https") {
        bail!("the agent endpoint speaks TLS only: use an https:// URL, not {url:?}");
    }
    let host = uri
        .host()
        .context("the URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinVerifier {
        pin: pin.to_string(),
        found: Mutex::new(None),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot reach the agent endpoint at {host}:{port}"))?;
    let name = ServerName::try_from(host.clone())?;
    connector
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with the agent endpoint at {host}:{port}"))?;
    let ca = verifier
        .found
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .context("the handshake ended without a certificate")?;
    Ok(pem("CERTIFICATE", &ca))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let flat = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in flat.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Trusts the endpoint only if its chain holds the pinned CA and its certificate verifies
/// against that CA alone.
#[derive(Debug)]
struct PinVerifier {
    pin: String,
    found: Mutex<Option<CertificateDer<'static>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| sha256_hex(c.as_ref()) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "no certificate of the endpoint matches the CA pin in the token".into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified =
            inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(ca.clone().into_owned());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
