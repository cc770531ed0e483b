//! The directory applier: each release's objects as YAML files under
//! `ROOT/<namespace>/<release>/`, one file per object, named after its kind, API group,
//! namespace and name: `deployment.apps_shop_api.yaml`, `configmap_shop_settings.yaml` (the
//! core group adds nothing), `clusterrole.rbac.authorization.k8s.io_reader.yaml` (no
//! namespace). Useful in dev mode and to hand releases to a GitOps tool.
//!
//! Every part of a path comes from a checked value: the release id's two parts are DNS
//! labels, the kind follows Kubernetes' kind rule, the group, namespace and name Kubernetes'
//! naming rules, so no part can hold `/`, `..` or anything but lowercase letters, digits,
//! `-` and `.`; and the path made from them is checked to sit in its release's folder. An
//! object that fails is that object's failure (`Degraded`, naming it and what is wrong); the
//! rest of the release is written.
//!
//! A file is rewritten only when its content differs, so re-applying an unchanged release
//! touches nothing; files that left the release (including files named by an older naming)
//! are removed. Files and the folders that list them are fsynced before `apply` returns, so
//! what is acknowledged is on disk. An object is `Healthy` once its file holds exactly what
//! the release says.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use futures::future::BoxFuture;
use troupe_common::agent::parse_release_id;
use troupe_common::document::integral_numbers;
use troupe_common::k8s_names;
use troupe_common::pb::v1alpha1::{ClusterInfo, ReleaseResource, ReleaseResourceStatus};
use troupe_common::status::Health;

use super::{Applied, Applier, Error, describe};

/// Applies releases to files under a root directory.
pub struct DirApplier {
    root: PathBuf,
}

impl DirApplier {
    /// An applier writing under `root` (created when needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder of `release`, whose id must be `NAMESPACE/NAME` of two DNS-1123 labels.
    pub fn release_dir(&self, release: &str) -> Result<PathBuf, Error> {
        let (namespace, name) =
            parse_release_id(release).ok_or_else(|| Error::BadRelease(release.into()))?;
        if k8s_names::check_namespace(namespace).is_err()
            || k8s_names::check_namespace(name).is_err()
        {
            return Err(Error::BadRelease(release.into()));
        }
        Ok(self.root.join(namespace).join(name))
    }
}

/// The file name of an object, from its checked kind, group, namespace and name; or what is
/// wrong with them, naming the field.
pub fn file_name(status: &ReleaseResourceStatus) -> Result<String, String> {
    let quoted = |field: &str, value: &str, why: String| format!("{field} {value:?} {why}");
    k8s_names::check_kind(&status.kind).map_err(|why| quoted("kind", &status.kind, why))?;
    let api_version = if status.group.is_empty() {
        status.version.clone()
    } else {
        format!("{}/{}", status.group, status.version)
    };
    // `describe` splits at the first `/`: a version with one more is not `group/version`.
    let checked = match status.version.contains('/') {
        true => Err("is not `version` or `group/version`".to_string()),
        false => k8s_names::check_api_version(&api_version),
    };
    checked.map_err(|why| quoted("apiVersion", &api_version, why))?;
    k8s_names::check_object_name(&status.group, &status.kind, &status.name)
        .map_err(|why| quoted("metadata.name", &status.name, why))?;
    let mut file = status.kind.to_ascii_lowercase();
    if !status.group.is_empty() {
        file.push('.');
        file.push_str(&status.group);
    }
    if !status.namespace.is_empty() {
        k8s_names::check_namespace(&status.namespace)
            .map_err(|why| quoted("metadata.namespace", &status.namespace, why))?;
        file.push('_');
        file.push_str(&status.namespace);
    }
    file.push('_');
    file.push_str(&status.name);
    file.push_str(".yaml");
    Ok(file)
}

/// `dir/file`, when that is a plain file name inside `dir`: a last guard should a checked
/// part ever let a separator or `..` through.
fn inside(dir: &Path, file: &str) -> Option<PathBuf> {
    let mut components = Path::new(file).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(name)), None) if name == file => {
            let path = dir.join(name);
            path.starts_with(dir).then_some(path)
        }
        _ => None,
    }
}

