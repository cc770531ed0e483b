//! The server's state: objects with their field managers, the event log watches read, the
//! kinds served, the request log and the refusals and delays a test set up. Every write goes through
//! [`Store::write`] or [`Store::remove`], which give it the next resourceVersion, render
//! `managedFields` and log the event, and carry out what a real cluster does on its own
//! (a new Namespace's ConfigMap and ServiceAccount; a Namespace's or CRD's contents going
//! with it). The HTTP failures all requests share are [`Failure`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Request;
use super::kinds::{self, Kind};

/// Where an object is kept: group, plural, namespace (empty when cluster-scoped), name.
pub(crate) type Key = (String, String, String, String);

/// The key of `name` in `namespace` of `kind`.
pub(crate) fn key(kind: &Kind, namespace: &str, name: &str) -> Key {
    (
        kind.group.clone(),
        kind.plural.clone(),
        namespace.into(),
        name.into(),
    )
}

/// One manager's share of an object.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Manager {
    pub name: String,
    /// `Apply` or `Update`.
    pub operation: &'static str,
    pub api_version: String,
    /// The leaf fields it owns, as JSON pointers (an array is one leaf).
    pub fields: BTreeSet<String>,
}

/// A stored object and who manages which of its fields.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub object: Value,
    /// In the order they first wrote.
    pub managers: Vec<Manager>,
}

/// A change, as watches stream it.
pub(crate) struct Event {
    pub resource_version: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
}

/// A failure Status a test set up for one method on one object.
#[derive(Clone)]
pub(crate) struct Refusal {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

/// Something that happens later, after a delay: the caller schedules it.
#[derive(Debug)]
pub(crate) enum Later {
    /// The CRD at this key becomes Established.
    Establish(Key),
    /// The object at this key, deleted in the foreground, goes.
    Finalize(Key),
}

/// The server's whole state.
pub(crate) struct Store {
    pub resource_version: u64,
    pub objects: BTreeMap<Key, Entry>,
    pub events: Vec<Event>,
    /// Watches from a resourceVersion below this are answered 410 Gone.
    pub compacted: u64,
    /// Whether such a watch is refused with HTTP 410 at its start (as the API server does
    /// when the version is older than its watch cache) rather than an ERROR event.
    pub gone_at_start: bool,
    pub kinds: Vec<Kind>,
    pub requests: Vec<Request>,
    /// By (method, plural, name).
    pub refusals: BTreeMap<(String, String, String), Refusal>,
    /// By (method, plural, name): how long such a request waits before it is served.
    pub delays: BTreeMap<(String, String, String), Duration>,
    pub crd_delay: Duration,
    pub foreground_delay: Duration,
    /// What each container wrote, by namespace, Pod and container.
    pub logs: BTreeMap<(String, String, String), Vec<String>>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            resource_version: 0,
            objects: BTreeMap::new(),
            events: Vec::new(),
            compacted: 0,
            gone_at_start: false,
            kinds: kinds::builtins(),
            requests: Vec::new(),
            refusals: BTreeMap::new(),
            delays: BTreeMap::new(),
            crd_delay: Duration::ZERO,
            foreground_delay: Duration::from_millis(200),
            logs: BTreeMap::new(),
        }
    }
}

