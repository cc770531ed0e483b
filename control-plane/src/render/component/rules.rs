//! Checks on a render: a type's or trait's validation rules before it renders, output rules
//! over what it rendered, and what every rendered object must be before it may reach a data
//! plane (Kubernetes' naming rules, the data plane's resource policy, the environment's
//! namespace).

use serde_json::Value;
use troupe_common::k8s_names;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::policy::{self, Policy, Scope};

use super::patches::{object_id, selects};
use super::{RenderError, fail};
use crate::render::template::{Context, Engine};

/// Checks a type's or trait's validation rules before anything renders: each rule must
/// evaluate to `true`, otherwise its message is the error.
pub(super) fn check_rules(
    engine: &Engine,
    location: &str,
    rules: &[pb::ValidationRule],
    context: &Context,
) -> Result<(), RenderError> {
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{location} validations[{i}]");
        let holds = engine
            .eval("rule", &rule.rule, context)
            .map_err(|e| fail(&at, e.to_string()))?;
        verdict(&at, &rule.rule, &rule.message, holds)?;
    }
    Ok(())
}

/// Checks rules over the rendered objects: each rule must give `true` for every object its
/// target selects, otherwise its message, naming the object, is the error.
pub(super) fn check_output_rules(
    engine: &Engine,
    location: &str,
    rules: &[pb::OutputValidationRule],
    context: &Context,
    objects: &[Value],
) -> Result<(), RenderError> {
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{location} outputValidations[{i}]");
        let target = rule.target.clone().unwrap_or_default();
        for object in objects {
            if !selects(engine, &at, &target, context, &[], object)? {
                continue;
            }
            let object_at = format!("{at} on {}", object_id(object));
            let holds = engine
                .eval_bound("rule", &rule.rule, context, &[("object", object)])
                .map_err(|e| fail(&object_at, e.to_string()))?;
            verdict(&object_at, &rule.rule, &rule.message, holds)?;
        }
    }
    Ok(())
}

/// What a rule's value means: `true` holds, `false` fails with the rule's message (or says
/// which rule did not hold), anything else is an error in the rule itself.
fn verdict(at: &str, rule: &str, message: &str, holds: Value) -> Result<(), RenderError> {
    match holds {
        Value::Bool(true) => Ok(()),
        Value::Bool(false) if message.is_empty() => Err(fail(at, format!("{rule} does not hold"))),
        Value::Bool(false) => Err(fail(at, message)),
        other => Err(fail(
            at,
            format!("the rule must give true or false, not {other}"),
        )),
    }
}

/// Every rendered object must be a Kubernetes object that may reach the data plane: an
/// `apiVersion`, `kind`, `metadata.name`, labels and annotations that follow Kubernetes'
/// naming rules, a kind the data plane's `policy` allows, and a namespace that is the
/// environment's `target` namespace. A namespaced object without a namespace gets `target`;
/// one that names another namespace is refused, as is a cluster-scoped one that names any.
///
/// Runs on every object of every render: byte checks only, nothing compiled or allocated
/// unless something is wrong.
pub(super) fn check_object(
    index: usize,
    object: &mut Value,
    policy: &Policy,
    target: &str,
) -> Result<(), RenderError> {
    let location = || object_location(index, object);
    let text = |field: &str| -> Result<&str, RenderError> {
        match object.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                Err(fail(location(), format!("{field} is missing")))
            }
            Some(other) => Err(fail(
                location(),
                format!("{field} must be a string, not {other}"),
            )),
        }
    };
    let api_version = text("apiVersion")?;
    let kind = text("kind")?;
    let meta = match object.get("metadata") {
        Some(Value::Object(meta)) => meta,
        _ => return Err(fail(location(), "metadata.name is missing")),
    };
    let name = match meta.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.as_str(),
        _ => return Err(fail(location(), "metadata.name is missing")),
    };
    let rule = |field: &str, value: &str, why: String| {
        fail(location(), format!("{field} {value:?} {why}"))
    };
    k8s_names::check_api_version(api_version)
        .map_err(|why| rule("apiVersion", api_version, why))?;
    k8s_names::check_kind(kind).map_err(|why| rule("kind", kind, why))?;
    let group = policy::api_group(api_version);
    k8s_names::check_object_name(group, kind, name)
        .map_err(|why| rule("metadata.name", name, why))?;
    check_string_map(meta.get("labels"), "metadata.labels", true)
        .map_err(|m| fail(location(), m))?;
    check_string_map(meta.get("annotations"), "metadata.annotations", false)
        .map_err(|m| fail(location(), m))?;
    let namespace = match meta.get("namespace") {
        None | Some(Value::Null) => "",
        Some(Value::String(ns)) => ns.as_str(),
        Some(other) => {
            return Err(fail(
                location(),
                format!("metadata.namespace must be a string, not {other}"),
            ));
        }
    };
    let scope = policy
        .check(api_version, kind, namespace)
        .map_err(|e| fail(location(), e.to_string()))?;
    if scope == Scope::Cluster || namespace == target {
        return Ok(());
    }
    if !namespace.is_empty() {
        return Err(fail(
            location(),
            format!(
                "metadata.namespace is {namespace:?}, outside the environment's namespace \
                 {target:?}: leave it empty (or set it to ${{{{ metadata.namespace }}}})"
            ),
        ));
    }
    object["metadata"]["namespace"] = Value::from(target);
    Ok(())
}

