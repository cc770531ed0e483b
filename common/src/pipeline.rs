//! A deployment pipeline read as a graph: environments are nodes, each promotion path's
//! targets are edges from its source. [`Pipeline`] is built once from a
//! `DeploymentPipelineSpec` and answers what every reader of a pipeline asks (its first
//! environment, the edge a promotion takes, where an environment's releases come from, the
//! environments in promotion order), so validation, autoDeploy, promotion and `troupe status`
//! read the graph the same way.
//!
//! The structure is taken as written (paths in order, each path's targets in order);
//! [`Pipeline::check`] says whether it is a graph Troupe accepts: one first environment and no
//! cycle. Per-field checks (names, duplicates, approvals, gates) stay with the resource's
//! validation, which knows the field paths.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::pb::v1alpha1::{DeploymentPipelineSpec, PromotionPath, PromotionTarget};

/// A pipeline's promotion graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pipeline {
    paths: Vec<PromotionPath>,
}

/// Why a pipeline's graph is not accepted. Messages complete `spec.promotionPaths: …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// Every source is also a target.
    #[error("has no first environment: every source is also a target (a cycle)")]
    NoFirstEnvironment,
    /// More than one source is no target; sorted by name.
    #[error(
        "must have a single first environment (a source that is no target), found {}",
        .0.join(", ")
    )]
    ManyFirstEnvironments(Vec<String>),
    /// A path through the graph that comes back to where it started, start repeated at the end.
    #[error("has a cycle: {}", .0.join(" → "))]
    Cycle(Vec<String>),
}

impl From<&DeploymentPipelineSpec> for Pipeline {
    fn from(spec: &DeploymentPipelineSpec) -> Self {
        Self::new(spec)
    }
}

impl Pipeline {
    /// The graph of `spec`.
    pub fn new(spec: &DeploymentPipelineSpec) -> Self {
        Self {
            paths: spec.promotion_paths.clone(),
        }
    }

    /// The promotion paths, as written.
    pub fn paths(&self) -> &[PromotionPath] {
        &self.paths
    }

    /// Accepts a graph with exactly one first environment and no cycle.
    pub fn check(&self) -> Result<(), PipelineError> {
        match self.roots().as_slice() {
            [_] => {}
            [] => return Err(PipelineError::NoFirstEnvironment),
            many => {
                let many = many.iter().map(|r| r.to_string()).collect();
                return Err(PipelineError::ManyFirstEnvironments(many));
            }
        }
        match self.cycle() {
            Some(cycle) => Err(PipelineError::Cycle(
                cycle.into_iter().map(str::to_string).collect(),
            )),
            None => Ok(()),
        }
    }

    /// The first environment: the source that is no edge's target (the first such, in path
    /// order, if the pipeline has several). Releases reach it by autoDeploy or a binding.
    pub fn first(&self) -> Option<&str> {
        self.paths
            .iter()
            .map(|p| p.source_environment.as_str())
            .find(|source| !self.is_target(source))
    }

    /// Every edge, as `(source, target)`, in path order.
    pub fn edges(&self) -> impl Iterator<Item = (&str, &PromotionTarget)> {
        self.paths.iter().flat_map(|p| {
            p.targets
                .iter()
                .map(move |t| (p.source_environment.as_str(), t))
        })
    }

    /// The edge from `from` to `to`, with its approvals and gates.
    pub fn edge(&self, from: &str, to: &str) -> Option<&PromotionTarget> {
        self.targets_of(from)?.iter().find(|t| t.environment == to)
    }

    /// The edges leaving `env`; `None` when no path starts there.
    pub fn targets_of(&self, env: &str) -> Option<&[PromotionTarget]> {
        self.paths
            .iter()
            .find(|p| p.source_environment == env)
            .map(|p| p.targets.as_slice())
    }

    /// The environments with an edge to `env`, in path order.
    pub fn sources_of(&self, env: &str) -> Vec<&str> {
        self.paths
            .iter()
            .filter(|p| p.targets.iter().any(|t| t.environment == env))
            .map(|p| p.source_environment.as_str())
            .collect()
    }

