//! The binding's conditions as a user reads them, for every reason they can carry.

use troupe_common::status::Health;

use super::*;
use crate::status::release::tests::{mk_object, mk_release};
use crate::status::release::{ReleaseReport, release_status};

/// A binding at `generation` of release `r1`, rendered (or not) by the controller.
fn mk_binding(generation: i64) -> pb::ReleaseBinding {
    pb::ReleaseBinding {
        metadata: Some(pb::ObjectMeta {
            name: "web-dev".into(),
            namespace: "acme".into(),
            generation,
            ..Default::default()
        }),
        spec: Some(pb::ReleaseBindingSpec {
            environment: "dev".into(),
            release_name: "web-r1".into(),
            ..Default::default()
        }),
        status: Some(pb::ReleaseBindingStatus::default()),
        ..Default::default()
    }
}

fn mk_rendered(generation: i64) -> pb::ReleaseBinding {
    let mut binding = mk_binding(generation);
    rendered(
        binding.status.as_mut().unwrap(),
        "web-r1",
        "web-dev",
        generation,
    );
    binding
}

/// The binding's Release as its agent left it: `report` folded in, agent `connected`.
fn mk_reported(objects: usize, report: ReleaseReport, connected: bool) -> pb::Release {
    let mut release = mk_release(1, objects);
    release_status(&mut release, &report, connected, "acme/dev");
    release
}

fn mk_applied(objects: &[pb::ReleaseResourceStatus]) -> pb::Release {
    let report = ReleaseReport {
        applied: Some(1),
        health: Some((1, objects.to_vec())),
        ..Default::default()
    };
    mk_reported(objects.len(), report, true)
}

/// `(status, reason)` of each of `Ready`, `Progressing`, `Degraded`.
fn seen(binding: &pb::ReleaseBinding) -> [(bool, String); 3] {
    let conditions = &binding.status.as_ref().unwrap().conditions;
    [
        ConditionType::Ready,
        ConditionType::Progressing,
        ConditionType::Degraded,
    ]
    .map(|t| {
        let c = find_condition(conditions, t).expect("condition set");
        (holds(c), c.reason.clone())
    })
}

fn rolled(mut binding: pb::ReleaseBinding, release: Option<&pb::Release>) -> pb::ReleaseBinding {
    roll_up(&mut binding, release);
    binding
}

fn ready_message(binding: &pb::ReleaseBinding) -> String {
    let conditions = &binding.status.as_ref().unwrap().conditions;
    find_condition(conditions, ConditionType::Ready)
        .unwrap()
        .message
        .clone()
}

fn all(ready: bool, progressing: bool, degraded: bool, reason: Reason) -> [(bool, String); 3] {
    let r = reason.as_str().to_string();
    [(ready, r.clone()), (progressing, r.clone()), (degraded, r)]
}

#[test]
fn healthy_objects_make_the_binding_ready_and_record_when() {
    let release = mk_applied(&[mk_object("web", Health::Healthy, "")]);
    let binding = rolled(mk_rendered(1), Some(&release));
    assert_eq!(
        seen(&binding),
        [
            (true, "ResourcesHealthy".into()),
            (false, "Synced".into()),
            (false, "Healthy".into()),
        ]
    );
    assert_eq!(ready_message(&binding), "1 object(s) healthy");
    let history = &binding.status.as_ref().unwrap().release_history;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].release_name, "web-r1");
    assert!(history[0].deploy_time.is_some() && history[0].ready_time.is_some());
}

#[test]
fn progressing_objects_keep_the_binding_progressing() {
    let release = mk_applied(&[mk_object("web", Health::Progressing, "1 of 2 updated")]);
    let binding = rolled(mk_rendered(1), Some(&release));
    assert_eq!(
        seen(&binding),
        all(false, true, false, Reason::ResourcesProgressing)
    );
    assert_eq!(ready_message(&binding), "Deployment web: 1 of 2 updated");
    let history = &binding.status.as_ref().unwrap().release_history;
    assert!(history[0].ready_time.is_none(), "not ready yet");
}

#[test]
fn a_degraded_object_degrades_the_binding() {
    let release = mk_applied(&[mk_object("web", Health::Degraded, "CrashLoopBackOff")]);
    let binding = rolled(mk_rendered(1), Some(&release));
    assert_eq!(
        seen(&binding),
        all(false, false, true, Reason::ResourcesDegraded)
    );
    assert_eq!(ready_message(&binding), "Deployment web: CrashLoopBackOff");
}

