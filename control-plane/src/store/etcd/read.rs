//! Reading every object of the store from etcd at one revision, to load the view at an open
//! (or again after etcd compacted commits the tail had not seen). The range is read in pages
//! pinned to that one revision, so a large store never needs one huge response and is still
//! one snapshot.

use etcd_client::{GetOptions, KvClient};

use super::SignIn;
use super::layout::{Layout, prefix_end};
use crate::store::{Record, StoreError};

/// Objects per etcd range request.
const PAGE: i64 = 500;

/// Every object under `layout`'s prefix as it stood at etcd revision `at` (0: etcd's newest),
/// with the etcd revision read at.
pub(super) async fn load(
    kv: &KvClient,
    sign_in: &SignIn,
    members: &str,
    layout: &Layout,
    at: i64,
) -> Result<(Vec<Record>, i64), StoreError> {
    let start = layout.objects().to_vec();
    let end = prefix_end(&start);
    let mut revision = at;
    let mut out = Vec::new();
    let mut from = start;
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
            out.push(layout.record(kv)?);
        }
        match response.kvs().last() {
            Some(last) if response.more() => from = [last.key(), &[0]].concat(),
            _ => return Ok((out, revision)),
        }
    }
}
