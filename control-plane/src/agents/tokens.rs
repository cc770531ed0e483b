//! Bootstrap tokens: short-lived secrets an agent exchanges for its client certificate.
//!
//! Each token is bound to one data plane and expires. Only the SHA-256 of its secret is kept,
//! appended as one JSON line to `DATA_DIR/pki/tokens.jsonl` (mode 0600, fsynced before the
//! token is handed out), so a copy of the data directory does not leak usable tokens and
//! creating many tokens costs one short append each. Loading skips tokens long expired and
//! rewrites the file without them. A token stays valid until it expires, so an agent that
//! lost its state can register again with the same token.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use troupe_common::agent::{BootstrapToken, sha256_hex};
use troupe_common::durable;
use troupe_common::pb::v1alpha1::DataPlaneIdentity;

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
    entries: Mutex<BTreeMap<String, Entry>>,
    /// The open log, when tokens are kept on disk.
    log: Option<Mutex<std::fs::File>>,
}

/// Expired tokens are remembered this long, so using one says "expired" rather than
/// "unknown".
const REMEMBER_EXPIRED_SECS: u64 = 86_400;

impl Tokens {
    /// Loads the tokens kept at `path` (none yet if it does not exist); `None` keeps them in
    /// memory only.
    pub fn load(path: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut entries = BTreeMap::new();
        let now = unix(SystemTime::now());
        let Some(path) = path else {
            return Ok(Self {
                entries: Mutex::new(entries),
                log: None,
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
            entries: Mutex::new(entries),
            log: Some(Mutex::new(log)),
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
        if let Some(log) = &self.log {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            log.write_all(format!("{}\n", serde_json::to_string(&entry)?).as_bytes())?;
            log.sync_data()?;
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
}