impl Store {
    /// The kind served at `group`/`version` as `plural`.
    pub fn kind_at(&self, group: &str, version: &str, plural: &str) -> Option<Kind> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .cloned()
    }

    /// The kind served as `plural`, in whichever group (tests name kinds by plural).
    pub fn kind_named(&self, plural: &str) -> Option<Kind> {
        self.kinds.iter().find(|k| k.plural == plural).cloned()
    }

    /// The kind an object of `apiVersion`/`kind` belongs to.
    pub fn kind_of(&self, object: &Value) -> Option<Kind> {
        self.kinds
            .iter()
            .find(|k| k.api_version() == object["apiVersion"] && k.kind == object["kind"])
            .cloned()
    }

    /// Whether namespace `name` exists (and, for creating content, is not being deleted):
    /// the failure a real server gives otherwise.
    pub fn check_namespace(&self, name: &str) -> Result<(), Failure> {
        let key = (
            String::new(),
            "namespaces".into(),
            String::new(),
            name.into(),
        );
        match self.objects.get(&key) {
            None => Err(Failure::not_found("", "namespaces", name)),
            Some(e) if !e.object["metadata"]["deletionTimestamp"].is_null() => Err(Failure::new(
                403,
                "Forbidden",
                format!(
                    "unable to create new content in namespace {name} because it is being terminated"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// A store holding only what a write to `key` reads (the object, its namespace, the
    /// kinds served), for a dry run.
    pub fn scratch(&self, key: &Key) -> Store {
        let mut scratch = Store {
            resource_version: self.resource_version,
            kinds: self.kinds.clone(),
            ..Store::default()
        };
        let namespace = (
            String::new(),
            "namespaces".into(),
            String::new(),
            key.2.clone(),
        );
        for k in [key, &namespace] {
            if let Some(entry) = self.objects.get(k) {
                scratch.objects.insert(k.clone(), entry.clone());
            }
        }
        scratch
    }

    /// Stores `entry` at `key` under the next resourceVersion, logging ADDED or MODIFIED;
    /// returns the stored object and what must happen later.
    pub fn write(&mut self, key: &Key, mut entry: Entry) -> (Value, Vec<Later>) {
        let created = !self.objects.contains_key(key);
        self.resource_version += 1;
        let metadata = &mut entry.object["metadata"];
        metadata["resourceVersion"] = json!(self.resource_version.to_string());
        if created {
            metadata["uid"] = json!(format!(
                "00000000-0000-4000-8000-{:012}",
                self.resource_version
            ));
            metadata["creationTimestamp"] = json!(now());
            if metadata["generation"].is_null() {
                metadata["generation"] = json!(1);
            }
        }
        metadata["managedFields"] = managed_fields(&entry.managers);
        let object = entry.object.clone();
        self.log(key, if created { "ADDED" } else { "MODIFIED" }, &object);
        self.objects.insert(key.clone(), entry);
        let mut later = Vec::new();
        if created && key.1 == "namespaces" && key.0.is_empty() {
            self.populate_namespace(&key.3);
        }
        if created && key.1 == "customresourcedefinitions" {
            later.push(Later::Establish(key.clone()));
        }
        if created && key.0 == "batch" && key.1 == "jobs" {
            self.start_job(key, &object);
        }
        (object, later)
    }

    /// Removes the object at `key` (and, for a Namespace or CRD, what it holds), logging
    /// DELETED for each.
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let entry = self.objects.remove(key)?;
        if key.1 == "namespaces" && key.0.is_empty() {
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.2 == key.3)
                .cloned()
                .collect();
            for k in inside {
                self.remove(&k);
            }
        }
        if key.1 == "customresourcedefinitions" {
            let defined = kinds::from_crd(&entry.object);
            if let Some(kind) = defined.first() {
                let (group, plural) = (kind.group.clone(), kind.plural.clone());
                self.kinds
                    .retain(|k| k.builtin || k.group != group || k.plural != plural);
                let instances: Vec<Key> = self
                    .objects
                    .keys()
                    .filter(|k| k.0 == group && k.1 == plural)
                    .cloned()
                    .collect();
                for k in instances {
                    self.remove(&k);
                }
            }
        }
        self.resource_version += 1;
        let mut object = entry.object;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.log(key, "DELETED", &object);
        Some(object)
    }

    fn log(&mut self, key: &Key, kind: &'static str, object: &Value) {
        self.events.push(Event {
            resource_version: self.resource_version,
            group: key.0.clone(),
            plural: key.1.clone(),
            namespace: key.2.clone(),
            kind,
            object: object.clone(),
        });
    }

    /// What a cluster's controllers put in every new namespace.
    fn populate_namespace(&mut self, namespace: &str) {
        let objects = [
            (
                "configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "kube-root-ca.crt", "namespace": namespace},
                   "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nkubeapi\n-----END CERTIFICATE-----\n"}}),
            ),
            (
                "serviceaccounts",
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "default", "namespace": namespace}}),
            ),
        ];
        for (plural, object) in objects {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let key = (
                String::new(),
                plural.to_string(),
                namespace.to_string(),
                name,
            );
            let fields = super::apply::leaves(&object);
            let manager = Manager {
                name: "kube-controller-manager".into(),
                operation: "Update",
                api_version: "v1".into(),
                fields,
            };
            self.write(
                &key,
                Entry {
                    object,
                    managers: vec![manager],
                },
            );
        }
    }

    /// Marks a stored CRD Established and serves its kinds; false if it is gone.
    pub fn establish(&mut self, key: &Key) -> bool {
        let Some(mut entry) = self.objects.get(key).cloned() else {
            return false;
        };
        let time = now();
        let condition = |kind: &str, reason: &str| {
            json!({"type": kind, "status": "True", "reason": reason, "message": "",
                   "lastTransitionTime": time})
        };
        entry.object["status"] = json!({
            "conditions": [condition("NamesAccepted", "NoConflicts"),
                           condition("Established", "InitialNamesAccepted")],
            "acceptedNames": entry.object["spec"]["names"].clone(),
            "storedVersions": entry.object["spec"]["versions"].as_array().into_iter().flatten()
                .filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>(),
        });
        for kind in kinds::from_crd(&entry.object) {
            if !self.kinds.contains(&kind) {
                self.kinds.push(kind);
            }
        }
        self.write(key, entry);
        true
    }
}

/// `managedFields` as a real server shows it: one entry per manager, each field set a tree of
/// `f:` keys.
fn managed_fields(managers: &[Manager]) -> Value {
    let time = now();
    let entries: Vec<Value> = managers
        .iter()
        .map(|m| {
            let mut tree = Map::new();
            for field in &m.fields {
                let mut node = &mut tree;
                for segment in super::apply::segments(field) {
                    node = node
                        .entry(format!("f:{segment}"))
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .expect("field trees hold objects");
                }
            }
            json!({"manager": m.name, "operation": m.operation, "apiVersion": m.api_version,
                   "time": time, "fieldsType": "FieldsV1", "fieldsV1": tree})
        })
        .collect();
    Value::Array(entries)
}

/// A failure Status: the HTTP code and the body a real API server sends.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Value,
}

impl Failure {
    /// A failure without details.
    pub fn new(code: u16, reason: &str, message: String) -> Self {
        Self {
            code,
            reason: reason.into(),
            message,
            details: Value::Null,
        }
    }

    /// With `details`.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// `PLURAL[.GROUP] "NAME" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let qualified = if group.is_empty() {
            plural.to_string()
        } else {
            format!("{plural}.{group}")
        };
        let mut details = json!({"name": name, "kind": plural});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found"))
            .with_details(details)
    }

    /// A path no served kind answers.
    pub fn no_resource() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        )
        .with_details(json!({}))
    }

    /// 400 BadRequest.
    pub fn bad_request(message: String) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// The Status object.
    pub fn to_json(&self) -> Value {
        let mut status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason,
            "code": self.code});
        if !self.details.is_null() {
            status["details"] = self.details.clone();
        }
        status
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.to_json())).into_response()
    }
}

/// The time now, RFC 3339 in UTC to the second, as Kubernetes writes timestamps.
pub(crate) fn now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}
