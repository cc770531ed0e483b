//! Which of the cluster's members the store's client sends calls to.
//!
//! The etcd client spreads calls over the members the store URL names. Its channel keeps
//! choosing a member that no longer takes connections (a reconnecting endpoint reports itself
//! ready and fails the call instead), and, as the least busy, prefers it: with one member of
//! three dead, most calls would fail. A member that takes connections and answers nothing
//! (stalled on its disk, paused) holds every call sent to it, and the watch, until they time
//! out. So [`Members`] asks each member, through a connection to it alone, for its status
//! within [`CONNECT_WITHIN`]: one that does not answer, or answers without a leader while
//! another has one (cut off from the others), is taken out of the client's set, and put back
//! once it has been as good as the best for [`TRUST_AFTER`] checks in a row (at once if no
//! member left in the set is: a member that stalls now and then stays out); checked every
//! [`CHECK_EVERY`], and at once when a call fails to connect (such a call was never sent, so
//! it is made again: [`Members::unsent`]). Taking a member out also ends the store's watch,
//! which resumes through the others ([`Members::removals`]). The best members are never taken
//! out: with every member down, calls fail saying so.
//!
//! While the cluster has no leader (an election under way, a majority down), the member a
//! call reaches refuses it at once, before proposing anything, since the client asks for a
//! leader with each ([`Members::leaderless`]): such a call is made again until there is one,
//! for up to [`LEADER_WAIT`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use tokio::sync::{OnceCell, watch};

use crate::store::EtcdUrl;

/// How often every member is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a member may take to answer for its status before it counts as down.
const CONNECT_WITHIN: Duration = Duration::from_millis(500);
/// Checks in a row a member taken out must pass before calls go to it again.
const TRUST_AFTER: u32 = 3;
/// Calls that failed to connect are made again up to this many times.
pub(super) const RESENDS: usize = 3;
/// How long a call refused for want of a leader is made again: an election takes a second or
/// two; a majority down, as long as it takes one member to come back.
pub(super) const LEADER_WAIT: Duration = Duration::from_secs(10);
/// The first pause before such a call is made again; it doubles up to [`MAX_LEADER_PAUSE`].
pub(super) const LEADER_PAUSE: Duration = Duration::from_millis(50);
const MAX_LEADER_PAUSE: Duration = Duration::from_millis(500);

/// How a member answered for its status, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Health {
    /// No answer in time: refused, unreachable, or stalled.
    Silent,
    /// It answers, without a leader.
    Leaderless,
    /// It answers, with a leader.
    Serves,
}

/// What the checks found: the members taken out, and how many checks in a row each member
/// has been as good as the best.
#[derive(Debug, Default)]
struct Checked {
    out: BTreeSet<usize>,
    good: Vec<u32>,
}

impl Checked {
    /// What a check that found `health` (by member) changes: the members to take out and
    /// those to put back. Only members worse off than the best are taken out: never all, and
    /// none while every member waits for an election. One taken out comes back after
    /// [`TRUST_AFTER`] checks as good as the best, or at once when no member left in the set
    /// is as good.
    fn decide(&mut self, health: &[Health]) -> (Vec<usize>, Vec<usize>) {
        let best = health.iter().copied().max().unwrap_or(Health::Silent);
        self.good.resize(health.len(), 0);
        for (good, &h) in self.good.iter_mut().zip(health) {
            *good = if h == best { good.saturating_add(1) } else { 0 };
        }
        let is_best = |i: &usize| health[*i] == best;
        let set_has_best = (0..health.len()).any(|i| !self.out.contains(&i) && is_best(&i));
        let take_out = (0..health.len())
            .filter(|i| !is_best(i) && !self.out.contains(i))
            .collect();
        let put_back = self
            .out
            .iter()
            .copied()
            .filter(|i| is_best(i) && (self.good[*i] >= TRUST_AFTER || !set_has_best))
            .collect();
        (take_out, put_back)
    }
}

/// The members the client calls, and those taken out.
pub struct Members {
    client: Client,
    /// Each member's endpoint as the client knows it (`http://HOST:PORT`).
    endpoints: Vec<String>,
    /// How the store connects, for the connections to each member alone.
    options: ConnectOptions,
    /// A client of each member alone, made at its first check that connects.
    alone: Vec<OnceCell<Client>>,
    /// What the checks found, and when the last began; changed by one check at a time.
    checked: tokio::sync::Mutex<(Checked, Instant)>,
    /// Counts the members taken out so far.
    removals: watch::Sender<u64>,
}

impl Members {
    /// The members of `url`, all in `client`'s set.
    pub(super) fn new(client: Client, url: &EtcdUrl, options: ConnectOptions) -> Arc<Self> {
        Arc::new(Self {
            client,
            alone: url.endpoints.iter().map(|_| OnceCell::new()).collect(),
            endpoints: url.endpoints.clone(),
            options,
            checked: tokio::sync::Mutex::new((Checked::default(), Instant::now())),
            removals: watch::channel(0).0,
        })
    }

