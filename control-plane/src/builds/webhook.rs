//! The push webhook: `POST /webhooks/github` on `--webhook-addr` takes GitHub's push event and
//! starts one build of the pushed commit for every component whose `spec.workflow.repository`
//! is the pushed repository and whose secret signed the delivery (`X-Hub-Signature-256`,
//! HMAC-SHA256 of the body).
//!
//! - A repository no component builds is ignored (202).
//! - A delivery no matching component's secret signed is refused (401).
//! - A run is named after its component and commit, so a redelivered push finds its run and
//!   starts nothing new.
//!
//! Secrets are made by `BuildService.CreateWebhookSecret` and kept by the server
//! ([`WebhookSecrets`]): in `DATA_DIR/webhook-secrets.json` (mode 0600), or in memory, or, on
//! etcd, shared by every replica (`PREFIX/s/webhook-secrets/NAMESPACE/COMPONENT`, the secret
//! as the file holds it), followed by a watch and read once on a miss, so a delivery signed
//! with a secret made through one replica is taken by any.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use troupe_common::pb::v1alpha1 as pb;

use super::index::SECRETS_FILE;
use super::start::run_name;
use super::{BuildRequest, Builds};
use crate::resources::Origin;
use crate::shared_state::StateHome;

/// Where pushes are sent.
pub const PATH: &str = "/webhooks/github";
/// The largest delivery read.
const MAX_BODY: usize = 2 * 1024 * 1024;

/// The webhook secrets, by `NAMESPACE/COMPONENT`.
pub struct WebhookSecrets {
    path: Option<PathBuf>,
    secrets: Arc<Mutex<BTreeMap<String, String>>>,
    #[cfg(feature = "etcd")]
    shared: Option<crate::shared_state::EtcdState>,
}

/// The directory of the secrets in etcd, under `PREFIX/s/`.
#[cfg(feature = "etcd")]
const SHARED_DIR: &str = "webhook-secrets/";

/// `NAMESPACE/COMPONENT` of a secret's key in etcd (`webhook-secrets/NAMESPACE/COMPONENT`):
/// the directory stripped once, whatever the namespace is called.
#[cfg(feature = "etcd")]
fn shared_name(key: &str) -> &str {
    key.strip_prefix(SHARED_DIR).unwrap_or(key)
}

impl WebhookSecrets {
    /// The secrets where `home` keeps them: `DATA_DIR/webhook-secrets.json`, memory, or etcd.
    pub fn open(home: &StateHome) -> std::io::Result<Self> {
        match home {
            StateHome::Local(dir) => Self::load(dir.as_ref().map(|d| d.join(SECRETS_FILE))),
            #[cfg(feature = "etcd")]
            StateHome::Etcd { state, .. } => Self::shared(state.clone()),
        }
    }

    /// The secrets in etcd, followed from now on.
    #[cfg(feature = "etcd")]
    fn shared(state: crate::shared_state::EtcdState) -> std::io::Result<Self> {
        use crate::shared_state::Change;
        let (items, revision) = state.list(SHARED_DIR).map_err(std::io::Error::other)?;
        let secrets = Arc::new(Mutex::new(BTreeMap::new()));
        let into = secrets.clone();
        let apply = move |change: Change| {
            let mut secrets = into.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = |item: crate::shared_state::Item| {
                let key = shared_name(&item.key).to_string();
                (key, String::from_utf8_lossy(&item.value).into_owned())
            };
            match change {
                Change::Put(item) => {
                    let (key, secret) = entry(item);
                    secrets.insert(key, secret);
                }
                Change::Delete(key) => {
                    secrets.remove(shared_name(&key));
                }
                Change::Reset(items) => *secrets = items.into_iter().map(entry).collect(),
            }
        };
        apply(Change::Reset(items));
        state.follow(SHARED_DIR, revision, apply);
        Ok(Self {
            path: None,
            secrets,
            shared: Some(state),
        })
    }

