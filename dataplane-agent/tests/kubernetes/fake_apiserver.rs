//! A small Kubernetes API server for tests, speaking the HTTP paths the applier uses:
//! discovery of `/api/v1` and `/apis/apps/v1`, `/version`, server-side apply (PATCH with
//! `application/apply-patch+yaml`, `fieldManager` and `force=true`), GET, list with
//! `labelSelector`, DELETE, and watch (`?watch=true`, newline-delimited JSON events).
//!
//! It keeps objects in memory with a global resourceVersion and an event log, and records
//! every request in order. It knows Namespaces, ConfigMaps, Services, Nodes and Deployments.
//! Not modelled: field ownership conflicts, admission, defaulting, garbage collection
//! (deleting a Namespace deletes nothing else).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

/// A kind the fake serves.
struct Resource {
    prefix: &'static str,
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
}

const RESOURCES: &[Resource] = &[
    Resource {
        prefix: "/api/v1",
        api_version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
    },
    Resource {
        prefix: "/api/v1",
        api_version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
    },
    Resource {
        prefix: "/api/v1",
        api_version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
    },
    Resource {
        prefix: "/api/v1",
        api_version: "v1",
        kind: "Node",
        plural: "nodes",
        namespaced: false,
    },
    Resource {
        prefix: "/apis/apps/v1",
        api_version: "apps/v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
    },
];

/// Where an object is kept: plural, namespace (empty when cluster-scoped), name.
type Key = (&'static str, String, String);

struct Event {
    resource_version: u64,
    plural: &'static str,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    resource_version: u64,
    objects: BTreeMap<Key, Value>,
    events: Vec<Event>,
    requests: Vec<String>,
    /// Server-side applies answered with a failure instead, by plural and name: the code,
    /// reason and message of the Status (an admission webhook or RBAC saying no).
    refusals: BTreeMap<(String, String), (StatusCode, String, String)>,
}

struct Shared {
    store: Mutex<Store>,
    /// The newest resourceVersion, for watches to wait on.
    latest: watch::Sender<u64>,
}

/// A running fake API server.
pub struct FakeApiServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeApiServer {
    /// Serves on a free port of 127.0.0.1 until the test's runtime ends.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            store: Mutex::default(),
            latest: watch::channel(0).0,
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, shared }
    }

    /// A client of this server.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(kube::Config::new(self.url.parse().unwrap())).unwrap()
    }

    /// The object of kind `plural` at `namespace/name` (namespace empty for cluster-scoped).
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store.lock().unwrap();
        store
            .objects
            .iter()
            .find(|((p, ns, n), _)| *p == plural && ns == namespace && n == name)
            .map(|(_, o)| o.clone())
    }

    /// Every request so far, as `METHOD PATH` (`LIST` and `WATCH` for collection reads).
    pub fn requests(&self) -> Vec<String> {
        self.shared.store.lock().unwrap().requests.clone()
    }

    /// Stores `object` as if someone else had created it.
    pub fn create(&self, object: Value) {
        let resource = RESOURCES
            .iter()
            .find(|r| r.kind == object["kind"] && r.api_version == object["apiVersion"])
            .expect("a kind the fake serves");
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let mut store = self.shared.store.lock().unwrap();
        store.put(resource, namespace, name, object, "ADDED");
        self.shared.latest.send_replace(store.resource_version);
    }

    /// Answers every apply of `plural` `name` with a failure Status, as RBAC (403) or an
    /// admission webhook (422) would.
    pub fn refuse(&self, plural: &str, name: &str, code: u16, reason: &str, message: &str) {
        let code = StatusCode::from_u16(code).expect("an HTTP status code");
        self.shared.store.lock().unwrap().refusals.insert(
            (plural.to_string(), name.to_string()),
            (code, reason.to_string(), message.to_string()),
        );
    }

    /// Sets the status of an object, as its controller would.
    pub fn set_status(&self, plural: &str, namespace: &str, name: &str, status: Value) {
        let resource = RESOURCES.iter().find(|r| r.plural == plural).unwrap();
        let mut store = self.shared.store.lock().unwrap();
        let key = (resource.plural, namespace.to_string(), name.to_string());
        let mut object = store.objects[&key].clone();
        object["status"] = status;
        store.put(resource, key.1, key.2, object, "MODIFIED");
        self.shared.latest.send_replace(store.resource_version);
    }
}

