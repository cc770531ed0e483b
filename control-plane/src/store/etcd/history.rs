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
//!
//! A member that stalls (on its disk, or paused) holds the watch it serves without a word: a
//! read whose watch goes [`SILENT`] starts over on a new one, which the members still serving
//! take once the stalled one is out of the store's set (within a second or two), for up to
//! [`RESEND_WITHIN`] in all.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::WatchOptions;
use troupe_common::ObjectKey;

use super::Shared;
use super::bridge::failed;
use super::resend::RESEND_WITHIN;
use super::tails::{self, Change, Digest};
use crate::store::{Event, EventType, Revision, StoreError};

/// How long one read from history may take in all.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the history watch may go without an answer before the read starts over: etcd
/// answers a watch from the past on every 100 ms tick until it has caught up.
const SILENT: Duration = Duration::from_secs(2);
/// The pause before a read whose watch went silent starts over.
const PAUSE: Duration = Duration::from_millis(100);

/// Why one watch from the past ended without the events.
enum Ended {
    /// etcd refused it for an old token and the store signed in again.
    SignedIn(StoreError),
    /// It went [`SILENT`]: its member may have stalled.
    Silent(StoreError),
    /// Anything else: the read fails.
    Failed(StoreError),
}

/// The events after `after`, up to and including `floor` (the cache's), at least `limit` of
/// them when there are that many, whole commits only.
pub(super) async fn read(
    shared: &Shared,
    after: Revision,
    limit: usize,
    floor: Revision,
) -> Result<Vec<Event>, StoreError> {
    let started = std::time::Instant::now();
    let read = async {
        // Signed in again once at most: etcd may refuse the first watch for an old token (see
        // `sign_in`); started over whenever its watch goes silent, for as long as a write is
        // sent again (an etcd that answers nothing fails it, as it fails writes).
        let mut signed_in = false;
        loop {
            match read_until(shared, after, limit, floor).await {
                Ok(events) => return Ok(events),
                Err(Ended::SignedIn(error)) if signed_in => return Err(error),
                Err(Ended::SignedIn(_)) => signed_in = true,
                Err(Ended::Silent(error)) if started.elapsed() + PAUSE >= RESEND_WITHIN => {
                    return Err(error);
                }
                Err(Ended::Silent(error)) => {
                    tracing::info!(%error, "etcd store: a read from history got no answer; starting it over");
                    tokio::time::sleep(PAUSE).await;
                }
                Err(Ended::Failed(error)) => return Err(error),
            }
        }
    };
    tokio::time::timeout(HISTORY_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Engine(format!(
                "etcd at {}: reading the history after revision {after}: not done within {} s",
                shared.members,
                HISTORY_TIMEOUT.as_secs()
            )))
        })
}

/// One watch from the past, as [`read`] says; a failure says whether the read may be made
/// again.
async fn read_until(
    shared: &Shared,
    after: Revision,
    limit: usize,
    floor: Revision,
) -> Result<Vec<Event>, Ended> {
    let what = "reading the store's history";
    let since = std::time::Instant::now();
    let fail = Ended::Failed;
    let silent = || {
        Ended::Silent(StoreError::Unavailable(format!(
            "etcd at {}: {what}: no answer within {} s (is etcd running and reachable, with \
             a leader?)",
            shared.members,
            SILENT.as_secs()
        )))
    };
    tracing::debug!(after, limit, floor, "etcd store: reading history from etcd");
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(shared.layout.to_etcd(after + 1));
    let mut watch_client = shared.watch_client();
    let refused = async |e: etcd_client::Error| {
        let error = failed(&shared.members, what, &e);
        if shared.sign_in.after(&e, since).await {
            Ended::SignedIn(error)
        } else {
            Ended::Failed(error)
        }
    };
    let root = shared.layout.root().to_vec();
    let mut stream = match tokio::time::timeout(SILENT, watch_client.watch(root, Some(options)))
        .await
        .map_err(|_| silent())?
    {
        Ok(stream) => stream,
        Err(e) => return Err(refused(e).await),
    };
    let mut commits: Vec<(Revision, Vec<Change>)> = Vec::new();
    let mut events = 0;
    loop {
        let message = tokio::time::timeout(SILENT, stream.message());
        let response = match message.await.map_err(|_| silent())? {
            Ok(Some(response)) => response,
            Ok(None) => {
                return Err(fail(StoreError::Engine(format!(
                    "etcd at {}: {what}: the watch ended",
                    shared.members
                ))));
            }
            Err(e) => return Err(refused(e).await),
        };
        if response.canceled() {
            if response.compact_revision() > 0 {
                return Err(fail(StoreError::Compacted {
                    requested: after,
                    oldest: shared.layout.to_store(response.compact_revision() - 1),
                }));
            }
            let reason = response.cancel_reason();
            let error = StoreError::Engine(format!(
                "etcd at {}: {what}: the watch was cancelled: {reason}",
                shared.members
            ));
            return Err(if shared.sign_in.after_cancel(reason, since).await {
                Ended::SignedIn(error)
            } else {
                Ended::Failed(error)
            });
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
            let Some(change) = tails::to_change(&shared.layout, event).map_err(fail)? else {
                continue;
            };
            events += usize::from(matches!(change, Change::Object { .. }));
            if commits.last().is_none_or(|(r, _)| *r != revision) {
                commits.push((revision, Vec::new()));
            }
            commits.last_mut().expect("pushed above").1.push(change);
        }
        if reached || events >= limit {
            return whole(shared, commits).await.map_err(fail);
        }
    }
}

/// The events of `commits` (in order), with every value whole: a tail from the commit itself,
/// from an earlier commit of the same read, or read from etcd at the commit's revision.
async fn whole(
    shared: &Shared,
    commits: Vec<(Revision, Vec<Change>)>,
) -> Result<Vec<Event>, StoreError> {
    let mut latest: HashMap<ObjectKey, (Digest, Vec<u8>)> = HashMap::new();
    let known = |latest: &HashMap<ObjectKey, (Digest, Vec<u8>)>, key: &ObjectKey, want: &Digest| {
        latest
            .get(key)
            .filter(|(digest, _)| digest == want)
            .map(|(_, tail)| tail.clone())
    };
    let mut out = Vec::new();
    for (_, changes) in commits {
        let (mut resolved, missing) =
            tails::resolve(&changes, |key, want| known(&latest, key, want));
        if !missing.is_empty() {
            let fetched = tails::fetch(shared, &missing).await?;
            let again = tails::resolve(&changes, |key, want| {
                tails::matching(&fetched, key, want).or_else(|| known(&latest, key, want))
            });
            tails::skipped(&again.1);
            resolved = again.0;
        }
        for (event, (key, tail)) in resolved.events.into_iter().zip(resolved.tails) {
            match tail {
                Some(tail) if event.kind != EventType::Deleted => {
                    let bytes = event.value[event.value.len() - tail.len..].to_vec();
                    latest.insert(key, (tail.digest, bytes));
                }
                _ => {
                    latest.remove(&key);
                }
            }
            out.push(event);
        }
    }
    Ok(out)
}
