//! The directory applier: each release's objects as YAML files under
//! `ROOT/<namespace>/<release>/`, one file per object (`<kind>_<name>.yaml`, or
//! `<kind>_<object namespace>_<name>.yaml` for namespaced objects). Useful in dev mode and to
//! hand releases to a GitOps tool.
//!
//! A file is rewritten only when its content differs, so re-applying an unchanged release
//! touches nothing; files that left the release are removed. An object is `Healthy` once its
//! file holds exactly what the release says.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use troupe_common::agent::parse_release_id;
use troupe_common::pb::v1alpha1::{ClusterInfo, ReleaseResource, ReleaseResourceStatus};
use troupe_common::status::Health;

use super::{Applier, Error, describe};

/// Applies releases to files under a root directory.
pub struct DirApplier {
    root: PathBuf,
}

impl DirApplier {
    /// An applier writing under `root` (created when needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder of `release`.
    pub fn release_dir(&self, release: &str) -> Result<PathBuf, Error> {
        let (namespace, name) =
            parse_release_id(release).ok_or_else(|| Error::BadRelease(release.into()))?;
        Ok(self.root.join(namespace).join(name))
    }
}

/// The file name of an object.
fn file_name(status: &ReleaseResourceStatus) -> String {
    let kind = status.kind.to_ascii_lowercase();
    if status.namespace.is_empty() {
        format!("{kind}_{}.yaml", status.name)
    } else {
        format!("{kind}_{}_{}.yaml", status.namespace, status.name)
    }
}

fn render(resource: &ReleaseResource) -> Result<String, Error> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| Error::Render {
        id: resource.id.clone(),
        source,
    };
    // Through serde_json::Value, whose maps are sorted: the same object always makes the same
    // bytes.
    let value = serde_json::to_value(&resource.object).map_err(|e| failed(e.into()))?;
    serde_saphyr::to_string(&value).map_err(|e| failed(e.into()))
}

fn write_if_changed(path: &Path, contents: &str) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == contents.as_bytes()) {
        return Ok(false);
    }
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

impl DirApplier {
    fn apply_now(
        &self,
        release: &str,
        resources: &[ReleaseResource],
    ) -> Result<Vec<ReleaseResourceStatus>, Error> {
        let dir = self.release_dir(release)?;
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        let mut keep = BTreeSet::new();
        let mut statuses = Vec::with_capacity(resources.len());
        for resource in resources {
            let mut status = describe(resource);
            if status.kind.is_empty() || status.name.is_empty() {
                return Err(Error::Unnamed {
                    id: resource.id.clone(),
                });
            }
            let file = file_name(&status);
            let path = dir.join(&file);
            write_if_changed(&path, &render(resource)?).map_err(Error::io("writing", &path))?;
            status.health = Health::Healthy.as_str().into();
            keep.insert(file);
            statuses.push(status);
        }
        let entries = std::fs::read_dir(&dir).map_err(Error::io("reading", &dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                std::fs::remove_file(entry.path()).map_err(Error::io("pruning", entry.path()))?;
            }
        }
        Ok(statuses)
    }

    fn prune_now(&self, release: &str) -> Result<(), Error> {
        let dir = self.release_dir(release)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("pruning", &dir)(e)),
        }
        // Leave no empty namespace folder behind.
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }
}

impl Applier for DirApplier {
    fn apply<'a>(
        &'a self,
        release: &'a str,
        resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<Vec<ReleaseResourceStatus>, Error>> {
        Box::pin(async move { self.apply_now(release, resources) })
    }

    fn prune<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { self.prune_now(release) })
    }

    fn info(&self) -> BoxFuture<'_, ClusterInfo> {
        Box::pin(async {
            ClusterInfo {
                platform: "directory".into(),
                ..Default::default()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(kind: &str, name: &str, extra: &str) -> ReleaseResource {
        let object = serde_json::json!({
            "apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "shop"},
            "data": {"x": extra}
        });
        ReleaseResource {
            id: format!("{kind}/{name}"),
            object: Some(serde_json::from_value(object).unwrap()),
        }
    }

    #[tokio::test]
    async fn writes_one_file_per_object_touches_nothing_unchanged_and_prunes_what_left() {
        let root = tempfile::tempdir().unwrap();
        let applier = DirApplier::new(root.path());
        let both = [
            resource("ConfigMap", "a", "1"),
            resource("ConfigMap", "b", "1"),
        ];
        let statuses = applier.apply("acme/api-dev", &both).await.unwrap();
        assert!(statuses.iter().all(|s| s.health == Health::Healthy));
        let dir = root.path().join("acme/api-dev");
        let a = dir.join("configmap_shop_a.yaml");
        assert!(
            std::fs::read_to_string(&a)
                .unwrap()
                .contains("kind: ConfigMap")
        );
        let modified = std::fs::metadata(&a).unwrap().modified().unwrap();

        std::thread::sleep(std::time::Duration::from_millis(20));
        applier.apply("acme/api-dev", &both[..1]).await.unwrap();
        assert_eq!(std::fs::metadata(&a).unwrap().modified().unwrap(), modified);
        assert!(!dir.join("configmap_shop_b.yaml").exists());

        // Drift is corrected by the next apply.
        std::fs::write(&a, "edited by hand").unwrap();
        applier.apply("acme/api-dev", &both[..1]).await.unwrap();
        assert!(
            std::fs::read_to_string(&a)
                .unwrap()
                .contains("kind: ConfigMap")
        );

        applier.prune("acme/api-dev").await.unwrap();
        assert!(!dir.exists());
        applier.prune("acme/api-dev").await.unwrap();
    }
}
