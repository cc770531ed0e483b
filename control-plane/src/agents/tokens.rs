//! Bootstrap tokens: short-lived secrets an agent exchanges for its client certificate.
//!
//! Each token is bound to one data plane and expires. Only the SHA-256 of its secret is kept,
//! appended as one JSON line to `DATA_DIR/pki/tokens.jsonl` (mode 0600, fsynced before the
//! token is handed out), so a copy of the data directory does not leak usable tokens and
//! creating many tokens costs one short append each. Loading skips tokens long expired and
//! rewrites the file without them. A token stays valid until it expires, so an agent that
//! lost its state can register again with the same token.
//!
//! Servers on etcd keep the same JSON record per token in etcd (`PREFIX/s/agent-tokens/ID`),
//! follow the other replicas' with a watch, and read a token's key on a miss: a token made
//! through one replica registers an agent through any other at once.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use troupe_common::agent::{BootstrapToken, sha256_hex};
use troupe_common::durable;
use troupe_common::pb::v1alpha1::DataPlaneIdentity;

use crate::shared_state::StateHome;

/// Lifetime of a token created without one.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, unknown, wrong secret or expired: the caller is not authenticated.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token for another data plane.
    #[error("{0}")]
    PermissionDenied(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    id: String,
    secret_sha256: String,
    namespace: String,
    name: String,
    expires_unix: u64,
}

/// The tokens, by id.
pub struct Tokens {
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
    backing: Backing,
}

/// Where tokens are written.
enum Backing {
    Memory,
    /// The open log.
    File(Mutex<std::fs::File>),
    #[cfg(feature = "etcd")]
    Etcd(crate::shared_state::EtcdState),
}

/// The token file in the data directory.
pub const TOKENS_FILE: &str = "pki/tokens.jsonl";
/// The directory of the tokens in etcd, under `PREFIX/s/`.
#[cfg(feature = "etcd")]
const SHARED_DIR: &str = "agent-tokens/";

/// Expired tokens are remembered this long, so using one says "expired" rather than
/// "unknown".
const REMEMBER_EXPIRED_SECS: u64 = 86_400;

impl Tokens {
    /// The tokens where `home` keeps them: `DATA_DIR/pki/tokens.jsonl`, memory, or etcd.
    pub fn open(home: &StateHome) -> anyhow::Result<Self> {
        match home {
            StateHome::Local(dir) => Self::load(dir.as_ref().map(|d| d.join(TOKENS_FILE))),
            #[cfg(feature = "etcd")]
            StateHome::Etcd { state, .. } => Self::shared(state.clone()),
        }
    }

    /// The tokens in etcd, followed from now on. Tokens long expired are deleted from etcd,
    /// as loading the file drops them.
    #[cfg(feature = "etcd")]
    fn shared(state: crate::shared_state::EtcdState) -> anyhow::Result<Self> {
        use crate::shared_state::{Change, Write};
        let (mut items, revision) = state.list(SHARED_DIR)?;
        let decode = |value: &[u8]| serde_json::from_slice::<Entry>(value).ok();
        let now = unix(SystemTime::now());
        let long_expired = |item: &crate::shared_state::Item| {
            decode(&item.value).is_some_and(|e| e.expires_unix + REMEMBER_EXPIRED_SECS <= now)
        };
        for item in items.iter().filter(|i| long_expired(i)) {
            // Another server may do the same: whoever is second deletes nothing.
            let expect = [(item.key.as_str(), item.mod_revision)];
            state.commit(&expect, vec![Write::Delete(item.key.clone())])?;
        }
        items.retain(|i| !long_expired(i));
        let entries = Arc::new(Mutex::new(BTreeMap::new()));
        let into = entries.clone();
        let apply = move |change: Change| {
            let mut entries = into.lock().unwrap_or_else(|p| p.into_inner());
            match change {
                Change::Put(item) => {
                    if let Some(entry) = decode(&item.value) {
                        entries.insert(entry.id.clone(), entry);
                    }
                }
                Change::Delete(key) => {
                    entries.remove(key.strip_prefix(SHARED_DIR).unwrap_or(&key));
                }
                Change::Reset(items) => {
                    *entries = items
                        .iter()
                        .filter_map(|i| decode(&i.value))
                        .map(|e| (e.id.clone(), e))
                        .collect();
                }
            }
        };
        apply(Change::Reset(items));
        state.follow(SHARED_DIR, revision, apply);
        Ok(Self {
            entries,
            backing: Backing::Etcd(state),
        })
    }

