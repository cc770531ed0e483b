//! Tracing builds both ways: what a ComponentRelease carries (its image, and the build the
//! Workload recorded when it was cut) tied to the environments whose bindings name it, and the
//! WorkflowRuns whose image no release carries yet.
//!
//! A query matches an image (exactly, or its digest), a commit (a prefix of at least 7 hex
//! characters), a component or a release by name. Cost: one list each of the namespace's
//! releases, bindings and runs.

use std::collections::{BTreeMap, BTreeSet};

use troupe_common::pb::v1alpha1 as pb;

use super::Builds;
use crate::resources::Error;

impl Builds {
    /// Every build in `namespace` that `query` leads to, with where it runs.
    pub async fn trace(&self, namespace: &str, query: &str) -> Result<Vec<pb::TraceEntry>, Error> {
        let query = Query::new(query);
        let any = Default::default();
        let releases: Vec<pb::ComponentRelease> = self.resources.list_as(namespace, &any).await?;
        let bindings: Vec<pb::ReleaseBinding> = self.resources.list_as(namespace, &any).await?;
        let runs: Vec<pb::WorkflowRun> = self.resources.list_as(namespace, &any).await?;
        let bound = bound_environments(&bindings);
        let phases = run_phases(&runs);
        let mut entries = Vec::new();
        let mut released_images = BTreeSet::new();
        for release in &releases {
            let meta = release.metadata.clone().unwrap_or_default();
            let spec = release.spec.clone().unwrap_or_default();
            let owner = spec.owner.unwrap_or_default();
            let workload = spec.workload.unwrap_or_default();
            let image = workload.container.map(|c| c.image).unwrap_or_default();
            let build = workload.build.unwrap_or_default();
            released_images.insert((owner.component_name.clone(), image.clone()));
            if !query.matches(&owner.component_name, &meta.name, &image, &build) {
                continue;
            }
            entries.push(pb::TraceEntry {
                component: owner.component_name,
                project: owner.project_name,
                release: meta.name.clone(),
                image,
                run_phase: phases
                    .get(build.run.as_str())
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                build: Some(build),
                environments: bound
                    .get(meta.name.as_str())
                    .map(|envs| envs.iter().cloned().collect())
                    .unwrap_or_default(),
                create_time: meta.create_time,
            });
        }
        for run in &runs {
            let meta = run.metadata.clone().unwrap_or_default();
            let spec = run.spec.clone().unwrap_or_default();
            let status = run.status.clone().unwrap_or_default();
            let owner = spec.owner.unwrap_or_default();
            if released_images.contains(&(owner.component_name.clone(), status.image.clone())) {
                continue;
            }
            let build = pb::WorkloadBuild {
                image: status.image.clone(),
                digest: status.outputs.get("digest").cloned().unwrap_or_default(),
                commit: spec.commit,
                repository: spec.source.map(|s| s.repository).unwrap_or_default(),
                run: meta.name.clone(),
                run_url: String::new(),
                time: status.completed_at,
            };
            if !query.matches(&owner.component_name, "", &status.image, &build) {
                continue;
            }
            entries.push(pb::TraceEntry {
                component: owner.component_name,
                project: owner.project_name,
                release: String::new(),
                image: status.image,
                build: Some(build),
                environments: Vec::new(),
                run_phase: if status.phase.is_empty() {
                    "Pending".into()
                } else {
                    status.phase
                },
                create_time: meta.create_time,
            });
        }
        entries.sort_by(|a, b| {
            let time = |e: &pb::TraceEntry| e.create_time.map(|t| (t.seconds, t.nanos));
            (
                a.release.is_empty(),
                &a.component,
                std::cmp::Reverse(time(a)),
            )
                .cmp(&(
                    b.release.is_empty(),
                    &b.component,
                    std::cmp::Reverse(time(b)),
                ))
        });
        Ok(entries)
    }
}

/// The environments whose bindings name each release.
fn bound_environments(bindings: &[pb::ReleaseBinding]) -> BTreeMap<&str, BTreeSet<String>> {
    let mut bound: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for binding in bindings {
        let spec = binding.spec.as_ref();
        if let Some(spec) = spec.filter(|s| !s.release_name.is_empty()) {
            bound
                .entry(spec.release_name.as_str())
                .or_default()
                .insert(spec.environment.clone());
        }
    }
    bound
}

/// Each run's phase, by name.
fn run_phases(runs: &[pb::WorkflowRun]) -> BTreeMap<&str, &str> {
    runs.iter()
        .filter_map(|r| {
            let name = r.metadata.as_ref()?.name.as_str();
            Some((
                name,
                r.status.as_ref().map_or("Pending", |s| s.phase.as_str()),
            ))
        })
        .collect()
}

/// What a trace looks for.
struct Query {
    text: String,
    /// Set when the text can be a commit.
    commit: Option<String>,
}

impl Query {
    fn new(text: &str) -> Self {
        let text = text.trim().to_string();
        let commit =
            (text.len() >= 7 && text.len() <= 40 && text.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| text.to_ascii_lowercase());
        Self { text, commit }
    }

    fn matches(
        &self,
        component: &str,
        release: &str,
        image: &str,
        build: &pb::WorkloadBuild,
    ) -> bool {
        let text = self.text.as_str();
        component == text
            || (!release.is_empty() && release == text)
            || (!image.is_empty() && (image == text || build.image == text))
            || (!build.digest.is_empty() && build.digest == text)
            || image.ends_with(&format!("@{text}"))
            || self
                .commit
                .as_ref()
                .is_some_and(|c| build.commit.to_ascii_lowercase().starts_with(c.as_str()))
    }
}
