//! A Release's status from what its agent reported: the generation applied, a failed apply,
//! and the health of each object.
//!
//! `Applied` says whether the agent applied the Release's current generation (`Applied`,
//! `ApplyFailed`, `Applying`, `AgentDisconnected`, or `Pruning` while it waits for a prune);
//! `Ready` repeats that until it is applied, then rolls the objects' health up
//! (`ResourcesHealthy`, `ResourcesProgressing`, `ResourcesDegraded`).

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::status::{ConditionType, Health, Reason};

use super::{find_condition, set_condition};

/// What an agent said about one Release since the last write.
#[derive(Debug, Default, Clone)]
pub struct ReleaseReport {
    /// Newest generation acknowledged as applied.
    pub applied: Option<i64>,
    /// Newest generation that failed to apply, and why.
    pub failed: Option<(i64, String)>,
    /// Newest object health, with the generation it was observed for.
    pub health: Option<(i64, Vec<pb::ReleaseResourceStatus>)>,
}

/// Folds `report` into `release`'s status. `connected` says whether the agent of its data
/// plane (`plane`, named in messages) is connected.
pub fn release_status(
    release: &mut pb::Release,
    report: &ReleaseReport,
    connected: bool,
    plane: &str,
) {
    let generation = release.metadata.as_ref().map_or(0, |m| m.generation);
    let terminating = release
        .metadata
        .as_ref()
        .is_some_and(|m| m.delete_time.is_some());
    let count = release.spec.as_ref().map_or(0, |s| s.resources.len());
    let status = release.status.get_or_insert_default();
    if let Some(applied) = report.applied {
        status.applied_generation = status.applied_generation.max(applied);
    }
    if let Some((_, resources)) = &report.health {
        status.resources = resources.clone();
    }
    status.observed_generation = generation;
    if terminating {
        let reason = if connected {
            Reason::Pruning
        } else {
            Reason::AgentDisconnected
        };
        let message = format!("waiting for data plane {plane} to prune the release's objects");
        for type_ in [ConditionType::Applied, ConditionType::Ready] {
            set_condition(
                &mut status.conditions,
                type_,
                false,
                reason,
                &message,
                generation,
            );
        }
        return;
    }
    let applied = status.applied_generation >= generation;
    set_applied(status, report, applied, connected, plane, generation);
    let (ready, reason, message) = if !applied {
        let applied = find_condition(&status.conditions, ConditionType::Applied);
        applied.map_or(
            (false, Reason::Applying.as_str().to_string(), String::new()),
            |c| (false, c.reason.clone(), c.message.clone()),
        )
    } else {
        let (ready, reason, message) = health(&status.resources, count);
        (ready, reason.as_str().to_string(), message)
    };
    set_condition(
        &mut status.conditions,
        ConditionType::Ready,
        ready,
        &reason,
        &message,
        generation,
    );
}

/// Sets `Applied`. A failure stays until the generation is applied or changes.
fn set_applied(
    status: &mut pb::ReleaseStatus,
    report: &ReleaseReport,
    applied: bool,
    connected: bool,
    plane: &str,
    generation: i64,
) {
    let failed = report.failed.as_ref().filter(|(g, _)| *g == generation);
    let still_failed = status.conditions.iter().any(|c| {
        c.r#type == ConditionType::Applied
            && c.reason == Reason::ApplyFailed
            && c.observed_generation == generation
    });
    let (holds, reason, message) = if applied {
        let message = format!("generation {generation} applied on data plane {plane}");
        (true, Reason::Applied, message)
    } else if let Some((_, error)) = failed {
        (false, Reason::ApplyFailed, error.clone())
    } else if still_failed {
        return;
    } else if connected {
        let message = format!("data plane {plane} is applying generation {generation}");
        (false, Reason::Applying, message)
    } else {
        let message = format!("waiting for the agent of data plane {plane} to connect");
        (false, Reason::AgentDisconnected, message)
    };
    set_condition(
        &mut status.conditions,
        ConditionType::Applied,
        holds,
        reason,
        &message,
        generation,
    );
}

