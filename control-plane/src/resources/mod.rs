//! The resource layer: create-or-update, read, list, delete and watch for every kind, with the
//! integrity rules of DESIGN §2 (names, creation order, immutability, referrer-safe deletion,
//! cascades). It sits between the gRPC handlers and the [`Store`]: handlers decode and encode,
//! this layer decides, the store persists.
//!
//! What differs between kinds (their fields' rules, their references, their immutable
//! fields) lives in one file per kind under `kinds/`, behind one table; `validate`, `delete`,
//! `references` and `integrity` are the machinery every kind shares. Reads come untyped
//! ([`Resources::get`]) or as the generated type ([`Resources::get_as`]).
//!
//! Writes take no lock: each reads what its checks need, then commits with everything those
//! checks relied on as the commit's preconditions, which the store checks atomically with
//! the writes (so concurrent writers, on this server or on another sharing the store, cannot
//! both win): the object's revision, that its references' targets exist (and are as read,
//! where their content was checked), and for a delete that nothing able to refer to what goes
//! was written since its referrers were looked up. A commit that finds any of it changed is
//! tried again from its checks ([`retrying`]). Writes wait for the flush after their commit,
//! so concurrent writers share flushes, and on etcd their round trips overlap.

mod delete;
mod error;
mod integrity;
mod kinds;
pub mod references;
mod referrers;
mod retry;
mod validate;
mod watch;

use std::sync::Arc;

use prost::Message;
use troupe_common::pb::v1alpha1::{self as pb, Resource};
use troupe_common::selector::LabelSelector;
use troupe_common::timestamp::now;
use troupe_common::{Kind, Object, ObjectKey, Typed};

pub use delete::Deleted;
pub use error::Error;
pub use references::{Reference, references};
pub use watch::{WatchEvent, WatchEventType, WatchEvents, WatchRequest};

use retry::{retrying, retrying_async};

use crate::render::schema::SchemaCache;
use crate::render::template::{Engine, Limits};
use crate::store::{Precondition, Record, Revision, Store, StoreError, Txn, wait_durable};

/// Who asks for a write. Users come through `ResourceService` (and the sample platform a
/// dev server loads); the control plane's own writers (the binding controller, the release and
/// promotion services, agent registration) write the kinds it alone computes. A user's write
/// of such a kind is refused (each kind's rules in `kinds/` say which, and what to use
/// instead), so the rule holds whichever handler a write enters through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A person or a client program, through the public API.
    User,
    /// The control plane itself.
    ControlPlane,
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The object was created.
    Created,
    /// The object was changed.
    Configured,
    /// The object already matched; nothing was written.
    Unchanged,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// The objects, ordered by namespace and name.
    pub items: Vec<Object>,
    /// Token for the next page, if there is one.
    pub next_page_token: String,
    /// Store revision the listing reflects.
    pub revision: Revision,
}

/// How many referrers an error message lists before summarizing the rest.
pub(crate) const LISTED_REFERRERS: usize = 10;

/// The resource service: every read and write of Troupe objects goes through here.
pub struct Resources {
    store: Arc<dyn Store>,
    /// Compiled parameter schemas, shared by every check and render.
    schemas: SchemaCache,
    /// The template engine, shared by every check and render.
    engine: Engine,
    /// Who refers to what; built on first use, then following the store's event log.
    referrers: std::sync::Mutex<Option<referrers::ReferrerIndex>>,
    /// Objects whose content checks read, decoded, by key ([`Resources::decoded`]).
    decoded: std::sync::Mutex<integrity::Decoded>,
}

