//! Reading every object of the store from etcd at one revision, to load the view at an open
//! (or again after etcd compacted commits the tail had not seen). The range is read in pages
//! pinned to that one revision, so a large store never needs one huge response and is still
//! one snapshot; the objects' tails ([`tails`](super::tails)) are read the same way, at the
//! same revision.

use std::collections::HashMap;

use etcd_client::{GetOptions, KeyValue, KvClient};

use super::SignIn;
use super::layout::{Layout, corrupt, decode_value, prefix_end};
use super::tails::{Orphan, TailOf, digest};
use crate::store::{Record, StoreError};

/// Keys per etcd range request.
const PAGE: i64 = 500;

/// What a load finds: every object with its value whole and its tail if it has one, and the
/// tails no object's value refers to.
pub(super) type Loaded = (Vec<(Record, Option<TailOf>)>, Vec<Orphan>);

/// Every object under `layout`'s prefix as it stood at etcd revision `at` (0: etcd's newest),
/// and the tails left over ([`Loaded`]).
pub(super) async fn load(
    kv: &KvClient,
    sign_in: &SignIn,
    members: &str,
    layout: &Layout,
    at: i64,
) -> Result<Loaded, StoreError> {
    let mut heads = Vec::new();
    let revision = pages(kv, sign_in, members, layout.objects(), at, |kv| {
        heads.push(layout.record(kv)?);
        Ok(())
    })
    .await?;
    let mut tails = HashMap::new();
    pages(kv, sign_in, members, layout.tails(), revision, |kv| {
        let key = layout
            .decode_tail_key(kv.key())?
            .ok_or_else(|| corrupt(kv.key(), "not a tail key"))?;
        let tail = decode_value(kv.key(), kv.value())?;
        tails.insert(key, (tail, kv.mod_revision()));
        Ok(())
    })
    .await?;
    let mut out = Vec::with_capacity(heads.len());
    let mut held = std::collections::HashMap::new();
    for (mut record, wanted) in heads {
        let Some(wanted) = wanted else {
            held.insert(record.key.clone(), record.mod_revision);
            out.push((record, None));
            continue;
        };
        let tail = tails
            .remove(&record.key)
            .map(|(tail, _)| tail)
            .filter(|tail| digest(tail) == wanted)
            .ok_or_else(|| {
                corrupt(
                    &layout.object(&record.key),
                    "its tail is missing from etcd, or is not the one its head names",
                )
            })?;
        let len = tail.len();
        record.value.extend_from_slice(&tail);
        out.push((
            record,
            Some(TailOf {
                digest: wanted,
                len,
            }),
        ));
    }
    let orphans = tails
        .into_iter()
        .map(|(key, (_, tail_revision))| Orphan {
            object_revision: held.get(&key).copied(),
            key,
            tail_revision,
        })
        .collect();
    Ok((out, orphans))
}

/// Reads every key starting with `prefix` at etcd revision `at` (0: etcd's newest) in pages,
/// giving each to `take`; returns the revision read at.
async fn pages(
    kv: &KvClient,
    sign_in: &SignIn,
    members: &str,
    prefix: &[u8],
    at: i64,
    mut take: impl FnMut(&KeyValue) -> Result<(), StoreError>,
) -> Result<i64, StoreError> {
    let end = prefix_end(prefix);
    let mut revision = at;
    let mut from = prefix.to_vec();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(PAGE)
            .with_revision(revision);
        let response = sign_in
            .retried(members, "loading the store", || {
                let (mut kv, from, options) = (kv.clone(), from.clone(), options.clone());
                async move { kv.get(from, Some(options)).await }
            })
            .await?;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        for kv in response.kvs() {
            take(kv)?;
        }
        match response.kvs().last() {
            Some(last) if response.more() => from = [last.key(), &[0]].concat(),
            _ => return Ok(revision),
        }
    }
}
