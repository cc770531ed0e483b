//! The log store: each line once, in order, durable across a new store on the same
//! directory, bounded per run, gone with the run.

use std::sync::Arc;

use troupe_common::pb::v1alpha1 as pb;

use super::logs::{Cursor, LogStore};

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

async fn read_all(store: &Arc<LogStore>, run: &str, attempt: u32) -> Vec<pb::LogLine> {
    let mut cursor = Cursor::default();
    let mut all = Vec::new();
    loop {
        let (lines, next) = store.read(run, attempt, cursor).await.expect("read");
        if lines.is_empty() {
            return all;
        }
        all.extend(lines);
        cursor = next;
    }
}

fn seqs(lines: &[pb::LogLine]) -> Vec<u64> {
    lines.iter().map(|l| l.seq).collect()
}

#[tokio::test]
async fn lines_sent_again_are_stored_once_and_a_gap_stops_the_batch() {
    for dir in [None, Some(tempfile::tempdir().expect("tempdir"))] {
        let store = Arc::new(LogStore::new(
            dir.as_ref().map(|d| d.path().into()),
            1 << 20,
        ));
        assert_eq!(store.append("acme/r1", 1, lines(1, 3)).await.unwrap(), 3);
        // A reconnect sends 2..5 again: 2 and 3 are not stored twice.
        assert_eq!(store.append("acme/r1", 1, lines(2, 5)).await.unwrap(), 5);
        // 7 without 6: nothing past the gap.
        assert_eq!(store.append("acme/r1", 1, lines(7, 8)).await.unwrap(), 5);
        assert_eq!(
            seqs(&read_all(&store, "acme/r1", 1).await),
            vec![1, 2, 3, 4, 5]
        );
        // Attempts are apart.
        assert_eq!(store.append("acme/r1", 2, lines(1, 1)).await.unwrap(), 1);
        assert_eq!(seqs(&read_all(&store, "acme/r1", 2).await), vec![1]);
        assert_eq!(store.stored("acme/r1", 1).await.unwrap(), 5);
    }
}

#[tokio::test]
async fn a_new_store_on_the_same_directory_knows_what_is_stored_and_cuts_a_torn_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Arc::new(LogStore::new(Some(dir.path().into()), 1 << 20));
        store.append("acme/r1", 1, lines(1, 4)).await.unwrap();
    }
    // A crash in the middle of an append leaves half a line.
    let file = dir.path().join("acme/r1/1.jsonl");
    let mut text = std::fs::read(&file).unwrap();
    text.extend_from_slice(b"{\"seq\":5,\"te");
    std::fs::write(&file, text).unwrap();

    let store = Arc::new(LogStore::new(Some(dir.path().into()), 1 << 20));
    assert_eq!(store.stored("acme/r1", 1).await.unwrap(), 4);
    assert_eq!(store.append("acme/r1", 1, lines(3, 6)).await.unwrap(), 6);
    let read = read_all(&store, "acme/r1", 1).await;
    assert_eq!(seqs(&read), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(read[5].text, "line 6");
    assert_eq!(store.runs().await.unwrap(), vec!["acme/r1".to_string()]);
}

#[tokio::test]
async fn a_run_keeps_at_most_its_bound_and_says_so_once() {
    let store = Arc::new(LogStore::new(None, 400));
    let last = store.append("acme/r1", 1, lines(1, 50)).await.unwrap();
    assert_eq!(last, 50, "lines past the bound count as stored");
    let read = read_all(&store, "acme/r1", 1).await;
    assert!(read.len() < 10, "{} lines kept", read.len());
    let markers: Vec<_> = read
        .iter()
        .filter(|l| l.text.starts_with("[troupe]"))
        .collect();
    assert_eq!(markers.len(), 1, "{read:?}");
    assert!(
        markers[0].text.contains("over 400 bytes"),
        "{}",
        markers[0].text
    );
    store.append("acme/r1", 1, lines(51, 60)).await.unwrap();
    assert_eq!(read_all(&store, "acme/r1", 1).await.len(), read.len());
}

#[tokio::test]
async fn removing_a_run_drops_its_lines_and_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(LogStore::new(Some(dir.path().into()), 1 << 20));
    store.append("acme/r1", 1, lines(1, 2)).await.unwrap();
    store.append("acme/r2", 1, lines(1, 2)).await.unwrap();
    store.remove("acme/r1").await.unwrap();
    assert!(!dir.path().join("acme/r1").exists());
    assert!(read_all(&store, "acme/r1", 1).await.is_empty());
    assert_eq!(seqs(&read_all(&store, "acme/r2", 1).await), vec![1, 2]);
}

#[tokio::test]
async fn a_follower_is_woken_by_new_lines() {
    let store = Arc::new(LogStore::new(None, 1 << 20));
    let mut changes = store.subscribe("acme/r1");
    let writer = store.clone();
    tokio::spawn(async move { writer.append("acme/r1", 1, lines(1, 1)).await });
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.changed())
        .await
        .expect("woken")
        .expect("open");
    assert_eq!(seqs(&read_all(&store, "acme/r1", 1).await), vec![1]);
}

#[tokio::test]
async fn a_run_over_its_bound_goes_on_counting_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Arc::new(LogStore::new(Some(dir.path().into()), 400));
        assert_eq!(store.append("acme/r1", 1, lines(1, 50)).await.unwrap(), 50);
    }
    // The lines counted past the bound are not on disk: the new store cannot know them, and
    // must not wait for them as a gap.
    let store = Arc::new(LogStore::new(Some(dir.path().into()), 400));
    let kept = read_all(&store, "acme/r1", 1).await.len();
    assert_eq!(store.append("acme/r1", 1, lines(51, 60)).await.unwrap(), 60);
    assert_eq!(
        read_all(&store, "acme/r1", 1).await.len(),
        kept,
        "nothing more is kept"
    );
}

#[tokio::test]
async fn an_append_racing_a_removal_writes_nothing_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(LogStore::new(Some(dir.path().into()), 1 << 20));
    store.append("acme/r1", 1, lines(1, 2)).await.unwrap();
    store.remove("acme/r1").await.unwrap();
    // A new run of the same name starts from nothing.
    assert_eq!(store.stored("acme/r1", 1).await.unwrap(), 0);
    store.append("acme/r1", 1, lines(1, 1)).await.unwrap();
    assert_eq!(seqs(&read_all(&store, "acme/r1", 1).await), vec![1]);
}
