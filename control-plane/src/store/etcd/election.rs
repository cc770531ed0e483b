//! Electing one leader among the servers on one store: a key under the store's prefix
//! (`PREFIX/leader`) created under an etcd lease by whoever gets there first, kept while the
//! lease is renewed, gone when it is not (a crashed or partitioned leader) so another can take
//! it. Kubernetes' controllers do the same with their Lease objects (a 15 s lease, renewed
//! well within it).
//!
//! The term is the revision that created the key: a leader's writes carry it as a
//! [`Fence`], and etcd commits them only while that very key exists, so a former leader that
//! has not yet noticed its loss (a long pause, a partition) writes nothing once its key is
//! gone. The leader notices itself too: [`Leader::lost`] turns true when a renewal fails, is
//! refused, or has not succeeded for two thirds of the lease.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, TxnOp, TxnOpResponse};
use tokio::sync::watch;
use tokio::time::Instant;

use super::EtcdStore;
use crate::store::{Fence, StoreError};

/// The lease a leader holds unless told otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// How often a server that does not lead looks whether the key is free.
const RETRY: Duration = Duration::from_secs(1);

/// This server's leadership, from its election until it is lost or given up.
pub struct Leader {
    fence: Fence,
    lease: i64,
    lost: watch::Receiver<bool>,
    client: etcd_client::Client,
    members: String,
    sign_in: super::SignIn,
}

impl Leader {
    /// The fence every write of this term carries.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// True once the leadership is lost; wait on it with `changed()`.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Gives the leadership up at once (revokes the lease: another server may lead now).
    pub async fn resign(self) -> Result<(), StoreError> {
        let (client, lease) = (&self.client, self.lease);
        self.sign_in
            .retried(&self.members, "resigning", || {
                let mut client = client.clone();
                async move { client.lease_revoke(lease).await }
            })
            .await?;
        Ok(())
    }
}

impl EtcdStore {
    /// Fences every commit of this store from now on with `fence` (`None`: none), so that
    /// nothing this server writes, its controllers' writes above all, commits once another
    /// server may lead. A transaction that carries a fence of its own keeps it.
    pub fn fence_commits(&self, fence: Option<Fence>) {
        *self.term.write().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    /// The name of the server that leads now, if one does.
    pub async fn leader(&self) -> Result<Option<String>, StoreError> {
        let key = [self.shared.layout.root(), b"leader"].concat();
        let client = &self.shared.client;
        let answer = self
            .shared
            .sign_in
            .retried(&self.shared.members, "reading the leader", || {
                let (mut client, key) = (client.clone(), key.clone());
                async move { client.get(key, None).await }
            })
            .await?;
        Ok(answer
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Waits until this server leads (`identity` names it in the key), with a lease of
    /// `lease` (at least 2 s); renews it in the background until it is lost or given up.
    pub async fn campaign(&self, identity: &str, lease: Duration) -> Result<Leader, StoreError> {
        let shared = &self.shared;
        let key = [shared.layout.root(), b"leader"].concat();
        let ttl = lease.as_secs().max(2) as i64;
        let mut client = shared.client.clone();
        let (members, sign_in) = (shared.members.clone(), shared.sign_in.clone());
        loop {
            let granted = sign_in
                .retried(&members, "granting a lease", || {
                    let mut client = client.clone();
                    async move { client.lease_grant(ttl, None).await }
                })
                .await?;
            let id = granted.id();
            let claim = etcd_client::Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    identity,
                    Some(PutOptions::new().with_lease(id)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let answer = sign_in
                .retried(&members, "claiming the leadership", || {
                    let (mut client, claim) = (client.clone(), claim.clone());
                    async move { client.txn(claim).await }
                })
                .await?;
            if answer.succeeded() {
                let term = answer.header().map_or(0, |h| h.revision());
                let (tx, lost) = watch::channel(false);
                let renewal = renew(client.clone(), id, Duration::from_secs(ttl as u64), tx);
                self.bridge.handle().spawn(renewal);
                tracing::info!(%identity, term, "leading");
                return Ok(Leader {
                    fence: Fence { key, term },
                    lease: id,
                    lost,
                    client,
                    members,
                    sign_in,
                });
            }
            let holder = answer.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            });
            tracing::debug!(holder = ?holder, "another server leads");
            let _ = client.lease_revoke(id).await;
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Renews lease `id` every third of `lease`; sets `lost` once a renewal is refused (the lease
/// is gone) or none has succeeded for two thirds of it, and stops.
pub(super) async fn renew(
    mut client: etcd_client::Client,
    id: i64,
    lease: Duration,
    lost: watch::Sender<bool>,
) {
    let deadline = lease * 2 / 3;
    let mut renewed = Instant::now();
    let why = 'renewing: loop {
        let Ok(Ok((mut keeper, mut answers))) =
            tokio::time::timeout(deadline, client.lease_keep_alive(id)).await
        else {
            if renewed.elapsed() >= deadline {
                break 'renewing "the lease could not be renewed in time".to_string();
            }
            tokio::time::sleep(lease / 10).await;
            continue;
        };
        loop {
            if lost.is_closed() {
                return;
            }
            let until = renewed + deadline;
            let answer = tokio::time::timeout_at(until, async {
                keeper.keep_alive().await?;
                answers.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => renewed = Instant::now(),
                Ok(Ok(Some(_))) => break 'renewing "the lease is gone".to_string(),
                // The stream broke: open another while there is time.
                Ok(Ok(None) | Err(_)) => continue 'renewing,
                Err(_) => break 'renewing "the lease could not be renewed in time".to_string(),
            }
            tokio::time::sleep(lease / 3).await;
        }
    };
    tracing::warn!(%why, "leadership lost");
    let _ = lost.send(true);
}
