//! The etcd store as an etcd user, on a real etcd with authentication enabled: a user whose
//! role may read and write the store's prefix commits, reads, watches and leads; a wrong
//! password, no user, or a user without rights on the prefix fail the open, naming the user
//! and what to fix, and never the password; a store whose token etcd forgot, or (with JWT
//! tokens) calls old after its users changed, signs in again.

use std::time::Duration;

use etcd_client::Permission;
use troupe_common::{Kind, ObjectKey};

use super::*;
use crate::store::{EtcdUser, StoreLocation};

const PASSWORD: &str = "s3cret-pw";

/// An etcd with authentication on: user `root`, and user `troupe`, whose role may read and
/// write `/auth/`.
async fn mk_auth_etcd() -> LocalEtcd {
    with_users(LocalEtcd::start()).await
}

/// `etcd` with the users of [`mk_auth_etcd`] and authentication on.
async fn with_users(etcd: anyhow::Result<LocalEtcd>) -> LocalEtcd {
    let etcd = etcd.unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = Client::connect([etcd.endpoint()], None).await.unwrap();
    client.role_add("root").await.unwrap();
    client.user_add("root", "root-pw", None).await.unwrap();
    client.user_grant_role("root", "root").await.unwrap();
    client.role_add("troupe").await.unwrap();
    let prefix = Permission::read_write("/auth/").with_prefix();
    client
        .role_grant_permission("troupe", prefix)
        .await
        .unwrap();
    client.user_add("troupe", PASSWORD, None).await.unwrap();
    client.user_grant_role("troupe", "troupe").await.unwrap();
    client.auth_enable().await.unwrap();
    etcd
}

/// The store URL of `prefix` on `etcd` as `user`, with a password file holding `password`
/// (and a newline, as `echo` writes it).
fn mk_url(
    etcd: &LocalEtcd,
    prefix: &str,
    user: &str,
    password: &str,
) -> (EtcdUrl, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd-password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let text = format!(
        "{}?user={user}&password-file={}",
        etcd.url(prefix),
        file.display()
    );
    match text.parse::<StoreLocation>().unwrap() {
        StoreLocation::Etcd(url) => (url, dir),
        other => panic!("{other:?}"),
    }
}

/// A client of `etcd`'s root user, as an operator changing its users would use.
async fn mk_root(etcd: &LocalEtcd) -> Client {
    let root = etcd_client::ConnectOptions::new().with_user("root", "root-pw");
    Client::connect([etcd.endpoint()], Some(root))
        .await
        .unwrap()
}

/// A store on `url` that has committed `v1` under the key it returns, with a subscription
/// opened before that commit.
fn open_with_a_commit(url: &EtcdUrl) -> (EtcdStore, broadcast::Receiver<Arc<[Event]>>, ObjectKey) {
    let store = EtcdStore::open(url).unwrap();
    let commits = store.subscribe();
    let key = ObjectKey::new(Kind::Component, "acme", "api");
    store
        .commit(Txn::default().put(key.clone(), b"v1".to_vec()))
        .unwrap();
    (store, commits, key)
}

/// Commits `v2` under `key` (`when`, for the message), reads it back, and asserts that the
/// store's watch delivered it last.
fn commit_and_hear(
    store: &EtcdStore,
    commits: &mut broadcast::Receiver<Arc<[Event]>>,
    key: &ObjectKey,
    when: &str,
) {
    let revision = store
        .commit(Txn::default().put(key.clone(), b"v2".to_vec()))
        .unwrap_or_else(|e| panic!("a commit {when}: {e}"));
    assert_eq!(store.get(key).unwrap().unwrap().value, b"v2");
    let seen: Vec<Revision> = std::iter::from_fn(|| commits.try_recv().ok())
        .map(|commit| commit[0].revision)
        .collect();
    assert_eq!(seen.last(), Some(&revision), "{seen:?}");
}

