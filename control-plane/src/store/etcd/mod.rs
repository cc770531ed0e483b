//! [`EtcdStore`]: the [`Store`] contract on an etcd v3 cluster, so that several servers can
//! share one store (`troupe server --store etcd://HOST:2379[,HOST…][/PREFIX][?ca=…]`), over
//! TLS with a client certificate when the URL names them ([`connect`]).
//!
//! Data flow: objects live under `PREFIX/o/…` ([`layout`]); a commit is one etcd transaction
//! (compares for its checks, then its puts and deletes: [`commit`]), so its revision is etcd's.
//! One watch on the prefix (the tail, [`tail`]) turns every change under it, this store's and
//! other replicas' alike, into the store's commits: it keeps the [`view`] (every object, in
//! memory, which reads are served from), a cache of recent commits that serves
//! `events_after` (older ones come from etcd's history: [`history`]), and `subscribe`, one
//! message per commit. Compaction is etcd's (the store compacts the cluster to keep its
//! retention); a revision compacted away is [`StoreError::Compacted`].
//!
//! The server's own state every replica shares (the CA, tokens, webhook secrets) lives beside
//! the objects under `PREFIX/s/`, written through the store's client and runtime; the tail
//! sees those keys and ignores them, as it does the marker.
//!
//! Durability: etcd answers a write once a quorum of its members has it on disk, so a commit
//! is durable when it returns, and so is every revision the tail sees. A commit etcd does not
//! answer in time is sent again ([`resend`]); the members the client calls are those that
//! serve ([`members`]).
//!
//! What a call costs: the trait is synchronous, so every call that talks to etcd runs on the
//! store's own runtime ([`bridge`]) while the caller's thread blocks, except `commit_async`,
//! which an async caller awaits on its own runtime. Commits that arrive while etcd is busy
//! with earlier ones go to it together, in one transaction ([`batch`]). `get`, `list`,
//! `list_page` and `revision` read the view (no round trip), so they trail another replica's
//! commits by the time its watch takes (milliseconds), never this store's own; `commit` is one
//! transaction (a round trip and the leader's fsync) and then the wait for its own event to
//! come back through the watch (a fraction of a millisecond on one host); `events_after` is
//! served from memory unless it reaches back before the cache (then a watch from the past: 100
//! ms or more). An open loads every object (memory: what the objects weigh). A commit larger
//! than etcd's per-transaction limits is refused, or, if the caller allows, split into steps
//! ([`commit`]).
//!
//! A value written with [`Op::PutShared`](crate::store::Op::PutShared) keeps its shared part
//! under a key of its own, written again only when it changes, so a Release's status write
//! does not carry its manifests ([`tails`]). Not yet: an object must fit in one etcd request
//! (`--max-request-bytes`).

mod batch;
mod bridge;
mod commit;
mod connect;
mod election;
mod history;
mod layout;
mod local;
mod local_tls;
mod marker;
mod members;
mod presence;
mod read;
mod resend;
mod sign_in;
mod tail;
mod tails;
mod view;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use etcd_client::{Client, KvClient, TxnResponse, WatchClient};
use tokio::sync::{broadcast, watch};
use troupe_common::{Kind, ObjectKey};

pub use connect::{connect_client, connect_options};
pub use election::{DEFAULT_LEASE, Leader};
pub use local::LocalEtcd;
pub use local_tls::LocalTls;
pub use presence::Presence;
pub use sign_in::SignIn;

use self::bridge::{Bridge, CALL_TIMEOUT, failed, timed, within};
use self::layout::Layout;
use self::marker::{Opening, mark};
use self::tail::Log;
use self::view::View;
use super::{
    Committing, Durability, EtcdUrl, Event, Fence, Record, Retention, Revision, Store, StoreError,
    Txn, TxnLimits,
};

