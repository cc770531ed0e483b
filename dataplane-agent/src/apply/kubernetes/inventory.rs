//! The inventory: how the agent knows which cluster objects belong to a release.
//!
//! Every object the agent applies carries three labels: the release's namespace, its name,
//! and `app.kubernetes.io/managed-by=troupe-agent`. The kinds a release has used are recorded
//! on disk, one file per release (`STATE_DIR/kubernetes/NAMESPACE_NAME.json`), so pruning
//! lists only those kinds, by the release's label selector. The record is widened before
//! objects are applied and narrowed only after pruning, so a crash in between never leaves an
//! object of the release outside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use troupe_common::durable;

use serde::{Deserialize, Serialize};

/// The label naming the namespace of an object's release.
pub const RELEASE_NAMESPACE_LABEL: &str = "troupe.dev/release-namespace";
/// The label naming an object's release (within its namespace).
pub const RELEASE_LABEL: &str = "troupe.dev/release";
/// The well-known label naming the tool that manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The agent's field manager for server-side apply, and its `managed-by` label value.
pub const MANAGER: &str = "troupe-agent";

/// The inventory labels of the release `namespace/name`.
pub fn labels(namespace: &str, name: &str) -> [(&'static str, String); 3] {
    [
        (RELEASE_NAMESPACE_LABEL, namespace.to_string()),
        (RELEASE_LABEL, name.to_string()),
        (MANAGED_BY_LABEL, MANAGER.to_string()),
    ]
}

/// A label selector matching exactly the objects of the release `namespace/name`.
pub fn selector(namespace: &str, name: &str) -> String {
    labels(namespace, name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A label selector matching the objects of every release this agent manages.
pub fn any_release_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGER},{RELEASE_NAMESPACE_LABEL},{RELEASE_LABEL}")
}

/// The release id (`NAMESPACE/NAME`) an object's labels name, if the agent manages it.
pub fn release_of(labels: &BTreeMap<String, String>) -> Option<String> {
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGER) {
        return None;
    }
    let namespace = labels.get(RELEASE_NAMESPACE_LABEL)?;
    let name = labels.get(RELEASE_LABEL)?;
    Some(format!("{namespace}/{name}"))
}

/// A kind a release has used, as written in its manifests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kind {
    /// `v1`, `apps/v1`, …
    pub api_version: String,
    /// `Deployment`, …
    pub kind: String,
}

/// The on-disk record of the kinds each release has used.
#[derive(Clone)]
pub struct KindRecord {
    dir: PathBuf,
}

impl KindRecord {
    /// A record kept under `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Where the record is kept.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, release: &str) -> PathBuf {
        // Release ids are `NAMESPACE/NAME` of DNS labels: `_` cannot occur in them.
        self.dir.join(format!("{}.json", release.replace('/', "_")))
    }

    /// The kinds recorded for `release`; none when nothing was recorded.
    pub fn load(&self, release: &str) -> std::io::Result<BTreeSet<Kind>> {
        match std::fs::read(self.path(release)) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(e) => Err(e),
        }
    }

    /// Records `kinds` for `release` durably.
    pub fn save(&self, release: &str, kinds: &BTreeSet<Kind>) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        durable::write(&self.path(release), &serde_json::to_vec(kinds)?)
    }

    /// Forgets `release` durably.
    pub fn remove(&self, release: &str) -> std::io::Result<()> {
        durable::remove(&self.path(release))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_kind(api_version: &str, kind: &str) -> Kind {
        Kind {
            api_version: api_version.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn the_selector_names_one_release_and_labels_read_back_as_its_id() {
        assert_eq!(
            selector("acme", "api-dev"),
            "troupe.dev/release-namespace=acme,troupe.dev/release=api-dev,app.kubernetes.io/managed-by=troupe-agent"
        );
        let mut labels: BTreeMap<String, String> = labels("acme", "api-dev")
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(release_of(&labels).as_deref(), Some("acme/api-dev"));
        // Someone else's object with look-alike labels is not ours.
        labels.insert(MANAGED_BY_LABEL.into(), "helm".into());
        assert_eq!(release_of(&labels), None);
    }

    #[test]
    fn kinds_are_recorded_per_release_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let record = KindRecord::new(dir.path().join("kubernetes"));
        assert!(record.load("acme/api-dev").unwrap().is_empty());
        let kinds = BTreeSet::from([mk_kind("v1", "ConfigMap"), mk_kind("apps/v1", "Deployment")]);
        record.save("acme/api-dev", &kinds).unwrap();
        assert_eq!(record.load("acme/api-dev").unwrap(), kinds);
        assert!(record.load("acme/other").unwrap().is_empty());
        record.remove("acme/api-dev").unwrap();
        record.remove("acme/api-dev").unwrap();
        assert!(record.load("acme/api-dev").unwrap().is_empty());
    }
}
