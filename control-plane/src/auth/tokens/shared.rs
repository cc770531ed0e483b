//! API tokens in etcd, shared by every replica on the store.
//!
//! Keys, under `PREFIX/s/`: `api-tokens/HASH` holds a token's record (what a line of the token
//! file holds: the hash, never the token) and, once revoked, when; `api-token-names/NAME`
//! holds the hash of the current token named NAME, so that two replicas cannot both make one
//! (each creation compares that key in its transaction); `admin-token` holds the bootstrap
//! admin token itself, as `DATA_DIR/admin.token` does, for every replica to copy there.
//!
//! Every replica follows `api-tokens/` with a watch into its map, so checking a token is a
//! map lookup; a revocation through one replica reaches the others within the watch's delay
//! (milliseconds). A hash not in the map is read from etcd once before it is refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use troupe_common::durable;

use super::{
    ADMIN_TOKEN_NAME, ADMIN_TTL, ADMINS_GROUP, ApiTokens, Backing, Entries, Entry, Line,
    REMEMBER_SECS, Record, TokenError, exists, mint, parse_hash, unix,
};
use crate::shared_state::{Change, EtcdState, Item, Write};

const TOKENS_DIR: &str = "api-tokens/";
const NAMES_DIR: &str = "api-token-names/";
const ADMIN_KEY: &str = "admin-token";
/// Transactions a creation tries while other replicas change the same name.
const ATTEMPTS: usize = 5;

/// A token's value in etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    #[serde(flatten)]
    record: Record,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_unix: Option<u64>,
}

impl Stored {
    fn is_current(&self, now: u64) -> bool {
        self.revoked_unix.is_none() && self.record.expires_unix > now
    }
}

fn decode(item: &Item) -> Option<([u8; 32], Stored)> {
    let hash = parse_hash(item.key.strip_prefix(TOKENS_DIR)?)?;
    Some((hash, serde_json::from_slice(&item.value).ok()?))
}

fn encode(stored: &Stored) -> Vec<u8> {
    serde_json::to_vec(stored).unwrap_or_default()
}

/// The tokens in etcd, followed from now on. Tokens long gone are deleted from etcd.
pub(super) fn open(state: EtcdState) -> anyhow::Result<ApiTokens> {
    let (items, revision) = state.list(TOKENS_DIR)?;
    let now = unix(SystemTime::now());
    let mut kept = Vec::new();
    for item in items {
        let Some((_, stored)) = decode(&item) else {
            continue;
        };
        let ended = stored.revoked_unix.unwrap_or(stored.record.expires_unix);
        if ended + REMEMBER_SECS > now {
            kept.push(item);
        } else {
            // Another replica may do the same: whoever is second deletes nothing.
            let expect = [(item.key.as_str(), item.mod_revision)];
            state.commit(&expect, vec![Write::Delete(item.key.clone())])?;
        }
    }
    let entries: Entries = Arc::default();
    let apply = applier(entries.clone());
    apply(Change::Reset(kept));
    state.follow(TOKENS_DIR, revision, apply);
    Ok(ApiTokens {
        entries,
        backing: Backing::Etcd(state, Lookups::default()),
    })
}