/// Largest etcd response the store takes: a page of large objects, or one revision of a big
/// cascade seen through the watch.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// A [`Store`] in an etcd cluster.
pub struct EtcdStore {
    shared: Arc<Shared>,
    bridge: Bridge,
    /// The leadership this server holds now, which every commit carries
    /// ([`EtcdStore::fence_commits`]).
    term: std::sync::RwLock<Option<Fence>>,
}

/// What the store and its tasks share.
pub(super) struct Shared {
    client: Client,
    /// Signing in again when etcd calls the token old ([`sign_in`]).
    sign_in: SignIn,
    layout: Layout,
    /// The cluster's members, for messages.
    members: String,
    limits: TxnLimits,
    retention: Retention,
    log: Mutex<Log>,
    /// The newest revision the tail has published.
    seen: watch::Sender<Revision>,
    durable: watch::Sender<Durability>,
    /// Set once etcd refused this store's user a compaction (said once, not every time).
    compaction_refused: AtomicBool,
    /// Set while a read of etcd's revision for `request_flush` is under way.
    reading_revision: AtomicBool,
    /// Commits waiting to go to etcd together.
    batches: batch::Batches,
    /// The store's runtime ([`bridge`]), which lives as long as the store: where the tasks
    /// that outlive a caller run.
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    fn watch_client(&self) -> WatchClient {
        self.client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        // The log is changed in small steps that each leave it consistent.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `txn` as `what`; again if it could not connect to a member (up to
    /// [`members::RESENDS`] times, the members checked first: it was never sent), again while
    /// etcd refuses it for want of a leader (for up to [`members::LEADER_WAIT`]: it was never
    /// proposed), and once more if etcd refused it for an old token and the store signed in
    /// again (a refused transaction changed nothing).
    async fn txn(&self, what: &str, txn: etcd_client::Txn) -> Result<TxnResponse, StoreError> {
        let mut kv = self.kv();
        let first = std::time::Instant::now();
        let (mut pause, mut resends) = (members::LEADER_PAUSE, 0);
        loop {
            let since = std::time::Instant::now();
            let e = match within(&self.members, what, kv.txn(txn.clone())).await? {
                Ok(answer) => return Ok(answer),
                Err(e) => e,
            };
            if members::wait_for_leader(&e, first, &mut pause).await {
                continue;
            }
            if resends < members::RESENDS && self.sign_in.unsent(&e, since).await {
                resends += 1;
            } else if self.sign_in.after(&e, since).await {
                return timed(&self.members, what, kv.txn(txn)).await;
            } else {
                return Err(failed(&self.members, what, &e));
            }
        }
    }

    /// Every revision etcd has answered with is on a quorum's disks.
    fn mark_durable(&self, revision: Revision) {
        self.durable.send_if_modified(|d| {
            let newer = revision > d.revision;
            d.revision = d.revision.max(revision);
            newer
        });
    }

    /// Waits until the tail has published `revision`. Gives up (with a warning) after a call's
    /// timeout: the commit is in etcd whatever the watch does, and subscribers get it once the
    /// tail resumes.
    async fn wait_seen(&self, revision: Revision) {
        let mut seen = self.seen.subscribe();
        let waited = tokio::time::timeout(CALL_TIMEOUT, seen.wait_for(|&s| s >= revision)).await;
        if !matches!(waited, Ok(Ok(_))) {
            tracing::warn!(etcd = %self.members, revision, "etcd store: a commit is not back through the watch yet; returning without it");
        }
    }
}

impl EtcdStore {
    /// Opens the store at `url`, keeping the default retention.
    pub fn open(url: &EtcdUrl) -> Result<Self, StoreError> {
        Self::open_with_retention(url, Retention::default())
    }

    /// Opens the store at `url`: connects, writes the marker (creating the store on the first
    /// open), loads every object and starts following the prefix. etcd's history of the store is compacted to keep
    /// what `retention` says. Fails, naming the cluster, if it does not answer in time or
    /// refuses this client (saying what TLS setting is the likely cause).
    pub fn open_with_retention(url: &EtcdUrl, retention: Retention) -> Result<Self, StoreError> {
        Self::open_as(url, retention, Opening::Serve)
    }