    /// Copies the secrets kept in `data_dir` into `state` (`troupe migrate`); returns how
    /// many.
    #[cfg(feature = "etcd")]
    pub fn copy_to_etcd(
        data_dir: &std::path::Path,
        state: &crate::shared_state::EtcdState,
    ) -> std::io::Result<usize> {
        let local = Self::load(Some(data_dir.join(SECRETS_FILE)))?;
        let secrets = local.secrets.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, secret) in secrets.iter() {
            state
                .put(&format!("{SHARED_DIR}{key}"), secret.clone().into_bytes())
                .map_err(std::io::Error::other)?;
        }
        Ok(secrets.len())
    }

    /// Writes the secrets kept in `state` into `data_dir`'s secrets file (`troupe migrate
    /// --from-etcd`); returns how many.
    #[cfg(feature = "etcd")]
    pub fn copy_from_etcd(
        state: &crate::shared_state::EtcdState,
        data_dir: &std::path::Path,
    ) -> std::io::Result<usize> {
        let (items, _) = state.list(SHARED_DIR).map_err(std::io::Error::other)?;
        let secrets: BTreeMap<String, String> = items
            .into_iter()
            .map(|item| {
                let key = shared_name(&item.key).to_string();
                (key, String::from_utf8_lossy(&item.value).into_owned())
            })
            .collect();
        let text = serde_json::to_vec_pretty(&secrets).map_err(std::io::Error::other)?;
        let path = data_dir.join(SECRETS_FILE);
        troupe_common::durable::write(&path, &text)?;
        set_private(&path)?;
        Ok(secrets.len())
    }

    /// Loads the secrets kept at `path` (none yet if it does not exist); `None` keeps them in
    /// memory only.
    pub fn load(path: Option<PathBuf>) -> std::io::Result<Self> {
        let secrets = match &path {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                Err(e) => return Err(e),
            },
            None => BTreeMap::new(),
        };
        Ok(Self {
            path,
            secrets: Arc::new(Mutex::new(secrets)),
            #[cfg(feature = "etcd")]
            shared: None,
        })
    }

    /// Makes a new secret for `namespace/component`, kept durably before it is returned.
    pub fn create(&self, namespace: &str, component: &str) -> std::io::Result<String> {
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut secrets = self.secrets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = secrets.clone();
        next.insert(format!("{namespace}/{component}"), secret.clone());
        #[cfg(feature = "etcd")]
        if let Some(state) = &self.shared {
            replace_shared(state, &format!("{namespace}/{component}"), &secret)?;
        }
        if let Some(path) = &self.path {
            let text = serde_json::to_vec_pretty(&next).map_err(std::io::Error::other)?;
            troupe_common::durable::write(path, &text)?;
            set_private(path)?;
        }
        *secrets = next;
        Ok(secret)
    }

    fn get(&self, namespace: &str, component: &str) -> Option<String> {
        let key = format!("{namespace}/{component}");
        let known = self
            .secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        #[cfg(feature = "etcd")]
        if known.is_none()
            && let Some(state) = &self.shared
        {
            // Another replica may have made it a moment ago.
            return match state.get(&format!("{SHARED_DIR}{key}")) {
                Ok(item) => item.map(|i| String::from_utf8_lossy(&i.value).into_owned()),
                Err(e) => {
                    tracing::warn!(error = %e, component = %key, "reading a webhook secret from etcd");
                    None
                }
            };
        }
        known
    }
}

/// Sets the shared webhook secret of `component` (`NAMESPACE/NAME`) to `secret`, checking the
/// revision it replaces, so a write sent again when its etcd member stalls lands once; made
/// again if another server changed it in between.
#[cfg(feature = "etcd")]
fn replace_shared(
    state: &crate::shared_state::EtcdState,
    component: &str,
    secret: &str,
) -> std::io::Result<()> {
    use crate::shared_state::Write;
    let key = format!("{SHARED_DIR}{component}");
    for _ in 0..3 {
        let current = state.get(&key).map_err(std::io::Error::other)?;
        let revision = current.map_or(0, |item| item.mod_revision);
        let write = Write::Put(key.clone(), secret.as_bytes().to_vec());
        if state
            .commit(&[(key.as_str(), revision)], vec![write])
            .map_err(std::io::Error::other)?
        {
            return Ok(());
        }
    }
    Err(std::io::Error::other(format!(
        "the webhook secret of component {component} was changed by another server each time \
         it was written; try again"
    )))
}

