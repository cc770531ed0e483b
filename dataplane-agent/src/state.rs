//! The agent's desired state on disk: for each release it holds, the last generation it
//! acknowledged, that generation's objects and which of them it did not apply (or, ahead of a
//! first apply, a pending entry), one file per release under
//! `STATE_DIR/releases/`. A file is written durably ([`durable`]) before the ack goes out, so what the control plane was told is applied survives a
//! crash; on restart the agent reports it in `Hello.known` and keeps applying it while the
//! control plane is away.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use troupe_common::durable;
use troupe_common::pb::v1alpha1::ReleaseResource;

/// One release as last acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Held {
    /// Release id, `NAMESPACE/NAME`.
    pub release: String,
    /// Generation acknowledged.
    pub generation: i64,
    /// Its content hash.
    pub content_hash: String,
    /// Its objects.
    pub resources: Vec<ReleaseResource>,
    /// The ids of its objects the agent did not apply (another release owns them, or the
    /// agent's policy refuses them): the others are the objects the release owns.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unapplied: BTreeSet<String>,
}

impl Held {
    /// A release about to be applied for the first time, before anything is acknowledged:
    /// generation 0, no content.
    pub fn pending(release: &str) -> Self {
        Self {
            release: release.to_string(),
            generation: 0,
            content_hash: String::new(),
            resources: Vec::new(),
            unapplied: BTreeSet::new(),
        }
    }

    /// True for a release written ahead of its first apply and never acknowledged.
    pub fn is_pending(&self) -> bool {
        self.generation == 0
    }
}

/// The on-disk state.
pub struct State {
    dir: PathBuf,
}

impl State {
    /// Opens (creating) the state under `state_dir`.
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let dir = state_dir.join("releases");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Everything held, by release id. A file that cannot be read is reported and its
    /// release held as pending (generation 0), so the control plane sends it again or a
    /// removal; a file that names no release is skipped.
    pub fn load(&self) -> std::io::Result<BTreeMap<String, Held>> {
        let mut held = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let error = match std::fs::read(&path).map(|b| serde_json::from_slice::<Held>(&b)) {
                Ok(Ok(h)) => {
                    held.insert(h.release.clone(), h);
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            // The release is still named by the file: reported as pending, the control plane
            // sends it again or a removal, and its objects are never left unaccounted for.
            match release_of_file(&path) {
                Some(release) => {
                    tracing::warn!(file = %path.display(), %error, %release, "unreadable state; the release is reported as pending");
                    held.insert(release.clone(), Held::pending(&release));
                }
                None => tracing::warn!(file = %path.display(), %error, "skipping unreadable state"),
            }
        }
        Ok(held)
    }

    /// Records `held` durably.
    pub fn save(&self, held: &Held) -> std::io::Result<()> {
        durable::write(&self.path(&held.release), &serde_json::to_vec(held)?)
    }

    /// Forgets `release` durably.
    pub fn remove(&self, release: &str) -> std::io::Result<()> {
        durable::remove(&self.path(release))
    }

    fn path(&self, release: &str) -> PathBuf {
        // Release ids are `NAMESPACE/NAME` of DNS labels: `_` cannot occur in them.
        self.dir.join(format!("{}.json", release.replace('/', "_")))
    }
}

/// The release a state file is named after, `NAMESPACE_NAME.json`.
fn release_of_file(path: &Path) -> Option<String> {
    let (namespace, name) = path.file_stem()?.to_str()?.split_once('_')?;
    let release = format!("{namespace}/{name}");
    troupe_common::agent::parse_release_id(&release)
        .is_some()
        .then_some(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_saved_is_loaded_and_removal_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let held = Held {
            release: "acme/api-dev".into(),
            generation: 3,
            content_hash: "abc".into(),
            resources: vec![],
            unapplied: ["ConfigMap/shared".to_string()].into(),
        };
        state.save(&held).unwrap();
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.load().unwrap().get("acme/api-dev"), Some(&held));
        state.remove("acme/api-dev").unwrap();
        state.remove("acme/api-dev").unwrap();
        assert!(state.load().unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_file_leaves_its_release_pending_not_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        state.save(&Held::pending("acme/api-dev")).unwrap();
        let file = state.path("acme/api-dev");
        std::fs::write(&file, b"{\"release\": \"acme/api-de").unwrap();
        std::fs::write(dir.path().join("releases/not-a-release.json"), b"garbage").unwrap();
        let held = state.load().unwrap();
        assert_eq!(held.len(), 1, "{held:?}");
        assert!(held["acme/api-dev"].is_pending());
    }
}
