//! Troupe API tokens: bearer secrets for people and CI, `troupe token create NAME`.
//!
//! A token is `trp_` and 64 hex digits of randomness; whoever presents it is the user NAME
//! with the token's groups. Only the SHA-256 of a token is kept, so a copy of the data
//! directory holds no usable token. Tokens live in `DATA_DIR/auth/tokens.jsonl`: one JSON
//! line per creation or revocation, fsynced before the call returns; loading replays the
//! lines and rewrites the file without tokens long gone. Checking a token is one hash and
//! one map lookup under a read lock.
//!
//! The first start (no `DATA_DIR/admin.token` yet) makes the token `admin`, in group
//! [`ADMINS_GROUP`], and writes it to `DATA_DIR/admin.token` (mode 0600). Removing that file
//! and restarting revokes the old admin token and writes a new one.
//!
//! Servers on etcd share the tokens ([`shared`]): the same records, one key per token hash
//! (`PREFIX/s/api-tokens/HASH`, with its revocation time once revoked), followed by a watch, so
//! checking a token stays a map lookup; a token this replica has not seen is read from etcd
//! once (another replica may have made it a moment ago). The admin token is one for the
//! cluster (`PREFIX/s/admin-token`), made by the first replica to start and copied to each
//! replica's `DATA_DIR/admin.token`; revoking it (`troupe token revoke admin`) and restarting
//! a replica makes a new one.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use troupe_common::durable;

use super::{Principal, Via};
use crate::shared_state::StateHome;

/// Prefix of every Troupe API token.
pub const PREFIX: &str = "trp_";
/// Group of the bootstrap admin token; the built-in ClusterRoleBinding `admins` gives it the
/// `admin` role.
pub const ADMINS_GROUP: &str = "system:admins";
/// Name of the bootstrap admin token.
pub const ADMIN_TOKEN_NAME: &str = "admin";
/// Lifetime of a token created without one.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Lifetime of the bootstrap admin token.
pub const ADMIN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest lifetime a token (API or data-plane bootstrap) may be given: ten years. Far
/// longer lifetimes overflow the expiry's timestamp; this one leaves room for any clock.
pub const MAX_TTL: Duration = Duration::from_secs(MAX_TTL_DAYS * 86_400);
/// [`MAX_TTL`] in days, the unit the CLI and the messages name it in.
pub const MAX_TTL_DAYS: u64 = 3650;

/// A request's `ttlSeconds` as a lifetime: 0 means `default`; a negative one, or one longer
/// than [`MAX_TTL`], is refused with a message naming the field and the limit.
pub fn ttl_from_request(seconds: i64, default: Duration) -> Result<Duration, String> {
    let Ok(seconds) = u64::try_from(seconds) else {
        return Err("ttlSeconds: must not be negative".into());
    };
    let ttl = match seconds {
        0 => default,
        s => Duration::from_secs(s),
    };
    if ttl > MAX_TTL {
        return Err(format!(
            "ttlSeconds: {seconds} is longer than the largest TTL allowed, {} seconds ({MAX_TTL_DAYS}d)",
            MAX_TTL.as_secs()
        ));
    }
    Ok(ttl)
}

/// Expired and revoked tokens are remembered this long, so presenting one says why it no
/// longer works rather than "unknown".
const REMEMBER_SECS: u64 = 7 * 86_400;

/// Why a token is refused, or a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The presented token proves nothing (the `UNAUTHENTICATED` message).
    #[error("{0}")]
    Unauthenticated(String),
    /// A request to create or revoke a token that cannot be done.
    #[error("{0}")]
    Invalid(String),
    /// Other replicas kept changing the token while this one wrote it: worth trying again.
    #[error("{0}")]
    Contended(String),
    /// The token file could not be written.
    #[error("storing the token: {0}")]
    Io(String),
    /// The store that keeps the tokens (etcd) failed: out of reach, out of space, …
    #[error("storing the token: {0}")]
    Store(crate::store::StoreError),
}

/// A token's record, as kept on disk (without the secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    name: String,
    sha256: String,
    groups: Vec<String>,
    created_unix: u64,
    expires_unix: u64,
    created_by: String,
}

/// One line of the token file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
enum Line {
    Create(Record),
    Revoke { name: String, time_unix: u64 },
}

/// A token in memory: its record, whether it was revoked, and when it was last presented.
#[derive(Debug)]
struct Entry {
    record: Record,
    revoked_unix: Option<u64>,
    last_used_unix: AtomicU64,
}

