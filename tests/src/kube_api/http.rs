//! The HTTP side: one handler that logs the request, resolves its path to discovery or to a
//! served kind's collection or object, applies a test's refusal, and makes one call into
//! [`super::apply`], [`super::watch`] or the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::kinds::{self, Kind};
use super::store::{Failure, Key, Later, Store, key, now};
use super::{Request, Shared, apply, logs, watch};

/// What a path names.
enum Target {
    Version,
    Api,
    Apis,
    Group(String),
    Resources(String, String),
    /// `pods/NAME/log`.
    Log {
        namespace: String,
        name: String,
    },
    /// A collection (`name` unset) or an object of a served kind.
    Object {
        kind: Kind,
        namespace: String,
        name: Option<String>,
    },
}

/// Resolves `path` against the kinds served now.
fn resolve(store: &Store, path: &str) -> Result<Target, Failure> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Ok(Target::Version),
        ["api"] => return Ok(Target::Api),
        ["apis"] => return Ok(Target::Apis),
        ["apis", group] => return Ok(Target::Group(group.to_string())),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(Failure::no_resource()),
    };
    let (namespace, plural, name) = match rest {
        [] => return Ok(Target::Resources(group.into(), version.into())),
        ["namespaces", ns, "pods", name, "log"] if group.is_empty() => {
            return Ok(Target::Log {
                namespace: ns.to_string(),
                name: name.to_string(),
            });
        }
        ["namespaces", ns, plural] => (*ns, *plural, None),
        ["namespaces", ns, plural, name] => (*ns, *plural, Some(*name)),
        [plural] => ("", *plural, None),
        [plural, name] => ("", *plural, Some(*name)),
        _ => return Err(Failure::no_resource()),
    };
    let kind = store
        .kind_at(group, version, plural)
        .ok_or_else(Failure::no_resource)?;
    if (!kind.namespaced && !namespace.is_empty())
        || (kind.namespaced && namespace.is_empty() && name.is_some())
    {
        return Err(Failure::no_resource());
    }
    Ok(Target::Object {
        kind,
        namespace: namespace.into(),
        name: name.map(str::to_string),
    })
}

/// Every request.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: axum::http::Uri,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let target = {
        let mut store = shared.store.lock().unwrap();
        let target = resolve(&store, &path);
        let collection = matches!(&target, Ok(Target::Object { name: None, .. }));
        let verb = match &method {
            &Method::GET if collection && watching => "WATCH".to_string(),
            &Method::GET if collection => "LIST".to_string(),
            other => other.to_string(),
        };
        store.requests.push(Request {
            verb,
            path: path.clone(),
            query: query.clone(),
        });
        target
    };
    let (kind, namespace, name) = match target {
        Err(failure) => return failure.into_response(),
        Ok(Target::Object {
            kind,
            namespace,
            name,
        }) => (kind, namespace, name),
        Ok(Target::Log { namespace, name }) => {
            let container = query.get("container").map(String::as_str);
            let follow = query.get("follow").is_some_and(|f| f == "true");
            return logs::serve(shared.clone(), &namespace, &name, container, follow);
        }
        Ok(discovery) => return discover(&shared, discovery),
    };
    let Some(name) = name else {
        return collection(shared, &method, kind, namespace, &query, &body, watching);
    };
    let (refusal, delay) = {
        let store = shared.store.lock().unwrap();
        let at = (method.to_string(), kind.plural.clone(), name.clone());
        (
            store.refusals.get(&at).cloned(),
            store.delays.get(&at).copied(),
        )
    };
    if let Some(delay) = delay {
        // A slow or hung API server for this object; the request is logged already.
        tokio::time::sleep(delay).await;
    }
    if let Some(refusal) = refusal {
        return Failure::new(refusal.code, &refusal.reason, refusal.message).into_response();
    }
    let key = key(&kind, &namespace, &name);
    let manager = query.get("fieldManager").cloned();
    let result = match method {
        Method::GET => {
            let store = shared.store.lock().unwrap();
            match store.objects.get(&key) {
                Some(entry) => return axum::Json(entry.object.clone()).into_response(),
                None => Err(Failure::not_found(&kind.group, &kind.plural, &name)),
            }
        }
        Method::PATCH => patch(&shared, &kind, key, manager, &query, &headers, &body),
        Method::PUT => parse(&body).and_then(|object| {
            let mut store = shared.store.lock().unwrap();
            let manager = manager.as_deref().unwrap_or("kube-client");
            apply::replace(&mut store, &kind, key, manager, object)
        }),
        Method::DELETE => {
            let from_body = serde_json::from_slice::<Value>(&body).ok();
            let policy = query
                .get("propagationPolicy")
                .cloned()
                .or_else(|| from_body?["propagationPolicy"].as_str().map(str::to_string))
                .unwrap_or_default();
            let mut store = shared.store.lock().unwrap();
            delete(&mut store, &kind, key, &policy)
        }
        _ => Err(Failure::new(
            405,
            "MethodNotAllowed",
            format!("{method} {path}"),
        )),
    };
    respond(&shared, result)
}

/// Answers a write: notifies watches and schedules what comes later.
fn respond(shared: &Arc<Shared>, result: Result<apply::Written, Failure>) -> Response {
    match result {
        Err(failure) => failure.into_response(),
        Ok((code, object, later)) => {
            shared.written(later);
            let code = axum::http::StatusCode::from_u16(code).expect("a status code");
            (code, axum::Json(object)).into_response()
        }
    }
}