    /// A receiver that changes each time a member is taken out.
    pub(super) fn removals(&self) -> watch::Receiver<u64> {
        self.removals.subscribe()
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
        let mut state = self.checked.lock().await;
        if state.1 > since {
            return;
        }
        state.1 = Instant::now();
        let health = self.probe().await;
        let (take_out, put_back) = state.0.decide(&health);
        let out = &mut state.0.out;
        for i in take_out {
            let endpoint = &self.endpoints[i];
            if let Err(e) = self.client.remove_endpoint(endpoint).await {
                tracing::warn!(error = %e, endpoint, "etcd store: could not stop calling a member");
                continue;
            }
            out.insert(i);
            self.removals.send_modify(|n| *n += 1);
            tracing::warn!(
                endpoint,
                "etcd store: a member does not answer, or has no leader; calling the others"
            );
        }
        for i in put_back {
            let endpoint = &self.endpoints[i];
            if let Err(e) = self.client.add_endpoint(endpoint).await {
                tracing::warn!(error = %e, endpoint, "etcd store: could not call a member again");
                continue;
            }
            out.remove(&i);
            tracing::info!(endpoint, "etcd store: a member serves again");
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

    /// Each member's endpoint, and whether it serves now (checked at once, every member at
    /// the same time: at most [`CONNECT_WITHIN`]).
    pub(super) async fn reachable(&self) -> Vec<(String, bool)> {
        let health = self.probe().await;
        let serves = health.into_iter().map(|h| h == Health::Serves);
        self.endpoints.iter().cloned().zip(serves).collect()
    }

    /// How each member is now, in the order of `endpoints`.
    async fn probe(&self) -> Vec<Health> {
        let probes = (0..self.endpoints.len()).map(|i| self.health(i));
        futures::future::join_all(probes).await
    }

    /// How member `i` answers for its status, within [`CONNECT_WITHIN`].
    async fn health(&self, i: usize) -> Health {
        let asked = async {
            let client = self.alone[i]
                .get_or_try_init(|| {
                    Client::connect([self.endpoints[i].as_str()], Some(self.options.clone()))
                })
                .await
                .ok()?;
            Some(match client.clone().status().await {
                Ok(status) if status.leader() != 0 => Health::Serves,
                Ok(_) => Health::Leaderless,
                Err(e) if Self::leaderless(&e) => Health::Leaderless,
                Err(_) => return None,
            })
        };
        match tokio::time::timeout(CONNECT_WITHIN, asked).await {
            Ok(Some(health)) => health,
            _ => Health::Silent,
        }
    }

    /// Whether `error` says the call never reached a member (it could not connect): a call
    /// safe to make again, once the members are checked.
    pub(super) fn unsent(error: &etcd_client::Error) -> bool {
        Self::says_unsent(&super::bridge::describe(error))
    }

    /// Whether a failure's message says the call could not connect.
    pub(super) fn says_unsent(text: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::Health::{Leaderless, Serves, Silent};
    use super::*;

    /// The members out after each check of `checks`, one set of healths per check.
    fn outs(checks: &[[Health; 3]]) -> Vec<Vec<usize>> {
        let mut checked = Checked::default();
        checks
            .iter()
            .map(|health| {
                let (take_out, put_back) = checked.decide(health);
                checked.out.extend(take_out);
                for i in put_back {
                    checked.out.remove(&i);
                }
                checked.out.iter().copied().collect()
            })
            .collect()
    }

    #[test]
    fn a_member_comes_back_after_three_good_checks_in_a_row() {
        let checks = [
            [Serves, Silent, Serves],
            [Serves, Serves, Serves],
            [Serves, Serves, Serves],
            [Serves, Serves, Serves],
        ];
        assert_eq!(
            outs(&checks),
            [vec![1], vec![1], vec![1], Vec::<usize>::new()]
        );
    }

    #[test]
    fn a_member_that_stalls_now_and_then_stays_out() {
        let checks = [
            [Serves, Silent, Serves],
            [Serves, Serves, Serves],
            [Serves, Serves, Serves],
            [Serves, Leaderless, Serves],
            [Serves, Serves, Serves],
            [Serves, Serves, Serves],
            [Serves, Silent, Serves],
        ];
        assert_eq!(outs(&checks), vec![vec![1]; 7]);
    }

    #[test]
    fn a_member_out_comes_back_at_once_when_no_member_left_is_as_good() {
        let checks = [[Serves, Silent, Serves], [Silent, Serves, Silent]];
        assert_eq!(outs(&checks), [vec![1], vec![0, 2]]);
    }

    #[test]
    fn no_member_is_taken_out_while_all_wait_for_an_election() {
        let checks = [[Leaderless; 3], [Silent; 3]];
        assert_eq!(outs(&checks), [Vec::<usize>::new(), vec![]]);
    }
}