impl Resources {
    /// A service over `store`, rendering within the default [`Limits`].
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_render_limits(store, Limits::default())
    }

    /// A service over `store` whose renders are bounded by `limits`.
    pub fn with_render_limits(store: Arc<dyn Store>, limits: Limits) -> Self {
        Self {
            store,
            schemas: SchemaCache::default(),
            engine: Engine::new(limits),
            referrers: std::sync::Mutex::new(None),
            decoded: std::sync::Mutex::default(),
        }
    }

    /// The store's current revision: every write up to it is visible to reads.
    pub fn revision(&self) -> Revision {
        self.store.revision()
    }

    /// The compiled-schema cache.
    pub fn schemas(&self) -> &SchemaCache {
        &self.schemas
    }

    /// The template engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Creates or updates `object` for `origin`. `metadata.resourceVersion`, when set, must
    /// match the stored version; status is never taken from the writer (see
    /// [`Resources::update_status`]). Returns the stored object once it is on disk.
    pub async fn apply(
        self: &Arc<Self>,
        object: Object,
        origin: Origin,
        dry_run: bool,
    ) -> Result<(Object, Outcome), Error> {
        let (mut object, outcome, revision) =
            retrying_async(|| self.apply_once(object.clone(), origin, dry_run)).await?;
        if let Some(revision) = revision {
            wait_durable(&*self.store, revision).await?;
            object.meta_mut().resource_version = revision;
        }
        Ok((object, outcome))
    }

    /// One attempt at the checks and the commit of [`Resources::apply`]. Returns the
    /// revision that must be durable before answering, if any.
    async fn apply_once(
        &self,
        mut object: Object,
        origin: Origin,
        dry_run: bool,
    ) -> Result<(Object, Outcome, Option<Revision>), Error> {
        if origin == Origin::User {
            kinds::check_user_change(&object.key(), kinds::Change::Apply)?;
        }
        validate::check(&object, &self.engine)?;
        object.set_type_meta();
        let key = object.key();
        let expected = object.meta().resource_version;

        let existing = self.read(&key)?;
        if expected != 0 && existing.as_ref().map(|(_, r)| r.mod_revision) != Some(expected) {
            return Err(Error::Stale {
                key,
                expected,
                found: existing.map_or("no object".into(), |(_, r)| r.mod_revision.to_string()),
            });
        }
        let mut referenced = self.check_references(&object)?;
        let meta = object.meta_mut();
        meta.resource_version = 0;
        let outcome = match &existing {
            Some((old, _)) => {
                validate::check_immutable(old, &object)?;
                let old_meta = old.meta();
                let spec_changed = !old.spec_eq(&object);
                let meta = object.meta_mut();
                meta.uid = old_meta.uid.clone();
                meta.create_time = old_meta.create_time;
                // Re-applying a Release that waits for its prune brings it back, as a newer
                // generation than the pending removal.
                let revived = old.kind() == Kind::Release && old_meta.delete_time.is_some();
                meta.delete_time = if revived { None } else { old_meta.delete_time };
                meta.generation = old_meta.generation + i64::from(spec_changed || revived);
                // Status is written by the control plane only.
                object.copy_status_from(Some(old));
                let mut stored = old.clone();
                stored.meta_mut().resource_version = 0;
                if object == stored {
                    Outcome::Unchanged
                } else {
                    Outcome::Configured
                }
            }
            None => {
                meta.uid = uuid::Uuid::new_v4().to_string();
                meta.create_time = Some(now());
                meta.delete_time = None;
                meta.generation = 1;
                object.copy_status_from(None);
                Outcome::Created
            }
        };
        if origin == Origin::User {
            let old = existing.as_ref().map(|(o, _)| o);
            let read = kinds::check_user_apply(old, &object, self, &key)?;
            referenced.note_read(read);
        }
        if dry_run || outcome == Outcome::Unchanged {
            let current = existing.map_or(0, |(_, r)| r.mod_revision);
            object.meta_mut().resource_version = current;
            // "Unchanged" vouches for the stored state, which another writer may have
            // committed a moment ago: it too must be on disk before we say so.
            let wait = (!dry_run).then_some(current);
            return Ok((object, outcome, wait));
        }
        let precondition = existing.as_ref().map_or(Precondition::Absent, |(_, r)| {
            Precondition::AtRevision(r.mod_revision)
        });
        let same_spec = existing
            .as_ref()
            .filter(|(old, _)| old.spec_eq(&object))
            .map(|(_, record)| record.value.as_slice());
        let txn = referenced.required(Txn::default().check(key.clone(), precondition));
        let txn = put(txn, key.clone(), &object, same_spec);
        let revision = self
            .commit(txn)
            .await
            .map_err(|e| integrity::lost_race(e, &key, expected != 0, &referenced))?;
        Ok((object, outcome, Some(revision)))
    }

    /// Changes the status of the stored object with `change`, so writers of different parts
    /// of one status never undo each other: a commit that finds the object changed since it
    /// was read is made again from a fresh read ([`retrying`]). `change` may read other
    /// objects through the `Resources` it is given; whatever it does to spec or metadata is
    /// discarded. Returns false when the status did not change.
    pub async fn update_status<F>(
        self: &Arc<Self>,
        key: &ObjectKey,
        change: F,
    ) -> Result<bool, Error>
    where
        F: Fn(&Resources, &mut Object) + Send + 'static,
    {
        let revision = retrying_async(|| self.update_status_once(key, &change)).await?;
        if let Some(revision) = revision {
            wait_durable(&*self.store, revision).await?;
        }
        Ok(revision.is_some())
    }

    /// One attempt of [`Resources::update_status`].
    async fn update_status_once(
        &self,
        key: &ObjectKey,
        change: &impl Fn(&Resources, &mut Object),
    ) -> Result<Option<Revision>, Error> {
        let (mut stored, record) = self
            .read(key)?
            .ok_or_else(|| Error::NotFound(key.clone()))?;
        let mut changed = stored.clone();
        change(self, &mut changed);
        if stored.status_eq(&changed) {
            return Ok(None);
        }
        stored.copy_status_from(Some(&changed));
        stored.meta_mut().resource_version = 0;
        let txn = put(
            Txn::default().check(key.clone(), Precondition::AtRevision(record.mod_revision)),
            key.clone(),
            &stored,
            Some(&record.value),
        );
        Ok(Some(self.commit(txn).await?))
    }

    /// Commits `txn` without blocking an async worker: on the store's own I/O where it has it
    /// ([`Store::commit_async`]), otherwise from a blocking thread, so the workers keep serving
    /// other requests while a commit stalls behind a flush.
    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        match self.store.commit_async(txn) {
            Ok(committing) => committing.await,
            Err(txn) => {
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || store.commit(txn))
                    .await
                    .map_err(joined)?
            }
        }
    }

    /// Runs `write` (its checks and its commit) off the async workers, which keep serving
    /// other requests while a write stalls behind a flush, then waits until the revision it
    /// returns, if any, is on disk.
    async fn write_durably<T: Send + 'static>(
        self: &Arc<Self>,
        write: impl FnOnce(&Resources) -> Result<(T, Option<Revision>), Error> + Send + 'static,
    ) -> Result<(T, Option<Revision>), Error> {
        let this = self.clone();
        let (value, revision) = tokio::task::spawn_blocking(move || write(&this))
            .await
            .map_err(joined)??;
        if let Some(revision) = revision {
            wait_durable(&*self.store, revision).await?;
        }
        Ok((value, revision))
    }

    /// Waits until every commit up to `revision` is on disk. What goes out of the control
    /// plane (watch events, releases sent to agents) waits for this first.
    pub async fn durable(&self, revision: Revision) -> Result<(), Error> {
        Ok(wait_durable(&*self.store, revision).await?)
    }

    /// Reads one object.
    pub fn get(&self, key: &ObjectKey) -> Result<Object, Error> {
        self.read(key)?
            .map(|(o, _)| o)
            .ok_or_else(|| Error::NotFound(key.clone()))
    }

    /// Reads one object as its generated type with the revision it was last written at, if it
    /// exists; reading a key of another kind is an error.
    pub(crate) fn read_as<T: Typed>(
        &self,
        key: &ObjectKey,
    ) -> Result<Option<(T, Revision)>, Error> {
        match self.read(key)? {
            None => Ok(None),
            Some((object, record)) => Ok(Some((typed(key, object)?, record.mod_revision))),
        }
    }

    /// Reads one object as its generated type; reading a key of another kind is an error.
    pub fn get_as<T: Typed>(&self, key: &ObjectKey) -> Result<T, Error> {
        typed(key, self.get(key)?)
    }

    /// Every object of `T`'s kind in `namespace` (every namespace if empty) matching
    /// `selector`, ordered by namespace and name.
    pub async fn list_as<T: Typed>(
        &self,
        namespace: &str,
        selector: &LabelSelector,
    ) -> Result<Vec<T>, Error> {
        let page = self.list(T::KIND, namespace, selector, 0, "").await?;
        page.items
            .into_iter()
            .map(|object| typed(&object.key(), object))
            .collect()
    }

    /// Lists objects of `kind` in `namespace` (every namespace if empty) matching `selector`,
    /// `page_size` at a time (0: all, for the control plane's own callers) starting after
    /// `page_token`. A page also ends before it holds more than [`PAGE_BYTES`] of objects.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: &str,
        selector: &LabelSelector,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page, Error> {
        let after = match page_token {
            "" => None,
            token => Some(key_of_page_token(kind, token)?),
        };
        let store = self.store.clone();
        let namespace = (!namespace.is_empty()).then(|| namespace.to_string());
        if page_size == 0 {
            let (records, revision) =
                tokio::task::spawn_blocking(move || store.list(kind, namespace.as_deref()))
                    .await
                    .map_err(joined)??;
            let mut items = Vec::new();
            for record in records {
                if after.as_ref().is_some_and(|after| record.key <= *after) {
                    continue;
                }
                let object = decode(&record)?;
                if selector.matches(&object.meta().labels) {
                    items.push(object);
                }
            }
            return Ok(Page {
                items,
                next_page_token: String::new(),
                revision,
            });
        }
        let selector = selector.clone();
        tokio::task::spawn_blocking(move || {
            page(
                &*store,
                kind,
                namespace.as_deref(),
                &selector,
                page_size,
                after,
            )
        })
        .await
        .map_err(joined)?
    }

    /// Reads and decodes one object with its record.
    fn read(&self, key: &ObjectKey) -> Result<Option<(Object, Record)>, Error> {
        let Some(record) = self.store.get(key)? else {
            return Ok(None);
        };
        Ok(Some((decode(&record)?, record)))
    }
}