#[cfg(unix)]
fn set_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_private(_: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

/// Serves the webhook on `listen` until `stopping`; returns the address, or `None` when no
/// address was asked for.
pub async fn serve(
    listen: Option<SocketAddr>,
    builds: Arc<Builds>,
    stopping: &tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Option<SocketAddr>> {
    let router = axum::Router::new()
        .route(PATH, axum::routing::post(push))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(builds);
    crate::http::serve(listen, router, stopping, "webhook").await
}

#[derive(Debug, Deserialize, Default)]
struct Push {
    #[serde(default, rename = "ref")]
    git_ref: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    repository: Repository,
    #[serde(default)]
    pusher: Pusher,
}

#[derive(Debug, Deserialize, Default)]
struct Repository {
    #[serde(default)]
    html_url: String,
    #[serde(default)]
    clone_url: String,
    #[serde(default)]
    ssh_url: String,
    #[serde(default)]
    git_url: String,
}

#[derive(Debug, Deserialize, Default)]
struct Pusher {
    #[serde(default)]
    name: String,
}

async fn push(
    State(builds): State<Arc<Builds>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let event = header(&headers, "x-github-event");
    let push: Push = match serde_json::from_slice(&body) {
        Ok(push) => push,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the body is not a push event: {e}\n"),
            );
        }
    };
    let components = building(&builds, &push.repository).await;
    if components.is_empty() {
        return (
            StatusCode::ACCEPTED,
            "ignored: no component builds this repository\n".into(),
        );
    }
    let signature = header(&headers, "x-hub-signature-256");
    let signed: Vec<pb::Component> = components
        .into_iter()
        .filter(|c| {
            let meta = c.metadata.clone().unwrap_or_default();
            builds
                .secrets
                .get(&meta.namespace, &meta.name)
                .is_some_and(|secret| verify(secret.as_bytes(), &body, &signature))
        })
        .collect();
    if signed.is_empty() {
        return (
            StatusCode::UNAUTHORIZED,
            "the signature (X-Hub-Signature-256) does not match the webhook secret of any component building this repository\n".into(),
        );
    }
    if event == "ping" {
        return (StatusCode::OK, "pong\n".into());
    }
    if event != "push" {
        return (
            StatusCode::ACCEPTED,
            format!("ignored: event {event:?} is not a push\n"),
        );
    }
    if push.deleted || push.after.is_empty() || push.after.chars().all(|c| c == '0') {
        return (
            StatusCode::ACCEPTED,
            "ignored: the push deleted a branch\n".into(),
        );
    }
    if !push.after.chars().all(|c| c.is_ascii_hexdigit()) || push.after.len() < 7 {
        return (
            StatusCode::BAD_REQUEST,
            format!("`after` is not a commit: {:?}\n", push.after),
        );
    }
    start_runs(&builds, &push, signed).await
}

/// Starts a run of the pushed commit for each of `components`, unless the branch is not one
/// it builds; says what happened to each.
async fn start_runs(
    builds: &Builds,
    push: &Push,
    components: Vec<pb::Component>,
) -> (StatusCode, String) {
    let branch = push
        .git_ref
        .strip_prefix("refs/heads/")
        .unwrap_or(&push.git_ref);
    let commit = push.after.to_ascii_lowercase();
    let mut answer = String::new();
    let mut status = StatusCode::ACCEPTED;
    for component in components {
        let meta = component.metadata.clone().unwrap_or_default();
        let who = format!("{}/{}", meta.namespace, meta.name);
        let workflow = component.spec.and_then(|s| s.workflow).unwrap_or_default();
        if !workflow.branches.is_empty() && !workflow.branches.iter().any(|b| b == branch) {
            answer += &format!("{who}: ignored: branch {branch:?} is not built\n");
            continue;
        }
        let request = BuildRequest {
            namespace: meta.namespace.clone(),
            component: meta.name.clone(),
            name: Some(run_name(&meta.name, &commit[..12.min(commit.len())])),
            commit: commit.clone(),
            repository: workflow.repository.clone(),
            r#ref: push.git_ref.clone(),
            trigger: pb::WorkflowRunTrigger {
                r#type: "webhook".into(),
                by: push.pusher.name.clone(),
            },
            set: BTreeMap::new(),
        };
        match builds.start_build(request, Origin::ControlPlane).await {
            Ok((run, true)) => {
                status = StatusCode::CREATED;
                let name = run.metadata.map(|m| m.name).unwrap_or_default();
                answer += &format!("{who}: workflowrun/{name} created\n");
            }
            Ok((run, false)) => {
                let name = run.metadata.map(|m| m.name).unwrap_or_default();
                answer += &format!("{who}: workflowrun/{name} exists already\n");
            }
            Err(e) => {
                answer += &format!("{who}: {e}\n");
                if status == StatusCode::ACCEPTED {
                    status = StatusCode::UNPROCESSABLE_ENTITY;
                }
            }
        }
    }
    (status, answer)
}

