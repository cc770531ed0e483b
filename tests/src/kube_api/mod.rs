//! A strict Kubernetes API server for tests, on a free port of 127.0.0.1, in memory. It speaks
//! what a v1.33 server does on the paths Troupe uses, with the real failure shapes (`Status`
//! objects with reason, code and details):
//!
//! - discovery (`/version`, `/api`, `/apis`, `/apis/GROUP`, `/api/v1`, `/apis/GROUP/VERSION`)
//!   of the built-in kinds and of CRD-defined kinds once Established ([`kinds`]);
//! - server-side apply with field managers and conflicts, `Update` writes by other actors,
//!   refused changes to a Job's template ([`apply`]);
//! - namespaces that must exist and take their contents with them, foreground deletion, CRDs
//!   that take a while to be served ([`store`]);
//! - lists and watches with label selectors, compaction (410) and expiry ([`watch`]);
//! - Jobs that get their Pod and lose it with them ([`jobs`]), containers a test starts and
//!   ends as the kubelet would ([`kubelet`]), and their logs, followed ([`logs`]);
//! - a log of every request, and refusals and delays a test sets up ([`http`]).
//!
//! [`KubeApi`] is the handle a test, the agent binary (through [`KubeApi::write_kubeconfig`])
//! or `troupe-bench` uses; its methods act as the other actors of a cluster (kubectl, a
//! controller, someone deleting).

mod apply;
mod http;
mod jobs;
mod kinds;
mod kubelet;
mod logs;
mod store;
mod watch;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch as latest;

pub use jobs::JOB_NAME_LABEL;
use store::{Failure, Later, Refusal, Store, key};

/// One request the server answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// GET, LIST, WATCH, PATCH, POST, PUT or DELETE (LIST and WATCH: GETs of a collection).
    pub verb: String,
    /// The URL path.
    pub path: String,
    /// The query parameters (`resourceVersion=0` marks a list served from the cache).
    pub query: BTreeMap<String, String>,
}

impl Request {
    /// `VERB PATH`.
    pub fn line(&self) -> String {
        format!("{} {}", self.verb, self.path)
    }
}

/// State shared by the handle and the server's tasks.
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// The newest resourceVersion, for watches to wait on.
    latest: latest::Sender<u64>,
    /// Bumped by [`KubeApi::expire_watches`]: every open watch ends.
    epoch: latest::Sender<u64>,
    /// `127.0.0.1:PORT`.
    address: String,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    /// After a write: wakes the watches and runs (now, or after its delay) what comes later.
    fn written(self: &Arc<Self>, later: Vec<Later>) {
        self.wake();
        for later in later {
            let delay = {
                let store = self.store.lock().unwrap();
                match later {
                    Later::Establish(_) => store.crd_delay,
                    Later::Finalize(_) => store.foreground_delay,
                }
            };
            if delay.is_zero() {
                self.run(later);
            } else {
                let shared = self.clone();
                self.runtime.spawn(async move {
                    tokio::time::sleep(delay).await;
                    shared.run(later);
                });
            }
        }
    }

    fn run(&self, later: Later) {
        {
            let mut store = self.store.lock().unwrap();
            match later {
                Later::Establish(key) => {
                    store.establish(&key);
                }
                Later::Finalize(key) => {
                    let deleting = store
                        .objects
                        .get(&key)
                        .is_some_and(|e| !e.object["metadata"]["deletionTimestamp"].is_null());
                    if deleting {
                        store.remove(&key);
                    }
                }
            }
        }
        self.wake();
    }

    fn wake(&self) {
        let newest = self.store.lock().unwrap().resource_version;
        self.latest.send_replace(newest);
    }
}

/// A running API server; it serves until the runtime that started it ends.
pub struct KubeApi {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
}