impl Store {
    /// Stores an object under a new resourceVersion and logs the event.
    fn put(
        &mut self,
        resource: &'static Resource,
        namespace: String,
        name: String,
        mut object: Value,
        event: &'static str,
    ) {
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.events.push(Event {
            resource_version: self.resource_version,
            plural: resource.plural,
            namespace: namespace.clone(),
            kind: event,
            object: object.clone(),
        });
        self.objects
            .insert((resource.plural, namespace, name), object);
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "reason": reason, "message": message, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

/// A label selector of `key=value` and `key` (exists) terms.
fn selected(object: &Value, selector: Option<&String>) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.is_none_or(|s| {
        s.split(',')
            .filter(|t| !t.is_empty())
            .all(|term| match term.split_once('=') {
                Some((k, v)) => labels[k] == v,
                None => labels.get(term).is_some(),
            })
    })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if path == "/version" {
        return axum::Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1",
            "gitCommit": "fake", "gitTreeState": "clean", "buildDate": "2025-05-15T00:00:00Z",
            "goVersion": "go1.24.2", "compiler": "gc", "platform": "linux/amd64"}))
        .into_response();
    }
    let Some(prefix) = ["/api/v1", "/apis/apps/v1"]
        .into_iter()
        .find(|p| path == *p || path.starts_with(&format!("{p}/")))
    else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("no {path}"));
    };
    let segments: Vec<&str> = path[prefix.len()..]
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if segments.is_empty() {
        return discovery(prefix);
    }
    let (namespace, plural, name) = match segments.as_slice() {
        ["namespaces", ns, plural, rest @ ..] if rest.len() <= 1 => {
            (ns.to_string(), *plural, rest.first().copied())
        }
        [plural, rest @ ..] if rest.len() <= 1 => (String::new(), *plural, rest.first().copied()),
        _ => return status(StatusCode::NOT_FOUND, "NotFound", format!("no {path}")),
    };
    let Some(resource) = RESOURCES
        .iter()
        .find(|r| r.prefix == prefix && r.plural == plural)
    else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("no {path}"));
    };
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, name) {
        (&Method::GET, None) if watching => "WATCH".to_string(),
        (&Method::GET, None) => "LIST".to_string(),
        _ => method.to_string(),
    };
    shared
        .store
        .lock()
        .unwrap()
        .requests
        .push(format!("{verb} {path}"));

    let refusal = name.and_then(|name| {
        let store = shared.store.lock().unwrap();
        store
            .refusals
            .get(&(plural.to_string(), name.to_string()))
            .cloned()
    });
    match (method, name) {
        (Method::PATCH, Some(_)) if refusal.is_some() => {
            let (code, reason, message) = refusal.expect("checked");
            status(code, &reason, message)
        }
        (Method::PATCH, Some(name)) => {
            apply(&shared, resource, namespace, name, &query, &headers, &body)
        }
        (Method::GET, Some(name)) => {
            let store = shared.store.lock().unwrap();
            match store
                .objects
                .get(&(resource.plural, namespace, name.to_string()))
            {
                Some(object) => axum::Json(object.clone()).into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{plural} {name} not found"),
                ),
            }
        }
        (Method::DELETE, Some(name)) => {
            let mut store = shared.store.lock().unwrap();
            let Some(object) =
                store
                    .objects
                    .remove(&(resource.plural, namespace.clone(), name.to_string()))
            else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{plural} {name} not found"),
                );
            };
            store.resource_version += 1;
            let resource_version = store.resource_version;
            store.events.push(Event {
                resource_version,
                plural: resource.plural,
                namespace,
                kind: "DELETED",
                object,
            });
            shared.latest.send_replace(resource_version);
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}))
                .into_response()
        }
        (Method::GET, None) if watching => {
            let from = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            watch(
                shared,
                resource,
                namespace,
                query.get("labelSelector").cloned(),
                from,
            )
        }
        (Method::GET, None) => {
            let store = shared.store.lock().unwrap();
            let items: Vec<Value> = store
                .objects
                .iter()
                .filter(|((p, ns, _), o)| {
                    *p == resource.plural
                        && (namespace.is_empty() || *ns == namespace)
                        && selected(o, query.get("labelSelector"))
                })
                .map(|(_, o)| o.clone())
                .collect();
            axum::Json(json!({"apiVersion": resource.api_version, "kind": format!("{}List", resource.kind),
                "metadata": {"resourceVersion": store.resource_version.to_string()}, "items": items}))
            .into_response()
        }
        (method, _) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {path}"),
        ),
    }
}