    /// Creates a store at `url` to import another store's objects into (`troupe migrate`):
    /// the prefix must hold nothing, and the store's revisions continue after `after` (the
    /// other store's last), so that none a client saw there comes again. Until
    /// [`EtcdStore::finish_import`], servers refuse to open it.
    pub fn open_for_import(url: &EtcdUrl, after: Revision) -> Result<Self, StoreError> {
        Self::open_as(url, Retention::default(), Opening::Import { after })
    }

    /// Ends the import [`EtcdStore::open_for_import`] began: servers may open the store now,
    /// and its history starts with this revision (a watch from before it is told it was
    /// compacted).
    pub fn finish_import(&self) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let history_from = shared.log().head();
        self.bridge.block(async move {
            marker::finish_import(
                &shared.client,
                &shared.members,
                &shared.layout,
                history_from,
            )
            .await
        })
    }

    /// Opens the store at `url` to move it into a data directory (`troupe migrate
    /// --from-etcd`): refused while it is being imported; one moved out already opens, so
    /// an export that stopped part way runs again. [`EtcdStore::move_out`] comes next.
    pub fn open_for_export(url: &EtcdUrl) -> Result<Self, StoreError> {
        Self::open_as(url, Retention::default(), Opening::Export)
    }

    /// Marks the store moved out, so that no server opens it any more, if no server runs on
    /// it; otherwise fails naming those that do. Already moved out: nothing to do.
    pub fn move_out(&self) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let servers = self.servers_prefix();
        let running = self.bridge.block(async move {
            marker::move_out(&shared.client, &shared.members, &shared.layout, &servers).await
        })?;
        if running.is_empty() {
            return Ok(());
        }
        Err(StoreError::Engine(format!(
            "etcd at {}: servers still run on the store: {} (stop them first; a server that \
             was killed is listed until its lease ends, 15 s by default)",
            self.shared.members,
            running.join(", ")
        )))
    }

    fn open_as(url: &EtcdUrl, retention: Retention, opening: Opening) -> Result<Self, StoreError> {
        let bridge = Bridge::new()?;
        let (client, sign_in, layout, head, (records, orphans)) = bridge
            .block(connect(url.clone(), opening))
            .map_err(|e| connect::explain(url, e))?;
        let shared = Arc::new(Shared {
            sign_in,
            client,
            layout,
            members: url.members(),
            limits: url.limits,
            retention,
            log: Mutex::new(Log::new(head, View::new(records), retention)),
            seen: watch::channel(head).0,
            durable: watch::channel(Durability {
                revision: head,
                error: None,
            })
            .0,
            compaction_refused: AtomicBool::new(false),
            reading_revision: AtomicBool::new(false),
            batches: batch::Batches::default(),
            runtime: bridge.handle().clone(),
        });
        bridge.handle().spawn(tail::follow(shared.clone()));
        bridge.handle().spawn(tails::sweep(shared.clone(), orphans));
        bridge.handle().spawn(connect::warn_if_slow(
            shared.client.clone(),
            shared.members.clone(),
        ));
        tracing::info!(etcd = %url, revision = head, "etcd store open");
        Ok(Self {
            shared,
            bridge,
            term: std::sync::RwLock::default(),
        })
    }

    /// `txn` with the fence of the leadership this server holds, unless it names one.
    fn fenced(&self, txn: Txn) -> Txn {
        let term = self.term.read().unwrap_or_else(|p| p.into_inner()).clone();
        match (&txn.fence, term) {
            (None, Some(fence)) => txn.fenced(fence),
            _ => txn,
        }
    }
}

/// What state kept beside the objects (under `PREFIX/s/`: the server's own) needs of the
/// store: its client, its prefix, and its runtime, so that such state is neither another
/// connection to the cluster nor another runtime.
impl EtcdStore {
    /// `PREFIX/`: every key of the store starts with it.
    pub fn root(&self) -> &[u8] {
        self.shared.layout.root()
    }

