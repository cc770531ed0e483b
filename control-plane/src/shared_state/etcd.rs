//! [`EtcdState`]: the shared state's keys in etcd, under the store's prefix at `PREFIX/s/`.
//!
//! Keys are relative to `PREFIX/s/` (`pki/ca`, `api-tokens/HASH`); values are whatever their
//! owner writes (the JSON records its file holds). Calls block the caller's thread on the
//! store's runtime, as the store's own do, and are bounded in time. [`EtcdState::follow`]
//! watches a directory from a revision on and hands every change to its owner, resuming after
//! a broken watch and starting over from a fresh listing if etcd compacted what it missed.

use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, KeyValue, SortOrder,
    SortTarget, TxnOp, TxnOpResponse, WatchOptions,
};

use crate::store::{EtcdStore, SignIn, StoreError, TxnLimits};

/// The first wait before a broken watch is resumed; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Largest response [`EtcdState::page`] and [`EtcdState::on_change`] take: their values can
/// be large (build logs).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The shared state of the replicas on one etcd store.
#[derive(Clone)]
pub struct EtcdState {
    store: Arc<EtcdStore>,
    /// `PREFIX/s/`.
    root: Vec<u8>,
}

/// One key's value, with the revision that last changed it (what a [`EtcdState::commit`]
/// compares against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The key, relative to `PREFIX/s/`.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// etcd's revision of its last change.
    pub mod_revision: i64,
}

/// A change [`EtcdState::follow`] hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key was written.
    Put(Item),
    /// A key was deleted.
    Delete(String),
    /// Changes were lost to compaction: this is everything in the directory now.
    Reset(Vec<Item>),
}

/// One write of a [`EtcdState::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Sets a key.
    Put(String, Vec<u8>),
    /// Deletes a key.
    Delete(String),
    /// Deletes every key under a directory (`build-logs/acme/r1/`).
    DeleteDir(String),
}

impl EtcdState {
    /// The shared state beside `store`'s objects.
    pub fn new(store: Arc<EtcdStore>) -> Self {
        let root = [store.root(), b"s/"].concat();
        Self { store, root }
    }

    fn key(&self, key: &str) -> Vec<u8> {
        [self.root.as_slice(), key.as_bytes()].concat()
    }

