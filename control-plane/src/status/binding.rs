//! A ReleaseBinding's status: what its render did (`Rendered`, `ConnectionsResolved`,
//! endpoints and connections) and how its Release is doing (`Ready`, `Progressing`,
//! `Degraded`, and the release history).
//!
//! The binding controller is the one writer: after a render it records the outcome here
//! ([`not_rendered`], [`rendered`], [`render_failed`], [`connections`]), merges it into the
//! stored status ([`merge_render`]) and rolls the binding up from its Release ([`roll_up`]);
//! when only the Release's status changed it rolls up alone. The roll-up reads nothing but the
//! binding and its Release.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::status::{BindingState, ConditionStatus, ConditionType, Reason};

use super::{find_condition, holds, set_condition};

/// Releases a binding's history keeps.
pub const RELEASE_HISTORY: usize = 10;

/// What a binding's Release says about its readiness: the binding's `Ready`, `Progressing`
/// and `Degraded` conditions share `reason` and `message` (except when ready).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    /// The release runs and its objects are healthy.
    pub ready: bool,
    /// The rollout is under way.
    pub progressing: bool,
    /// The render or the apply failed, or an object is degraded.
    pub degraded: bool,
    /// Why: a [`Reason`], perhaps repeated from the Release's conditions.
    pub reason: String,
    /// Detail for people.
    pub message: String,
}

impl Rollup {
    fn new(state: (bool, bool, bool), reason: impl AsRef<str>, message: impl Into<String>) -> Self {
        let (ready, progressing, degraded) = state;
        Self {
            ready,
            progressing,
            degraded,
            reason: reason.as_ref().to_string(),
            message: message.into(),
        }
    }
}

/// Why a binding renders nothing, or `None` when it is rendered.
pub fn not_rendering(spec: &pb::ReleaseBindingSpec) -> Option<Reason> {
    if spec.state == BindingState::Undeploy {
        Some(Reason::Undeployed)
    } else if spec.release_name.is_empty() {
        Some(Reason::NoRelease)
    } else {
        None
    }
}

/// Records that the binding renders nothing (for `reason`): nothing runs, so there is nothing
/// to reach and nothing connects.
pub fn not_rendered(status: &mut pb::ReleaseBindingStatus, reason: Reason, generation: i64) {
    status.endpoints.clear();
    status.resolved_connections.clear();
    status.pending_connections.clear();
    status.conditions.retain(|c| {
        c.r#type != ConditionType::ConnectionsResolved
            && c.r#type != ConditionType::NetworkPoliciesEnforced
    });
    set_condition(
        &mut status.conditions,
        ConditionType::Rendered,
        false,
        reason,
        "nothing to render",
        generation,
    );
}