    /// The cluster's members, for messages.
    pub fn members(&self) -> &str {
        &self.shared.members
    }

    /// Each member's endpoint, as the store URL names it, and whether it takes a connection
    /// from this server now (asked at once; within half a second).
    pub async fn reachable_members(&self) -> Vec<(String, bool)> {
        self.shared.sign_in.reachable().await
    }

    /// What one transaction may hold on this cluster.
    pub fn limits(&self) -> TxnLimits {
        self.shared.limits
    }

    /// The store's client (cheap to clone; every clone shares the connection).
    pub fn client(&self) -> Client {
        self.shared.client.clone()
    }

    /// Runs the call `make` makes with the store's client on the store's runtime within a
    /// call's time limit, and blocks this thread until it is done; made again once if etcd
    /// called the token old and the store signed in again ([`SignIn::retried`]). A failure
    /// names the cluster and `what`.
    pub fn call<T, F>(
        &self,
        what: &str,
        make: impl Fn(Client) -> F + Send + Sync + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        self.blocking(what, make, false)
    }

    /// [`EtcdStore::call`] for a call that changes nothing (a read): one that goes
    /// unanswered for a while (it reached a member that stalled) is joined by a copy, which
    /// the members still serving answer ([`resend::hedged`]).
    pub fn read<T, F>(
        &self,
        what: &str,
        make: impl Fn(Client) -> F + Send + Sync + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        self.blocking(what, make, true)
    }

    /// Sends `txn`, a transaction that lands at most once however often it is sent (it checks
    /// a key it writes in a way its own landing breaks), again whenever 2 s pass without an
    /// answer (its member stalled), for up to 15 s ([`resend::send`]). Returns etcd's answer
    /// and whether an earlier sending may have landed (then a refusal may be that landing's
    /// doing: read back what it wrote).
    pub fn send_landing_once(
        &self,
        txn: etcd_client::Txn,
    ) -> Result<(TxnResponse, bool), StoreError> {
        let shared = self.shared.clone();
        self.bridge
            .block(async move { resend::send(&shared, txn, false, true).await })
    }

    /// [`EtcdStore::call`], its copies [`hedged`](resend::hedged) if `hedge`.
    fn blocking<T, F>(
        &self,
        what: &str,
        make: impl Fn(Client) -> F + Send + Sync + 'static,
        hedge: bool,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let (members, what) = (self.shared.members.clone(), what.to_string());
        let (client, sign_in) = (self.shared.client.clone(), self.shared.sign_in.clone());
        self.bridge.block(async move {
            let once = || sign_in.retried(&members, &what, || make(client.clone()));
            match hedge {
                true => resend::hedged(once).await,
                false => once().await,
            }
        })
    }

    /// How the store signs in again when etcd calls its token old, for loops of the store's
    /// user that call etcd themselves.
    pub fn sign_in(&self) -> SignIn {
        self.shared.sign_in.clone()
    }

    /// Runs `task`, which may call its caller's code, on a runtime of the store's for as long
    /// as the store is open: not the one that does the store's own calls, which a callback
    /// waiting on its caller must not hold up.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.bridge.callbacks().spawn(task);
    }
}

/// Connects to the cluster, writes the marker and loads the objects at its revision; returns
/// the client and how it signs in again, the layout with its base, and the store's revision
/// and objects there.
async fn connect(
    url: EtcdUrl,
    opening: Opening,
) -> Result<(Client, SignIn, Layout, Revision, read::Loaded), StoreError> {
    let members = url.members();
    let (client, layout, marked, checked) = mark(&url, opening).await?;
    checked.keep_checking(&tokio::runtime::Handle::current());
    let sign_in = SignIn::new(client.clone(), url.user.is_some(), checked);
    let kv = client
        .kv_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let loaded = read::load(&kv, &sign_in, &members, &layout, marked).await?;
    let head = layout.to_store(marked);
    Ok((client, sign_in, layout, head, loaded))
}