/// Rolls object health up: any `Degraded` object degrades the release, any other state but
/// `Healthy` or `Suspended` keeps it progressing, and so do objects not reported yet
/// (fewer than `expected`).
pub fn health(resources: &[pb::ReleaseResourceStatus], expected: usize) -> (bool, Reason, String) {
    let name = |r: &pb::ReleaseResourceStatus| format!("{} {}", r.kind, r.name);
    let detail = |r: &pb::ReleaseResourceStatus| {
        if r.message.is_empty() {
            name(r)
        } else {
            format!("{}: {}", name(r), r.message)
        }
    };
    let degraded: Vec<String> = resources
        .iter()
        .filter(|r| r.health == Health::Degraded)
        .map(detail)
        .collect();
    if !degraded.is_empty() {
        return (false, Reason::ResourcesDegraded, degraded.join("; "));
    }
    let waiting: Vec<String> = resources
        .iter()
        .filter(|r| r.health != Health::Healthy && r.health != Health::Suspended)
        .map(detail)
        .collect();
    if !waiting.is_empty() || resources.len() < expected {
        let message = if waiting.is_empty() {
            "waiting for the agent to report health".to_string()
        } else {
            waiting.join("; ")
        };
        return (false, Reason::ResourcesProgressing, message);
    }
    (
        true,
        Reason::ResourcesHealthy,
        format!("{} object(s) healthy", resources.len()),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::status::holds;

    /// A Release at `generation` with `objects` objects, no status yet.
    pub(crate) fn mk_release(generation: i64, objects: usize) -> pb::Release {
        pb::Release {
            metadata: Some(pb::ObjectMeta {
                name: "web-dev".into(),
                namespace: "acme".into(),
                generation,
                ..Default::default()
            }),
            spec: Some(pb::ReleaseSpec {
                resources: (0..objects)
                    .map(|i| pb::ReleaseResource {
                        id: format!("Deployment/web-{i}"),
                        object: None,
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(crate) fn mk_object(
        name: &str,
        health: Health,
        message: &str,
    ) -> pb::ReleaseResourceStatus {
        pb::ReleaseResourceStatus {
            kind: "Deployment".into(),
            name: name.into(),
            health: health.as_str().into(),
            message: message.into(),
            ..Default::default()
        }
    }

    fn mk_report(
        applied: Option<i64>,
        failed: Option<(i64, &str)>,
        health: &[pb::ReleaseResourceStatus],
    ) -> ReleaseReport {
        ReleaseReport {
            applied,
            failed: failed.map(|(g, e)| (g, e.to_string())),
            health: (!health.is_empty()).then(|| (1, health.to_vec())),
        }
    }

    /// `(status, reason, message)` of condition `type_`.
    fn condition(release: &pb::Release, type_: ConditionType) -> (bool, String, String) {
        let conditions = &release.status.as_ref().unwrap().conditions;
        let c = find_condition(conditions, type_).expect("condition set");
        (holds(c), c.reason.clone(), c.message.clone())
    }

    fn derive(mut release: pb::Release, report: &ReleaseReport, connected: bool) -> pb::Release {
        release_status(&mut release, report, connected, "acme/dev");
        release
    }

    #[test]
    fn an_applied_release_with_healthy_objects_is_ready() {
        let objects = [
            mk_object("web-0", Health::Healthy, ""),
            mk_object("web-1", Health::Suspended, "paused"),
        ];
        let release = derive(mk_release(1, 2), &mk_report(Some(1), None, &objects), true);
        let (applied, reason, message) = condition(&release, ConditionType::Applied);
        assert!(applied);
        assert_eq!(reason, Reason::Applied.as_str());
        assert_eq!(message, "generation 1 applied on data plane acme/dev");
        let ready = condition(&release, ConditionType::Ready);
        assert_eq!(
            ready,
            (
                true,
                "ResourcesHealthy".into(),
                "2 object(s) healthy".into()
            )
        );
        assert_eq!(release.status.unwrap().applied_generation, 1);
    }

    #[test]
    fn one_degraded_object_degrades_the_release() {
        let objects = [
            mk_object("web-0", Health::Degraded, "CrashLoopBackOff"),
            mk_object("web-1", Health::Progressing, ""),
        ];
        let release = derive(mk_release(1, 2), &mk_report(Some(1), None, &objects), true);
        let ready = condition(&release, ConditionType::Ready);
        assert_eq!(
            ready,
            (
                false,
                "ResourcesDegraded".into(),
                "Deployment web-0: CrashLoopBackOff".into()
            )
        );
    }

    #[test]
    fn a_rolling_object_or_a_missing_report_keeps_the_release_progressing() {
        let rolling = [mk_object("web-0", Health::Progressing, "1 of 3 updated")];
        let release = derive(mk_release(1, 1), &mk_report(Some(1), None, &rolling), true);
        let ready = condition(&release, ConditionType::Ready);
        assert_eq!(
            ready,
            (
                false,
                Reason::ResourcesProgressing.as_str().into(),
                "Deployment web-0: 1 of 3 updated".into()
            )
        );
        let unreported = derive(mk_release(1, 2), &mk_report(Some(1), None, &[]), true);
        let ready = condition(&unreported, ConditionType::Ready);
        assert_eq!(
            ready,
            (
                false,
                "ResourcesProgressing".into(),
                "waiting for the agent to report health".into()
            )
        );
    }

    #[test]
    fn an_unapplied_release_is_applying_or_waits_for_its_agent() {
        let applying = derive(mk_release(2, 1), &ReleaseReport::default(), true);
        let expected = (
            false,
            "Applying".to_string(),
            "data plane acme/dev is applying generation 2".to_string(),
        );
        assert_eq!(condition(&applying, ConditionType::Applied), expected);
        // Ready repeats Applied until the generation is applied.
        assert_eq!(condition(&applying, ConditionType::Ready), expected);

        let waiting = derive(mk_release(2, 1), &ReleaseReport::default(), false);
        let expected = (
            false,
            "AgentDisconnected".to_string(),
            "waiting for the agent of data plane acme/dev to connect".to_string(),
        );
        assert_eq!(condition(&waiting, ConditionType::Applied), expected);
        assert_eq!(condition(&waiting, ConditionType::Ready), expected);
    }

    #[test]
    fn a_failed_apply_stays_failed_until_the_generation_changes() {
        let report = mk_report(None, Some((1, "admission webhook denied")), &[]);
        let failed = derive(mk_release(1, 1), &report, true);
        let expected = (
            false,
            "ApplyFailed".to_string(),
            "admission webhook denied".into(),
        );
        assert_eq!(condition(&failed, ConditionType::Applied), expected);
        assert_eq!(condition(&failed, ConditionType::Ready), expected);

        // A later report without the failure leaves it in place.
        let again = derive(failed.clone(), &ReleaseReport::default(), true);
        assert_eq!(condition(&again, ConditionType::Applied), expected);

        // A failure of an older generation says nothing about the current one.
        let mut newer = failed;
        newer.metadata.as_mut().unwrap().generation = 2;
        let newer = derive(newer, &ReleaseReport::default(), true);
        let (_, reason, _) = condition(&newer, ConditionType::Applied);
        assert_eq!(reason, Reason::Applying.as_str());
    }

    #[test]
    fn a_terminating_release_waits_for_its_prune() {
        let mut release = mk_release(3, 1);
        release.metadata.as_mut().unwrap().delete_time = Some(pbjson_types::Timestamp {
            seconds: 1,
            nanos: 0,
        });
        let pruning = derive(release.clone(), &ReleaseReport::default(), true);
        for type_ in [ConditionType::Applied, ConditionType::Ready] {
            assert_eq!(
                condition(&pruning, type_),
                (
                    false,
                    "Pruning".into(),
                    "waiting for data plane acme/dev to prune the release's objects".into()
                )
            );
        }
        let disconnected = derive(release, &ReleaseReport::default(), false);
        let (_, reason, _) = condition(&disconnected, ConditionType::Ready);
        assert_eq!(reason, Reason::AgentDisconnected.as_str());
    }
}