    /// The environment `env` is promoted from, when exactly one has an edge to it.
    pub fn source_of(&self, env: &str) -> Option<&str> {
        match self.sources_of(env).as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// True when some path starts at `env`.
    pub fn is_source(&self, env: &str) -> bool {
        self.paths.iter().any(|p| p.source_environment == env)
    }

    /// True when some edge leads to `env`.
    pub fn is_target(&self, env: &str) -> bool {
        self.edges().any(|(_, t)| t.environment == env)
    }

    /// Every environment, in the order it first appears in the paths (each source, then its
    /// targets).
    pub fn environments(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for path in &self.paths {
            let targets = path.targets.iter().map(|t| t.environment.as_str());
            for env in std::iter::once(path.source_environment.as_str()).chain(targets) {
                if !out.contains(&env) {
                    out.push(env);
                }
            }
        }
        out
    }

    /// Every environment in promotion order: the first environment, then breadth-first along
    /// the edges (each source's targets in the order written); environments no edge from the
    /// first reaches come last, in the order they appear.
    pub fn order(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let mut queue: VecDeque<&str> = self.first().into_iter().collect();
        while let Some(env) = queue.pop_front() {
            if out.contains(&env) {
                continue;
            }
            out.push(env);
            for t in self.targets_of(env).unwrap_or_default() {
                queue.push_back(&t.environment);
            }
        }
        for env in self.environments() {
            if !out.contains(&env) {
                out.push(env);
            }
        }
        out
    }

    /// Sources that are no target, sorted.
    fn roots(&self) -> Vec<&str> {
        let sources: BTreeSet<&str> = self
            .paths
            .iter()
            .map(|p| p.source_environment.as_str())
            .collect();
        sources.into_iter().filter(|s| !self.is_target(s)).collect()
    }

    /// A cycle, if there is one: searched depth-first from each source in name order, so the
    /// cycle reported is always the same one.
    fn cycle(&self) -> Option<Vec<&str>> {
        let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (source, target) in self.edges() {
            edges.entry(source).or_default().push(&target.environment);
        }
        for path in &self.paths {
            edges.entry(&path.source_environment).or_default();
        }
        // Meeting a node on the current path is a cycle.
        fn visit<'a>(
            node: &'a str,
            edges: &BTreeMap<&'a str, Vec<&'a str>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) -> Option<Vec<&'a str>> {
            if let Some(start) = path.iter().position(|n| *n == node) {
                let mut cycle = path[start..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            if !done.insert(node) {
                return None;
            }
            path.push(node);
            for next in edges.get(node).into_iter().flatten() {
                if let Some(cycle) = visit(next, edges, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            None
        }
        let mut done = BTreeSet::new();
        edges
            .keys()
            .find_map(|node| visit(node, &edges, &mut Vec::new(), &mut done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline from `(source, [targets])` pairs.
    fn mk_pipeline(paths: &[(&str, &[&str])]) -> Pipeline {
        Pipeline::new(&DeploymentPipelineSpec {
            promotion_paths: paths
                .iter()
                .map(|(source, targets)| PromotionPath {
                    source_environment: source.to_string(),
                    targets: targets
                        .iter()
                        .map(|t| PromotionTarget {
                            environment: t.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    #[test]
    fn a_chain_reads_in_promotion_order() {
        // Written out of order on purpose: order follows the edges, not the text.
        let p = mk_pipeline(&[("staging", &["production"]), ("dev", &["staging"])]);
        assert_eq!(p.check(), Ok(()));
        assert_eq!(p.first(), Some("dev"));
        assert_eq!(p.order(), ["dev", "staging", "production"]);
        assert_eq!(p.environments(), ["staging", "production", "dev"]);
        assert_eq!(p.source_of("production"), Some("staging"));
        assert_eq!(p.source_of("dev"), None);
        assert!(p.edge("dev", "staging").is_some());
        assert!(p.edge("dev", "production").is_none());
        assert_eq!(p.targets_of("production"), None);
        assert_eq!(p.edges().count(), 2);
    }

    #[test]
    fn a_fan_out_has_several_targets_and_a_fan_in_several_sources() {
        let p = mk_pipeline(&[
            ("dev", &["qa", "perf"]),
            ("qa", &["prod"]),
            ("perf", &["prod"]),
        ]);
        assert_eq!(p.check(), Ok(()));
        assert_eq!(p.order(), ["dev", "qa", "perf", "prod"]);
        assert_eq!(p.sources_of("prod"), ["qa", "perf"]);
        assert_eq!(p.source_of("prod"), None);
        assert_eq!(p.targets_of("dev").map(<[_]>::len), Some(2));
    }

    #[test]
    fn the_graph_needs_one_first_environment() {
        let many = mk_pipeline(&[("b", &["c"]), ("a", &["c"])]);
        assert_eq!(
            many.check().unwrap_err().to_string(),
            "must have a single first environment (a source that is no target), found a, b"
        );
        let none = mk_pipeline(&[("a", &["b"]), ("b", &["a"])]);
        assert_eq!(
            none.check().unwrap_err().to_string(),
            "has no first environment: every source is also a target (a cycle)"
        );
    }

    #[test]
    fn a_cycle_is_named_along_its_edges() {
        let p = mk_pipeline(&[
            ("dev", &["staging"]),
            ("staging", &["production"]),
            ("production", &["staging"]),
        ]);
        assert_eq!(
            p.check().unwrap_err().to_string(),
            "has a cycle: staging → production → staging"
        );
    }
}