/// The components whose `spec.workflow.repository` is `repository` (by any of its URLs).
async fn building(builds: &Builds, repository: &Repository) -> Vec<pb::Component> {
    let urls = [
        &repository.html_url,
        &repository.clone_url,
        &repository.ssh_url,
        &repository.git_url,
    ];
    let wanted: Vec<String> = urls
        .iter()
        .filter(|u| !u.is_empty())
        .map(|u| normalize(u))
        .collect();
    let all = builds
        .resources
        .list_as::<pb::Component>("", &Default::default())
        .await;
    let Ok(all) = all else {
        return Vec::new();
    };
    all.into_iter()
        .filter(|c| {
            let repository = c
                .spec
                .as_ref()
                .and_then(|s| s.workflow.as_ref())
                .map(|w| w.repository.as_str())
                .unwrap_or_default();
            !repository.is_empty() && wanted.contains(&normalize(repository))
        })
        .collect()
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A repository URL without scheme, user, `.git` and trailing slash, lowercased:
/// `https://github.com/Acme/API.git` and `git@github.com:acme/api` are both
/// `github.com/acme/api`.
fn normalize(url: &str) -> String {
    let url = url.trim().to_ascii_lowercase();
    let url = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let url = url.split_once('@').map_or(url, |(_, rest)| rest);
    let url = url.trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    url.replacen(':', "/", 1)
}

/// Whether `signature` (`sha256=HEX`) is the HMAC-SHA256 of `body` under `secret`, compared
/// in constant time.
fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let expected = troupe_common::hex::encode(&hmac_sha256(secret, body));
    hex.len() == expected.len()
        && hex
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a.to_ascii_lowercase() ^ b))
            == 0
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner_pad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer_pad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            troupe_common::hex::encode(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            troupe_common::hex::encode(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_signature_verifies_only_with_its_secret_and_body() {
        let signature = format!(
            "sha256={}",
            troupe_common::hex::encode(&hmac_sha256(b"s3cret", b"{}"))
        );
        assert!(verify(b"s3cret", b"{}", &signature));
        assert!(verify(
            b"s3cret",
            b"{}",
            &signature.to_ascii_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!verify(b"other", b"{}", &signature));
        assert!(!verify(b"s3cret", b"{ }", &signature));
        assert!(!verify(b"s3cret", b"{}", &signature[..20]));
        assert!(!verify(b"s3cret", b"{}", ""));
    }

    #[test]
    fn repository_urls_compare_by_host_and_path() {
        for url in [
            "https://github.com/Acme/API.git",
            "git@github.com:acme/api.git",
            "git://github.com/acme/api",
            "https://github.com/acme/api/",
        ] {
            assert_eq!(normalize(url), "github.com/acme/api", "{url}");
        }
        assert_ne!(
            normalize("https://github.com/acme/api2"),
            "github.com/acme/api"
        );
    }
}

#[cfg(all(test, feature = "etcd"))]
mod shared_tests {
    use super::*;
    use crate::shared_state::EtcdState;
    use crate::store::{EtcdStore, LocalEtcd, StoreLocation};

    fn mk_secrets(etcd: &LocalEtcd) -> WebhookSecrets {
        let StoreLocation::Etcd(url) = etcd.url("w").parse::<StoreLocation>().unwrap() else {
            panic!("not an etcd URL")
        };
        let state = EtcdState::new(Arc::new(EtcdStore::open(&url).unwrap()));
        WebhookSecrets::open(&StateHome::Etcd {
            state,
            data_dir: None,
        })
        .unwrap()
    }

    #[test]
    fn a_secret_made_through_one_replica_signs_for_every_replica() {
        let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
        let (a, b) = (mk_secrets(&etcd), mk_secrets(&etcd));
        assert_eq!(b.get("acme", "api"), None);
        let first = a.create("acme", "api").unwrap();
        // Under the key every replica reads, and through B at once, although B's watch may
        // not have brought it yet.
        let stored = a
            .shared
            .as_ref()
            .unwrap()
            .get(&format!("{SHARED_DIR}acme/api"));
        assert_eq!(
            stored.unwrap().map(|item| item.value),
            Some(first.clone().into_bytes())
        );
        assert_eq!(b.get("acme", "api"), Some(first.clone()));
        let second = a.create("acme", "api").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while b.get("acme", "api") != Some(second.clone()) {
            assert!(
                std::time::Instant::now() < deadline,
                "B kept the old secret"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(mk_secrets(&etcd).get("acme", "api"), Some(second));
    }

    #[test]
    fn a_namespace_named_like_the_secrets_directory_keeps_its_secret_apart() {
        let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
        let (a, b) = (mk_secrets(&etcd), mk_secrets(&etcd));
        let secret = a.create("webhook-secrets", "api").unwrap();
        // B's watch brings it under its own namespace, not under a bare component.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !b
            .secrets
            .lock()
            .unwrap()
            .contains_key("webhook-secrets/api")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "B has {:?}",
                b.secrets.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(b.get("webhook-secrets", "api"), Some(secret));
        assert!(!b.secrets.lock().unwrap().contains_key("api"));
    }
}