    /// Copies the tokens kept in `data_dir` into `state` (`troupe migrate`); returns how many.
    #[cfg(feature = "etcd")]
    pub fn copy_to_etcd(
        data_dir: &std::path::Path,
        state: &crate::shared_state::EtcdState,
    ) -> anyhow::Result<usize> {
        let local = Self::load(Some(data_dir.join(TOKENS_FILE)))?;
        let entries = local.entries.lock().unwrap_or_else(|p| p.into_inner());
        for entry in entries.values() {
            state.put(
                &format!("{SHARED_DIR}{}", entry.id),
                serde_json::to_vec(entry)?,
            )?;
        }
        Ok(entries.len())
    }

    /// Writes the tokens kept in `state` into `data_dir`'s token file (`troupe migrate
    /// --from-etcd`); returns how many.
    #[cfg(feature = "etcd")]
    pub fn copy_from_etcd(
        state: &crate::shared_state::EtcdState,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<usize> {
        use anyhow::Context;
        let (items, _) = state.list(SHARED_DIR)?;
        let mut text = String::new();
        let mut count = 0;
        for item in &items {
            let entry: Entry = serde_json::from_slice(&item.value)
                .with_context(|| format!("reading join token {} kept in etcd", item.key))?;
            text.push_str(&serde_json::to_string(&entry)?);
            text.push('\n');
            count += 1;
        }
        let path = data_dir.join(TOKENS_FILE);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        durable::write(&path, text.as_bytes())?;
        Ok(count)
    }

    /// Loads the tokens kept at `path` (none yet if it does not exist); `None` keeps them in
    /// memory only.
    pub fn load(path: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut entries = BTreeMap::new();
        let now = unix(SystemTime::now());
        let Some(path) = path else {
            return Ok(Self {
                entries: Arc::new(Mutex::new(entries)),
                backing: Backing::Memory,
            });
        };
        if path.exists() {
            for line in std::io::BufReader::new(std::fs::File::open(&path)?).lines() {
                let line = line?;
                // A line cut short by a crash mid-append was never acknowledged: skip it.
                if let Ok(entry) = serde_json::from_str::<Entry>(&line)
                    && entry.expires_unix + REMEMBER_EXPIRED_SECS > now
                {
                    entries.insert(entry.id.clone(), entry);
                }
            }
        }
        let mut compacted = String::new();
        for entry in entries.values() {
            compacted.push_str(&serde_json::to_string(entry)?);
            compacted.push('\n');
        }
        durable::write(&path, compacted.as_bytes())?;
        let log = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(Self {
            entries: Arc::new(Mutex::new(entries)),
            backing: Backing::File(Mutex::new(log)),
        })
    }

    /// Makes a token for `data_plane`, valid for `ttl`, carrying `ca_pin`. Returns it with its
    /// expiry; it is on disk when this returns.
    pub fn create(
        &self,
        data_plane: &DataPlaneIdentity,
        ttl: Duration,
        ca_pin: &str,
    ) -> anyhow::Result<(BootstrapToken, SystemTime)> {
        let random = || uuid::Uuid::new_v4().simple().to_string();
        let token = BootstrapToken {
            id: random()[..16].to_string(),
            secret: random(),
            ca_pin: ca_pin.to_string(),
        };
        let expires = SystemTime::now()
            .checked_add(ttl)
            .ok_or_else(|| anyhow::anyhow!("a TTL of {}s overflows the clock", ttl.as_secs()))?;
        let entry = Entry {
            id: token.id.clone(),
            secret_sha256: sha256_hex(token.secret.as_bytes()),
            namespace: data_plane.namespace.clone(),
            name: data_plane.name.clone(),
            expires_unix: unix(expires),
        };
        match &self.backing {
            Backing::Memory => {}
            Backing::File(log) => {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.write_all(format!("{}\n", serde_json::to_string(&entry)?).as_bytes())?;
                log.sync_data()?;
            }
            #[cfg(feature = "etcd")]
            Backing::Etcd(state) => {
                // Created only if absent, so a write sent again when its etcd member stalls
                // lands once.
                let key = format!("{SHARED_DIR}{}", entry.id);
                let write =
                    crate::shared_state::Write::Put(key.clone(), serde_json::to_vec(&entry)?);
                if !state.commit(&[(key.as_str(), 0)], vec![write])? {
                    anyhow::bail!("bootstrap token {} exists already; make another", entry.id);
                }
            }
        }
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.id.clone(), entry);
        Ok((token, expires))
    }

