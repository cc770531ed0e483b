//! The control plane's certificate authority, for agents and API clients.
//!
//! Generated on first start and kept in `DATA_DIR/pki/` (`ca.crt`, `ca.key`, mode 0600 for
//! the key); in-memory servers make a fresh one. Servers on etcd share one, kept in etcd
//! (`PREFIX/s/pki/ca`, certificate and key as PEM in JSON) and made by whichever replica
//! starts first; each writes a copy of the certificate (not the key) to `DATA_DIR/pki/ca.crt`. The CA signs the server certificate (re-issued
//! at every start for the configured names; the agent endpoint and the API endpoint present the
//! same one, the API without asking for client certificates) and, at registration, each
//! agent's client certificate, whose only identity is a SAN URI naming its data plane
//! (`troupe://dataplane/NS/NAME`). What the agent's CSR asks for beyond its public key is
//! ignored.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use troupe_common::durable;
use troupe_common::pb::v1alpha1::DataPlaneIdentity;

use crate::shared_state::StateHome;

/// The PKI's directory in the data directory.
pub const PKI_DIR: &str = "pki";
/// The shared CA's key in etcd, under `PREFIX/s/`.
#[cfg(feature = "etcd")]
const SHARED_CA_KEY: &str = "pki/ca";

/// How long an agent's client certificate is valid.
const CLIENT_CERT_DAYS: i64 = 365;
/// How long the CA is valid.
const CA_DAYS: i64 = 3650;

/// The CA and the server identity both endpoints present.
pub struct Pki {
    ca_pem: String,
    ca_pin: String,
    issuer: Issuer<'static, KeyPair>,
    /// PEM chain of the server certificate followed by the CA, so a client that only has
    /// the CA pin can find the CA in the handshake.
    server_chain_pem: String,
    server_key_pem: String,
    /// Where the CA lives, if on disk.
    dir: Option<PathBuf>,
}

impl Pki {
    /// Loads the CA from `dir` (creating it on first start), or makes an ephemeral one when
    /// `dir` is `None`, and issues the server certificate for `server_names` (DNS names or IP
    /// addresses).
    pub fn load_or_create(dir: Option<&Path>, server_names: &[String]) -> anyhow::Result<Self> {
        let (ca_pem, ca_key) = match dir {
            Some(dir) => load_or_create_ca(dir)?,
            None => new_ca()?,
        };
        Self::issue(ca_pem, ca_key, dir, server_names)
    }

    /// The CA where `home` keeps it (`DATA_DIR/pki/`, memory, or etcd, made on the first
    /// start), and the server certificate for `server_names`.
    pub fn open(home: &StateHome, server_names: &[String]) -> anyhow::Result<Self> {
        let dir = home.data_dir().map(|d| d.join(PKI_DIR));
        match home {
            StateHome::Local(_) => Self::load_or_create(dir.as_deref(), server_names),
            #[cfg(feature = "etcd")]
            StateHome::Etcd { state, .. } => {
                let (ca_pem, ca_key) = shared_ca(state)?;
                if let Some(dir) = &dir {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    let path = dir.join("ca.crt");
                    durable::write(&path, ca_pem.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                Self::issue(ca_pem, ca_key, dir.as_deref(), server_names)
            }
        }
    }

    /// Issues the server certificate for `server_names` with the CA `ca_pem`, `ca_key`, kept
    /// in `dir` if on disk.
    fn issue(
        ca_pem: String,
        ca_key: KeyPair,
        dir: Option<&Path>,
        server_names: &[String],
    ) -> anyhow::Result<Self> {
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("reading the agent CA")?;
        let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .context("decoding the agent CA")?;
        let ca_pin = troupe_common::agent::sha256_hex(&ca_der);

        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = server_names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.as_str().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.distinguished_name = name("troupe server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(CLIENT_CERT_DAYS);
        let server = params.signed_by(&server_key, &issuer)?;
        Ok(Self {
            server_chain_pem: format!("{}{}", server.pem(), ca_pem),
            server_key_pem: server_key.serialize_pem(),
            ca_pem,
            ca_pin,
            issuer,
            dir: dir.map(Path::to_path_buf),
        })
    }

    /// PEM of the CA certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Hex SHA-256 of the CA certificate's DER: the pin bootstrap tokens carry.
    pub fn ca_pin(&self) -> &str {
        &self.ca_pin
    }

    /// Path of `ca.crt`, when the CA is on disk.
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("ca.crt"))
    }

    /// The agent endpoint's TLS identity: asks for client certificates signed by the CA but
    /// lets `Register` through without one.
    pub fn server_tls(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.server_chain_pem,
                &self.server_key_pem,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
    }

    /// The API endpoint's TLS identity: the same certificate, no client certificates (API
    /// callers prove who they are with a bearer token).
    pub fn api_tls(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            &self.server_chain_pem,
            &self.server_key_pem,
        ))
    }

    /// Signs an agent's CSR as the client certificate of `data_plane`. Only the CSR's public
    /// key is used.
    pub fn sign_agent(
        &self,
        csr_pem: &str,
        data_plane: &DataPlaneIdentity,
    ) -> Result<String, String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("csrPem is not a PEM certificate signing request: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("troupe agent {data_plane}"));
        params.subject_alt_names = vec![SanType::URI(
            data_plane
                .to_uri()
                .as_str()
                .try_into()
                .map_err(|e| format!("data plane URI: {e}"))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(CLIENT_CERT_DAYS);
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        request
            .signed_by(&self.issuer)
            .map(|cert| cert.pem())
            .map_err(|e| format!("signing the agent certificate: {e}"))
    }
}

/// The data plane a verified client certificate (DER) speaks for. The TLS layer has already
/// checked that the CA signed it; this reads the identity it carries.
pub fn identity_of(cert_der: &[u8]) -> Option<DataPlaneIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => DataPlaneIdentity::from_uri(uri),
        _ => None,
    })
}

