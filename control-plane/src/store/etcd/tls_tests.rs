//! The etcd store over TLS, on a real etcd that serves clients over TLS only and asks each for
//! a certificate its CA signed: with the client certificate the store works as on plain
//! HTTP; without one, or trusting another CA, the open fails naming the cluster and what to
//! fix; a TLS file that is missing or not what its option says fails naming the option and
//! the file, before anything is sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_common::{Kind, ObjectKey};

use super::*;
use crate::store::StoreLocation;

fn mk_tls_etcd() -> LocalEtcd {
    LocalEtcd::start_tls().unwrap_or_else(|e| panic!("{e:#}"))
}

fn mk_url(text: &str) -> EtcdUrl {
    match text.parse::<StoreLocation>().unwrap() {
        StoreLocation::Etcd(url) => url,
        other => panic!("{other:?}"),
    }
}

fn mk_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Component, "acme", name)
}

/// The next commit `rx` receives, waiting up to ten seconds.
fn next_commit(rx: &mut broadcast::Receiver<Arc<[Event]>>) -> Arc<[Event]> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.try_recv() {
            Ok(commit) => return commit,
            Err(broadcast::error::TryRecvError::Empty) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("no commit within 10 s: {e:?}"),
        }
    }
}

/// The message of a failed open of `url`.
fn open_error(url: &str) -> String {
    match EtcdStore::open(&mk_url(url)) {
        Ok(_) => panic!("{url} opened"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_store_over_tls_with_a_client_certificate_commits_reads_and_watches() {
    let etcd = mk_tls_etcd();
    let url = mk_url(&etcd.url_tls("tls"));
    assert!(url.endpoints[0].starts_with("https://"), "{url:?}");
    let a = EtcdStore::open(&url).unwrap();
    let b = EtcdStore::open(&url).unwrap();
    let mut seen_by_b = b.subscribe();

    let revision = a
        .commit(Txn::default().put(mk_key("api"), b"1".to_vec()))
        .unwrap();
    let commit = next_commit(&mut seen_by_b);
    assert_eq!(commit.len(), 1);
    assert_eq!(
        (commit[0].revision, commit[0].key.name.as_str()),
        (revision, "api")
    );
    assert_eq!(a.get(&mk_key("api")).unwrap().unwrap().value, b"1");
    assert_eq!(b.get(&mk_key("api")).unwrap().unwrap().value, b"1");

    // A store opened again loads what is there, over TLS too.
    drop((a, b));
    let reopened = EtcdStore::open(&url).unwrap();
    assert_eq!(
        reopened.get(&mk_key("api")).unwrap().unwrap().mod_revision,
        revision
    );
    // The keys are really in etcd, under the prefix, as a raw client over TLS sees them.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let count = runtime.block_on(async {
        let mut client = etcd.client().await.unwrap();
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only();
        client.get("/tls/o/", Some(options)).await.unwrap().count()
    });
    assert_eq!(count, 1);
}

#[test]
fn without_a_client_certificate_or_trusting_another_ca_the_open_fails_naming_the_cluster() {
    let etcd = mk_tls_etcd();
    let tls = etcd.tls().unwrap();
    let members = etcd.endpoint();

    let no_cert = open_error(&format!("{}?ca={}", etcd.url("tls"), tls.ca.display()));
    assert!(no_cert.contains(&members), "{no_cert}");
    assert!(
        no_cert.contains("refused this client, which has no certificate"),
        "{no_cert}"
    );
    assert!(no_cert.contains("cert= and key="), "{no_cert}");

    // Another CA: the member's certificate is not one this store trusts.
    let elsewhere = tempfile::tempdir().unwrap();
    let other_tls = super::local_tls::LocalTls::generate(elsewhere.path()).unwrap();
    let wrong_ca = open_error(&format!(
        "{}?ca={}&cert={}&key={}",
        etcd.url("tls"),
        other_tls.ca.display(),
        tls.client_cert.display(),
        tls.client_key.display()
    ));
    assert!(wrong_ca.contains(&members), "{wrong_ca}");
    assert!(wrong_ca.contains("not signed by the CA"), "{wrong_ca}");
    assert!(
        wrong_ca.contains(&other_tls.ca.display().to_string()),
        "{wrong_ca}"
    );

    // A client certificate of another CA.
    let stranger = open_error(&format!(
        "{}?ca={}&cert={}&key={}",
        etcd.url("tls"),
        tls.ca.display(),
        other_tls.client_cert.display(),
        other_tls.client_key.display()
    ));
    assert!(stranger.contains(&members), "{stranger}");
    let refused = format!(
        "refused this client's certificate (cert={}",
        other_tls.client_cert.display()
    );
    assert!(stranger.contains(&refused), "{stranger}");

    // Plain HTTP to a member that speaks TLS only.
    let plain = open_error(&etcd.url("tls"));
    assert!(
        plain.contains(members.trim_start_matches("https://")),
        "{plain}"
    );
    assert!(plain.contains("name its CA with ca="), "{plain}");
}

#[test]
fn a_tls_file_missing_or_of_the_wrong_kind_fails_the_open_naming_the_option_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let not_pem = write("notes.txt", "not a certificate\n");
    let missing = dir.path().join("missing.pem").display().to_string();
    // Nothing listens there: a file error must come before any connection.
    let base = "etcd://127.0.0.1:9/troupe";

    let err = open_error(&format!("{base}?ca={missing}"));
    assert!(err.contains(&format!("ca={missing}")), "{err}");
    assert!(err.contains("cannot be read"), "{err}");

    let err = open_error(&format!("{base}?ca={not_pem}"));
    assert!(err.contains(&format!("ca={not_pem}")), "{err}");
    assert!(err.contains("no PEM certificate"), "{err}");

    // A certificate where the key should be, and a key that never reaches the message.
    let files = super::local_tls::LocalTls::generate(dir.path()).unwrap();
    let (ca, cert, key) = (
        files.ca.display().to_string(),
        files.client_cert.display().to_string(),
        files.client_key.display().to_string(),
    );
    let err = open_error(&format!("{base}?ca={ca}&cert={cert}&key={cert}"));
    assert!(err.contains(&format!("key={cert}")), "{err}");
    assert!(err.contains("no PEM private key"), "{err}");
    assert!(!err.contains("BEGIN CERTIFICATE-----\n"), "{err}");

    let err = open_error(&format!("{base}?ca={ca}&cert={key}&key={key}"));
    assert!(err.contains(&format!("cert={key}")), "{err}");
    assert!(!err.contains("PRIVATE KEY-----\n"), "{err}");
}
