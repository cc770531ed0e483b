//! Generations that never go back: a control plane restored from a backup (or one that lost
//! its store) numbers a release's generations from lower values again. The agent applies what
//! it is sent whenever the content differs from what it holds, whatever the number, so an
//! acknowledgement always means the content is applied. And a release whose record the agent
//! lost is still reported, so the control plane never purges it with its objects left behind.

use super::{mk_dir_core, mk_object};
use crate::worker::Upsert;
use troupe_common::policy::Policy;

fn upsert(generation: i64, hash: &str, data: &str) -> Upsert {
    let objects = [mk_object("v1", "ConfigMap", "settings", data)];
    Upsert {
        release: "acme/api".into(),
        generation,
        content_hash: hash.into(),
        manifests: troupe_common::agent::encode_manifests(&objects),
    }
}

#[tokio::test]
async fn content_sent_under_a_lower_generation_is_applied_not_acknowledged_unseen() {
    let (target, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut core = mk_dir_core(target.path(), state.path(), Policy::default());
    let file = target.path().join("acme/api/configmap_shop_settings.yaml");

    core.upsert(upsert(5, "h-five", "five")).await.unwrap();
    assert!(std::fs::read_to_string(&file).unwrap().contains("five"));

    // The control plane went back: generation 3, other content.
    core.upsert(upsert(3, "h-three", "three")).await.unwrap();
    assert!(
        std::fs::read_to_string(&file).unwrap().contains("three"),
        "the older-numbered content was not applied"
    );
    let known = core.known();
    assert_eq!(known[0].1.generation, 3);
    assert_eq!(known[0].1.content_hash, "h-three");

    // The same content under a new number: renumbered, on record, and in the health.
    core.upsert(upsert(4, "h-three", "three")).await.unwrap();
    assert_eq!(core.known()[0].1.generation, 4);
    assert_eq!(core.health["acme/api"].0, 4);
    drop(core);
    let core = mk_dir_core(target.path(), state.path(), Policy::default());
    assert_eq!(core.known()[0].1.generation, 4, "the new number is on disk");
}

#[tokio::test]
async fn a_release_the_state_lost_is_still_reported_and_pruned_on_removal() {
    let (target, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut core = mk_dir_core(target.path(), state.path(), Policy::default());
    core.upsert(upsert(1, "h-one", "one")).await.unwrap();
    drop(core);

    // The agent's record of the release is gone; its objects are not.
    std::fs::remove_file(state.path().join("releases/acme_api.json")).unwrap();
    let mut core = mk_dir_core(target.path(), state.path(), Policy::default());
    let known = core.known();
    assert_eq!(known.len(), 1, "{known:?}");
    assert_eq!(
        (known[0].0.as_str(), known[0].1.generation),
        ("acme/api", 0),
        "reported as pending, so the control plane sends it or a removal"
    );

    // The control plane no longer wants it: the removal prunes what was found.
    core.remove("acme/api", 2).await.unwrap();
    assert!(!target.path().join("acme/api").exists());
    assert!(core.known().is_empty());
}
