//! Whether a pending promotion may proceed: its edge's approvals and each of its gates,
//! evaluated against the source environment as it is now.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use troupe_common::ObjectKey;
use troupe_common::pb::v1alpha1 as pb;

use crate::releases::bind::{Lookup, find_binding};
use crate::resources::{Error, Resources};

/// The outcome of one evaluation.
pub struct Evaluation {
    /// Each gate of the edge.
    pub gates: Vec<pb::GateStatus>,
    /// Approvals still missing.
    pub missing_approvals: usize,
    /// What the promotion waits for, or that it may proceed.
    pub message: String,
    /// When to look again without being asked (a soak period ends).
    pub recheck: Option<Duration>,
}

impl Evaluation {
    /// True when every gate passes and no approval is missing.
    pub fn ready(&self) -> bool {
        self.missing_approvals == 0 && self.gates.iter().all(|g| g.passed)
    }
}

/// The release as it stands in the source environment.
struct Source {
    /// The release the source binding points at, if any.
    release: String,
    /// `Ready` there, on that release, and if so since when.
    ready: Result<Option<pbjson_types::Timestamp>, String>,
}

/// Evaluates `spec`'s promotion along `edge`, with the approvals and check results in
/// `status`.
pub async fn evaluate(
    resources: &Arc<Resources>,
    key: &ObjectKey,
    spec: &pb::PromotionSpec,
    status: &pb::PromotionStatus,
    edge: &pb::PromotionTarget,
) -> Result<Evaluation, Error> {
    let needs_source = edge.gates.iter().any(|g| g.r#type != "check");
    let source = if needs_source {
        Some(source(resources, key, spec).await?)
    } else {
        None
    };
    let mut recheck = None;
    let gates: Vec<pb::GateStatus> = edge
        .gates
        .iter()
        .map(|gate| gate_status(gate, spec, status, source.as_ref(), &mut recheck))
        .collect();
    let needed = if edge.requires_approval {
        edge.required_approvals.max(1) as usize
    } else {
        0
    };
    // Approvals count only from users the edge still allows (the pipeline may have changed).
    let given = status
        .approvals
        .iter()
        .filter(|a| edge.approvers.is_empty() || edge.approvers.contains(&a.user))
        .count();
    let missing_approvals = needed.saturating_sub(given);
    let mut waits: Vec<String> = Vec::new();
    if missing_approvals > 0 {
        let from_whom = if edge.approvers.is_empty() {
            String::new()
        } else {
            format!(" from {}", edge.approvers.join(", "))
        };
        let plural = if missing_approvals == 1 { "" } else { "s" };
        waits.push(format!(
            "waiting for {missing_approvals} more approval{plural}{from_whom}"
        ));
    }
    for g in gates.iter().filter(|g| !g.passed) {
        waits.push(format!("gate {}: {}", g.name, g.message));
    }
    let message = if waits.is_empty() {
        "every gate passed".to_string()
    } else {
        waits.join("; ")
    };
    Ok(Evaluation {
        gates,
        missing_approvals,
        message,
        recheck,
    })
}

/// One gate as it stands now. A soak gate still running sets `recheck` to when it ends, if
/// that comes before any other.
fn gate_status(
    gate: &pb::PromotionGate,
    spec: &pb::PromotionSpec,
    status: &pb::PromotionStatus,
    source: Option<&Source>,
    recheck: &mut Option<Duration>,
) -> pb::GateStatus {
    let release = &spec.release_name;
    let from = &spec.source_environment;
    let (passed, message) = match (gate.r#type.as_str(), source) {
        ("check", _) => match status.checks.iter().find(|c| c.name == gate.name) {
            None => (false, "waiting for a report".to_string()),
            Some(c) => {
                let verdict = if c.passed { "passed" } else { "failed" };
                let mut message = format!("{verdict} (reported by {})", or_unknown(&c.reported_by));
                if !c.message.is_empty() {
                    message.push_str(&format!(": {}", c.message));
                }
                (c.passed, message)
            }
        },
        (_, Some(source)) if &source.release != release => (
            false,
            if source.release.is_empty() {
                format!("{from} no longer runs the component")
            } else {
                format!("{from} now runs {}, not {release}", source.release)
            },
        ),
        (
            _,
            Some(Source {
                ready: Err(why), ..
            }),
        ) => (false, format!("{release} is not ready in {from}: {why}")),
        (
            "soak",
            Some(Source {
                ready: Ok(since), ..
            }),
        ) => {
            let want = Duration::from_secs(gate.soak_duration_seconds.max(0) as u64);
            let ran = since.as_ref().map_or(Duration::ZERO, elapsed);
            if ran >= want {
                (
                    true,
                    format!("ready in {from} for {} (needs {})", human(ran), human(want)),
                )
            } else {
                let left = want - ran;
                *recheck = Some(recheck.map_or(left, |r: Duration| r.min(left)));
                (
                    false,
                    format!(
                        "ready in {from} for {} of {} ({} to go)",
                        human(ran),
                        human(want),
                        human(left)
                    ),
                )
            }
        }
        (_, _) => (true, format!("{release} is ready in {from}")),
    };
    pb::GateStatus {
        name: gate.name.clone(),
        r#type: gate.r#type.clone(),
        passed,
        message,
    }
}

/// What the source environment runs, and whether it is ready on it.
async fn source(
    resources: &Arc<Resources>,
    key: &ObjectKey,
    spec: &pb::PromotionSpec,
) -> Result<Source, Error> {
    let owner = spec.owner.clone().unwrap_or_default();
    let binding = find_binding(
        resources,
        &key.namespace,
        &owner.component_name,
        &spec.source_environment,
        Lookup::Anywhere,
    )
    .await?;
    let Some(binding) = binding else {
        return Ok(Source {
            release: String::new(),
            ready: Err("not deployed".into()),
        });
    };
    let generation = binding.metadata.as_ref().map_or(0, |m| m.generation);
    let spec = binding.spec.unwrap_or_default();
    let status = binding.status.unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.r#type == troupe_common::status::ConditionType::Ready);
    let ready = match ready {
        _ if spec.state == troupe_common::status::BindingState::Undeploy => {
            Err("undeployed".to_string())
        }
        Some(c)
            if c.status == troupe_common::status::ConditionStatus::True
                && c.observed_generation >= generation =>
        {
            Ok(status
                .release_history
                .first()
                .filter(|d| d.release_name == spec.release_name)
                .and_then(|d| d.ready_time))
        }
        Some(c) if !c.reason.is_empty() => Err(if c.message.is_empty() {
            c.reason.clone()
        } else {
            format!("{}: {}", c.reason, c.message)
        }),
        _ => Err("no status yet".into()),
    };
    Ok(Source {
        release: spec.release_name,
        ready,
    })
}

fn elapsed(since: &pbjson_types::Timestamp) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let since = Duration::new(since.seconds.max(0) as u64, since.nanos.max(0) as u32);
    now.saturating_sub(since)
}

/// `1h2m3s`, `4m`, `12s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn or_unknown(who: &str) -> &str {
    if who.is_empty() { "someone" } else { who }
}
