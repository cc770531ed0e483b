//! Reads: one object at the newest revision (linearizable, so a read after a write anywhere in
//! the cluster sees it), and ranges of objects as they stood at the tail's head.
//!
//! A listing reads at the head, not at etcd's newest revision, so that it and the cached
//! events agree: replaying the events after the listing's revision over it gives the state at
//! any later revision (what a watch's snapshot does). A range is read in pages pinned to that
//! one revision, so a large kind never needs one huge response and is still one snapshot.

use super::Shared;
use super::bridge::{failed, is_compacted, timed, within};
use crate::store::{Record, Revision, StoreError};

/// Objects per etcd range request when listing.
const PAGE: usize = 500;

/// The object at `key` (an etcd key of the store), if any.
pub(super) async fn get(shared: &Shared, key: Vec<u8>) -> Result<Option<Record>, StoreError> {
    let mut kv = shared.kv();
    let response = timed(&shared.members, "reading an object", kv.get(key, None)).await?;
    response
        .kvs()
        .first()
        .map(|kv| shared.layout.record(kv))
        .transpose()
}

/// The objects in `[start, end)`, at most `limit` of them (`None`: all), as they stood at store
/// revision `at`, with that revision. Should etcd have compacted `at` away (a store whose
/// prefix saw no commit for longer than other users' history), reads at etcd's newest
/// revision instead and returns that.
pub(super) async fn range(
    shared: &Shared,
    start: Vec<u8>,
    end: Vec<u8>,
    limit: Option<usize>,
    at: Revision,
) -> Result<(Vec<Record>, Revision), StoreError> {
    let what = "listing objects";
    // 0 asks etcd for its newest revision.
    let mut revision = shared.layout.to_etcd(at);
    let mut out = Vec::new();
    let mut from = start.clone();
    loop {
        let want = limit.map_or(PAGE, |l| (l - out.len()).min(PAGE));
        if want == 0 {
            break;
        }
        let options = etcd_client::GetOptions::new()
            .with_range(end.clone())
            .with_limit(want as i64)
            .with_revision(revision);
        let mut kv = shared.kv();
        let response =
            match within(&shared.members, what, kv.get(from.clone(), Some(options))).await? {
                Ok(response) => response,
                Err(e) if is_compacted(&e) && revision != 0 => {
                    revision = 0;
                    out.clear();
                    from = start.clone();
                    continue;
                }
                Err(e) => return Err(failed(&shared.members, what, &e)),
            };
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        for kv in response.kvs() {
            out.push(shared.layout.record(kv)?);
        }
        match response.kvs().last() {
            Some(last) if response.more() => {
                from = [last.key(), &[0]].concat();
            }
            _ => break,
        }
    }
    Ok((out, shared.layout.to_store(revision)))
}