/// The body as JSON, or YAML.
fn parse(body: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(body).or_else(|_| {
        let text = std::str::from_utf8(body)
            .map_err(|_| Failure::bad_request("the body is not UTF-8".into()))?;
        serde_saphyr::from_str(text)
            .map_err(|e| Failure::bad_request(format!("the body is neither JSON nor YAML: {e}")))
    })
}

/// PATCH: server-side apply, or a merge patch; with `dryRun=All`, nothing is stored.
fn patch(
    shared: &Shared,
    kind: &Kind,
    key: Key,
    manager: Option<String>,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<apply::Written, Failure> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body = parse(body)?;
    let mut stored = shared.store.lock().unwrap();
    // A dry run writes into a scratch copy of what the write reads, and leaves nothing later.
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
    let mut scratch = dry_run.then(|| stored.scratch(&key));
    let store = scratch.as_mut().unwrap_or(&mut stored);
    let result = match content_type {
        "application/apply-patch+yaml" => {
            let Some(manager) = manager else {
                return Err(Failure::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: \
                     is required for apply patch"
                        .into(),
                ));
            };
            let force = query.get("force").is_some_and(|f| f == "true");
            apply::apply(store, kind, &key.2, &key.3, &manager, force, body)
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let manager = manager.as_deref().unwrap_or("kube-client");
            apply::merge(store, kind, key, manager, body)
        }
        other => Err(Failure::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (not {other:?})"
            ),
        )),
    };
    match result {
        Ok((code, object, _)) if dry_run => Ok((code, object, Vec::new())),
        other => other,
    }
}

/// DELETE with a propagation policy: Foreground marks the object and lets it go after the
/// foreground delay; anything else removes it at once. A Job's Pods go with it (first, in the
/// foreground), unless the policy, or its absence, orphans them.
pub(crate) fn delete(
    store: &mut Store,
    kind: &Kind,
    key: Key,
    policy: &str,
) -> Result<apply::Written, Failure> {
    let Some(mut entry) = store.objects.get(&key).cloned() else {
        return Err(Failure::not_found(&kind.group, &kind.plural, &key.3));
    };
    if kind.is("batch", "Job") {
        // The garbage collector: with Foreground the Pods go before the Job does.
        store.release_dependents(&entry.object, policy);
    }
    if policy == "Foreground" {
        let metadata = &mut entry.object["metadata"];
        if !metadata["deletionTimestamp"].is_null() {
            return Ok((200, entry.object, Vec::new()));
        }
        metadata["deletionTimestamp"] = json!(now());
        metadata["deletionGracePeriodSeconds"] = json!(0);
        let mut finalizers = metadata["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        finalizers.push(json!("foregroundDeletion"));
        metadata["finalizers"] = Value::Array(finalizers);
        let (object, _) = store.write(&key, entry);
        return Ok((200, object, vec![Later::Finalize(key)]));
    }
    let object = store.remove(&key).expect("found above");
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": key.3, "group": kind.group, "kind": kind.plural,
                    "uid": object["metadata"]["uid"]}});
    Ok((200, status, Vec::new()))
}

/// GET (list or watch) or POST on a collection.
fn collection(
    shared: Arc<Shared>,
    method: &Method,
    kind: Kind,
    namespace: String,
    query: &BTreeMap<String, String>,
    body: &[u8],
    watching: bool,
) -> Response {
    let filter = watch::Filter::new(&kind, &namespace, query);
    match *method {
        Method::GET if watching => {
            let from = query.get("resourceVersion").and_then(|v| v.parse().ok());
            let timeout = query
                .get("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .map(std::time::Duration::from_secs);
            watch::watch(shared, filter, from, timeout)
        }
        Method::GET => {
            let store = shared.store.lock().unwrap();
            let items: Vec<Value> = store
                .objects
                .iter()
                .filter(|((g, p, ns, _), e)| filter.sees(g, p, ns, &e.object))
                .map(|(_, e)| e.object.clone())
                .collect();
            axum::Json(
                json!({"apiVersion": kind.api_version(), "kind": format!("{}List", kind.kind),
                "metadata": {"resourceVersion": store.resource_version.to_string()},
                "items": items}),
            )
            .into_response()
        }
        Method::POST => {
            let result = parse(body).and_then(|object| {
                let mut store = shared.store.lock().unwrap();
                let manager = query
                    .get("fieldManager")
                    .map_or("kube-client", String::as_str);
                apply::create(&mut store, &kind, &namespace, manager, object)
            });
            respond(&shared, result)
        }
        _ => Failure::new(405, "MethodNotAllowed", format!("{method} on a collection"))
            .into_response(),
    }
}

/// Discovery documents.
fn discover(shared: &Shared, target: Target) -> Response {
    let store = shared.store.lock().unwrap();
    let document = match target {
        Target::Version => Some(kinds::version()),
        Target::Api => Some(kinds::api_versions(&shared.address)),
        Target::Apis => Some(kinds::api_group_list(&store.kinds)),
        Target::Group(group) => kinds::group(&group, &store.kinds),
        Target::Resources(group, version) => kinds::resource_list(&group, &version, &store.kinds),
        Target::Object { .. } | Target::Log { .. } => None,
    };
    match document {
        Some(document) => axum::Json(document).into_response(),
        None => Failure::no_resource().into_response(),
    }
}
