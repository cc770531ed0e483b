//! Build logs on a real etcd, as two servers sharing one store see them: lines stored
//! through one are read and followed through the other, in order and once; a batch sent
//! again, or overlapping what is stored, stores only what is new; the bound holds over both;
//! a batch bigger than etcd takes in one request is split; a deleted run's lines are gone.

use std::sync::Arc;
use std::time::Duration;

use troupe_common::pb::v1alpha1 as pb;

use super::super::{Cursor, LogStore};
use super::EtcdLogs;
use crate::shared_state::EtcdState;
use crate::store::{EtcdStore, LocalEtcd, StoreLocation};

fn mk_etcd() -> LocalEtcd {
    LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"))
}

/// A server's log store on `url` (an `etcd://` store URL).
fn mk_logs(url: &str, max_bytes: u64) -> Arc<LogStore> {
    let StoreLocation::Etcd(url) = url.parse::<StoreLocation>().unwrap() else {
        panic!("not an etcd URL")
    };
    let state = EtcdState::new(Arc::new(EtcdStore::open(&url).unwrap()));
    Arc::new(LogStore::with(Arc::new(EtcdLogs::new(state, max_bytes))))
}

fn lines(from: u64, to: u64) -> Vec<pb::BuildLogLine> {
    (from..=to)
        .map(|seq| pb::BuildLogLine {
            seq,
            step: "build".into(),
            stream: "stdout".into(),
            text: format!("line {seq}"),
            time: None,
        })
        .collect()
}

/// Reads on from `cursor` until nothing more comes; returns the lines and where it stopped.
async fn read_on(
    store: &LogStore,
    run: &str,
    attempt: u32,
    mut cursor: Cursor,
) -> (Vec<pb::LogLine>, Cursor) {
    let mut all = Vec::new();
    loop {
        let (lines, next) = store.read(run, attempt, cursor).await.expect("read");
        if lines.is_empty() {
            return (all, cursor);
        }
        all.extend(lines);
        cursor = next;
    }
}

async fn read_all(store: &LogStore, run: &str, attempt: u32) -> Vec<pb::LogLine> {
    read_on(store, run, attempt, Cursor::default()).await.0
}