fn open_error(url: &EtcdUrl) -> String {
    match EtcdStore::open(url) {
        Ok(_) => panic!("{url} opened"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_as_an_etcd_user_commits_watches_and_leads() {
    let etcd = mk_auth_etcd().await;
    let (url, _dir) = mk_url(&etcd, "auth", "troupe", PASSWORD);
    let store = EtcdStore::open(&url).unwrap();
    let mut commits = store.subscribe();
    let key = ObjectKey::new(Kind::Component, "acme", "api");
    let revision = store
        .commit(Txn::default().put(key.clone(), b"v1".to_vec()))
        .unwrap();
    assert_eq!(store.get(&key).unwrap().unwrap().value, b"v1");
    let commit = commits
        .try_recv()
        .expect("the commit came through the watch");
    assert_eq!(commit[0].revision, revision);
    // A second store as the same user sees it, and leadership works under the user.
    let other = EtcdStore::open(&url).unwrap();
    assert_eq!(other.get(&key).unwrap().unwrap().value, b"v1");
    let leader = other.campaign("r1", Duration::from_secs(5)).await.unwrap();
    let fenced = Txn::default()
        .put(key.clone(), b"v2".to_vec())
        .fenced(leader.fence().clone());
    other.commit(fenced).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_no_user_or_no_rights_fail_the_open_saying_what_to_fix() {
    let etcd = mk_auth_etcd().await;
    let (wrong, _d1) = mk_url(&etcd, "auth", "troupe", "not-it");
    let message = open_error(&wrong);
    assert!(message.contains("refused user \"troupe\""), "{message}");
    assert!(message.contains("password-file="), "{message}");
    assert!(
        !message.contains("not-it") && !message.contains(PASSWORD),
        "{message}"
    );

    let StoreLocation::Etcd(anonymous) = etcd.url("auth").parse().unwrap() else {
        unreachable!()
    };
    let message = open_error(&anonymous);
    assert!(message.contains("authentication enabled"), "{message}");
    assert!(message.contains("user="), "{message}");

    let (elsewhere, _d2) = mk_url(&etcd, "elsewhere", "troupe", PASSWORD);
    let message = open_error(&elsewhere);
    assert!(
        message.contains("does not let user \"troupe\""),
        "{message}"
    );
    assert!(message.contains("/elsewhere/"), "{message}");

    let (no_file, _d3) = mk_url(&etcd, "auth", "troupe", PASSWORD);
    let missing = EtcdUrl {
        user: Some(EtcdUser {
            name: "troupe".into(),
            password_file: no_file.user.unwrap().password_file.with_extension("gone"),
        }),
        ..no_file
    };
    let message = open_error(&missing);
    assert!(message.contains("password-file="), "{message}");
    assert!(message.contains("cannot be read"), "{message}");
}

/// etcd forgets every token it gave when authentication is turned off and on again (as when an
/// operator's token TTL runs out on an idle server): the store signs in again, once, and its
/// commits, watch and leadership go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_etcd_token_was_forgotten_signs_in_again() {
    let etcd = mk_auth_etcd().await;
    let (url, _dir) = mk_url(&etcd, "auth", "troupe", PASSWORD);
    let (store, mut commits, key) = open_with_a_commit(&url);

    let mut admin = mk_root(&etcd).await;
    admin.auth_disable().await.unwrap();
    let mut anonymous = Client::connect([etcd.endpoint()], None).await.unwrap();
    anonymous.auth_enable().await.unwrap();
    // Authentication is on again: a client without a user is refused.
    let mut stranger = Client::connect([etcd.endpoint()], None).await.unwrap();
    assert!(stranger.get("/auth/", None).await.is_err());

    commit_and_hear(&store, &mut commits, &key, "after etcd forgot the token");
    let leader = store.campaign("r1", Duration::from_secs(5)).await.unwrap();
    let fenced = Txn::default()
        .put(key.clone(), b"v3".to_vec())
        .fenced(leader.fence().clone());
    store.commit(fenced).unwrap();
}

/// With JWT tokens, any change to etcd's users or roles (here another user added, as an
/// operator sharing the cluster might) makes every token given before it old: etcd refuses
/// them ("revision of auth store is old") until the client signs in again. The store does, and
/// its commits, reads of its own state and leadership go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_jwt_token_went_old_signs_in_again() {
    let etcd = with_users(LocalEtcd::start_jwt()).await;
    let (url, _dir) = mk_url(&etcd, "auth", "troupe", PASSWORD);
    let (store, mut commits, key) = open_with_a_commit(&url);

    let mut admin = mk_root(&etcd).await;
    admin.user_add("someone-else", "pw", None).await.unwrap();

    commit_and_hear(&store, &mut commits, &key, "after etcd's users changed");

    admin.user_add("a-third", "pw", None).await.unwrap();
    let state = format!("{}s/probe", String::from_utf8_lossy(store.root()));
    store
        .call("writing the probe", move |mut c| {
            let state = state.clone();
            async move { c.put(state, "x", None).await }
        })
        .unwrap_or_else(|e| panic!("a call after etcd's users changed: {e}"));

    admin.user_add("a-fourth", "pw", None).await.unwrap();
    let leader = store
        .campaign("r1", Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("a campaign after etcd's users changed: {e}"));
    admin.user_add("a-fifth", "pw", None).await.unwrap();
    let fenced = Txn::default()
        .put(key.clone(), b"v3".to_vec())
        .fenced(leader.fence().clone());
    store
        .commit(fenced)
        .unwrap_or_else(|e| panic!("a fenced commit after etcd's users changed: {e}"));
}

/// With JWT tokens, a store whose watch broke (etcd restarted) after etcd's users changed
/// finds its token old when it watches again: it signs in again and follows on, with no
/// commit of its own to make it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_jwt_token_went_old_while_its_watch_was_down_follows_again() {
    let mut etcd = with_users(LocalEtcd::start_jwt()).await;
    let (url, _dir) = mk_url(&etcd, "auth", "troupe", PASSWORD);
    let follower = EtcdStore::open(&url).unwrap();
    let mut admin = mk_root(&etcd).await;
    admin.user_add("someone-else", "pw", None).await.unwrap();
    etcd.restart().unwrap();

    let writer = EtcdStore::open(&url).unwrap();
    let key = ObjectKey::new(Kind::Component, "acme", "api");
    let revision = writer
        .commit(Txn::default().put(key.clone(), b"v1".to_vec()))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while follower.revision() < revision {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower's watch never came back: at {}, the commit at {revision}",
            follower.revision()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(follower.get(&key).unwrap().unwrap().value, b"v1");
}