    /// Checks that `token` is current and was made for `data_plane`.
    pub fn verify(&self, token: &str, data_plane: &DataPlaneIdentity) -> Result<(), TokenError> {
        let token = BootstrapToken::parse(token).map_err(TokenError::Unauthenticated)?;
        self.fetch_if_missing(&token.id);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let unknown =
            || TokenError::Unauthenticated(format!("bootstrap token {} is not known", token.id));
        let entry = entries.get(&token.id).ok_or_else(unknown)?;
        let given = sha256_hex(token.secret.as_bytes());
        if !constant_time_eq(given.as_bytes(), entry.secret_sha256.as_bytes()) {
            return Err(unknown());
        }
        if entry.expires_unix <= unix(SystemTime::now()) {
            return Err(TokenError::Unauthenticated(format!(
                "bootstrap token {} has expired; create a new one with `troupe dataplane token create`",
                token.id
            )));
        }
        if entry.namespace != data_plane.namespace || entry.name != data_plane.name {
            let bound = DataPlaneIdentity {
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
            };
            return Err(TokenError::PermissionDenied(format!(
                "bootstrap token {} registers data plane {bound}, not {data_plane}",
                token.id
            )));
        }
        Ok(())
    }
}

impl Tokens {
    /// On etcd, reads token `id` if this replica has not seen it yet: another replica may
    /// have made it a moment ago. Registering is rare, so a round trip here costs little.
    fn fetch_if_missing(&self, id: &str) {
        #[cfg(feature = "etcd")]
        if let Backing::Etcd(state) = &self.backing {
            let known = self
                .entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(id);
            if known {
                return;
            }
            match state.get(&format!("{SHARED_DIR}{id}")) {
                Ok(Some(item)) => {
                    if let Ok(entry) = serde_json::from_slice::<Entry>(&item.value) {
                        self.entries
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(entry.id.clone(), entry);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, token = %id, "reading a bootstrap token from etcd")
                }
            }
        }
        #[cfg(not(feature = "etcd"))]
        let _ = (id, &self.backing);
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_registers_its_own_data_plane_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.jsonl");
        let tokens = Tokens::load(Some(path.clone())).unwrap();
        let edge = DataPlaneIdentity::parse("team/edge").unwrap();
        let other = DataPlaneIdentity::parse("team/core").unwrap();
        let pin = "a".repeat(64);
        let (token, _) = tokens.create(&edge, DEFAULT_TTL, &pin).unwrap();
        let text = token.to_string();

        // Survives a restart; the secret itself is not on disk.
        let tokens = Tokens::load(Some(path.clone())).unwrap();
        assert!(
            !std::fs::read_to_string(&path)
                .unwrap()
                .contains(&token.secret)
        );
        assert_eq!(tokens.verify(&text, &edge), Ok(()));
        assert!(
            matches!(tokens.verify(&text, &other), Err(TokenError::PermissionDenied(m)) if m.contains("team/edge"))
        );
        let forged = BootstrapToken {
            secret: "0".repeat(32),
            ..token
        };
        assert!(matches!(
            tokens.verify(&forged.to_string(), &edge),
            Err(TokenError::Unauthenticated(_))
        ));

        let (expired, _) = tokens.create(&edge, Duration::ZERO, &pin).unwrap();
        let err = tokens.verify(&expired.to_string(), &edge).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn a_server_on_etcd_deletes_tokens_long_expired_and_keeps_the_others() {
        use crate::shared_state::EtcdState;
        use crate::store::{EtcdStore, LocalEtcd, StoreLocation};
        let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
        let StoreLocation::Etcd(url) = etcd.url("t").parse::<StoreLocation>().unwrap() else {
            panic!("not an etcd URL")
        };
        let state = EtcdState::new(Arc::new(EtcdStore::open(&url).unwrap()));
        let entry = |id: &str, expires_unix: u64| {
            let entry = Entry {
                id: id.into(),
                secret_sha256: "0".repeat(64),
                namespace: "team".into(),
                name: "edge".into(),
                expires_unix,
            };
            serde_json::to_vec(&entry).unwrap()
        };
        let now = unix(SystemTime::now());
        state.put("agent-tokens/old", entry("old", 1_000)).unwrap();
        let recent = now - REMEMBER_EXPIRED_SECS / 2;
        state
            .put("agent-tokens/recent", entry("recent", recent))
            .unwrap();
        let tokens = Tokens::shared(state.clone()).unwrap();
        let (left, _) = state.list("agent-tokens/").unwrap();
        let left: Vec<&str> = left.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(left, ["agent-tokens/recent"]);
        let known: Vec<String> = tokens.entries.lock().unwrap().keys().cloned().collect();
        assert_eq!(
            known,
            ["recent"],
            "the one kept is still known, to say it expired"
        );
    }
}