fn seqs(lines: &[pb::LogLine]) -> Vec<u64> {
    lines.iter().map(|l| l.seq).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lines_stored_through_one_server_are_read_and_followed_through_another_once() {
    let etcd = mk_etcd();
    let (a, b) = (
        mk_logs(&etcd.url("ci"), 1 << 20),
        mk_logs(&etcd.url("ci"), 1 << 20),
    );
    assert_eq!(a.append("acme/r1", 1, lines(1, 3)).await.unwrap(), 3);
    let mut changes = b.subscribe("acme/r1");
    let (read, mut cursor) = read_on(&b, "acme/r1", 1, Cursor::default()).await;
    assert_eq!(seqs(&read), vec![1, 2, 3]);
    assert_eq!(read[2].text, "line 3");

    // B follows: every batch A stores wakes it, and reading on gives each line once.
    let mut followed = Vec::new();
    for (from, to) in [(4, 6), (7, 7), (8, 12)] {
        a.append("acme/r1", 1, lines(from, to)).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while followed.last() != Some(&to) {
            tokio::time::timeout_at(deadline, changes.changed())
                .await
                .unwrap_or_else(|_| panic!("lines {from}..{to} stored through A did not wake B"))
                .expect("open");
            let (more, next) = read_on(&b, "acme/r1", 1, cursor).await;
            followed.extend(seqs(&more));
            cursor = next;
        }
    }
    assert_eq!(followed, (4..=12).collect::<Vec<_>>());
    // Attempts are apart; the other prefix is another cluster's.
    assert!(read_all(&b, "acme/r1", 2).await.is_empty());
    let elsewhere = mk_logs(&etcd.url("other"), 1 << 20);
    assert!(read_all(&elsewhere, "acme/r1", 1).await.is_empty());
    assert_eq!(b.stored("acme/r1", 1).await.unwrap(), 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resent_or_overlapping_batch_through_either_server_stores_only_new_lines() {
    let etcd = mk_etcd();
    let (a, b) = (
        mk_logs(&etcd.url("ci"), 1 << 20),
        mk_logs(&etcd.url("ci"), 1 << 20),
    );
    assert_eq!(a.append("acme/r1", 1, lines(1, 3)).await.unwrap(), 3);
    // The agent moved to B and sends 2..5 again: 2 and 3 are not stored twice.
    assert_eq!(b.append("acme/r1", 1, lines(2, 5)).await.unwrap(), 5);
    // A, whose idea of the log is old, gets the whole batch again, and 6.
    assert_eq!(a.append("acme/r1", 1, lines(1, 6)).await.unwrap(), 6);
    assert_eq!(b.append("acme/r1", 1, lines(1, 6)).await.unwrap(), 6);
    // 8 without 7: nothing past the gap.
    assert_eq!(b.append("acme/r1", 1, lines(8, 9)).await.unwrap(), 6);
    for store in [&a, &b] {
        assert_eq!(
            seqs(&read_all(store, "acme/r1", 1).await),
            vec![1, 2, 3, 4, 5, 6]
        );
        assert_eq!(store.stored("acme/r1", 1).await.unwrap(), 6);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bound_of_a_run_holds_over_both_servers() {
    let etcd = mk_etcd();
    let (a, b) = (mk_logs(&etcd.url("ci"), 400), mk_logs(&etcd.url("ci"), 400));
    a.append("acme/r1", 1, lines(1, 3)).await.unwrap();
    // A retry of the run on an agent of B: the bound counts both attempts.
    assert_eq!(b.append("acme/r1", 2, lines(1, 40)).await.unwrap(), 40);
    assert_eq!(a.append("acme/r1", 1, lines(4, 40)).await.unwrap(), 40);
    let (one, two) = (
        read_all(&a, "acme/r1", 1).await,
        read_all(&a, "acme/r1", 2).await,
    );
    let bytes: usize = one
        .iter()
        .chain(&two)
        .filter(|l| !l.text.starts_with("[troupe]"))
        .map(|l| serde_json::to_vec(l).unwrap().len() + 1)
        .sum();
    assert!(bytes <= 400, "{bytes} bytes kept");
    let markers = one
        .iter()
        .chain(&two)
        .filter(|l| l.text.starts_with("[troupe]"))
        .count();
    assert_eq!(markers, 1, "{one:?} {two:?}");
    assert_eq!(
        seqs(&one),
        vec![1, 2, 3],
        "attempt 1 got nothing past the bound"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_bigger_than_one_etcd_request_is_split_and_read_whole() {
    let etcd = mk_etcd();
    let a = mk_logs(&etcd.url("ci"), 16 << 20);
    // About 3 MiB: twice what this etcd takes in one request (1.5 MiB).
    let mut big = lines(1, 3000);
    for line in &mut big {
        line.text = format!("{:04} {}", line.seq, "x".repeat(1000));
    }
    assert_eq!(a.append("acme/r1", 1, big).await.unwrap(), 3000);
    let b = mk_logs(&etcd.url("ci"), 16 << 20);
    let read = read_all(&b, "acme/r1", 1).await;
    assert_eq!(seqs(&read), (1..=3000).collect::<Vec<_>>());
    assert!(read[2999].text.starts_with("3000 xxx"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_deleted_through_one_server_has_no_lines_through_the_other() {
    let etcd = mk_etcd();
    let (a, b) = (
        mk_logs(&etcd.url("ci"), 1 << 20),
        mk_logs(&etcd.url("ci"), 1 << 20),
    );
    a.append("acme/r1", 1, lines(1, 2)).await.unwrap();
    a.append("acme/r1", 2, lines(1, 2)).await.unwrap();
    a.append("acme/r2", 1, lines(1, 2)).await.unwrap();
    let mut runs = b.runs().await.unwrap();
    runs.sort();
    assert_eq!(runs, vec!["acme/r1".to_string(), "acme/r2".to_string()]);
    assert_eq!(b.stored("acme/r1", 1).await.unwrap(), 2);

    b.remove("acme/r1").await.unwrap();
    assert!(read_all(&a, "acme/r1", 1).await.is_empty());
    assert!(read_all(&a, "acme/r1", 2).await.is_empty());
    assert_eq!(a.stored("acme/r1", 1).await.unwrap(), 0);
    assert_eq!(a.runs().await.unwrap(), vec!["acme/r2".to_string()]);
    assert_eq!(seqs(&read_all(&a, "acme/r2", 1).await), vec![1, 2]);
    // A run made again under the name starts from nothing, through the server that knew the
    // old one too.
    assert_eq!(a.append("acme/r1", 1, lines(1, 1)).await.unwrap(), 1);
    assert_eq!(seqs(&read_all(&b, "acme/r1", 1).await), vec![1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_kept_in_a_data_directory_are_copied_into_etcd_whole() {
    let etcd = mk_etcd();
    let dir = tempfile::tempdir().unwrap();
    let files = LogStore::new(Some(dir.path().join(super::super::DIR)), 1 << 20);
    files.append("acme/r1", 1, lines(1, 5)).await.unwrap();
    files.append("acme/r1", 2, lines(1, 2)).await.unwrap();
    files.append("shop/r2", 1, lines(1, 3)).await.unwrap();

    let StoreLocation::Etcd(url) = etcd.url("moved").parse::<StoreLocation>().unwrap() else {
        panic!("not an etcd URL")
    };
    let state = EtcdState::new(Arc::new(EtcdStore::open(&url).unwrap()));
    let path = dir.path().to_path_buf();
    let runs =
        tokio::task::spawn_blocking(move || super::super::copy_to_etcd(&path, &state, 1 << 20))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(runs, 2);
    let moved = mk_logs(&etcd.url("moved"), 1 << 20);
    for (run, attempt) in [("acme/r1", 1), ("acme/r1", 2), ("shop/r2", 1)] {
        let (want, got) = (
            read_all(&files, run, attempt).await,
            read_all(&moved, run, attempt).await,
        );
        assert_eq!(got, want, "{run} attempt {attempt}");
        assert!(!got.is_empty());
    }
}