/// The agent CA as etcd keeps it.
#[cfg(feature = "etcd")]
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedCa {
    cert: String,
    key: String,
}

/// Copies the agent CA kept in `data_dir` into `state` (`troupe migrate`), so that the agents
/// it signed for keep their certificates. Returns whether there was one to copy. Fails if
/// etcd holds another CA already.
#[cfg(feature = "etcd")]
pub fn copy_to_etcd(
    data_dir: &Path,
    state: &crate::shared_state::EtcdState,
) -> anyhow::Result<bool> {
    let dir = data_dir.join(PKI_DIR);
    match (dir.join("ca.crt").exists(), dir.join("ca.key").exists()) {
        (false, false) => return Ok(false),
        (true, true) => {}
        _ => anyhow::bail!(
            "{}: ca.crt and ca.key go together; one without the other is no CA to copy",
            dir.display()
        ),
    }
    let (cert, key) = load_or_create_ca(&dir)?;
    let ours = SharedCa {
        cert,
        key: key.serialize_pem(),
    };
    let stored = state.create_once(SHARED_CA_KEY, || Ok(serde_json::to_vec(&ours)?))?;
    let stored: SharedCa =
        serde_json::from_slice(&stored).context("reading the agent CA kept in etcd")?;
    anyhow::ensure!(
        stored.cert == ours.cert,
        "etcd holds another agent CA already; import only into an empty store"
    );
    Ok(true)
}

/// Writes the agent CA kept in `state` into `data_dir` (`troupe migrate --from-etcd`), so
/// that every agent keeps its certificate; returns whether there was one.
#[cfg(feature = "etcd")]
pub fn copy_from_etcd(
    state: &crate::shared_state::EtcdState,
    data_dir: &Path,
) -> anyhow::Result<bool> {
    let Some(stored) = state.get(SHARED_CA_KEY)? else {
        return Ok(false);
    };
    let ca: SharedCa =
        serde_json::from_slice(&stored.value).context("reading the agent CA kept in etcd")?;
    KeyPair::from_pem(&ca.key).context("reading the agent CA's key kept in etcd")?;
    let dir = data_dir.join(PKI_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, contents) in [("ca.key", &ca.key), ("ca.crt", &ca.cert)] {
        let path = dir.join(name);
        durable::write(&path, contents.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(true)
}

/// The CA the replicas on etcd share, made now if this is the first start of any.
#[cfg(feature = "etcd")]
fn shared_ca(state: &crate::shared_state::EtcdState) -> anyhow::Result<(String, KeyPair)> {
    let stored = state.create_once(SHARED_CA_KEY, || {
        let (cert, key) = new_ca()?;
        tracing::info!("created the agent CA in etcd");
        let key = key.serialize_pem();
        Ok(serde_json::to_vec(&SharedCa { cert, key })?)
    })?;
    let ca: SharedCa =
        serde_json::from_slice(&stored).context("reading the agent CA kept in etcd")?;
    let key = KeyPair::from_pem(&ca.key).context("reading the agent CA's key kept in etcd")?;
    Ok((ca.cert, key))
}

fn load_or_create_ca(dir: &Path) -> anyhow::Result<(String, KeyPair)> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if cert_path.exists() && key_path.exists() {
        let cert = std::fs::read_to_string(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        let key = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key).with_context(|| format!("{}", key_path.display()))?;
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert, key) = new_ca()?;
    for (path, contents) in [(&key_path, key.serialize_pem()), (&cert_path, cert.clone())] {
        durable::write(path, contents.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(ca = %cert_path.display(), "created the agent CA");
    Ok((cert, key))
}

fn new_ca() -> anyhow::Result<(String, KeyPair)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = name("troupe agent CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(CA_DAYS);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_certificates_carry_the_data_plane_and_nothing_the_csr_asked_for() {
        let pki = Pki::load_or_create(None, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        asked.subject_alt_names.push(SanType::URI(
            "troupe://dataplane/other/plane".try_into().unwrap(),
        ));
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let id = DataPlaneIdentity::parse("team/edge").unwrap();
        let pem = pki.sign_agent(&csr, &id).unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(identity_of(&der), Some(id));
        assert!(
            pki.sign_agent("not a csr", &DataPlaneIdentity::default())
                .is_err()
        );
    }

    #[test]
    fn the_ca_survives_a_restart_and_keeps_its_pin() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(Some(dir.path()), &["localhost".into()]).unwrap();
        let second = Pki::load_or_create(Some(dir.path()), &["localhost".into()]).unwrap();
        assert_eq!(first.ca_pin(), second.ca_pin());
        assert_eq!(first.ca_pin().len(), 64);
    }
}