fn discovery(prefix: &str) -> Response {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.prefix == prefix)
        .map(|r| {
            json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                   "kind": r.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    let group_version = prefix
        .trim_start_matches("/api/")
        .trim_start_matches("/apis/");
    axum::Json(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                      "resources": resources}),
    )
    .into_response()
}

/// Server-side apply, as far as the applier can tell: the applied object replaces the
/// previous one, except that labels set by others stay and the status is kept.
fn apply(
    shared: &Shared,
    resource: &'static Resource,
    namespace: String,
    name: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/apply-patch+yaml")
    {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "only server-side apply".into(),
        );
    }
    let Some(manager) = query.get("fieldManager") else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "fieldManager is required for apply".into(),
        );
    };
    if query.get("force").map(String::as_str) != Some("true") {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            "apply without force".into(),
        );
    }
    // JSON is YAML; the applier sends JSON.
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON".into(),
        );
    };
    if object["kind"] != resource.kind
        || object["apiVersion"] != resource.api_version
        || object["metadata"]["name"] != name
        || object["metadata"]["namespace"].as_str().unwrap_or_default() != namespace
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body does not match the path".into(),
        );
    }
    let mut store = shared.store.lock().unwrap();
    let key = (resource.plural, namespace.clone(), name.to_string());
    let old = store.objects.get(&key).cloned();
    let spec_changed = old.as_ref().is_none_or(|old| old["spec"] != object["spec"]);
    let metadata = &mut object["metadata"];
    if let Some(old) = &old {
        let mut labels = old["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        labels.extend(metadata["labels"].as_object().cloned().unwrap_or_default());
        metadata["labels"] = Value::Object(labels);
        metadata["uid"] = old["metadata"]["uid"].clone();
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        metadata["generation"] = json!(if spec_changed {
            generation + 1
        } else {
            generation
        });
        if let Some(status) = old.get("status") {
            object["status"] = status.clone();
        }
    } else {
        metadata["uid"] = json!(format!("uid-{}", store.resource_version + 1));
        metadata["generation"] = json!(1);
        if let Some(o) = object.as_object_mut() {
            o.remove("status");
        }
    }
    object["metadata"]["managedFields"] = json!([{"manager": manager, "operation": "Apply",
        "apiVersion": resource.api_version, "fieldsType": "FieldsV1", "fieldsV1": {}}]);
    let unchanged = old.as_ref().is_some_and(|old| {
        let mut old = old.clone();
        old["metadata"]["resourceVersion"] = Value::Null;
        let mut new = object.clone();
        new["metadata"]["resourceVersion"] = Value::Null;
        old == new
    });
    if unchanged {
        return axum::Json(old.unwrap()).into_response();
    }
    let code = if old.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    store.put(
        resource,
        namespace,
        name.to_string(),
        object.clone(),
        if old.is_some() { "MODIFIED" } else { "ADDED" },
    );
    let applied = store.objects[&key].clone();
    shared.latest.send_replace(store.resource_version);
    (code, axum::Json(applied)).into_response()
}

/// Streams the events after `from` of one collection, one JSON object a line, until the
/// client goes away.
fn watch(
    shared: Arc<Shared>,
    resource: &'static Resource,
    namespace: String,
    selector: Option<String>,
    from: u64,
) -> Response {
    let latest = shared.latest.subscribe();
    let events = futures::stream::unfold(
        (shared, latest, from),
        move |(shared, mut latest, mut seen)| {
            let (namespace, selector) = (namespace.clone(), selector.clone());
            async move {
                loop {
                    latest.borrow_and_update();
                    let next = {
                        let store = shared.store.lock().unwrap();
                        let next = store
                            .events
                            .iter()
                            .filter(|e| e.resource_version > seen)
                            .find(|e| {
                                e.plural == resource.plural
                                    && (namespace.is_empty() || e.namespace == namespace)
                                    && selected(&e.object, selector.as_ref())
                            })
                            .map(|e| {
                                (
                                    e.resource_version,
                                    json!({"type": e.kind, "object": e.object}),
                                )
                            });
                        if next.is_none() {
                            seen = store.resource_version;
                        }
                        next
                    };
                    if let Some((resource_version, event)) = next {
                        let line = Bytes::from(format!("{event}\n"));
                        return Some((
                            Ok::<_, Infallible>(line),
                            (shared, latest, resource_version),
                        ));
                    }
                    latest.changed().await.ok()?;
                }
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(events))
        .unwrap()
}