/// A write or read run off the async workers did not finish: its panic goes on up; if the
/// runtime is shutting down, the caller gets an error instead of a second panic.
pub(crate) fn joined(e: tokio::task::JoinError) -> StoreError {
    match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(_) => StoreError::Engine("the control plane is shutting down".into()),
    }
}

/// `object`, read under `key`, as a `T`.
fn typed<T: Typed>(key: &ObjectKey, object: Object) -> Result<T, Error> {
    T::from_object(object).map_err(|found| Error::Decode {
        key: key.clone(),
        reason: format!("it holds a {found}, not a {}", T::KIND),
    })
}

/// Objects in a page of a `List` that names no page size.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Most objects a `List` may ask for in one page.
pub const MAX_PAGE_SIZE: u32 = 5_000;

/// A `List` request's `pageSize` as a page size: 0 means [`DEFAULT_PAGE_SIZE`]; more than
/// [`MAX_PAGE_SIZE`] is refused with a message that says to page.
pub fn page_size(requested: u32) -> Result<usize, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE as usize),
        n if n <= MAX_PAGE_SIZE => Ok(n as usize),
        n => Err(Error::invalid(
            "ListRequest",
            "pageSize",
            format!(
                "{n} is more than {MAX_PAGE_SIZE} objects per page; ask for at most {MAX_PAGE_SIZE} and page through the rest with nextPageToken"
            ),
        )),
    }
}