/// `rendered object 2 (Service/api)`: the object's position and, as far as it has them, its
/// kind and name.
fn object_location(index: usize, object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match (kind.is_empty(), name.is_empty()) {
        (true, _) => format!("rendered object {index} (no kind)"),
        (false, true) => format!("rendered object {index} ({kind})"),
        (false, false) => format!("rendered object {index} ({kind}/{name})"),
    }
}

/// Labels or annotations, when present: a map of qualified-name keys to strings; label
/// values follow the label value rule, annotations together fit 256 KiB.
fn check_string_map(map: Option<&Value>, field: &str, labels: bool) -> Result<(), String> {
    let map = match map {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(map)) => map,
        Some(other) => return Err(format!("{field} must be a map of strings, not {other}")),
    };
    let mut bytes = 0;
    for (key, value) in map {
        k8s_names::check_qualified_name(key).map_err(|why| format!("{field} key {key:?} {why}"))?;
        let Value::String(value) = value else {
            return Err(format!(
                "{field}[{key:?}] must be a string, not {value} (quote it in the template)"
            ));
        };
        if labels {
            k8s_names::check_label_value(value)
                .map_err(|why| format!("{field}[{key:?}] value {value:?} {why}"))?;
        }
        bytes += key.len() + value.len();
    }
    if !labels && bytes > k8s_names::MAX_ANNOTATIONS_BYTES {
        return Err(format!(
            "{field} take {bytes} bytes; at most {} are allowed",
            k8s_names::MAX_ANNOTATIONS_BYTES
        ));
    }
    Ok(())
}

