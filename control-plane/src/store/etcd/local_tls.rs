//! [`LocalTls`]: the certificates a [`LocalEtcd`](super::LocalEtcd) started with TLS uses, made
//! fresh with `rcgen` into its directory: a CA, the member's certificate (for 127.0.0.1 and
//! localhost) and a client certificate, all signed by that CA, so that a test can reach the
//! member the way a production cluster with `--client-cert-auth` is reached.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The PEM files of a TLS member and of a client it trusts.
#[derive(Debug, Clone)]
pub struct LocalTls {
    /// The CA that signed the member's and the client's certificates (etcd's
    /// `--trusted-ca-file`, the store URL's `ca=`).
    pub ca: PathBuf,
    /// The member's certificate (`--cert-file`).
    pub server_cert: PathBuf,
    /// The member's key (`--key-file`).
    pub server_key: PathBuf,
    /// A client certificate the member accepts (the store URL's `cert=`).
    pub client_cert: PathBuf,
    /// Its key (the store URL's `key=`).
    pub client_key: PathBuf,
}

impl LocalTls {
    /// Makes a CA, a member certificate and a client certificate, and writes them to `dir`.
    pub(super) fn generate(dir: &Path) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name = name("troupe test etcd CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);

        let tls = Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        };
        write(&tls.ca, &ca_pem)?;
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let (cert, key) = leaf(&issuer, names, "etcd", ExtendedKeyUsagePurpose::ServerAuth)?;
        write(&tls.server_cert, &cert)?;
        write(&tls.server_key, &key)?;
        let (cert, key) = leaf(
            &issuer,
            Vec::new(),
            "troupe",
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        write(&tls.client_cert, &cert)?;
        write(&tls.client_key, &key)?;
        Ok(tls)
    }
}

/// A certificate for `names` with `usage`, signed by `issuer`, and its key, as PEM.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = name(common_name);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn write(path: &Path, pem: &str) -> anyhow::Result<()> {
    std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))
}
