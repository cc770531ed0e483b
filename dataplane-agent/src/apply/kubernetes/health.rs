//! Health of a Kubernetes object, read from the object as the API server returns it.
//!
//! Pure rules, one function per kind: Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod,
//! PersistentVolumeClaim and Service have a rule; every other kind is `Healthy` once it
//! exists. Workload rules first wait for the controller to observe the object's newest
//! generation, so a status left over from the previous spec never counts.

use serde_json::Value;

use troupe_common::status::{
    self, Health::Degraded, Health::Healthy, Health::Progressing, Health::Suspended,
};

/// A health value and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// What the object's status says.
    pub health: status::Health,
    /// Detail for people; empty when there is nothing to add.
    pub message: String,
}

fn healthy() -> Health {
    Health {
        health: Healthy,
        message: String::new(),
    }
}

fn progressing(message: impl Into<String>) -> Health {
    Health {
        health: Progressing,
        message: message.into(),
    }
}

fn degraded(message: impl Into<String>) -> Health {
    Health {
        health: Degraded,
        message: message.into(),
    }
}

fn suspended(message: impl Into<String>) -> Health {
    Health {
        health: Suspended,
        message: message.into(),
    }
}

/// Whether objects of this group and kind have a health rule, so their status is worth
/// watching; the health of any other kind is its existence.
pub fn has_rule(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet")
            | ("batch", "Job" | "CronJob")
            | ("", "Pod" | "PersistentVolumeClaim" | "Service")
    )
}

/// The health of `object`, of the given API group and kind.
pub fn of(group: &str, kind: &str, object: &Value) -> Health {
    match (group, kind) {
        ("apps", "Deployment") => deployment(object),
        ("apps", "StatefulSet") => stateful_set(object),
        ("apps", "DaemonSet") => daemon_set(object),
        ("batch", "Job") => job(object),
        ("batch", "CronJob") => cron_job(object),
        ("", "Pod") => pod(object),
        ("", "PersistentVolumeClaim") => persistent_volume_claim(object),
        ("", "Service") => service(object),
        _ => healthy(),
    }
}

fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

fn flag(object: &Value, pointer: &str) -> bool {
    object.pointer(pointer).and_then(Value::as_bool) == Some(true)
}

/// The `status.conditions` entry of the given type.
fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| text(c, "/type") == Some(type_))
}

fn condition_true<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    condition(object, type_).filter(|c| text(c, "/status") == Some("True"))
}

/// `Progressing` while the controller has not yet seen the newest spec.
fn unobserved(object: &Value) -> Option<Health> {
    let generation = int(object, "/metadata/generation")?;
    let observed = int(object, "/status/observedGeneration").unwrap_or(0);
    (observed < generation).then(|| {
        progressing(format!(
            "waiting for the controller to observe generation {generation}"
        ))
    })
}

fn deployment(d: &Value) -> Health {
    if flag(d, "/spec/paused") {
        return suspended("the rollout is paused");
    }
    if let Some(h) = unobserved(d) {
        return h;
    }
    if let Some(c) = condition(d, "Progressing")
        && text(c, "/reason") == Some("ProgressDeadlineExceeded")
    {
        return degraded(format!(
            "the rollout exceeded its progress deadline: {}",
            text(c, "/message").unwrap_or_default()
        ));
    }
    let want = int(d, "/spec/replicas").unwrap_or(1);
    let updated = int(d, "/status/updatedReplicas").unwrap_or(0);
    let total = int(d, "/status/replicas").unwrap_or(0);
    let available = int(d, "/status/availableReplicas").unwrap_or(0);
    if updated < want {
        progressing(format!("{updated} of {want} replicas updated"))
    } else if total > updated {
        progressing(format!(
            "{} old replicas pending termination",
            total - updated
        ))
    } else if available < updated {
        progressing(format!(
            "{available} of {updated} updated replicas available"
        ))
    } else {
        healthy()
    }
}