/// Records how the workload's connections resolved in the last render.
pub fn connections(
    status: &mut pb::ReleaseBindingStatus,
    resolved: Vec<pb::ResolvedConnection>,
    pending: Vec<pb::PendingConnection>,
    generation: i64,
) {
    let (holds, reason, message) = match pending.as_slice() {
        [] if resolved.is_empty() => (
            true,
            Reason::NoConnections,
            "the workload has no connections".into(),
        ),
        [] => (
            true,
            Reason::AllConnectionsResolved,
            format!("{} connection(s) resolved", resolved.len()),
        ),
        pending => (
            false,
            Reason::ConnectionsPending,
            pending
                .iter()
                .map(|p| format!("{}: {}", p.endpoint, p.reason))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    set_condition(
        &mut status.conditions,
        ConditionType::ConnectionsResolved,
        holds,
        reason,
        &message,
        generation,
    );
    status.resolved_connections = resolved;
    status.pending_connections = pending;
}

/// Records whether the data plane enforces every network rule of the last render
/// (`unenforced`: the rules it cannot, each a sentence).
pub fn network(status: &mut pb::ReleaseBindingStatus, unenforced: &[String], generation: i64) {
    let (holds, reason, message) = match unenforced {
        [] => (
            true,
            Reason::PoliciesEnforced,
            "the data plane enforces every network rule of the component".to_string(),
        ),
        rules => (false, Reason::RulesUnenforceable, rules.join("; ")),
    };
    set_condition(
        &mut status.conditions,
        ConditionType::NetworkPoliciesEnforced,
        holds,
        reason,
        &message,
        generation,
    );
}

/// Records that `release` was rendered into the binding's Release (`into`).
pub fn rendered(status: &mut pb::ReleaseBindingStatus, release: &str, into: &str, generation: i64) {
    let message = format!("rendered {release} into Release {into}");
    set_condition(
        &mut status.conditions,
        ConditionType::Rendered,
        true,
        Reason::Rendered,
        &message,
        generation,
    );
}

/// Records that the render failed, with the full error.
pub fn render_failed(status: &mut pb::ReleaseBindingStatus, error: &str, generation: i64) {
    set_condition(
        &mut status.conditions,
        ConditionType::Rendered,
        false,
        Reason::RenderFailed,
        error,
        generation,
    );
}

/// Records that a reconcile failed after the render (the Release or the binding's status could
/// not be written: a flush error, a conflict) and when the controller tries again (`attempt`: failures in a row). The
/// generation counts as observed: the failure is about it, and the controller retries on its
/// own, so the write of this status must not look like a new change.
pub fn reconcile_failed(
    status: &mut pb::ReleaseBindingStatus,
    error: &str,
    attempt: u32,
    retry_in: std::time::Duration,
    generation: i64,
) {
    let message = format!("{error} (attempt {attempt}, retrying in {retry_in:?})");
    set_condition(
        &mut status.conditions,
        ConditionType::Rendered,
        false,
        Reason::ReconcileFailed,
        &message,
        generation,
    );
    status.observed_generation = generation;
}

/// Merges what a render computed into the stored status: the render's fields and its
/// conditions (`Rendered`, `ConnectionsResolved`, `NetworkPoliciesEnforced`, removed when the
/// render left them out);
/// the other conditions are left to [`roll_up`].
pub fn merge_render(stored: &mut pb::ReleaseBindingStatus, computed: pb::ReleaseBindingStatus) {
    stored.observed_generation = computed.observed_generation;
    stored.endpoints = computed.endpoints;
    stored.resolved_connections = computed.resolved_connections;
    stored.pending_connections = computed.pending_connections;
    for owned in [
        ConditionType::Rendered,
        ConditionType::ConnectionsResolved,
        ConditionType::NetworkPoliciesEnforced,
    ] {
        let computed = find_condition(&computed.conditions, owned);
        let conditions = &mut stored.conditions;
        match (computed, conditions.iter().position(|c| c.r#type == owned)) {
            (Some(c), Some(i)) => conditions[i] = c.clone(),
            (Some(c), None) => conditions.push(c.clone()),
            (None, Some(i)) => {
                conditions.remove(i);
            }
            (None, None) => {}
        }
    }
}

/// How the binding is doing, from its `Rendered` condition and its Release as stored (`None`
/// when there is none; a Release waiting for its prune counts as none).
pub fn rollup(binding: &pb::ReleaseBinding, release: Option<&pb::Release>) -> Rollup {
    let generation = binding.metadata.as_ref().map_or(0, |m| m.generation);
    let conditions = binding
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let rendered = find_condition(conditions, ConditionType::Rendered);
    let release = release.filter(|r| r.metadata.as_ref().is_none_or(|m| m.delete_time.is_none()));
    // A Release rendered from an older binding spec, or a status from before the Release's
    // latest generation, says nothing about what the binding asks for now.
    let rendered_now = rendered.is_some_and(|c| c.observed_generation >= generation);
    let release_generation = release
        .and_then(|r| r.metadata.as_ref())
        .map_or(0, |m| m.generation);
    let observed_now = release
        .and_then(|r| r.status.as_ref())
        .is_some_and(|s| s.observed_generation >= release_generation);
    let rendering = || {
        Rollup::new(
            (false, true, false),
            Reason::Rendering,
            "the release is being rendered",
        )
    };
    let applying = || {
        Rollup::new(
            (false, true, false),
            Reason::Applying,
            "waiting for the data plane",
        )
    };
    match (rendered, release) {
        (Some(c), _) if c.status == ConditionStatus::False => {
            let failed = c.reason == Reason::RenderFailed;
            // Still on its way: the controller retries on its own.
            let retrying = c.reason == Reason::ReconcileFailed;
            Rollup::new((false, retrying, failed), &c.reason, c.message.clone())
        }
        (_, None) | (_, Some(_)) if !rendered_now => rendering(),
        (_, Some(_)) if !observed_now => applying(),
        (_, None) => rendering(),
        (_, Some(release)) => {
            let conditions = release
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            let applied = find_condition(conditions, ConditionType::Applied);
            let ready = find_condition(conditions, ConditionType::Ready);
            match (applied, ready) {
                (Some(a), _)
                    if a.status == ConditionStatus::False && a.reason == Reason::ApplyFailed =>
                {
                    Rollup::new((false, false, true), &a.reason, a.message.clone())
                }
                (Some(a), _) if a.status == ConditionStatus::False => {
                    Rollup::new((false, true, false), &a.reason, a.message.clone())
                }
                (Some(_), Some(r)) => {
                    let degraded = r.reason == Reason::ResourcesDegraded;
                    let state = (holds(r), !holds(r) && !degraded, degraded);
                    Rollup::new(state, &r.reason, r.message.clone())
                }
                _ => applying(),
            }
        }
    }
}

/// Sets the binding's `Ready`, `Progressing` and `Degraded` conditions from [`rollup`], and
/// notes in its history when its release was rendered and first ready.
pub fn roll_up(binding: &mut pb::ReleaseBinding, release: Option<&pb::Release>) {
    let Rollup {
        ready,
        progressing,
        degraded,
        reason,
        message,
    } = rollup(binding, release);
    let generation = binding.metadata.as_ref().map_or(0, |m| m.generation);
    let rendered_now = binding
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, ConditionType::Rendered))
        .is_some_and(|c| c.observed_generation >= generation);
    let current = binding
        .spec
        .as_ref()
        .map(|s| s.release_name.clone())
        .unwrap_or_default();
    let status = binding.status.get_or_insert_default();
    set_condition(
        &mut status.conditions,
        ConditionType::Ready,
        ready,
        &reason,
        &message,
        generation,
    );
    let (p_reason, d_reason) = if ready {
        (Reason::Synced.as_str(), Reason::Healthy.as_str())
    } else {
        (reason.as_str(), reason.as_str())
    };
    set_condition(
        &mut status.conditions,
        ConditionType::Progressing,
        progressing,
        p_reason,
        &message,
        generation,
    );
    set_condition(
        &mut status.conditions,
        ConditionType::Degraded,
        degraded,
        d_reason,
        &message,
        generation,
    );
    record_release(status, &current, rendered_now, ready);
}

/// Notes in the binding's history that it rendered `current` (once it has), and when it was
/// first `Ready` on it.
fn record_release(
    status: &mut pb::ReleaseBindingStatus,
    current: &str,
    rendered: bool,
    ready: bool,
) {
    if current.is_empty() || !rendered {
        return;
    }
    let history = &mut status.release_history;
    if history.first().is_none_or(|d| d.release_name != current) {
        history.insert(
            0,
            pb::DeployedRelease {
                release_name: current.to_string(),
                deploy_time: Some(troupe_common::timestamp::now()),
                ready_time: None,
            },
        );
        history.truncate(RELEASE_HISTORY);
    }
    if ready && history[0].ready_time.is_none() {
        history[0].ready_time = Some(troupe_common::timestamp::now());
    }
}

/// How a component is doing in one environment, as `troupe status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The binding is `Ready`.
    pub ready: bool,
    /// The `Ready` reason; `Pending` before any, `NotDeployed` without a binding.
    pub reason: String,
    /// Its message.
    pub message: String,
}

/// The readiness of the binding of a component in an environment, `None` when it has none.
pub fn readiness(binding: Option<&pb::ReleaseBinding>) -> Readiness {
    let Some(binding) = binding else {
        return Readiness {
            ready: false,
            reason: Reason::NotDeployed.as_str().into(),
            message: "no ReleaseBinding in this environment".into(),
        };
    };
    let conditions = binding
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ready = find_condition(conditions, ConditionType::Ready);
    Readiness {
        ready: ready.is_some_and(holds),
        reason: ready.map_or(Reason::Pending.as_str().into(), |c| c.reason.clone()),
        message: ready.map(|c| c.message.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