fn render(resource: &ReleaseResource) -> Result<String, Error> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| Error::Render {
        id: resource.id.clone(),
        source,
    };
    // Through serde_json::Value, whose maps are sorted: the same object always makes the same
    // bytes.
    let mut value = serde_json::to_value(&resource.object).map_err(|e| failed(e.into()))?;
    // A Release carries objects as google.protobuf.Struct, whose numbers are all doubles:
    // `replicas: 3`, not `3.0`.
    integral_numbers(&mut value);
    serde_saphyr::to_string(&value).map_err(|e| failed(e.into()))
}

/// Replaces `path` with `contents` unless it holds them already: a temporary file, fsynced,
/// renamed over it. The folder is the caller's to fsync. Returns true when it wrote.
fn write_if_changed(path: &Path, contents: &str) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == contents.as_bytes()) {
        return Ok(false);
    }
    let tmp = path.with_extension("yaml.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A status entry for an object that was not written, and why.
fn refused(mut status: ReleaseResourceStatus, why: String) -> ReleaseResourceStatus {
    status.health = Health::Degraded.as_str().into();
    status.message = format!("not written: {why}");
    status
}

impl DirApplier {
    /// Creates the folder of a release, and makes each folder it created durable in its
    /// parent.
    fn create_release_dir(&self, dir: &Path) -> Result<(), Error> {
        if dir.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let namespace_dir = dir.parent().unwrap_or(&self.root);
        sync_dir(namespace_dir)?;
        sync_dir(namespace_dir.parent().unwrap_or(&self.root))
    }

    fn apply_now(
        &self,
        release: &str,
        resources: &[ReleaseResource],
    ) -> Result<Vec<ReleaseResourceStatus>, Error> {
        let dir = self.release_dir(release)?;
        self.create_release_dir(&dir)?;
        let mut keep = BTreeSet::new();
        let mut changed = false;
        let mut statuses = Vec::with_capacity(resources.len());
        for resource in resources {
            let status = describe(resource);
            let file = match file_name(&status) {
                Ok(file) => file,
                Err(why) => {
                    statuses.push(refused(status, why));
                    continue;
                }
            };
            let Some(path) = inside(&dir, &file) else {
                let why = format!("file {file:?} would not be inside {}", dir.display());
                statuses.push(refused(status, why));
                continue;
            };
            if !keep.insert(file.clone()) {
                let why = format!("another object of the release is written to {file}");
                statuses.push(refused(status, why));
                continue;
            }
            changed |=
                write_if_changed(&path, &render(resource)?).map_err(Error::io("writing", &path))?;
            statuses.push(ReleaseResourceStatus {
                health: Health::Healthy.as_str().into(),
                ..status
            });
        }
        let entries = std::fs::read_dir(&dir).map_err(Error::io("reading", &dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                std::fs::remove_file(entry.path()).map_err(Error::io("pruning", entry.path()))?;
                changed = true;
            }
        }
        if changed {
            sync_dir(&dir)?;
        }
        Ok(statuses)
    }

    fn prune_now(&self, release: &str) -> Result<(), Error> {
        let dir = self.release_dir(release)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("pruning", &dir)(e)),
        }
        let namespace_dir = dir.parent().unwrap_or(&self.root);
        // Leave no empty namespace folder behind.
        if std::fs::remove_dir(namespace_dir).is_ok() {
            sync_dir(&self.root)
        } else {
            sync_dir(namespace_dir)
        }
    }
}

impl Applier for DirApplier {
    fn apply<'a>(
        &'a self,
        release: &'a str,
        resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<Applied, Error>> {
        Box::pin(async move { self.apply_now(release, resources).map(Applied::done) })
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

    /// Every `NAMESPACE/NAME` directory under the root.
    fn found(&self) -> Vec<String> {
        let dirs = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        };
        let mut found = Vec::new();
        for namespace in dirs(&self.root) {
            for name in dirs(&self.root.join(&namespace)) {
                let release = format!("{namespace}/{name}");
                if self.release_dir(&release).is_ok() {
                    found.push(release);
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests;