/// What a listing shows of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its name, the user name of whoever presents it.
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// When it was made (Unix seconds).
    pub created_unix: u64,
    /// When it stops being accepted (Unix seconds).
    pub expires_unix: u64,
    /// Who made it.
    pub created_by: String,
    /// When it was last presented since the server started (Unix seconds), if it was.
    pub last_used_unix: Option<u64>,
}

/// The token file in the data directory.
pub const TOKENS_FILE: &str = "auth/tokens.jsonl";

/// The tokens, by the hash of their secret.
type Entries = Arc<RwLock<HashMap<[u8; 32], Entry>>>;

/// The API tokens, by the hash of their secret.
pub struct ApiTokens {
    entries: Entries,
    backing: Backing,
}

/// Where tokens are written.
enum Backing {
    Memory,
    /// The open token file.
    File(Mutex<std::fs::File>),
    /// etcd, and how many reads of unknown tokens it may still take this second.
    #[cfg(feature = "etcd")]
    Etcd(crate::shared_state::EtcdState, shared::Lookups),
}

impl ApiTokens {
    /// The tokens where `home` keeps them: `DATA_DIR/auth/tokens.jsonl`, memory, or etcd.
    pub fn open(home: &StateHome) -> anyhow::Result<Self> {
        match home {
            StateHome::Local(dir) => Self::load(dir.as_ref().map(|d| d.join(TOKENS_FILE))),
            #[cfg(feature = "etcd")]
            StateHome::Etcd { state, .. } => shared::open(state.clone()),
        }
    }

    /// Copies the tokens kept in `data_dir` into `state` (`troupe migrate`), and the admin
    /// token of `admin_file` if it is one of them and current; returns how many tokens.
    #[cfg(feature = "etcd")]
    pub fn copy_to_etcd(
        data_dir: &Path,
        admin_file: &Path,
        state: &crate::shared_state::EtcdState,
    ) -> anyhow::Result<usize> {
        let local = Self::load(Some(data_dir.join(TOKENS_FILE)))?;
        let admin = std::fs::read_to_string(admin_file)
            .ok()
            .map(|text| text.trim().to_string())
            .filter(|token| local.verify(token).is_ok());
        shared::copy(&local, admin.as_deref(), state)
    }

    /// Writes the tokens kept in `state` into `data_dir`'s token file, and the admin token
    /// into `admin_file` (`troupe migrate --from-etcd`); returns how many tokens.
    #[cfg(feature = "etcd")]
    pub fn copy_from_etcd(
        state: &crate::shared_state::EtcdState,
        data_dir: &Path,
        admin_file: &Path,
    ) -> anyhow::Result<usize> {
        shared::copy_out(state, &data_dir.join(TOKENS_FILE), admin_file)
    }

