//! `troupe migrate`: moves a server's store and its own state from its data directory (the
//! sled store, and the files beside it) into an empty etcd store, so that a control plane
//! that began as one server goes on as several replicas with nothing lost:
//!
//! - every object, as stored (its uid, generation, status); its revision is new, and the
//!   store's revisions go on after the last one the old store gave, so no revision a client
//!   saw there names something else now; a watch resumed from one of them is told it was
//!   compacted (`OUT_OF_RANGE`) and lists again, as after any compaction;
//! - the agent CA, so every agent keeps its certificate and reconnects as it is;
//! - agent join tokens, API tokens (revoked ones too) and the admin token;
//! - push-webhook secrets and every run's build logs.
//!
//! The audit log stays in the data directory: it is each server's own.
//!
//! [`migrate_out`] moves the other way, from an etcd store into a data directory without a
//! store, everything the same way: a control plane that went onto etcd can go back to one
//! server.
//!
//! Safe to stop at any point: the etcd store is marked as being imported until the last step,
//! and no server opens it until then (it says so, and how to start over). The data directory
//! keeps everything (sled refuses a second process, so a server still running on it is found
//! out at once; the token files drop long-expired tokens, as a server's start does); a file
//! left in it afterwards (`MIGRATED`) makes a server started on it without `--store` refuse,
//! rather than come up with the old objects while the others moved on.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use troupe_common::Kind;

use crate::server::{IMPORTING_FILE, MIGRATED_FILE};
use crate::shared_state::EtcdState;
use crate::store::{EtcdStore, EtcdUrl, Precondition, Revision, SledStore, Store, Txn};

/// Objects per commit of the import (etcd's transaction limits split it further).
const OBJECTS_PER_COMMIT: usize = 1000;

/// What a migration moved.
#[derive(Debug, Default)]
pub struct Moved {
    /// Objects copied.
    pub objects: usize,
    /// The old store's last revision: the new one's go on after it.
    pub after: Revision,
    /// The new store's revision once the objects were in: a watch may resume from it.
    pub history_from: Revision,
    /// Whether there was an agent CA to copy.
    pub ca: bool,
    /// Agent join tokens copied.
    pub join_tokens: usize,
    /// API tokens copied.
    pub api_tokens: usize,
    /// Webhook secrets copied.
    pub webhook_secrets: usize,
    /// Runs whose build logs were copied.
    pub build_logs: usize,
}

/// Moves the store and state of `data_dir` into the empty store at `url`, build logs bounded
/// by `max_log_bytes` per run as the servers on it will be.
pub fn migrate(data_dir: &Path, url: &EtcdUrl, max_log_bytes: u64) -> anyhow::Result<Moved> {
    let marked = data_dir.join(MIGRATED_FILE);
    if marked.exists() {
        let to = std::fs::read_to_string(&marked).unwrap_or_default();
        anyhow::bail!(
            "{} was moved already ({}); delete {} to move it again",
            data_dir.display(),
            to.trim(),
            marked.display()
        );
    }
    if !data_dir.join("db").exists() {
        anyhow::bail!(
            "{} holds no store (no sled database in it): name the --data-dir of the server \
             to move",
            data_dir.display()
        );
    }
    let sled = SledStore::open(data_dir).with_context(|| {
        format!(
            "opening the store in {} (is a server still running on it? stop it first)",
            data_dir.display()
        )
    })?;
    let after = sled.revision();
    let etcd = Arc::new(
        EtcdStore::open_for_import(url, after)
            .with_context(|| format!("creating the store at {url}"))?,
    );
    let mut moved = Moved {
        after,
        ..Moved::default()
    };
    moved.objects = copy_objects(&sled, &*etcd)?;
    moved.history_from = etcd.revision();

    let state = EtcdState::new(etcd.clone());
    moved.ca =
        crate::agents::pki::copy_to_etcd(data_dir, &state).context("copying the agent CA")?;
    moved.join_tokens = crate::agents::tokens::Tokens::copy_to_etcd(data_dir, &state)
        .context("copying the agent join tokens")?;
    let admin_file = data_dir.join(crate::server::ADMIN_TOKEN_FILE);
    moved.api_tokens = crate::auth::tokens::ApiTokens::copy_to_etcd(data_dir, &admin_file, &state)
        .context("copying the API tokens")?;
    moved.webhook_secrets = crate::builds::webhook::WebhookSecrets::copy_to_etcd(data_dir, &state)
        .context("copying the webhook secrets")?;
    moved.build_logs = crate::builds::logs::copy_to_etcd(data_dir, &state, max_log_bytes)
        .context("copying the build logs")?;

    etcd.finish_import()
        .with_context(|| format!("finishing the import into {url}"))?;
    troupe_common::durable::write(&marked, format!("moved to {url}\n").as_bytes())
        .with_context(|| format!("writing {}", marked.display()))?;
    Ok(moved)
}