#[test]
fn a_release_being_applied_keeps_the_binding_applying() {
    let release = mk_reported(1, ReleaseReport::default(), true);
    let binding = rolled(mk_rendered(1), Some(&release));
    assert_eq!(seen(&binding), all(false, true, false, Reason::Applying));
    assert_eq!(
        ready_message(&binding),
        "data plane acme/dev is applying generation 1"
    );

    // A Release whose status is older than its spec: the data plane has not seen it yet.
    let mut newer = release;
    newer.metadata.as_mut().unwrap().generation = 2;
    let binding = rolled(mk_rendered(1), Some(&newer));
    assert_eq!(seen(&binding), all(false, true, false, Reason::Applying));
    assert_eq!(ready_message(&binding), "waiting for the data plane");
}

#[test]
fn a_disconnected_agent_keeps_the_binding_waiting_for_it() {
    let release = mk_reported(1, ReleaseReport::default(), false);
    let binding = rolled(mk_rendered(1), Some(&release));
    assert_eq!(
        seen(&binding),
        all(false, true, false, Reason::AgentDisconnected)
    );
    assert_eq!(
        ready_message(&binding),
        "waiting for the agent of data plane acme/dev to connect"
    );
}

#[test]
fn a_failed_apply_degrades_the_binding() {
    let report = ReleaseReport {
        failed: Some((1, "namespaces \"shop\" not found".into())),
        ..Default::default()
    };
    let release = mk_reported(1, report, true);
    let binding = rolled(mk_rendered(1), Some(&release));
    assert_eq!(seen(&binding), all(false, false, true, Reason::ApplyFailed));
    assert_eq!(ready_message(&binding), "namespaces \"shop\" not found");
}

#[test]
fn a_failed_render_degrades_the_binding_with_the_error() {
    let mut binding = mk_binding(1);
    render_failed(
        binding.status.as_mut().unwrap(),
        "trait ingress: unknown parameter host",
        1,
    );
    let binding = rolled(binding, None);
    assert_eq!(
        seen(&binding),
        all(false, false, true, Reason::RenderFailed)
    );
    assert_eq!(
        ready_message(&binding),
        "trait ingress: unknown parameter host"
    );
}

#[test]
fn a_failed_reconcile_keeps_the_binding_progressing_with_the_error_and_the_retry() {
    // It was rendered before; this generation's Release could not be written.
    let mut binding = mk_rendered(1);
    binding.metadata.as_mut().unwrap().generation = 2;
    let status = binding.status.as_mut().unwrap();
    reconcile_failed(
        status,
        "storage engine: no space left on device",
        3,
        std::time::Duration::from_millis(400),
        2,
    );
    assert_eq!(status.observed_generation, 2, "no new change to react to");
    let binding = rolled(binding, Some(&mk_applied(&[])));
    assert_eq!(
        seen(&binding),
        all(false, true, false, Reason::ReconcileFailed)
    );
    assert_eq!(
        ready_message(&binding),
        "storage engine: no space left on device (attempt 3, retrying in 400ms)"
    );
}

#[test]
fn an_undeployed_binding_is_neither_ready_nor_progressing() {
    let mut binding = mk_rendered(1);
    let spec = binding.spec.as_mut().unwrap();
    spec.state = BindingState::Undeploy.as_str().into();
    let reason = not_rendering(spec).expect("renders nothing");
    assert_eq!(reason, Reason::Undeployed);
    let status = binding.status.as_mut().unwrap();
    connections(status, vec![], vec![], 1);
    not_rendered(status, reason, 1);
    assert!(find_condition(&status.conditions, ConditionType::ConnectionsResolved).is_none());
    // Its Release is on its way out: it counts as none.
    let mut leaving = mk_applied(&[mk_object("web", Health::Healthy, "")]);
    leaving.metadata.as_mut().unwrap().delete_time = Some(troupe_common::timestamp::now());
    let binding = rolled(binding, Some(&leaving));
    assert_eq!(seen(&binding), all(false, false, false, Reason::Undeployed));
    assert_eq!(ready_message(&binding), "nothing to render");
}

#[test]
fn a_binding_without_a_release_is_not_rendered() {
    let mut binding = mk_binding(1);
    let spec = binding.spec.as_mut().unwrap();
    spec.release_name.clear();
    let reason = not_rendering(spec).expect("renders nothing");
    not_rendered(binding.status.as_mut().unwrap(), reason, 1);
    let binding = rolled(binding, None);
    assert_eq!(seen(&binding), all(false, false, false, Reason::NoRelease));
    assert_eq!(not_rendering(&mk_binding(1).spec.unwrap()), None);
}

