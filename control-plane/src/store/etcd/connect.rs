//! Connecting to the cluster an [`EtcdUrl`] names: the one place an etcd client is made, so
//! that the store (and through its client the election, the presence and the shared state)
//! and the tools beside it (the benchmark's raw puts, test helpers) reach etcd the same way,
//! over TLS when the URL names a CA.
//!
//! The TLS files are read here, at connect time, and checked to hold what their option says
//! (PEM certificates for `ca=` and `cert=`, a PEM private key for `key=`), so that a wrong
//! path or a swapped file is an error naming the option and the file rather than a failed
//! handshake. Their contents never reach a message.

use std::path::Path;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::bridge::timed;
use crate::store::{EtcdTls, EtcdUrl, StoreError};

/// How long connecting to a member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to the cluster `url` names, over TLS if it names a CA. Fails naming the cluster
/// if it cannot be reached, and naming the option and the file if a TLS file is wrong.
pub async fn connect_client(url: &EtcdUrl) -> Result<Client, StoreError> {
    let options = connect_options(url)?;
    timed(
        &url.members(),
        "connecting",
        Client::connect(&url.endpoints, Some(options)),
    )
    .await
}

/// How the store talks to etcd: keep-alives (a member gone quiet is noticed), a leader
/// required for every call, TLS from the files `url` names, and the user it names (whose
/// token is renewed when it expires).
pub fn connect_options(url: &EtcdUrl) -> Result<ConnectOptions, StoreError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let Some(tls) = &url.tls {
        options = options.with_tls(tls_options(tls)?);
    }
    if let Some(user) = &url.user {
        let password = read("password-file", &user.password_file)?;
        let password = String::from_utf8(password).map_err(|_| {
            bad_file(
                "password-file",
                &user.password_file,
                "does not hold UTF-8 text",
            )
        })?;
        let password = password.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(bad_file("password-file", &user.password_file, "is empty"));
        }
        options = options
            .with_user(user.name.clone(), password)
            .with_auto_token_refresh(true);
    }
    Ok(options)
}

/// The CA to trust and the client identity, read from their files.
fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, StoreError> {
    let ca = read("ca", &tls.ca)?;
    certificates("ca", &tls.ca, &ca)?;
    let options = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
    let Some(identity) = &tls.identity else {
        return Ok(options);
    };
    let cert = read("cert", &identity.cert)?;
    certificates("cert", &identity.cert, &cert)?;
    let key = read("key", &identity.key)?;
    if PrivateKeyDer::from_pem_slice(&key).is_err() {
        return Err(bad_file(
            "key",
            &identity.key,
            "holds no PEM private key (-----BEGIN PRIVATE KEY-----, or an RSA or EC one)",
        ));
    }
    Ok(options.identity(Identity::from_pem(cert, key)))
}

/// The bytes of the file option `name` names.
fn read(name: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| bad_file(name, path, &format!("cannot be read: {e}")))
}

/// Checks that `pem`, from the file option `name` names, holds at least one certificate.
fn certificates(name: &str, path: &Path, pem: &[u8]) -> Result<(), StoreError> {
    let found: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match found {
        Ok(certs) if !certs.is_empty() => Ok(()),
        Ok(_) => Err(bad_file(
            name,
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        )),
        Err(e) => Err(bad_file(
            name,
            path,
            &format!("is not a valid PEM certificate file: {e}"),
        )),
    }
}

fn bad_file(name: &str, path: &Path, why: &str) -> StoreError {
    StoreError::Engine(format!("{name}={} in the store URL {why}", path.display()))
}

/// What an etcd refusal of this client's user means, if it is one.
fn explain_auth(url: &EtcdUrl, message: &str) -> Option<String> {
    let members = url.members();
    let user = url.user.as_ref();
    if message.contains("authentication failed") {
        let (name, file) = user.map_or((String::new(), String::new()), |u| {
            (u.name.clone(), u.password_file.display().to_string())
        });
        return Some(format!(
            "etcd at {members} refused user {name:?}: no such user, or not the password in \
             password-file={file}"
        ));
    }
    if message.contains("user name is empty") || message.contains("invalid auth token") {
        return Some(format!(
            "etcd at {members} has authentication enabled: name a user with user= and \
             password-file= in the store URL"
        ));
    }
    if message.contains("permission denied") {
        let name = user.map_or("", |u| u.name.as_str());
        return Some(format!(
            "etcd at {members} does not let user {name:?} read and write {prefix}/: grant \
             one of its roles readwrite on it (etcdctl role grant-permission ROLE readwrite \
             {prefix}/ --prefix=true)",
            prefix = url.prefix
        ));
    }
    None
}