/// Writes the marker again and loads the objects at its revision: where a tail that lost
/// commits to compaction starts over. Returns that revision and the objects.
async fn restart(shared: &Shared) -> Result<(Revision, View), StoreError> {
    let kv = shared.kv();
    let what = "starting over after a compaction";
    let marked = shared
        .sign_in
        .retried(&shared.members, what, || {
            let (mut kv, marker) = (kv.clone(), shared.layout.marker());
            let value = shared.layout.marker_value().encode();
            async move { kv.put(marker, value, None).await }
        })
        .await?
        .header()
        .map_or(0, |h| h.revision());
    // Tails left over are swept at the next open.
    let (records, _) = read::load(
        &kv,
        &shared.sign_in,
        &shared.members,
        &shared.layout,
        marked,
    )
    .await?;
    Ok((shared.layout.to_store(marked), View::new(records)))
}

impl Store for EtcdStore {
    fn get(&self, key: &ObjectKey) -> Result<Option<Record>, StoreError> {
        Ok(self.shared.log().view().get(key))
    }

    fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        let log = self.shared.log();
        Ok((log.view().list(kind, namespace), log.head()))
    }

    fn list_page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        let log = self.shared.log();
        Ok((log.view().page(kind, namespace, after, limit), log.head()))
    }

    fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let (shared, txn) = (self.shared.clone(), self.fenced(txn));
        self.bridge
            .block(async move { commit::commit(&shared, txn).await })
    }

    fn commit_async(&self, txn: Txn) -> Result<Committing, Txn> {
        let (shared, txn) = (self.shared.clone(), self.fenced(txn));
        Ok(Box::pin(async move { commit::commit(&shared, txn).await }))
    }

    fn revision(&self) -> Revision {
        self.shared.log().head()
    }

    fn events_after(&self, after: Revision, limit: usize) -> Result<Vec<Event>, StoreError> {
        // An imported store has no history from before its import.
        let history_from = self.shared.layout.marker_value().history_from;
        if after < history_from {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: history_from,
            });
        }
        let floor = {
            let log = self.shared.log();
            if let Some(events) = log.events_after(after, limit) {
                return Ok(events);
            }
            log.floor()
        };
        let shared = self.shared.clone();
        let mut events = self
            .bridge
            .block(async move { history::read(&shared, after, limit, floor).await })?;
        if events.len() < limit {
            // The rest from the cache, which starts right after `floor` unless it moved on
            // meanwhile: then the caller reads on from the last event it got.
            if let Some(more) = self.shared.log().events_after(floor, limit - events.len()) {
                events.extend(more);
            }
        }
        Ok(events)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>> {
        self.shared.log().subscribe()
    }

    fn durability(&self) -> watch::Receiver<Durability> {
        self.shared.durable.subscribe()
    }

    fn request_flush(&self) {
        // Nothing to flush: whatever etcd answered is on a quorum's disks. A revision the
        // tail has not seen yet (another replica's) is durable too; learn etcd's newest, with
        // one read at a time however many wait.
        if self.shared.reading_revision.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.shared.clone();
        self.bridge.handle().spawn(async move {
            let kv = shared.kv();
            let read = shared
                .sign_in
                .retried(&shared.members, "reading the revision", || {
                    let (mut kv, marker) = (kv.clone(), shared.layout.marker());
                    let options = etcd_client::GetOptions::new().with_count_only();
                    async move { kv.get(marker, Some(options)).await }
                })
                .await;
            match read {
                Ok(response) => {
                    let revision = response.header().map_or(0, |h| h.revision());
                    shared.mark_durable(shared.layout.to_store(revision));
                }
                Err(e) => tracing::warn!(error = %e, "etcd store: reading the revision failed"),
            }
            shared.reading_revision.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod hung_tests;
#[cfg(test)]
mod import_tests;
#[cfg(test)]
mod leaderless_tests;
#[cfg(test)]
mod tails_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