#[test]
fn a_binding_not_yet_rendered_at_its_generation_is_rendering() {
    let release = mk_applied(&[mk_object("web", Health::Healthy, "")]);
    // Rendered at generation 1; the binding is at 2 now.
    let mut binding = mk_rendered(1);
    binding.metadata.as_mut().unwrap().generation = 2;
    let binding = rolled(binding, Some(&release));
    assert_eq!(seen(&binding), all(false, true, false, Reason::Rendering));
    assert!(binding.status.unwrap().release_history.is_empty());
    // Rendered, but its Release is not there (yet).
    let binding = rolled(mk_rendered(1), None);
    assert_eq!(seen(&binding), all(false, true, false, Reason::Rendering));
}

#[test]
fn a_component_without_a_binding_is_not_deployed() {
    assert_eq!(
        readiness(None),
        Readiness {
            ready: false,
            reason: "NotDeployed".into(),
            message: "no ReleaseBinding in this environment".into(),
        }
    );
    let binding = mk_binding(1);
    assert_eq!(readiness(Some(&binding)).reason, Reason::Pending.as_str());
    let release = mk_applied(&[mk_object("web", Health::Healthy, "")]);
    let binding = rolled(mk_rendered(1), Some(&release));
    let seen = readiness(Some(&binding));
    assert!(seen.ready);
    assert_eq!(seen.reason, "ResourcesHealthy");
}

#[test]
fn connections_say_whether_each_resolved() {
    let condition = |status: &pb::ReleaseBindingStatus| {
        let c = find_condition(&status.conditions, ConditionType::ConnectionsResolved).unwrap();
        (holds(c), c.reason.clone(), c.message.clone())
    };
    let mut status = pb::ReleaseBindingStatus::default();
    connections(&mut status, vec![], vec![], 1);
    assert_eq!(
        condition(&status),
        (
            true,
            "NoConnections".into(),
            "the workload has no connections".into()
        )
    );
    let resolved = vec![pb::ResolvedConnection::default(); 2];
    connections(&mut status, resolved, vec![], 1);
    assert_eq!(
        condition(&status),
        (
            true,
            "AllConnectionsResolved".into(),
            "2 connection(s) resolved".into()
        )
    );
    let pending = vec![pb::PendingConnection {
        endpoint: "db".into(),
        reason: "postgres is not deployed in dev".into(),
        ..Default::default()
    }];
    connections(&mut status, vec![], pending, 1);
    assert_eq!(
        condition(&status),
        (
            false,
            "ConnectionsPending".into(),
            "db: postgres is not deployed in dev".into()
        )
    );
    assert_eq!(status.pending_connections.len(), 1);
    assert!(status.resolved_connections.is_empty());
}

#[test]
fn a_render_replaces_its_own_conditions_and_keeps_the_roll_up() {
    let release = mk_applied(&[mk_object("web", Health::Healthy, "")]);
    let mut stored = rolled(mk_rendered(1), Some(&release)).status.unwrap();
    connections(&mut stored, vec![], vec![], 1);
    let mut computed = pb::ReleaseBindingStatus {
        observed_generation: 2,
        ..Default::default()
    };
    not_rendered(&mut computed, Reason::Undeployed, 2);
    merge_render(&mut stored, computed);
    assert_eq!(stored.observed_generation, 2);
    let rendered = find_condition(&stored.conditions, ConditionType::Rendered).unwrap();
    assert_eq!(rendered.reason, "Undeployed");
    assert!(find_condition(&stored.conditions, ConditionType::ConnectionsResolved).is_none());
    let ready = find_condition(&stored.conditions, ConditionType::Ready).unwrap();
    assert_eq!(ready.reason, "ResourcesHealthy", "left to the roll-up");
}

#[test]
fn the_history_keeps_the_latest_releases() {
    let release = mk_applied(&[mk_object("web", Health::Healthy, "")]);
    let mut binding = mk_rendered(1);
    for n in 0..RELEASE_HISTORY + 2 {
        binding.spec.as_mut().unwrap().release_name = format!("web-r{n}");
        roll_up(&mut binding, Some(&release));
        // Rolling up again on the same release adds nothing.
        roll_up(&mut binding, Some(&release));
    }
    let history = &binding.status.as_ref().unwrap().release_history;
    assert_eq!(history.len(), RELEASE_HISTORY);
    assert_eq!(
        history[0].release_name,
        format!("web-r{}", RELEASE_HISTORY + 1)
    );
}