/// A failure to open the store at `url`, with what most likely caused it when it is how TLS
/// fails: the member's certificate not signed by the CA `ca=` names, or the member refusing
/// this client because it has no certificate (or one it does not trust), or because it
/// speaks TLS and the URL names no CA. The member's answer (an alert, or the connection
/// closed, whichever the client sees first) does not say which, so the hint follows from
/// what the URL asks for.
pub(super) fn explain(url: &EtcdUrl, error: StoreError) -> StoreError {
    let (StoreError::Engine(message) | StoreError::Unavailable(message)) = &error else {
        return error;
    };
    let members = url.members();
    let hint = if let Some(hint) = explain_auth(url, message) {
        hint
    } else if message.contains("invalid peer certificate") {
        let ca = url
            .tls
            .as_ref()
            .map_or(String::new(), |t| t.ca.display().to_string());
        if message.contains("NotValidForName") {
            format!(
                "the certificate etcd at {members} presents does not name the host the store URL \
                 reaches it by: use a name or address its certificate lists"
            )
        } else {
            format!(
                "the certificate etcd at {members} presents is not signed by the CA the store \
                 URL trusts (ca={ca}): name the CA that signed the cluster's --cert-file"
            )
        }
    } else if [
        "received fatal alert",
        "connection closed",
        "broken pipe",
        "connection reset",
    ]
    .iter()
    .any(|cut| message.contains(cut))
    {
        match &url.tls {
            None => format!(
                "etcd at {members} closed the connection: if it serves clients over TLS \
                 (https:// client URLs), name its CA with ca= in the store URL, and a client \
                 certificate with cert= and key= if it asks for one"
            ),
            Some(EtcdTls { identity: None, .. }) => format!(
                "etcd at {members} refused this client, which has no certificate: a cluster \
                 started with --client-cert-auth takes only clients with a certificate its \
                 --trusted-ca-file signed; name one with cert= and key= in the store URL"
            ),
            Some(EtcdTls {
                identity: Some(identity),
                ..
            }) => format!(
                "etcd at {members} refused this client's certificate (cert={}): it takes only \
                 certificates its --trusted-ca-file signed, for client use",
                identity.cert.display()
            ),
        }
    } else {
        return error;
    };
    StoreError::Engine(format!("{hint} ({message})"))
}

/// Asks the member the client reaches which etcd it runs, and warns if that etcd applies
/// write transactions slowly: etcd before 3.5 copies its backend's read buffer for each one
/// (etcd pull request 12896), and every commit of the store is a transaction.
/// Measured here (README, "Running on etcd"): on 3.4 a transaction costs about 0.2 ms and
/// twice the CPU of a put, on 3.5 about the same as a put. A member that does not say is
/// not warned about.
pub(super) async fn warn_if_slow(mut client: Client, members: String) {
    let Ok(Ok(status)) = tokio::time::timeout(CONNECT_TIMEOUT, client.status()).await else {
        return;
    };
    let version = status.version();
    if slow_transactions(version) {
        tracing::warn!(
            etcd = %members,
            version,
            "etcd before 3.5 applies every write transaction at about twice the CPU of a put \
             (etcd pull request 12896), and every Troupe write is one: etcd 3.5 or later \
             writes faster"
        );
    } else {
        tracing::info!(etcd = %members, version, "etcd version");
    }
}

/// Whether etcd `version` (`MAJOR.MINOR.PATCH`) is one before 3.5.
fn slow_transactions(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < (3, 5),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::slow_transactions;

    #[test]
    fn etcd_before_3_5_is_told_apart() {
        assert!(slow_transactions("3.4.23"));
        assert!(slow_transactions("3.3.0"));
        for newer in ["3.5.16", "3.6.0", "4.0.0"] {
            assert!(!slow_transactions(newer), "{newer}");
        }
        for unknown in ["", "dev", "3"] {
            assert!(!slow_transactions(unknown), "{unknown:?}");
        }
    }
}
