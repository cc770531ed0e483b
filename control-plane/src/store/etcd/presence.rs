//! Which servers are alive. Each server on the store keeps a key, `PREFIX/servers/NAME`,
//! under a lease of its own, renewed in the background; its value says where the server is
//! reached. A server that dies or is cut off from etcd loses the key with its lease, so the
//! others notice: the leader marks the data planes whose sessions it held as disconnected.
//! A server whose lease was lost while it ran on (a long pause) announces itself again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, TxnOp};
use tokio::sync::watch;

use super::election::renew;
use super::layout::Layout;
use super::{EtcdStore, SignIn};
use crate::store::StoreError;

/// This server's announcement; it ends (the key goes with its lease) when dropped.
pub struct Presence {
    lease: Arc<AtomicI64>,
    client: etcd_client::Client,
    members: String,
    sign_in: SignIn,
    keeper: tokio::task::JoinHandle<()>,
}

impl Presence {
    /// Ends the announcement at once (revokes its lease), for a server that stops.
    pub async fn withdraw(self) -> Result<(), StoreError> {
        self.keeper.abort();
        let lease = self.lease.load(Ordering::Relaxed);
        let client = &self.client;
        self.sign_in
            .retried(&self.members, "withdrawing", || {
                let mut client = client.clone();
                async move { client.lease_revoke(lease).await }
            })
            .await?;
        Ok(())
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl EtcdStore {
    pub(super) fn servers_prefix(&self) -> Vec<u8> {
        [self.shared.layout.root(), b"servers/"].concat()
    }

    /// Announces this server as `name`, reached at `about`, under a lease of `lease`, and
    /// keeps it announced until the [`Presence`] is dropped or withdrawn.
    pub async fn announce(
        &self,
        name: &str,
        about: &str,
        lease: Duration,
    ) -> Result<Presence, StoreError> {
        let key = [self.servers_prefix(), name.as_bytes().to_vec()].concat();
        let ttl = lease.as_secs().max(2) as i64;
        let client = self.shared.client.clone();
        let members = self.shared.members.clone();
        let sign_in = self.shared.sign_in.clone();
        let layout = self.shared.layout.clone();
        let first = put_under_lease(&sign_in, &client, &members, &layout, &key, about, ttl).await?;
        let current = Arc::new(AtomicI64::new(first));
        let keeper = {
            let (client, members, sign_in, about, current) = (
                client.clone(),
                members.clone(),
                sign_in.clone(),
                about.to_string(),
                current.clone(),
            );
            self.bridge.handle().spawn(async move {
                let mut id = first;
                loop {
                    let (lost_tx, _lost) = watch::channel(false);
                    renew(client.clone(), id, Duration::from_secs(ttl as u64), lost_tx).await;
                    tracing::warn!("this server's presence lease was lost; announcing it again");
                    loop {
                        let put = put_under_lease(
                            &sign_in, &client, &members, &layout, &key, &about, ttl,
                        );
                        match put.await {
                            Ok(new) => {
                                id = new;
                                current.store(new, Ordering::Relaxed);
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "could not announce this server");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                }
            })
        };
        Ok(Presence {
            lease: current,
            client,
            members,
            sign_in,
            keeper,
        })
    }

    /// The servers announced now, by name, with where each is reached.
    pub async fn servers(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let prefix = self.servers_prefix();
        let client = &self.shared.client;
        let answer = self
            .shared
            .sign_in
            .retried(&self.shared.members, "listing the servers", || {
                let (mut client, prefix) = (client.clone(), prefix.clone());
                async move {
                    client
                        .get(prefix, Some(GetOptions::new().with_prefix()))
                        .await
                }
            })
            .await?;
        Ok(answer
            .kvs()
            .iter()
            .map(|kv| {
                let name = String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned();
                (name, String::from_utf8_lossy(kv.value()).into_owned())
            })
            .collect())
    }
}

/// Grants a lease of `ttl` seconds and puts `key` under it, if the store's marker still says
/// what `layout` read when this server opened the store: a store moved out (`troupe migrate
/// --from-etcd`) meanwhile is not served, and the move, which finds no server announced,
/// cannot miss this one. Returns the lease.
async fn put_under_lease(
    sign_in: &SignIn,
    client: &etcd_client::Client,
    members: &str,
    layout: &Layout,
    key: &[u8],
    value: &str,
    ttl: i64,
) -> Result<i64, StoreError> {
    let lease = sign_in
        .retried(members, "granting a lease", || {
            let mut client = client.clone();
            async move { client.lease_grant(ttl, None).await }
        })
        .await?
        .id();
    let announce = etcd_client::Txn::new()
        .when([Compare::value(
            layout.marker(),
            CompareOp::Equal,
            layout.marker_value().encode(),
        )])
        .and_then([TxnOp::put(
            key.to_vec(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let answer = sign_in
        .retried(members, "announcing this server", || {
            let (mut client, announce) = (client.clone(), announce.clone());
            async move { client.txn(announce).await }
        })
        .await?;
    if !answer.succeeded() {
        return Err(StoreError::Engine(format!(
            "etcd at {members}: the store's marker changed since this server opened it: it \
             was moved out (`troupe migrate --from-etcd`), or is being moved; not serving it"
        )));
    }
    Ok(lease)
}
