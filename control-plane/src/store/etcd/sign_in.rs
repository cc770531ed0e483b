//! Signing in to etcd again when it calls the store's token old.
//!
//! etcd gives a user a token when it signs in. Its default (simple) tokens stay good until
//! they expire, and the etcd client signs in again for an expired one by itself. A JWT token
//! (`--auth-token jwt,…`) also carries the revision of etcd's users and roles it was given
//! at, and after any change to them (a user added anywhere on the cluster, a role granted)
//! etcd refuses every older one as "revision of auth store is old", which the client does
//! not sign in again for. [`SignIn`] does: a call refused so signs in again, once for all
//! the calls refused at the same time (etcd hashes the password for each sign-in, a cost
//! worth not multiplying), and is made again once ([`SignIn::retried`]); a loop that makes
//! its call again anyway (the watch, a renewal) only signs in ([`SignIn::after`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use etcd_client::Client;

use super::bridge::{failed, within};
use super::members::{LEADER_PAUSE, Members, RESENDS, wait_for_leader};
use crate::store::StoreError;

/// What etcd says of a token given before its users or roles last changed.
const OLD_TOKEN: &str = "revision of auth store is old";

/// The store's way to sign in again; cheap to clone, every clone shares the last sign-in.
/// It also carries the store's [`Members`]: a call that could not connect to the member it
/// was sent to is made again once the members are checked.
#[derive(Clone)]
pub struct SignIn {
    client: Client,
    /// Whether the store signs in at all (the URL names a user).
    user: bool,
    /// When the store last signed in again.
    last: Arc<tokio::sync::Mutex<Instant>>,
    members: Arc<Members>,
}

impl SignIn {
    pub(super) fn new(client: Client, user: bool, members: Arc<Members>) -> Self {
        Self {
            client,
            user,
            last: Arc::new(tokio::sync::Mutex::new(Instant::now())),
            members,
        }
    }

    /// Each member's endpoint, and whether it serves now.
    pub(super) async fn reachable(&self) -> Vec<(String, bool)> {
        self.members.reachable().await
    }

    /// A receiver that changes each time a member is taken out of the client's set.
    pub(super) fn removals(&self) -> tokio::sync::watch::Receiver<u64> {
        self.members.removals()
    }

    /// If a call made at `since` could not connect, checks the members (taking out the one
    /// that is down); returns whether the call may be made again.
    pub(super) async fn unsent(&self, error: &etcd_client::Error, since: Instant) -> bool {
        if !Members::unsent(error) {
            return false;
        }
        self.members.check(since).await;
        true
    }

    /// If etcd refused a call made at `since` for an old token, signs in again unless that
    /// was done after `since` already; returns whether the call may now be made again.
    /// A call that could not connect also checks the members, and may be made again.
    pub async fn after(&self, error: &etcd_client::Error, since: Instant) -> bool {
        if self.unsent(error, since).await {
            return true;
        }
        error.to_string().contains(OLD_TOKEN) && self.again(since).await
    }

    /// If etcd cancelled a watch made at `since` for want of permission (what it says of a
    /// watch made with an old token), signs in again unless that was done after `since`
    /// already; returns whether the watch may now be made again.
    pub async fn after_cancel(&self, reason: &str, since: Instant) -> bool {
        (reason.contains("permission denied") || reason.contains(OLD_TOKEN))
            && self.again(since).await
    }

    /// Signs in again unless that was done after `since`; returns whether the store holds a
    /// token from after `since`.
    async fn again(&self, since: Instant) -> bool {
        if !self.user {
            return false;
        }
        let mut last = self.last.lock().await;
        if *last > since {
            return true;
        }
        match self.client.refresh_token().await {
            Ok(()) => {
                *last = Instant::now();
                tracing::info!("etcd store: etcd's users or roles changed; signed in again");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "etcd store: signing in to etcd again failed");
                false
            }
        }
    }

    /// Makes the call `make` makes within a call's time limit; again (up to [`RESENDS`]
    /// times) if it could not connect, once the members are checked; again while etcd
    /// refuses it for want of a leader, for a while ([`wait_for_leader`]); and once more if
    /// etcd refused it for an old token and signing in again worked. A failure names the cluster
    /// at `members` and `what`.
    pub async fn retried<T, F>(
        &self,
        members: &str,
        what: &str,
        make: impl Fn() -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let (first, mut pause, mut resends) = (Instant::now(), LEADER_PAUSE, 0);
        loop {
            let since = Instant::now();
            match within(members, what, make()).await? {
                Ok(answer) => return Ok(answer),
                Err(e) if wait_for_leader(&e, first, &mut pause).await => {}
                Err(e) if resends < RESENDS && self.unsent(&e, since).await => resends += 1,
                Err(e) if self.after(&e, since).await => {
                    return within(members, what, make())
                        .await?
                        .map_err(|e| failed(members, what, &e));
                }
                Err(e) => return Err(failed(members, what, &e)),
            }
        }
    }
}