/// Most bytes of stored objects one page holds, whatever its page size, so that a page of
/// large objects still fits in a gRPC message (4 MiB by default).
pub const PAGE_BYTES: usize = 3 * 1024 * 1024;

/// One page of `kind` after `after`: up to `page_size` objects matching `selector`, read from
/// the store a batch at a time, so neither the kind nor what the selector skips is ever held
/// whole. The token is set only when a further match exists.
fn page(
    store: &dyn Store,
    kind: Kind,
    namespace: Option<&str>,
    selector: &LabelSelector,
    page_size: usize,
    mut after: Option<ObjectKey>,
) -> Result<Page, Error> {
    let mut items: Vec<Object> = Vec::new();
    let mut bytes = 0;
    let mut revision = None;
    // One more than a page, to learn whether another page follows without a second read.
    let batch = page_size.saturating_add(1);
    loop {
        let (records, read_at) = store.list_page(kind, namespace, after.as_ref(), batch)?;
        revision.get_or_insert(read_at);
        let exhausted = records.len() < batch;
        for record in records {
            after = Some(record.key.clone());
            let object = decode(&record)?;
            if !selector.matches(&object.meta().labels) {
                continue;
            }
            let full = items.len() == page_size
                || (!items.is_empty() && bytes + record.value.len() > PAGE_BYTES);
            if full {
                let last = items.last().map(Object::key).expect("a full page");
                return Ok(Page {
                    items,
                    next_page_token: page_token_of(&last),
                    revision: revision.unwrap_or_default(),
                });
            }
            bytes += record.value.len();
            items.push(object);
        }
        if exhausted {
            return Ok(Page {
                items,
                next_page_token: String::new(),
                revision: revision.unwrap_or_default(),
            });
        }
    }
}