fn stateful_set(s: &Value) -> Health {
    if let Some(h) = unobserved(s) {
        return h;
    }
    let want = int(s, "/spec/replicas").unwrap_or(1);
    let ready = int(s, "/status/readyReplicas").unwrap_or(0);
    if ready < want {
        return progressing(format!("{ready} of {want} replicas ready"));
    }
    if text(s, "/spec/updateStrategy/type") == Some("OnDelete") {
        return healthy();
    }
    let partition = int(s, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
    if partition > 0 {
        let updated = int(s, "/status/updatedReplicas").unwrap_or(0);
        let expected = (want - partition).max(0);
        if updated < expected {
            return progressing(format!("{updated} of {expected} replicas updated"));
        }
        return healthy();
    }
    let update = text(s, "/status/updateRevision");
    if update.is_some() && update != text(s, "/status/currentRevision") {
        return progressing(format!(
            "rolling update to revision {} in progress",
            update.unwrap_or_default()
        ));
    }
    healthy()
}

fn daemon_set(d: &Value) -> Health {
    if let Some(h) = unobserved(d) {
        return h;
    }
    if text(d, "/spec/updateStrategy/type") == Some("OnDelete") {
        return healthy();
    }
    let desired = int(d, "/status/desiredNumberScheduled").unwrap_or(0);
    let updated = int(d, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = int(d, "/status/numberAvailable").unwrap_or(0);
    if updated < desired {
        progressing(format!("{updated} of {desired} pods updated"))
    } else if available < desired {
        progressing(format!("{available} of {desired} pods available"))
    } else {
        healthy()
    }
}

fn job(j: &Value) -> Health {
    if let Some(c) = condition_true(j, "Failed") {
        let why = text(c, "/message")
            .or(text(c, "/reason"))
            .unwrap_or("the job failed");
        return degraded(why);
    }
    if condition_true(j, "Complete").is_some() {
        return healthy();
    }
    if flag(j, "/spec/suspend") {
        return suspended("the job is suspended");
    }
    let active = int(j, "/status/active").unwrap_or(0);
    progressing(format!("running, {active} active pods"))
}

fn cron_job(c: &Value) -> Health {
    if flag(c, "/spec/suspend") {
        suspended("the cron job is suspended")
    } else {
        healthy()
    }
}

/// Container waiting reasons that will not resolve by themselves.
const STUCK: &[&str] = &[
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

fn pod(p: &Value) -> Health {
    let phase = text(p, "/status/phase").unwrap_or("Pending");
    match phase {
        "Succeeded" => return healthy(),
        "Failed" => {
            let why = text(p, "/status/message")
                .or(text(p, "/status/reason"))
                .unwrap_or("the pod failed");
            return degraded(why);
        }
        _ => {}
    }
    let statuses = |pointer| {
        p.pointer(pointer)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let init = statuses("/status/initContainerStatuses");
    let containers = statuses("/status/containerStatuses");
    for c in init.iter().chain(containers) {
        if let Some(reason) = text(c, "/state/waiting/reason")
            && STUCK.contains(&reason)
        {
            let name = text(c, "/name").unwrap_or_default();
            let detail = text(c, "/state/waiting/message").unwrap_or_default();
            return degraded(
                format!("container {name}: {reason} {detail}")
                    .trim_end()
                    .to_string(),
            );
        }
    }
    let ready = containers.iter().filter(|c| flag(c, "/ready")).count();
    if phase == "Running" && !containers.is_empty() && ready == containers.len() {
        healthy()
    } else {
        progressing(format!(
            "{phase}, {ready} of {} containers ready",
            containers.len()
        ))
    }
}

fn persistent_volume_claim(c: &Value) -> Health {
    match text(c, "/status/phase") {
        Some("Bound") => healthy(),
        Some("Lost") => degraded("the claim lost its volume"),
        phase => progressing(format!(
            "waiting for a volume ({})",
            phase.unwrap_or("Pending")
        )),
    }
}

fn service(s: &Value) -> Health {
    if text(s, "/spec/type") != Some("LoadBalancer") {
        return healthy();
    }
    let addresses = s
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if addresses > 0 {
        healthy()
    } else {
        progressing("waiting for a load balancer address")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mk_deployment(replicas: i64, status: Value) -> Value {
        json!({"metadata": {"generation": 2}, "spec": {"replicas": replicas}, "status": status})
    }

    fn health(group: &str, kind: &str, object: Value) -> status::Health {
        of(group, kind, &object).health
    }

    #[test]
    fn deployments_wait_for_the_new_generation_then_for_updated_and_available_replicas() {
        let d = |status| health("apps", "Deployment", mk_deployment(3, status));
        // A status from the previous generation does not count, even if it looks complete.
        assert_eq!(
            d(
                json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3})
            ),
            Progressing
        );
        assert_eq!(
            d(
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3})
            ),
            Progressing
        );
        // Old replicas still terminating.
        assert_eq!(
            d(
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3})
            ),
            Progressing
        );
        assert_eq!(
            d(
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2})
            ),
            Progressing
        );
        assert_eq!(
            d(
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3})
            ),
            Healthy
        );
        // No status at all: just created.
        assert_eq!(
            health("apps", "Deployment", json!({"metadata": {"generation": 1}})),
            Progressing
        );
        // spec.replicas defaults to 1.
        assert_eq!(
            health(
                "apps",
                "Deployment",
                json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}})
            ),
            Healthy
        );
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_is_degraded_and_a_paused_one_suspended() {
        let stuck = of(
            "apps",
            "Deployment",
            &mk_deployment(
                3,
                json!({"observedGeneration": 2, "updatedReplicas": 1, "conditions": [
                    {"type": "Available", "status": "False"},
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                     "message": "ReplicaSet \"web-5d\" has timed out progressing."}
                ]}),
            ),
        );
        assert_eq!(stuck.health, Degraded);
        assert!(stuck.message.contains("timed out progressing"), "{stuck:?}");

        let mut paused = mk_deployment(3, json!({}));
        paused["spec"]["paused"] = json!(true);
        assert_eq!(health("apps", "Deployment", paused), Suspended);
    }

    #[test]
    fn stateful_sets_need_ready_replicas_and_the_update_revision() {
        let s = |spec: Value, status: Value| {
            health(
                "apps",
                "StatefulSet",
                json!({"metadata": {"generation": 1}, "spec": spec, "status": status}),
            )
        };
        let observed = |extra: Value| {
            let mut status = json!({"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 2,
                                    "currentRevision": "web-1", "updateRevision": "web-1"});
            status
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            status
        };
        assert_eq!(s(json!({"replicas": 2}), observed(json!({}))), Healthy);
        assert_eq!(
            s(
                json!({"replicas": 2}),
                observed(json!({"readyReplicas": 1}))
            ),
            Progressing
        );
        assert_eq!(
            s(
                json!({"replicas": 2}),
                observed(json!({"updateRevision": "web-2"}))
            ),
            Progressing
        );
        assert_eq!(
            s(json!({"replicas": 2}), json!({"observedGeneration": 0})),
            Progressing
        );
        // A partitioned rollout is done once the replicas above the partition are updated.
        let partitioned = json!({"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}});
        assert_eq!(
            s(
                partitioned.clone(),
                observed(
                    json!({"readyReplicas": 3, "updatedReplicas": 1, "updateRevision": "web-2"})
                )
            ),
            Healthy
        );
        assert_eq!(
            s(
                partitioned,
                observed(
                    json!({"readyReplicas": 3, "updatedReplicas": 0, "updateRevision": "web-2"})
                )
            ),
            Progressing
        );
    }

    #[test]
    fn daemon_sets_need_every_scheduled_pod_updated_and_available() {
        let d = |status: Value| {
            health(
                "apps",
                "DaemonSet",
                json!({"metadata": {"generation": 3}, "status": status}),
            )
        };
        let full = json!({"observedGeneration": 3, "desiredNumberScheduled": 4,
                          "updatedNumberScheduled": 4, "numberAvailable": 4});
        assert_eq!(d(full.clone()), Healthy);
        let mut rolling = full.clone();
        rolling["updatedNumberScheduled"] = json!(2);
        assert_eq!(d(rolling), Progressing);
        let mut unavailable = full.clone();
        unavailable["numberAvailable"] = json!(3);
        assert_eq!(d(unavailable), Progressing);
        let mut stale = full;
        stale["observedGeneration"] = json!(2);
        assert_eq!(d(stale), Progressing);
    }

    #[test]
    fn jobs_complete_fail_or_run_and_cron_jobs_can_be_suspended() {
        let job = |status: Value| health("batch", "Job", json!({"status": status}));
        assert_eq!(
            job(json!({"conditions": [{"type": "Complete", "status": "True"}]})),
            Healthy
        );
        let failed = of(
            "batch",
            "Job",
            &json!({"status": {"conditions": [{"type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}}),
        );
        assert_eq!(failed.health, Degraded);
        assert_eq!(
            failed.message,
            "Job has reached the specified backoff limit"
        );
        assert_eq!(job(json!({"active": 1})), Progressing);
        assert_eq!(
            health("batch", "Job", json!({"spec": {"suspend": true}})),
            Suspended
        );

        assert_eq!(
            health("batch", "CronJob", json!({"spec": {"suspend": true}})),
            Suspended
        );
        assert_eq!(
            health(
                "batch",
                "CronJob",
                json!({"spec": {"schedule": "* * * * *"}})
            ),
            Healthy
        );
    }

    #[test]
    fn pods_follow_their_phase_and_container_readiness() {
        let pod = |status: Value| health("", "Pod", json!({"status": status}));
        let container =
            |ready: bool| json!({"name": "app", "ready": ready, "state": {"running": {}}});
        assert_eq!(
            pod(
                json!({"phase": "Running", "containerStatuses": [container(true), container(true)]})
            ),
            Healthy
        );
        assert_eq!(
            pod(
                json!({"phase": "Running", "containerStatuses": [container(true), container(false)]})
            ),
            Progressing
        );
        assert_eq!(pod(json!({"phase": "Pending"})), Progressing);
        assert_eq!(pod(json!({"phase": "Succeeded"})), Healthy);
        assert_eq!(
            pod(json!({"phase": "Failed", "message": "evicted"})),
            Degraded
        );
        let crashing = of(
            "",
            "Pod",
            &json!({"status": {"phase": "Running", "containerStatuses": [
                {"name": "app", "ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}}
            ]}}),
        );
        assert_eq!(crashing.health, Degraded);
        assert_eq!(
            crashing.message,
            "container app: CrashLoopBackOff back-off 5m0s"
        );
        assert_eq!(
            pod(json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "init", "ready": false, "state": {"waiting": {"reason": "ImagePullBackOff"}}}
            ]})),
            Degraded
        );
    }

    #[test]
    fn claims_must_be_bound_and_load_balancers_need_an_address() {
        let pvc = |phase: &str| {
            health(
                "",
                "PersistentVolumeClaim",
                json!({"status": {"phase": phase}}),
            )
        };
        assert_eq!(pvc("Bound"), Healthy);
        assert_eq!(pvc("Pending"), Progressing);
        assert_eq!(pvc("Lost"), Degraded);

        let lb = |status: Value| {
            health(
                "",
                "Service",
                json!({"spec": {"type": "LoadBalancer"}, "status": status}),
            )
        };
        assert_eq!(lb(json!({"loadBalancer": {}})), Progressing);
        assert_eq!(
            lb(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})),
            Healthy
        );
        assert_eq!(
            health("", "Service", json!({"spec": {"type": "ClusterIP"}})),
            Healthy
        );
    }

    #[test]
    fn other_kinds_are_healthy_by_existing_and_only_ruled_kinds_are_watched() {
        assert_eq!(health("", "ConfigMap", json!({})), Healthy);
        // A custom resource that happens to be called Deployment has no rule.
        assert_eq!(
            health(
                "example.com",
                "Deployment",
                json!({"metadata": {"generation": 5}})
            ),
            Healthy
        );
        assert!(has_rule("apps", "Deployment"));
        assert!(has_rule("", "Service"));
        assert!(!has_rule("", "ConfigMap"));
        assert!(!has_rule("example.com", "Deployment"));
    }
}