    /// The value of `key`, read from etcd now.
    pub fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let full = self.key(key);
        let answer = self.store.read("reading shared state", move |mut c| {
            let full = full.clone();
            async move { c.get(full, None).await }
        })?;
        Ok(answer.kvs().first().and_then(|kv| item(&self.root, kv)))
    }

    /// Every key under directory `dir` (`api-tokens/`), and the revision they were read at.
    pub fn list(&self, dir: &str) -> Result<(Vec<Item>, i64), StoreError> {
        let (root, dir) = (self.root.clone(), self.key(dir));
        self.store.read("listing shared state", move |client| {
            let (root, dir) = (root.clone(), dir.clone());
            async move { list(client, &root, dir).await }
        })
    }

    /// What one transaction may hold on this cluster (a [`EtcdState::commit`] must fit).
    pub fn limits(&self) -> TxnLimits {
        self.store.limits()
    }

    /// At most `limit` keys of directory `dir`, in key order, from key `from` (in `dir`) on;
    /// their values may be large (the response is not held to gRPC's usual 4 MiB).
    pub fn page(&self, dir: &str, from: &str, limit: i64) -> Result<Vec<Item>, StoreError> {
        let (root, start, end) = (self.root.clone(), self.key(from), range_end(&self.key(dir)));
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(limit)
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        self.store.read("reading shared state", move |c| {
            let (root, start, options) = (root.clone(), start.clone(), options.clone());
            async move {
                let mut kv = c.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
                let answer = kv.get(start, Some(options)).await?;
                Ok(answer
                    .kvs()
                    .iter()
                    .filter_map(|kv| item(&root, kv))
                    .collect())
            }
        })
    }

    /// Sets `key` to `value`; it is on a quorum of etcd's disks when this returns. It checks
    /// nothing, so it is sent once (see [`EtcdState::commit_at`]): for copies made while no
    /// server runs (`troupe migrate`).
    pub fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let full = self.key(key);
        self.store.call("writing shared state", move |mut c| {
            let (full, value) = (full.clone(), value.clone());
            async move { c.put(full, value, None).await }
        })?;
        Ok(())
    }

    /// The value of `key`, which `make` makes if there is none yet: of several replicas
    /// making it at once, one wins (one transaction creates it only if absent) and every one
    /// returns the winner's.
    pub fn create_once(
        &self,
        key: &str,
        make: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Vec<u8>> {
        if let Some(found) = self.get(key)? {
            return Ok(found.value);
        }
        let (full, value) = (self.key(key), make()?);
        let create = etcd_client::Txn::new()
            .when([Compare::version(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full.clone(), value.clone(), None)])
            .or_else([TxnOp::get(full, None)]);
        // It lands once however often it is sent, and a copy refused answers with what is
        // there, this sending's value if an earlier one landed.
        let (answer, _) = self.store.send_landing_once(create)?;
        if answer.succeeded() {
            return Ok(value);
        }
        let winner = answer.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        winner.ok_or_else(|| anyhow::anyhow!("shared state {key}: created and deleted at once"))
    }

    /// Makes `writes` in one transaction if every key of `expect` was last changed at its
    /// revision (0: the key is absent). Returns whether it did.
    pub fn commit(&self, expect: &[(&str, i64)], writes: Vec<Write>) -> Result<bool, StoreError> {
        Ok(self.commit_at(expect, writes)?.is_some())
    }

    /// [`EtcdState::commit`], returning the revision of the writes if it made them: the
    /// revision every written key was last changed at.
    ///
    /// One that checks a key it writes lands at most once however often it is sent, so it is
    /// sent again when its member stalls ([`EtcdStore::send_landing_once`]); if a copy then
    /// finds its checks broken, what the keys hold tells whether an earlier sending landed.
    /// Any other is sent once, and fails after a call's time without an answer.
    pub fn commit_at(
        &self,
        expect: &[(&str, i64)],
        writes: Vec<Write>,
    ) -> Result<Option<i64>, StoreError> {
        let lands_once = expect.iter().any(|(key, revision)| {
            writes.iter().any(|w| match w {
                Write::Put(k, _) => k == key,
                Write::Delete(k) => k == key && *revision > 0,
                Write::DeleteDir(_) => false,
            })
        });
        let written = lands_once.then(|| writes.clone());
        let compares: Vec<Compare> = expect
            .iter()
            .map(|(key, revision)| {
                Compare::mod_revision(self.key(key), CompareOp::Equal, *revision)
            })
            .collect();
        let ops: Vec<TxnOp> = writes
            .into_iter()
            .map(|w| match w {
                Write::Put(key, value) => TxnOp::put(self.key(&key), value, None),
                Write::Delete(key) => TxnOp::delete(self.key(&key), None),
                Write::DeleteDir(dir) => {
                    TxnOp::delete(self.key(&dir), Some(DeleteOptions::new().with_prefix()))
                }
            })
            .collect();
        let txn = etcd_client::Txn::new().when(compares).and_then(ops);
        let Some(written) = written else {
            let answer = self.store.call("writing shared state", move |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })?;
            let revision = answer.header().map_or(0, |h| h.revision());
            return Ok(answer.succeeded().then_some(revision));
        };
        match self.store.send_landing_once(txn)? {
            (answer, _) if answer.succeeded() => {
                Ok(Some(answer.header().map_or(0, |h| h.revision())))
            }
            (_, true) => self.landed(&written),
            (_, false) => Ok(None),
        }
    }

    /// The revision of a commit of `writes` if etcd holds what it wrote: every key it puts
    /// with its value, all at one revision, and every key it deletes gone. `None` if not.
    fn landed(&self, writes: &[Write]) -> Result<Option<i64>, StoreError> {
        let reads: Vec<TxnOp> = writes
            .iter()
            .map(|w| match w {
                Write::Put(key, _) | Write::Delete(key) => TxnOp::get(self.key(key), None),
                Write::DeleteDir(dir) => TxnOp::get(
                    self.key(dir),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ),
            })
            .collect();
        let answer = self.store.read(
            "reading what a write of shared state wrote",
            move |mut c| {
                let read = etcd_client::Txn::new().and_then(reads.clone());
                async move { c.txn(read).await }
            },
        )?;
        let mut at = None;
        for (write, answer) in writes.iter().zip(answer.op_responses()) {
            let TxnOpResponse::Get(got) = answer else {
                return Ok(None);
            };
            let holds = match (write, got.kvs().first()) {
                (Write::Put(_, value), Some(kv)) if kv.value() == value.as_slice() => {
                    *at.get_or_insert(kv.mod_revision()) == kv.mod_revision()
                }
                (Write::Delete(_), None) => true,
                (Write::DeleteDir(_), _) => got.count() == 0,
                _ => false,
            };
            if !holds {
                return Ok(None);
            }
        }
        Ok(Some(at.unwrap_or_else(|| {
            answer.header().map_or(0, |h| h.revision())
        })))
    }

    /// Calls `wake` after every change under directory `dir` until `stop` completes, and
    /// once as soon as the watch begins (again after a broken watch resumes): whoever reads
    /// the directory after each wake misses no write, whenever it was made. A wake says only
    /// that something may have changed; a change may wake more than once.
    pub fn on_change(
        &self,
        dir: &str,
        wake: impl FnMut() + Send + 'static,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        let task = on_change(
            self.store.client(),
            self.store.sign_in(),
            self.store.members().to_string(),
            self.key(dir),
            wake,
        );
        self.store.spawn(async move {
            tokio::select! {
                () = task => {}
                () = stop => {}
            }
        });
    }

    /// Hands every change under directory `dir` after etcd revision `after` to `apply`, in
    /// order, for as long as the store is open.
    pub fn follow(&self, dir: &str, after: i64, apply: impl FnMut(Change) + Send + 'static) {
        let task = follow(
            self.store.client(),
            self.store.sign_in(),
            self.store.members().to_string(),
            self.root.clone(),
            self.key(dir),
            after,
            apply,
        );
        self.store.spawn(task);
    }
}