/// Pod templates of workload kinds, where the configuration hash goes.
pub(super) fn pod_templates(object: &mut Value) -> Vec<&mut Value> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let pointer = match kind.as_str() {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => return vec![],
    };
    object.pointer_mut(pointer).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use troupe_common::Policy;
    use troupe_common::pb::v1alpha1::{GroupKind, ResourcePolicy};

    use super::check_object;

    const TARGET: &str = "acme-shop-dev";

    /// Checks `object` under the default policy; the message, or the object as it goes out.
    fn mk_check(object: Value) -> Result<Value, String> {
        mk_check_with(&Policy::new("DataPlane acme/local", None), object)
    }

    fn mk_check_with(policy: &Policy, mut object: Value) -> Result<Value, String> {
        check_object(2, &mut object, policy, TARGET)
            .map(|()| object)
            .map_err(|e| e.to_string())
    }

    fn mk_object(api_version: &str, kind: &str, name: &str) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}})
    }

    #[test]
    fn rendered_objects_must_name_api_version_kind_and_name() {
        assert!(mk_check(mk_object("v1", "Service", "api")).is_ok());
        assert_eq!(
            mk_check(json!({"kind": "Service", "metadata": {"name": "api"}})).unwrap_err(),
            "rendered object 2 (Service/api): apiVersion is missing"
        );
        assert_eq!(
            mk_check(json!({"apiVersion": "v1", "metadata": {}})).unwrap_err(),
            "rendered object 2 (no kind): kind is missing"
        );
        assert_eq!(
            mk_check(json!({"apiVersion": "v1", "kind": "Service", "metadata": {}})).unwrap_err(),
            "rendered object 2 (Service): metadata.name is missing"
        );
    }

    #[test]
    fn names_follow_kubernetes_rules() {
        assert_eq!(
            mk_check(mk_object("v1", "Service", "API")).unwrap_err(),
            "rendered object 2 (Service/API): metadata.name \"API\" is not a DNS-1035 label: it \
             contains 'A'; only lowercase letters, digits and '-' are allowed"
        );
        for name in ["/etc/passwd", "../../etc", "a/b", "..", "a_b"] {
            let err = mk_check(mk_object("apps/v1", "Deployment", name)).unwrap_err();
            assert!(err.contains("metadata.name"), "{err}");
        }
        let err = mk_check(mk_object("v1", "../../etc", "api")).unwrap_err();
        assert!(
            err.starts_with("rendered object 2 (../../etc/api): kind \"../../etc\" is not a kind"),
            "{err}"
        );
        let err = mk_check(mk_object("../../v1", "Service", "api")).unwrap_err();
        assert!(err.contains("apiVersion \"../../v1\""), "{err}");
        let err = mk_check(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "labels": {"bad key": "x"}}}))
        .unwrap_err();
        assert!(err.contains("metadata.labels key \"bad key\""), "{err}");
        let err = mk_check(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "labels": {"tier": "front end"}}}))
        .unwrap_err();
        assert!(
            err.contains("metadata.labels[\"tier\"] value \"front end\""),
            "{err}"
        );
        let err = mk_check(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "labels": {"replicas": 3}}}))
        .unwrap_err();
        assert!(err.contains("must be a string, not 3"), "{err}");
        let err = mk_check(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "annotations": {"-x": "anything goes here"}}}))
        .unwrap_err();
        assert!(err.contains("metadata.annotations key \"-x\""), "{err}");
        assert!(
            mk_check(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "api", "annotations": {"example.com/note": "a b/c"}}}))
            .is_ok()
        );
    }

    #[test]
    fn namespaced_objects_land_in_the_target_namespace_and_nowhere_else() {
        let out = mk_check(mk_object("apps/v1", "Deployment", "api")).unwrap();
        assert_eq!(out["metadata"]["namespace"], TARGET);
        let mut same = mk_object("apps/v1", "Deployment", "api");
        same["metadata"]["namespace"] = TARGET.into();
        assert_eq!(mk_check(same.clone()).unwrap(), same);
        let mut other = mk_object("apps/v1", "Deployment", "api");
        other["metadata"]["namespace"] = "kube-system".into();
        assert_eq!(
            mk_check(other).unwrap_err(),
            "rendered object 2 (Deployment/api): metadata.namespace is \"kube-system\", outside \
             the environment's namespace \"acme-shop-dev\": leave it empty (or set it to \
             ${{ metadata.namespace }})"
        );
    }

    #[test]
    fn kinds_outside_the_policy_are_refused_and_cluster_kinds_need_a_listing() {
        let err = mk_check(mk_object(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "admin",
        ))
        .unwrap_err();
        assert_eq!(
            err,
            "rendered object 2 (ClusterRoleBinding/admin): kind ClusterRoleBinding \
             (rbac.authorization.k8s.io) is cluster-scoped and DataPlane acme/local does not \
             allow it: add {group: \"rbac.authorization.k8s.io\", kind: ClusterRoleBinding} to \
             spec.resourcePolicy.allowedClusterKinds there to allow it"
        );
        let err = mk_check(mk_object("example.com/v1", "Gadget", "g")).unwrap_err();
        assert!(err.contains("spec.resourcePolicy.allowedKinds"), "{err}");

        let spec = ResourcePolicy {
            allowed_cluster_kinds: vec![GroupKind {
                group: String::new(),
                kind: "Namespace".into(),
            }],
            ..Default::default()
        };
        let policy = Policy::new("DataPlane acme/local", Some(&spec));
        let out = mk_check_with(&policy, mk_object("v1", "Namespace", "extra")).unwrap();
        assert_eq!(out["metadata"].get("namespace"), None);
        let mut named = mk_object("v1", "Namespace", "extra");
        named["metadata"]["namespace"] = TARGET.into();
        let err = mk_check_with(&policy, named).unwrap_err();
        assert!(err.contains("metadata.namespace must be empty"), "{err}");
    }
}
