//! The inventory: how the agent knows which cluster objects belong to a release.
//!
//! Every object the agent applies carries two labels of the agent's own, under
//! `agent.troupe.dev/`: the release's namespace and its name. They live beside the labels the
//! template set (a template's `troupe.dev/...` labels are never overwritten), and the
//! well-known `app.kubernetes.io/managed-by=troupe-agent` is added only where the template set
//! no `managed-by` of its own. Ownership is the two labels: an object without them was made
//! by someone else, and pruning deletes only objects whose labels name the release. Objects
//! labelled by agents before these keys existed (`troupe.dev/release-namespace`,
//! `troupe.dev/release` and `managed-by=troupe-agent`) are recognised as the release's too.
//!
//! The kinds and namespaces a release has used are recorded on disk, one file per release
//! (`STATE_DIR/kubernetes/NAMESPACE_NAME.json`), so pruning looks only at those kinds, and
//! the namespaces the agent created can be removed once nothing uses them. The record is
//! widened before objects are applied and narrowed only after pruning, so a crash in between
//! never leaves an object of the release outside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use troupe_common::durable;

use serde::{Deserialize, Serialize};

/// The label naming the namespace of an object's release.
pub const RELEASE_NAMESPACE_LABEL: &str = "agent.troupe.dev/release-namespace";
/// The label naming an object's release (within its namespace).
pub const RELEASE_LABEL: &str = "agent.troupe.dev/release";
/// The label on a namespace the agent created for a release's objects.
pub const CREATED_NAMESPACE_LABEL: &str = "agent.troupe.dev/created-namespace";
/// The well-known label naming the tool that manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The agent's field manager for server-side apply, and its `managed-by` label value.
pub const MANAGER: &str = "troupe-agent";
/// The labels agents wrote before the agent's labels had keys of their own.
const LEGACY_LABELS: (&str, &str) = ("troupe.dev/release-namespace", "troupe.dev/release");

/// The inventory labels of the release `namespace/name`.
pub fn labels(namespace: &str, name: &str) -> [(&'static str, String); 2] {
    [
        (RELEASE_NAMESPACE_LABEL, namespace.to_string()),
        (RELEASE_LABEL, name.to_string()),
    ]
}

/// A label selector matching the objects of every release this agent manages.
pub fn any_release_selector() -> String {
    format!("{RELEASE_NAMESPACE_LABEL},{RELEASE_LABEL}")
}

/// The release id (`NAMESPACE/NAME`) an object's labels name, if an agent manages it.
pub fn release_of(labels: &BTreeMap<String, String>) -> Option<String> {
    if let (Some(namespace), Some(name)) = (
        labels.get(RELEASE_NAMESPACE_LABEL),
        labels.get(RELEASE_LABEL),
    ) {
        return Some(format!("{namespace}/{name}"));
    }
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGER) {
        return None;
    }
    let namespace = labels.get(LEGACY_LABELS.0)?;
    let name = labels.get(LEGACY_LABELS.1)?;
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

/// What a release has used on the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Used {
    /// The kinds of its objects.
    pub kinds: BTreeSet<Kind>,
    /// The namespaces its objects live in.
    #[serde(default)]
    pub namespaces: BTreeSet<String>,
}

impl Used {
    /// Both.
    pub fn union(&self, other: &Used) -> Used {
        Used {
            kinds: self.kinds.union(&other.kinds).cloned().collect(),
            namespaces: self.namespaces.union(&other.namespaces).cloned().collect(),
        }
    }
}

/// A record as written: agents before namespaces were recorded wrote the kinds alone.
#[derive(Deserialize)]
#[serde(untagged)]
enum OnDisk {
    Used(Used),
    Kinds(BTreeSet<Kind>),
}

/// The on-disk record of what each release has used.
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

    /// What is recorded for `release`; nothing when nothing was recorded.
    pub fn load(&self, release: &str) -> std::io::Result<Used> {
        match std::fs::read(self.path(release)) {
            Ok(bytes) => Ok(match serde_json::from_slice(&bytes)? {
                OnDisk::Used(used) => used,
                OnDisk::Kinds(kinds) => Used {
                    kinds,
                    namespaces: BTreeSet::new(),
                },
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Used::default()),
            Err(e) => Err(e),
        }
    }

    /// Records `used` for `release` durably.
    pub fn save(&self, release: &str, used: &Used) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        durable::write(&self.path(release), &serde_json::to_vec(used)?)
    }

    /// Forgets `release` durably.
    pub fn remove(&self, release: &str) -> std::io::Result<()> {
        durable::remove(&self.path(release))
    }

    /// Every release with a record.
    pub fn releases(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                let (namespace, name) = file.strip_suffix(".json")?.split_once('_')?;
                let release = format!("{namespace}/{name}");
                troupe_common::agent::parse_release_id(&release)
                    .is_some()
                    .then_some(release)
            })
            .collect()
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
    fn labels_read_back_as_the_release_and_old_labels_still_count() {
        let labels: BTreeMap<String, String> = labels("acme", "api-dev")
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(release_of(&labels).as_deref(), Some("acme/api-dev"));
        let mut legacy: BTreeMap<String, String> = [
            ("troupe.dev/release-namespace", "acme"),
            ("troupe.dev/release", "api-dev"),
            (MANAGED_BY_LABEL, MANAGER),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(release_of(&legacy).as_deref(), Some("acme/api-dev"));
        // A template's own release label, or someone else's look-alike, is not ours.
        legacy.insert(MANAGED_BY_LABEL.into(), "helm".into());
        assert_eq!(release_of(&legacy), None);
    }

    #[test]
    fn kinds_are_recorded_per_release_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let record = KindRecord::new(dir.path().join("kubernetes"));
        assert_eq!(record.load("acme/api-dev").unwrap(), Used::default());
        let used = Used {
            kinds: BTreeSet::from([mk_kind("v1", "ConfigMap"), mk_kind("apps/v1", "Deployment")]),
            namespaces: BTreeSet::from(["shop".to_string()]),
        };
        record.save("acme/api-dev", &used).unwrap();
        assert_eq!(record.load("acme/api-dev").unwrap(), used);
        assert_eq!(record.load("acme/other").unwrap(), Used::default());
        record.remove("acme/api-dev").unwrap();
        record.remove("acme/api-dev").unwrap();
        assert_eq!(record.load("acme/api-dev").unwrap(), Used::default());
        // A record written before namespaces were recorded reads as its kinds.
        std::fs::write(
            dir.path().join("kubernetes/acme_old.json"),
            r#"[{"apiVersion":"v1","kind":"ConfigMap"}]"#,
        )
        .unwrap();
        assert_eq!(
            record.load("acme/old").unwrap().kinds,
            BTreeSet::from([mk_kind("v1", "ConfigMap")])
        );
    }
}