    /// Loads the tokens kept at `path` (none yet if it does not exist); `None` keeps them in
    /// memory only.
    pub fn load(path: Option<PathBuf>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self {
                entries: Arc::default(),
                backing: Backing::Memory,
            });
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut entries = HashMap::new();
        if path.exists() {
            let mut names: HashMap<String, [u8; 32]> = HashMap::new();
            for line in std::io::BufReader::new(std::fs::File::open(&path)?).lines() {
                // A line cut short by a crash mid-append was never acknowledged: skip it.
                match serde_json::from_str::<Line>(&line?) {
                    Ok(Line::Create(record)) => {
                        let Some(hash) = parse_hash(&record.sha256) else {
                            continue;
                        };
                        names.insert(record.name.clone(), hash);
                        entries.insert(hash, Entry::new(record, None));
                    }
                    Ok(Line::Revoke { name, time_unix }) => {
                        if let Some(entry) = names.get(&name).and_then(|h| entries.get_mut(h)) {
                            entry.revoked_unix.get_or_insert(time_unix);
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        let now = unix(SystemTime::now());
        entries.retain(|_, e: &mut Entry| e.ended_unix() + REMEMBER_SECS > now);
        let mut compacted = String::new();
        for entry in entries.values() {
            compacted.push_str(&serde_json::to_string(&Line::Create(entry.record.clone()))?);
            compacted.push('\n');
            if let Some(time_unix) = entry.revoked_unix {
                let name = entry.record.name.clone();
                compacted.push_str(&serde_json::to_string(&Line::Revoke { name, time_unix })?);
                compacted.push('\n');
            }
        }
        durable::write(&path, compacted.as_bytes())?;
        let log = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(Self {
            entries: Arc::new(RwLock::new(entries)),
            backing: Backing::File(Mutex::new(log)),
        })
    }

    /// Makes token `name` with `groups`, valid for `ttl`, on behalf of `created_by`. Returns
    /// the token (shown once) and its description; it is on disk when this returns.
    pub fn create(
        &self,
        name: &str,
        groups: &[String],
        ttl: Duration,
        created_by: &str,
    ) -> Result<(String, TokenInfo), TokenError> {
        check_name(name)?;
        if ttl > MAX_TTL {
            return Err(TokenError::Invalid(format!(
                "ttl: {}s is longer than the largest TTL allowed, {MAX_TTL_DAYS}d",
                ttl.as_secs()
            )));
        }
        if let Some(group) = groups.iter().find(|g| g.trim().is_empty()) {
            return Err(TokenError::Invalid(format!(
                "groups: {group:?} is not a group name"
            )));
        }
        let (token, hash, record) = mint(name, groups, ttl, created_by);
        let now = record.created_unix;
        #[cfg(feature = "etcd")]
        if let Backing::Etcd(state, _) = &self.backing {
            shared::create(state, &record)?;
            let entry = Entry::new(record, None);
            let info = entry.info();
            self.write_entries().insert(hash, entry);
            return Ok((token, info));
        }
        let mut entries = self.write_entries();
        if entries
            .values()
            .any(|e| e.record.name == name && e.is_current(now))
        {
            return Err(exists(name));
        }
        self.append(&Line::Create(record.clone()))?;
        let entry = Entry::new(record, None);
        let info = entry.info();
        entries.insert(hash, entry);
        Ok((token, info))
    }

    /// Ends token `name` now. Returns how it was.
    pub fn revoke(&self, name: &str) -> Result<TokenInfo, TokenError> {
        let now = unix(SystemTime::now());
        #[cfg(feature = "etcd")]
        if let Backing::Etcd(state, _) = &self.backing {
            let (hash, record) = shared::revoke(state, name, now)?;
            let mut entries = self.write_entries();
            let entry = entries
                .entry(hash)
                .or_insert_with(|| Entry::new(record, None));
            entry.revoked_unix = Some(now);
            return Ok(entry.info());
        }
        let mut entries = self.write_entries();
        let entry = entries
            .values_mut()
            .find(|e| e.record.name == name && e.is_current(now))
            .ok_or_else(|| TokenError::Invalid(format!("no current token is named {name:?}")))?;
        self.append(&Line::Revoke {
            name: name.to_string(),
            time_unix: now,
        })?;
        entry.revoked_unix = Some(now);
        Ok(entry.info())
    }

    /// The current tokens (neither expired nor revoked), by name.
    pub fn list(&self) -> Vec<TokenInfo> {
        let now = unix(SystemTime::now());
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut tokens: Vec<TokenInfo> = entries
            .values()
            .filter(|e| e.is_current(now))
            .map(Entry::info)
            .collect();
        tokens.sort_by(|a, b| a.name.cmp(&b.name));
        tokens
    }

    /// The principal `token` proves, or why it proves nothing.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        if !token.starts_with(PREFIX) {
            return Err(TokenError::Unauthenticated(
                "malformed token: expected a Troupe API token (trp_…) or an OIDC JWT".into(),
            ));
        }
        let hash = digest(token);
        #[cfg(feature = "etcd")]
        if let Backing::Etcd(state, lookups) = &self.backing {
            shared::fetch_if_missing(state, lookups, &self.entries, &hash);
        }
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let entry = entries
            .get(&hash)
            .ok_or_else(|| TokenError::Unauthenticated("unknown API token".into()))?;
        let now = unix(SystemTime::now());
        let name = &entry.record.name;
        if let Some(when) = entry.revoked_unix {
            return Err(TokenError::Unauthenticated(format!(
                "API token {name} was revoked at {}",
                rfc3339(when)
            )));
        }
        if entry.record.expires_unix <= now {
            return Err(TokenError::Unauthenticated(format!(
                "API token {name} expired at {}; create a new one with `troupe token create {name}`",
                rfc3339(entry.record.expires_unix)
            )));
        }
        entry.last_used_unix.store(now, Ordering::Relaxed);
        Ok(Principal {
            name: name.clone(),
            groups: entry.record.groups.clone(),
            via: Via::Token(name.clone()),
            impersonated_by: None,
        })
    }

    /// The bootstrap admin token: read from `file` if it is there, otherwise made anew (the
    /// previous admin token revoked) and written to `file` (mode 0600). Without a file (a
    /// server in memory) it is made anew on every start.
    pub fn admin_token(&self, file: Option<&Path>) -> anyhow::Result<String> {
        #[cfg(feature = "etcd")]
        if let Backing::Etcd(state, _) = &self.backing {
            let token = shared::admin_token(self, state)?;
            if let Some(file) = file {
                durable::write(file, format!("{token}\n").as_bytes())?;
            }
            return Ok(token);
        }
        if let Some(file) = file
            && let Ok(text) = std::fs::read_to_string(file)
            && self.verify(text.trim()).is_ok()
        {
            return Ok(text.trim().to_string());
        }
        match self.revoke(ADMIN_TOKEN_NAME) {
            Ok(_) | Err(TokenError::Invalid(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let (token, _) = self.create(
            ADMIN_TOKEN_NAME,
            &[ADMINS_GROUP.to_string()],
            ADMIN_TTL,
            "troupe server (first start)",
        )?;
        if let Some(file) = file {
            durable::write(file, format!("{token}\n").as_bytes())?;
        }
        Ok(token)
    }

    fn write_entries(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, line: &Line) -> Result<(), TokenError> {
        let Backing::File(log) = &self.backing else {
            return Ok(());
        };
        let io = |e: std::io::Error| TokenError::Io(e.to_string());
        let text = serde_json::to_string(line).map_err(|e| TokenError::Io(e.to_string()))?;
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        log.write_all(format!("{text}\n").as_bytes()).map_err(io)?;
        log.sync_data().map_err(io)
    }
}

impl Entry {
    fn new(record: Record, revoked_unix: Option<u64>) -> Self {
        Self {
            record,
            revoked_unix,
            last_used_unix: AtomicU64::new(0),
        }
    }

    fn is_current(&self, now: u64) -> bool {
        self.revoked_unix.is_none() && self.record.expires_unix > now
    }

    /// When the token stopped (or stops) being accepted.
    fn ended_unix(&self) -> u64 {
        self.revoked_unix.unwrap_or(self.record.expires_unix)
    }

    fn info(&self) -> TokenInfo {
        let last = self.last_used_unix.load(Ordering::Relaxed);
        TokenInfo {
            name: self.record.name.clone(),
            groups: self.record.groups.clone(),
            created_unix: self.record.created_unix,
            expires_unix: self.record.expires_unix,
            created_by: self.record.created_by.clone(),
            last_used_unix: (last != 0).then_some(last),
        }
    }
}

/// A new token `name` and its record: the token (shown once), its hash, what is kept.
fn mint(
    name: &str,
    groups: &[String],
    ttl: Duration,
    created_by: &str,
) -> (String, [u8; 32], Record) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{PREFIX}{}", troupe_common::hex::encode(&secret));
    let hash = digest(&token);
    let now = unix(SystemTime::now());
    let record = Record {
        name: name.to_string(),
        sha256: troupe_common::hex::encode(&hash),
        groups: groups.to_vec(),
        created_unix: now,
        expires_unix: now.saturating_add(ttl.as_secs()),
        created_by: created_by.to_string(),
    };
    (token, hash, record)
}

/// The refusal of a second current token named `name`.
fn exists(name: &str) -> TokenError {
    TokenError::Invalid(format!(
        "name: a token named {name:?} exists; revoke it first (`troupe token revoke {name}`)"
    ))
}

/// Token names are user names: a DNS label, so they read the same in role bindings, audit
/// lines and promotion records.
fn check_name(name: &str) -> Result<(), TokenError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(TokenError::Invalid(format!(
            "name: {name:?} must be a DNS label (lowercase letters, digits and '-', at most 63)"
        )))
    }
}

fn digest(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `2026-12-01T19:00:00Z`.
pub(crate) fn rfc3339(unix_secs: u64) -> String {
    let at = pbjson_types::Timestamp {
        seconds: unix_secs as i64,
        nanos: 0,
    };
    serde_json::to_value(at)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| unix_secs.to_string())
}

#[cfg(feature = "etcd")]
mod shared;

#[cfg(test)]
mod tests;
