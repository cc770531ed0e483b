//! Events older than the tail's cache, read back from etcd's history: a watch on the prefix
//! from the revision asked for, read until it reaches the cache.
//!
//! Where to stop: the cache holds every commit after its floor, and etcd has an event under
//! the prefix at the floor itself (the marker the open wrote, or the newest commit the cache
//! let go), so the history watch delivers the floor's revision and then stops being needed.
//! etcd never splits one revision's events across two responses, so stopping at the end of a
//! response never cuts a commit. A start revision etcd has compacted away ends the watch at
//! once with the oldest revision it still has, which is [`StoreError::Compacted`].
//!
//! Cost: a watch from the past starts "unsynced" in etcd, which catches it up on a 100 ms
//! tick, so a read from history takes at least that; the cache spares it for anything recent.

use std::time::Duration;

use etcd_client::WatchOptions;

use super::Shared;
use super::bridge::{failed, timed};
use super::tail::to_event;
use crate::store::{Event, Revision, StoreError};

/// How long one read from history may take in all.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(60);

/// The events after `after`, up to and including `floor` (the cache's), at least `limit` of
/// them when there are that many, whole commits only.
pub(super) async fn read(
    shared: &Shared,
    after: Revision,
    limit: usize,
    floor: Revision,
) -> Result<Vec<Event>, StoreError> {
    tokio::time::timeout(HISTORY_TIMEOUT, read_until(shared, after, limit, floor))
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Engine(format!(
                "etcd at {}: reading the history after revision {after}: not done within {} s",
                shared.members,
                HISTORY_TIMEOUT.as_secs()
            )))
        })
}

async fn read_until(
    shared: &Shared,
    after: Revision,
    limit: usize,
    floor: Revision,
) -> Result<Vec<Event>, StoreError> {
    let what = "reading the store's history";
    tracing::debug!(after, limit, floor, "etcd store: reading history from etcd");
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(shared.layout.to_etcd(after + 1));
    let mut watch_client = shared.watch_client();
    let mut stream = timed(
        &shared.members,
        what,
        watch_client.watch(shared.layout.root().to_vec(), Some(options)),
    )
    .await?;
    let mut out = Vec::new();
    loop {
        let response = stream
            .message()
            .await
            .map_err(|e| failed(&shared.members, what, &e))?
            .ok_or_else(|| {
                StoreError::Engine(format!(
                    "etcd at {}: {what}: the watch ended",
                    shared.members
                ))
            })?;
        if response.canceled() {
            if response.compact_revision() > 0 {
                return Err(StoreError::Compacted {
                    requested: after,
                    oldest: shared.layout.to_store(response.compact_revision() - 1),
                });
            }
            return Err(StoreError::Engine(format!(
                "etcd at {}: {what}: the watch was cancelled: {}",
                shared.members,
                response.cancel_reason()
            )));
        }
        let mut reached = false;
        for event in response.events() {
            let revision = event
                .kv()
                .map_or(0, |kv| shared.layout.to_store(kv.mod_revision()));
            if revision > floor {
                reached = true;
                break;
            }
            reached |= revision == floor;
            out.extend(to_event(&shared.layout, event)?);
        }
        if reached || out.len() >= limit {
            return Ok(out);
        }
    }
}