/// Moves the etcd store at `url` and the state kept with it into `data_dir`, which must hold
/// no store, build logs bounded by `max_log_bytes` per run as the server on it will keep.
///
/// The etcd store is marked moved out first, in one transaction that finds no server running
/// on it, so no server writes there once the copy starts (and none opens it afterwards). The
/// data directory holds [`IMPORTING_FILE`] until the last step, so a server started on it
/// meanwhile, or after a move that stopped part way, refuses.
pub fn migrate_out(url: &EtcdUrl, data_dir: &Path, max_log_bytes: u64) -> anyhow::Result<Moved> {
    let importing = data_dir.join(IMPORTING_FILE);
    if importing.exists() {
        anyhow::bail!(
            "a move into {} stopped part way: delete the store it began there (the files \
             db, conf and snap.*, and the directory blobs) and {}, then run it again",
            data_dir.display(),
            importing.display()
        );
    }
    if data_dir.join("db").exists() {
        anyhow::bail!(
            "{} holds a store already: move into a data directory without one",
            data_dir.display()
        );
    }
    let etcd = Arc::new(
        EtcdStore::open_for_export(url).with_context(|| format!("opening the store at {url}"))?,
    );
    // A store on sled starts its watches from its last commit: it needs one.
    let mut empty = true;
    for kind in Kind::ALL {
        if !etcd.list(kind, None)?.0.is_empty() {
            empty = false;
            break;
        }
    }
    if empty {
        anyhow::bail!(
            "the store at {url} holds no objects: nothing to move (a server started on an \
             empty data directory begins the same way, with a CA and tokens of its own)"
        );
    }
    etcd.move_out()
        .with_context(|| format!("marking the store at {url} moved out"))?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    troupe_common::durable::write(&importing, format!("being moved from {url}\n").as_bytes())
        .with_context(|| format!("writing {}", importing.display()))?;

    let after = etcd.revision();
    let sled = SledStore::open_for_import(data_dir, after)
        .with_context(|| format!("creating the store in {}", data_dir.display()))?;
    let mut moved = Moved {
        after,
        ..Moved::default()
    };
    moved.objects = copy_objects(&*etcd, &sled)?;
    moved.history_from = sled
        .finish_import()
        .with_context(|| format!("finishing the store in {}", data_dir.display()))?;
    drop(sled);

    let state = EtcdState::new(etcd.clone());
    moved.ca =
        crate::agents::pki::copy_from_etcd(&state, data_dir).context("copying the agent CA")?;
    moved.join_tokens = crate::agents::tokens::Tokens::copy_from_etcd(&state, data_dir)
        .context("copying the agent join tokens")?;
    let admin_file = data_dir.join(crate::server::ADMIN_TOKEN_FILE);
    moved.api_tokens =
        crate::auth::tokens::ApiTokens::copy_from_etcd(&state, data_dir, &admin_file)
            .context("copying the API tokens")?;
    moved.webhook_secrets =
        crate::builds::webhook::WebhookSecrets::copy_from_etcd(&state, data_dir)
            .context("copying the webhook secrets")?;
    moved.build_logs = crate::builds::logs::copy_from_etcd(&state, data_dir, max_log_bytes)
        .context("copying the build logs")?;

    troupe_common::durable::remove(&importing)
        .with_context(|| format!("removing {}", importing.display()))?;
    Ok(moved)
}

/// Copies every object of `from` into `to`, where none of them is yet; returns how many.
fn copy_objects(from: &dyn Store, to: &dyn Store) -> anyhow::Result<usize> {
    let mut copied = 0;
    for kind in Kind::ALL {
        let (records, _) = from.list(kind, None)?;
        for chunk in records.chunks(OBJECTS_PER_COMMIT) {
            // Each key checked absent (the store is empty): a commit sent again after an etcd
            // member stalled lands once.
            let txn = chunk.iter().fold(Txn::default().divisible(), |txn, r| {
                txn.check(r.key.clone(), Precondition::Absent)
                    .put(r.key.clone(), r.value.clone())
            });
            to.commit(txn)
                .with_context(|| format!("copying the {}s", kind.name()))?;
            copied += chunk.len();
        }
    }
    Ok(copied)
}