/// The watch behind [`EtcdState::on_change`]: each time it (re)starts, reads the revision,
/// wakes, and watches from the next one, so that a write is either before that wake or in
/// the watch.
async fn on_change(
    client: Client,
    sign_in: SignIn,
    members: String,
    dir: Vec<u8>,
    mut wake: impl FnMut(),
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        // A call etcd refuses for an old token is made again after signing in (`SignIn`).
        let since = std::time::Instant::now();
        let mut kv = client.kv_client();
        let head = kv
            .get(dir.clone(), Some(GetOptions::new().with_count_only()))
            .await;
        let after = match head {
            Ok(answer) => answer.header().map_or(0, |h| h.revision()),
            Err(e) => {
                tracing::warn!(etcd = %members, error = %e, "shared state: cannot read the revision to watch from; retrying");
                sign_in.after(&e, since).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        wake();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after + 1);
        let mut watch = client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        match watch.watch(dir.clone(), Some(options)).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(answer)) if answer.compact_revision() > 0 || answer.canceled() => {
                        sign_in.after_cancel(answer.cancel_reason(), since).await;
                        break;
                    }
                    Ok(Some(answer)) => {
                        backoff = MIN_BACKOFF;
                        if !answer.events().is_empty() {
                            wake();
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(etcd = %members, error = %e, "shared state: a watch broke; resuming");
                        sign_in.after(&e, since).await;
                        break;
                    }
                }
            },
            Err(e) => {
                tracing::warn!(etcd = %members, error = %e, "shared state: cannot watch; retrying");
                sign_in.after(&e, since).await;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The key just past every key that starts with `prefix`.
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The item of `kv`, its key made relative to `root`; `None` for a key outside it.
fn item(root: &[u8], kv: &KeyValue) -> Option<Item> {
    let key = kv.key().strip_prefix(root)?;
    Some(Item {
        key: String::from_utf8_lossy(key).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    })
}

async fn list(
    mut client: Client,
    root: &[u8],
    dir: Vec<u8>,
) -> Result<(Vec<Item>, i64), etcd_client::Error> {
    let answer = client
        .get(dir, Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = answer.header().map_or(0, |h| h.revision());
    let items = answer
        .kvs()
        .iter()
        .filter_map(|kv| item(root, kv))
        .collect();
    Ok((items, revision))
}

/// The watch behind [`EtcdState::follow`].
async fn follow(
    mut client: Client,
    sign_in: SignIn,
    members: String,
    root: Vec<u8>,
    dir: Vec<u8>,
    mut after: i64,
    mut apply: impl FnMut(Change) + Send + 'static,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let since = std::time::Instant::now();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after + 1);
        let compacted = match client.watch(dir.clone(), Some(options)).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(answer)) if answer.compact_revision() > 0 => break true,
                    Ok(Some(answer)) if answer.canceled() => {
                        sign_in.after_cancel(answer.cancel_reason(), since).await;
                        break false;
                    }
                    Ok(Some(answer)) => {
                        backoff = MIN_BACKOFF;
                        for event in answer.events() {
                            let Some(kv) = event.kv() else { continue };
                            after = after.max(kv.mod_revision());
                            let Some(item) = item(&root, kv) else {
                                continue;
                            };
                            apply(match event.event_type() {
                                EventType::Put => Change::Put(item),
                                EventType::Delete => Change::Delete(item.key),
                            });
                        }
                    }
                    Ok(None) => break false,
                    Err(e) => {
                        tracing::warn!(etcd = %members, error = %e, "shared state: the watch broke; resuming");
                        sign_in.after(&e, since).await;
                        break false;
                    }
                }
            },
            Err(e) => {
                tracing::warn!(etcd = %members, error = %e, "shared state: cannot watch; retrying");
                sign_in.after(&e, since).await;
                false
            }
        };
        if compacted {
            match list(client.clone(), &root, dir.clone()).await {
                Ok((items, revision)) => {
                    tracing::info!(etcd = %members, revision, "shared state: changes compacted away; reloaded");
                    after = revision;
                    apply(Change::Reset(items));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(etcd = %members, error = %e, "shared state: reloading failed");
                    sign_in.after(&e, since).await;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests;