impl KubeApi {
    /// Serves on a free port of 127.0.0.1, with the namespaces every cluster has (`default`,
    /// `kube-system`, `kube-public`, `kube-node-lease`).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port on 127.0.0.1");
        let address = listener.local_addr().expect("a bound address").to_string();
        let shared = Arc::new(Shared {
            store: Mutex::default(),
            latest: latest::channel(0).0,
            epoch: latest::channel(0).0,
            address: address.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let api = Self {
            url: format!("http://{address}"),
            shared,
        };
        for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            api.create(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": namespace}}));
        }
        api
    }

    /// A client of this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("the server's URL"));
        kube::Client::try_from(config).expect("a client of the API server")
    }

    /// Writes a kubeconfig for this server (no credentials, context namespace `default`) to
    /// `path`, for `KUBECONFIG`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubeapi\n  cluster:\n    server: {}\n\
             users:\n- name: kubeapi\n  user: {{}}\ncontexts:\n- name: kubeapi\n  context:\n    \
             cluster: kubeapi\n    user: kubeapi\n    namespace: default\ncurrent-context: kubeapi\n",
            self.url
        );
        std::fs::write(path, text)
    }

    /// The object of kind `plural` at `namespace/name` (namespace empty for cluster-scoped).
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store.lock().unwrap();
        let kind = store.kind_named(plural)?;
        let entry = store.objects.get(&key(&kind, namespace, name))?;
        Some(entry.object.clone())
    }

    /// The objects of kind `plural` in `namespace` (empty: every namespace, or
    /// cluster-scoped), by namespace and name.
    pub fn list(&self, plural: &str, namespace: &str) -> Vec<Value> {
        let store = self.shared.store.lock().unwrap();
        let Some(kind) = store.kind_named(plural) else {
            return Vec::new();
        };
        store
            .objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                *g == kind.group && *p == kind.plural && (namespace.is_empty() || ns == namespace)
            })
            .map(|(_, e)| e.object.clone())
            .collect()
    }

    /// Creates `object` as kubectl would (manager `kubectl`, operation Update); its kind must
    /// be served and its namespace exist. Returns the stored object, or the failure Status.
    pub fn try_create(&self, object: Value) -> Result<Value, Value> {
        let result = {
            let mut store = self.shared.store.lock().unwrap();
            let kind = store
                .kind_of(&object)
                .ok_or_else(|| Failure::no_resource().to_json())?;
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or(if kind.namespaced { "default" } else { "" })
                .to_string();
            apply::create(&mut store, &kind, &namespace, "kubectl", object)
        };
        self.settle(result)
    }

    /// [`KubeApi::try_create`], panicking on a failure.
    pub fn create(&self, object: Value) -> Value {
        self.try_create(object)
            .unwrap_or_else(|status| panic!("creating an object: {status}"))
    }

    /// Sets the field at `json_pointer` (`/spec/replicas`) of an object to `value` as
    /// `manager` would with an update (an HPA controller, kubectl edit): `manager` owns it.
    pub fn update_as(
        &self,
        manager: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        json_pointer: &str,
        value: Value,
    ) -> Result<Value, Value> {
        let result = {
            let mut store = self.shared.store.lock().unwrap();
            let kind = store
                .kind_named(plural)
                .ok_or_else(|| Failure::no_resource().to_json())?;
            let key = key(&kind, namespace, name);
            apply::update(&mut store, &kind, key, manager, json_pointer, value)
        };
        self.settle(result)
    }

    /// Deletes an object as someone else would (background propagation); false if absent.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> bool {
        let removed = {
            let mut store = self.shared.store.lock().unwrap();
            let Some(kind) = store.kind_named(plural) else {
                return false;
            };
            let removed = store.remove(&key(&kind, namespace, name));
            if let Some(object) = &removed
                && kind.is("batch", "Job")
            {
                store.release_dependents(object, "Background");
            }
            removed.is_some()
        };
        self.shared.wake();
        removed
    }

    /// Sets the status of an object, as its controller would; panics if there is none.
    pub fn set_status(&self, plural: &str, namespace: &str, name: &str, status: Value) {
        {
            let mut store = self.shared.store.lock().unwrap();
            let kind = store.kind_named(plural).expect("a served kind");
            let key = key(&kind, namespace, name);
            let mut entry = store.objects.get(&key).cloned().expect("the object exists");
            entry.object["status"] = status;
            store.write(&key, entry);
        }
        self.shared.wake();
    }

    /// The managers owning the field at `json_pointer` of an object, a field inside it, or
    /// the field it is in (an array is one field), in the order they first wrote.
    pub fn managers_of(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        json_pointer: &str,
    ) -> Vec<String> {
        let store = self.shared.store.lock().unwrap();
        let Some(entry) = store
            .kind_named(plural)
            .and_then(|kind| store.objects.get(&key(&kind, namespace, name)))
        else {
            return Vec::new();
        };
        entry
            .managers
            .iter()
            .filter(|m| m.fields.iter().any(|f| apply::overlaps(f, json_pointer)))
            .map(|m| m.name.clone())
            .collect()
    }

    /// Answers `method` (PATCH, DELETE, GET, PUT) on object `plural` `name` with a failure
    /// Status, as RBAC (403) or an admission webhook (422) would, until [`KubeApi::allow`].
    pub fn refuse(
        &self,
        method: &str,
        plural: &str,
        name: &str,
        code: u16,
        reason: &str,
        message: &str,
    ) {
        self.shared.store.lock().unwrap().refusals.insert(
            (method.into(), plural.into(), name.into()),
            Refusal {
                code,
                reason: reason.into(),
                message: message.into(),
            },
        );
    }

    /// Lifts a [`KubeApi::refuse`].
    pub fn allow(&self, method: &str, plural: &str, name: &str) {
        let mut store = self.shared.store.lock().unwrap();
        store
            .refusals
            .remove(&(method.into(), plural.into(), name.into()));
    }

    /// Holds every `method` (PATCH, DELETE, GET, PUT) on object `plural` `name` for `delay`
    /// before serving it, as a slow or hung API server would; the request shows in the log at
    /// once. A request held when the test ends is never answered.
    pub fn delay(&self, method: &str, plural: &str, name: &str, delay: Duration) {
        self.shared
            .store
            .lock()
            .unwrap()
            .delays
            .insert((method.into(), plural.into(), name.into()), delay);
    }

    /// How long a new CRD takes to be Established (and its kinds served); 0 by default.
    pub fn set_crd_delay(&self, delay: Duration) {
        self.shared.store.lock().unwrap().crd_delay = delay;
    }

    /// How long an object deleted in the foreground stays, marked; 200 ms by default.
    pub fn set_foreground_delay(&self, delay: Duration) {
        self.shared.store.lock().unwrap().foreground_delay = delay;
    }

    /// Compacts history: a watch from a resourceVersion older than the current one is 410.
    pub fn compact(&self) {
        let mut store = self.shared.store.lock().unwrap();
        store.compacted = store.resource_version;
        let compacted = store.compacted;
        store.events.retain(|e| e.resource_version > compacted);
    }

    /// Refuses watches from a compacted version with HTTP 410 at their start, instead of the
    /// 200 and one ERROR event a watch cache answers: both happen on real clusters.
    pub fn refuse_compacted_watches_at_start(&self) {
        self.shared.store.lock().unwrap().gone_at_start = true;
    }

    /// Ends every open watch at once, as an API server restart does.
    pub fn expire_watches(&self) {
        self.shared.epoch.send_modify(|epoch| *epoch += 1);
    }

    /// Every request so far, as `VERB PATH`.
    pub fn requests(&self) -> Vec<String> {
        let store = self.shared.store.lock().unwrap();
        store.requests.iter().map(Request::line).collect()
    }

    /// Every request so far, with its query.
    pub fn request_log(&self) -> Vec<Request> {
        self.shared.store.lock().unwrap().requests.clone()
    }

    /// Forgets the requests so far, to count those of a window.
    pub fn clear_requests(&self) {
        self.shared.store.lock().unwrap().requests.clear();
    }

    /// Wakes watches and schedules what a successful write leaves for later.
    fn settle(&self, result: Result<apply::Written, Failure>) -> Result<Value, Value> {
        match result {
            Ok((_, object, later)) => {
                self.shared.written(later);
                Ok(object)
            }
            Err(failure) => Err(failure.to_json()),
        }
    }
}
