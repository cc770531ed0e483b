//! Which of the cluster's members the store's client sends calls to.
//!
//! The etcd client spreads calls over the members the store URL names. Its channel keeps
//! choosing a member that no longer takes connections (a reconnecting endpoint reports itself
//! ready and fails the call instead), and, as the least busy, prefers it: with one member of
//! three dead, most calls would fail. So [`Members`] takes a member that refuses a TCP
//! connection out of the client's set and puts it back once it takes one again: checked
//! every [`CHECK_EVERY`], and at once when a call fails to connect; such a call was never
//! sent, so it is made again ([`Members::unsent`]). The last member left is never taken
//! out: with every member down, calls fail saying so.
//!
//! A member that takes connections but has no leader (an election under way, a majority
//! down, a member cut off from the others) refuses every call at once, before proposing
//! anything, since the client asks for a leader with each ([`Members::leaderless`]): such a
//! call is made again until there is one, for up to [`LEADER_WAIT`], from whichever member
//! the client picks. A member that answers nothing at all is left by the client's keep-alive.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;

use crate::store::EtcdUrl;

/// How often every member is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a member may take to accept a connection before it counts as down.
const CONNECT_WITHIN: Duration = Duration::from_millis(500);
/// Calls that failed to connect are made again up to this many times.
pub(super) const RESENDS: usize = 3;
/// How long a call refused for want of a leader is made again: an election takes a second or
/// two; a majority down, as long as it takes one member to come back.
pub(super) const LEADER_WAIT: Duration = Duration::from_secs(10);
/// The first pause before such a call is made again; it doubles up to [`MAX_LEADER_PAUSE`].
pub(super) const LEADER_PAUSE: Duration = Duration::from_millis(50);
const MAX_LEADER_PAUSE: Duration = Duration::from_millis(500);

/// The members the client calls, and those taken out.
pub struct Members {
    client: Client,
    /// Each member's endpoint as the client knows it (`http://HOST:PORT`) and its address.
    endpoints: Vec<(String, String)>,
    /// The members taken out, by index; changed by one check at a time.
    out: tokio::sync::Mutex<(BTreeSet<usize>, Instant)>,
}

impl Members {
    /// The members of `url`, all in `client`'s set.
    pub(super) fn new(client: Client, url: &EtcdUrl) -> Arc<Self> {
        let endpoints = url
            .endpoints
            .iter()
            .map(|e| {
                let address = e
                    .split_once("://")
                    .map_or(e.as_str(), |(_, rest)| rest)
                    .trim_end_matches('/')
                    .to_string();
                (e.clone(), address)
            })
            .collect();
        Arc::new(Self {
            client,
            endpoints,
            out: tokio::sync::Mutex::new((BTreeSet::new(), Instant::now())),
        })
    }

    /// Whether there is more than one member (a call one of them cannot take may go to
    /// another).
    pub(super) fn several(&self) -> bool {
        self.endpoints.len() > 1
    }

    /// Checks every member now, unless a check began after `since`, and takes out or puts
    /// back those that changed. A store with one member does nothing.
    pub(super) async fn check(&self, since: Instant) {
        if !self.several() {
            return;
        }
        let mut state = self.out.lock().await;
        if state.1 > since {
            return;
        }
        state.1 = Instant::now();
        let up = self.probe().await;
        let down: BTreeSet<usize> = (0..up.len()).filter(|&i| !up[i]).collect();
        let out = &mut state.0;
        for i in 0..self.endpoints.len() {
            let endpoint = &self.endpoints[i].0;
            let keep_one = out.len() + 1 >= self.endpoints.len();
            if down.contains(&i) && !out.contains(&i) && !keep_one {
                if let Err(e) = self.client.remove_endpoint(endpoint).await {
                    tracing::warn!(error = %e, endpoint, "etcd store: could not stop calling a member");
                    continue;
                }
                out.insert(i);
                tracing::warn!(
                    endpoint,
                    "etcd store: a member does not take connections; calling the others"
                );
            } else if !down.contains(&i) && out.contains(&i) {
                if let Err(e) = self.client.add_endpoint(endpoint).await {
                    tracing::warn!(error = %e, endpoint, "etcd store: could not call a member again");
                    continue;
                }
                out.remove(&i);
                tracing::info!(endpoint, "etcd store: a member takes connections again");
            }
        }
    }

    /// Checks the members every [`CHECK_EVERY`] on `runtime` for as long as they are used.
    pub(super) fn keep_checking(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        if !self.several() {
            return;
        }
        let members = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                let Some(members) = members.upgrade() else {
                    return;
                };
                members.check(Instant::now()).await;
            }
        });
    }

    /// Each member's endpoint, and whether it takes a connection now (checked at once, every
    /// member at the same time: at most [`CONNECT_WITHIN`]).
    pub(super) async fn reachable(&self) -> Vec<(String, bool)> {
        let up = self.probe().await;
        self.endpoints
            .iter()
            .map(|(endpoint, _)| endpoint.clone())
            .zip(up)
            .collect()
    }

    /// Whether each member takes a connection now, in the order of `endpoints`.
    async fn probe(&self) -> Vec<bool> {
        let probes = self.endpoints.iter().map(|(_, address)| up(address));
        futures::future::join_all(probes).await
    }

    /// Whether `error` says the call never reached a member (it could not connect): a call
    /// safe to make again, once the members are checked.
    pub(super) fn unsent(error: &etcd_client::Error) -> bool {
        let text = super::bridge::describe(error);
        [
            "tcp connect error",
            "Connection refused",
            "error trying to connect",
        ]
        .iter()
        .any(|said| text.contains(said))
    }
}

impl Members {
    /// Whether etcd refused a call for want of a leader, before proposing it: the call
    /// changed nothing and may be made again.
    pub(super) fn leaderless(error: &etcd_client::Error) -> bool {
        let text = super::bridge::describe(error);
        ["etcdserver: no leader", "raft proposal dropped"]
            .iter()
            .any(|said| text.contains(said))
    }
}

/// If `error` refused a call for want of a leader and the first of its attempts began less
/// than [`LEADER_WAIT`] ago at `first`, waits `pause` (doubled for the next) and returns
/// true: the call may be made again.
pub(super) async fn wait_for_leader(
    error: &etcd_client::Error,
    first: Instant,
    pause: &mut Duration,
) -> bool {
    if !Members::leaderless(error) || first.elapsed() >= LEADER_WAIT {
        return false;
    }
    tracing::debug!(error = %error, "etcd store: etcd has no leader; waiting for one");
    tokio::time::sleep(*pause).await;
    *pause = (*pause * 2).min(MAX_LEADER_PAUSE);
    true
}

/// Whether `address` (`HOST:PORT`) accepts a TCP connection within [`CONNECT_WITHIN`].
async fn up(address: &str) -> bool {
    matches!(
        tokio::time::timeout(CONNECT_WITHIN, tokio::net::TcpStream::connect(address)).await,
        Ok(Ok(_))
    )
}
