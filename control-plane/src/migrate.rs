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

use crate::server::MIGRATED_FILE;
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
    for kind in Kind::ALL {
        let (records, _) = sled.list(kind, None)?;
        for chunk in records.chunks(OBJECTS_PER_COMMIT) {
            // Each key checked absent (the prefix is empty): a commit sent again after a
            // member stalled lands once.
            let txn = chunk.iter().fold(Txn::default().divisible(), |txn, r| {
                txn.check(r.key.clone(), Precondition::Absent)
                    .put(r.key.clone(), r.value.clone())
            });
            etcd.commit(txn)
                .with_context(|| format!("copying the {}s", kind.name()))?;
            moved.objects += chunk.len();
        }
    }
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