fn page_token_of(key: &ObjectKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

/// The key a page token written by [`page_token_of`] names.
fn key_of_page_token(kind: Kind, token: &str) -> Result<ObjectKey, Error> {
    let (namespace, name) = token.split_once('/').ok_or_else(|| {
        Error::invalid(
            "ListRequest",
            "pageToken",
            format!("{token:?} is not a token this server returned; pass nextPageToken as it came"),
        )
    })?;
    Ok(ObjectKey::new(kind, namespace, name))
}

/// Adds the write of `object` under `key` to `txn`. `resourceVersion` is not stored: it is
/// the record's revision. A Release's rendered objects go as the shared part of the value
/// ([`Txn::put_shared`]): they are most of its bytes, and every status write repeats them.
/// `same_spec` is the stored value of the object when its spec is unchanged: its shared part
/// is written again byte for byte (encoding the objects anew could order their maps
/// differently, and the store would keep the same objects twice).
fn put(txn: Txn, key: ObjectKey, object: &Object, same_spec: Option<&[u8]>) -> Txn {
    let mut object = object.clone();
    let resources = match &mut object {
        Object::Release(release) => release
            .spec
            .as_mut()
            .map(|spec| std::mem::take(&mut spec.resources))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let head = Resource {
        object: Some(object),
    }
    .encode_to_vec();
    if resources.is_empty() {
        return txn.put(key, head);
    }
    if let Some(shared) = same_spec.and_then(shared_part) {
        return txn.put_shared(key, head, shared.to_vec());
    }
    // Protobuf merges a message read twice, so the two halves decode as one Release.
    let shared = Resource {
        object: Some(Object::Release(pb::Release {
            spec: Some(pb::ReleaseSpec {
                resources,
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
    .encode_to_vec();
    txn.put_shared(key, head, shared)
}

/// The shared part of a value [`put`] wrote: the head is one field of `Resource`, and the
/// shared part, if any, a second one. `None` for a value written whole.
fn shared_part(value: &[u8]) -> Option<&[u8]> {
    let mut rest = value;
    let tag = prost::encoding::decode_varint(&mut rest).ok()?;
    if tag & 0b111 != prost::encoding::WireType::LengthDelimited as u64 {
        return None;
    }
    let len = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
    rest.get(len..).filter(|shared| !shared.is_empty())
}

/// Decodes a stored object and fills in its `resourceVersion`.
pub(crate) fn decode(record: &Record) -> Result<Object, Error> {
    decode_bytes(&record.key, &record.value, record.mod_revision)
}

fn decode_bytes(key: &ObjectKey, bytes: &[u8], revision: Revision) -> Result<Object, Error> {
    let resource = Resource::decode(bytes).map_err(|e| Error::Decode {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    let mut object = resource.object.ok_or_else(|| Error::Decode {
        key: key.clone(),
        reason: "no object in the stored resource".into(),
    })?;
    object.meta_mut().resource_version = revision;
    Ok(object)
}

#[cfg(test)]
mod race_tests;
#[cfg(test)]
mod tests;