/// What keeps the map in line with etcd's changes; when a token was last presented stays.
fn applier(entries: Entries) -> impl Fn(Change) + Send + 'static {
    move |change| {
        let mut map = entries.write().unwrap_or_else(|p| p.into_inner());
        match change {
            Change::Put(item) => {
                if let Some((hash, stored)) = decode(&item) {
                    upsert(&mut map, hash, stored);
                }
            }
            Change::Delete(key) => {
                if let Some(hash) = key.strip_prefix(TOKENS_DIR).and_then(parse_hash) {
                    map.remove(&hash);
                }
            }
            Change::Reset(items) => {
                let old = std::mem::take(&mut *map);
                for (hash, stored) in items.iter().filter_map(decode) {
                    upsert(&mut map, hash, stored);
                    if let (Some(was), Some(now)) = (old.get(&hash), map.get(&hash)) {
                        let last = was.last_used_unix.load(Ordering::Relaxed);
                        now.last_used_unix.store(last, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

fn upsert(map: &mut HashMap<[u8; 32], Entry>, hash: [u8; 32], stored: Stored) {
    match map.get_mut(&hash) {
        Some(entry) => {
            entry.revoked_unix = entry.revoked_unix.or(stored.revoked_unix);
            entry.record = stored.record;
        }
        None => {
            map.insert(hash, Entry::new(stored.record, stored.revoked_unix));
        }
    }
}

/// Reads of etcd for tokens this server does not know, at most [`LOOKUPS_PER_SECOND`]: a
/// token another server made a moment ago is found before its watch event arrives
/// (milliseconds later), and a flood of made-up tokens costs etcd, and this server's threads,
/// no more than that.
#[derive(Default)]
pub(super) struct Lookups(std::sync::Mutex<Option<(std::time::Instant, u32)>>);

/// Unknown tokens looked up in etcd per second, at most.
const LOOKUPS_PER_SECOND: u32 = 20;

impl Lookups {
    /// Whether one more lookup fits in this second.
    fn take(&self) -> bool {
        self.take_at(std::time::Instant::now())
    }

    /// Whether one more lookup at `now` fits in the second it falls in.
    fn take_at(&self, now: std::time::Instant) -> bool {
        let mut window = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (since, taken) = window.get_or_insert((now, 0));
        if now.duration_since(*since) >= std::time::Duration::from_secs(1) {
            (*since, *taken) = (now, 0);
        }
        if *taken >= LOOKUPS_PER_SECOND {
            return false;
        }
        *taken += 1;
        true
    }
}

/// Reads token `hash` from etcd if the map does not have it (another server may have made
/// it a moment ago), unless this second's lookups are spent.
pub(super) fn fetch_if_missing(
    state: &EtcdState,
    lookups: &Lookups,
    entries: &Entries,
    hash: &[u8; 32],
) {
    if entries
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(hash)
        || !lookups.take()
    {
        return;
    }
    let key = format!("{TOKENS_DIR}{}", troupe_common::hex::encode(hash));
    match state.get(&key) {
        Ok(Some(item)) => applier(entries.clone())(Change::Put(item)),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "reading an API token from etcd"),
    }
}

/// Stores `record` as the current token of its name, unless another replica has a current
/// one of that name.
pub(super) fn create(state: &EtcdState, record: &Record) -> Result<(), TokenError> {
    for _ in 0..ATTEMPTS {
        if install(state, record, None)? {
            return Ok(());
        }
    }
    Err(TokenError::Contended(format!(
        "token {:?} kept changing in etcd while it was made; try again",
        record.name
    )))
}

/// One transaction making `record` the current token of its name. With `admin` (the admin
/// token's text, and the revision of the `admin-token` key it replaces) a current token of
/// that name is revoked in the same transaction and the admin token is stored with it.
/// Returns false when another replica changed the name (or the admin token) meanwhile.
fn install(
    state: &EtcdState,
    record: &Record,
    admin: Option<(&str, i64)>,
) -> Result<bool, TokenError> {
    let name_key = format!("{NAMES_DIR}{}", record.name);
    let named = state.get(&name_key).map_err(TokenError::Store)?;
    let mut expect = vec![(
        name_key.clone(),
        named.as_ref().map_or(0, |i| i.mod_revision),
    )];
    let stored = Stored {
        record: record.clone(),
        revoked_unix: None,
    };
    let mut writes = vec![
        Write::Put(format!("{TOKENS_DIR}{}", record.sha256), encode(&stored)),
        Write::Put(name_key, record.sha256.clone().into_bytes()),
    ];
    let now = record.created_unix;
    if let Some(named) = named {
        let old_key = format!("{TOKENS_DIR}{}", String::from_utf8_lossy(&named.value));
        let old = state.get(&old_key).map_err(TokenError::Store)?;
        if let Some((item, mut old)) = old.and_then(|i| decode(&i).map(|(_, s)| (i, s)))
            && old.is_current(now)
        {
            if admin.is_none() {
                return Err(exists(&record.name));
            }
            old.revoked_unix = Some(now);
            expect.push((item.key.clone(), item.mod_revision));
            writes.push(Write::Put(item.key, encode(&old)));
        }
    }
    if let Some((token, revision)) = admin {
        expect.push((ADMIN_KEY.to_string(), revision));
        writes.push(Write::Put(ADMIN_KEY.into(), token.as_bytes().to_vec()));
    }
    let expect: Vec<(&str, i64)> = expect.iter().map(|(k, r)| (k.as_str(), *r)).collect();
    state.commit(&expect, writes).map_err(TokenError::Store)
}

/// Ends the current token `name` at `now`; returns its hash and record.
pub(super) fn revoke(
    state: &EtcdState,
    name: &str,
    now: u64,
) -> Result<([u8; 32], Record), TokenError> {
    let none = || TokenError::Invalid(format!("no current token is named {name:?}"));
    for _ in 0..ATTEMPTS {
        let name_key = format!("{NAMES_DIR}{name}");
        let named = state
            .get(&name_key)
            .map_err(TokenError::Store)?
            .ok_or_else(none)?;
        let key = format!("{TOKENS_DIR}{}", String::from_utf8_lossy(&named.value));
        let item = state
            .get(&key)
            .map_err(TokenError::Store)?
            .ok_or_else(none)?;
        let (hash, mut stored) = decode(&item).ok_or_else(none)?;
        if !stored.is_current(now) {
            return Err(none());
        }
        stored.revoked_unix = Some(now);
        let expect = [
            (name_key.as_str(), named.mod_revision),
            (key.as_str(), item.mod_revision),
        ];
        let writes = vec![
            Write::Put(key.clone(), encode(&stored)),
            Write::Delete(name_key.clone()),
        ];
        if state.commit(&expect, writes).map_err(TokenError::Store)? {
            return Ok((hash, stored.record));
        }
    }
    Err(TokenError::Contended(format!(
        "token {name:?} kept changing in etcd while it was revoked; try again"
    )))
}

/// The cluster's admin token: the one in etcd while it is current, otherwise a new one (the
/// previous one revoked), made by exactly one replica of those starting at once.
pub(super) fn admin_token(tokens: &ApiTokens, state: &EtcdState) -> anyhow::Result<String> {
    for _ in 0..ATTEMPTS {
        let stored = state.get(ADMIN_KEY)?;
        if let Some(item) = &stored {
            let token = String::from_utf8_lossy(&item.value).trim().to_string();
            if tokens.verify(&token).is_ok() {
                return Ok(token);
            }
        }
        let (token, hash, record) = mint(
            ADMIN_TOKEN_NAME,
            &[ADMINS_GROUP.to_string()],
            ADMIN_TTL,
            "troupe server (first start)",
        );
        let revision = stored.map_or(0, |i| i.mod_revision);
        if install(state, &record, Some((&token, revision)))? {
            let mut map = tokens.entries.write().unwrap_or_else(|p| p.into_inner());
            map.insert(hash, Entry::new(record, None));
            tracing::info!("made the cluster's admin token in etcd");
            return Ok(token);
        }
    }
    anyhow::bail!("the admin token in etcd kept changing while this server started; start it again")
}

/// Puts every token of `tokens` (a server's own, from its token file) into `state`, those
/// current under their names, and `admin` (the admin token itself) if given; returns how
/// many tokens.
pub(super) fn copy(
    tokens: &ApiTokens,
    admin: Option<&str>,
    state: &EtcdState,
) -> anyhow::Result<usize> {
    let now = unix(SystemTime::now());
    let entries = tokens.entries.read().unwrap_or_else(|p| p.into_inner());
    for entry in entries.values() {
        let stored = Stored {
            record: entry.record.clone(),
            revoked_unix: entry.revoked_unix,
        };
        state.put(
            &format!("{TOKENS_DIR}{}", stored.record.sha256),
            encode(&stored),
        )?;
        if stored.is_current(now) {
            let name = format!("{NAMES_DIR}{}", stored.record.name);
            state.put(&name, stored.record.sha256.clone().into_bytes())?;
        }
    }
    if let Some(admin) = admin {
        state.put(ADMIN_KEY, admin.as_bytes().to_vec())?;
    }
    Ok(entries.len())
}

/// Writes the tokens in `state` into the token file at `path` (revoked ones too), and the
/// admin token into `admin_file` if etcd holds one (`troupe migrate --from-etcd`); returns
/// how many tokens.
pub(super) fn copy_out(state: &EtcdState, path: &Path, admin_file: &Path) -> anyhow::Result<usize> {
    let (items, _) = state.list(TOKENS_DIR)?;
    let mut text = String::new();
    let mut count = 0;
    for (_, stored) in items.iter().filter_map(decode) {
        text.push_str(&serde_json::to_string(&Line::Create(
            stored.record.clone(),
        ))?);
        text.push('\n');
        if let Some(time_unix) = stored.revoked_unix {
            let name = stored.record.name.clone();
            text.push_str(&serde_json::to_string(&Line::Revoke { name, time_unix })?);
            text.push('\n');
        }
        count += 1;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    durable::write(path, text.as_bytes())?;
    if let Some(admin) = state.get(ADMIN_KEY)? {
        let token = String::from_utf8_lossy(&admin.value).trim().to_string();
        durable::write(admin_file, format!("{token}\n").as_bytes())?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::time::Duration;

    use super::*;
    use crate::store::{EtcdStore, LocalEtcd, StoreLocation};

    fn mk_tokens(etcd: &LocalEtcd) -> ApiTokens {
        let StoreLocation::Etcd(url) = etcd.url("t").parse::<StoreLocation>().unwrap() else {
            panic!("not an etcd URL")
        };
        open(EtcdState::new(Arc::new(EtcdStore::open(&url).unwrap()))).unwrap()
    }

    #[test]
    fn unknown_tokens_are_looked_up_in_etcd_a_bounded_number_of_times_a_second() {
        let lookups = Lookups::default();
        let start = std::time::Instant::now();
        let taken = (0..100).filter(|_| lookups.take_at(start)).count();
        assert_eq!(taken, LOOKUPS_PER_SECOND as usize);
        assert!(!lookups.take_at(start + Duration::from_millis(999)));
        assert!(
            lookups.take_at(start + Duration::from_secs(1)),
            "a new second"
        );
    }

    #[test]
    fn replicas_starting_at_once_share_one_admin_token_and_one_token_per_name() {
        let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
        let replicas: Vec<ApiTokens> = (0..3).map(|_| mk_tokens(&etcd)).collect();
        let start = Barrier::new(replicas.len());
        let admins: Vec<String> = std::thread::scope(|s| {
            let started: Vec<_> = replicas
                .iter()
                .map(|r| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        r.admin_token(None).unwrap()
                    })
                })
                .collect();
            started.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(admins.iter().all(|t| *t == admins[0]), "{admins:?}");
        for replica in &replicas {
            assert_eq!(replica.verify(&admins[0]).unwrap().groups, [ADMINS_GROUP]);
        }
        let (a, b) = (&replicas[0], &replicas[1]);
        a.create("ci", &[], super::super::DEFAULT_TTL, "admin")
            .unwrap();
        let twice = b.create("ci", &[], super::super::DEFAULT_TTL, "admin");
        assert!(matches!(twice, Err(TokenError::Invalid(m)) if m.contains("exists")));
        // Revoked through A, the admin token is refused through B within the watch's delay.
        a.revoke(ADMIN_TOKEN_NAME).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while b.verify(&admins[0]).is_ok() {
            assert!(std::time::Instant::now() < deadline, "still accepted by B");
            std::thread::sleep(Duration::from_millis(10));
        }
        // A replica starting now makes a new admin token; the others accept it.
        let renewed = mk_tokens(&etcd).admin_token(None).unwrap();
        assert_ne!(renewed, admins[0]);
        assert!(b.verify(&renewed).is_ok());
    }
}
