//! Watches: the events of one collection after a resourceVersion, one JSON object a line,
//! until `timeoutSeconds` pass, the client goes, or [`super::KubeApi::expire_watches`] ends
//! every stream at once. A watch from before the compacted resourceVersion gets one ERROR
//! event, a 410 Gone Status, as from a real server's watch cache; one without a
//! resourceVersion (or from 0) first gets the current objects as ADDED events.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use super::kinds::Kind;
use super::store::Failure;

/// Which objects of a collection a list or watch sees.
#[derive(Clone)]
pub(crate) struct Filter {
    pub group: String,
    pub plural: String,
    /// Empty for every namespace.
    pub namespace: String,
    pub labels: Option<String>,
    pub fields: Option<String>,
}

impl Filter {
    /// The filter of a request for `kind` in `namespace` with `query`.
    pub fn new(kind: &Kind, namespace: &str, query: &BTreeMap<String, String>) -> Self {
        Self {
            group: kind.group.clone(),
            plural: kind.plural.clone(),
            namespace: namespace.into(),
            labels: query.get("labelSelector").cloned(),
            fields: query.get("fieldSelector").cloned(),
        }
    }

    /// Whether `object`, of the collection `group`/`plural` in `namespace`, is seen.
    pub fn sees(&self, group: &str, plural: &str, namespace: &str, object: &Value) -> bool {
        group == self.group
            && plural == self.plural
            && (self.namespace.is_empty() || self.namespace == namespace)
            && labels_match(object, self.labels.as_deref())
            && fields_match(object, self.fields.as_deref())
    }
}

/// A label selector of `k=v` (or `k==v`), `k!=v`, `k` (exists) and `!k` terms, comma-joined.
fn labels_match(object: &Value, selector: Option<&str>) -> bool {
    let labels = &object["metadata"]["labels"];
    let terms = selector.unwrap_or_default().split(',').map(str::trim);
    terms.filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()] != v.trim()
        } else if let Some((k, v)) = term.split_once('=') {
            labels[k.trim()] == v.trim_start_matches('=').trim()
        } else if let Some(k) = term.strip_prefix('!') {
            labels.get(k.trim()).is_none()
        } else {
            labels.get(term).is_some()
        }
    })
}

/// A field selector of `metadata.name` and `metadata.namespace` equalities.
fn fields_match(object: &Value, selector: Option<&str>) -> bool {
    let terms = selector.unwrap_or_default().split(',');
    terms.filter(|t| !t.is_empty()).all(|term| {
        let (field, value, equal) = match term.split_once("!=") {
            Some((f, v)) => (f, v, false),
            None => match term.split_once('=') {
                Some((f, v)) => (f, v.trim_start_matches('='), true),
                None => return true,
            },
        };
        let actual = match field {
            "metadata.name" => &object["metadata"]["name"],
            "metadata.namespace" => &object["metadata"]["namespace"],
            _ => return true,
        };
        (actual == value) == equal
    })
}

/// Streams the events `filter` sees after resourceVersion `from` (`None` or 0: the current
/// objects first), ending after `timeout` if given.
pub(crate) fn watch(
    shared: Arc<Shared>,
    filter: Filter,
    from: Option<u64>,
    timeout: Option<Duration>,
) -> Response {
    let mut latest = shared.latest.subscribe();
    let epoch = shared.epoch.subscribe();
    latest.borrow_and_update();
    let (pending, seen) = {
        let store = shared.store.lock().unwrap();
        match from {
            Some(rv) if rv > 0 && rv < store.compacted => {
                // As the real watch cache does: 200, then one ERROR event, then the end; or,
                // when asked, HTTP 410 at once (kube-runtime's watcher alone retries that with
                // the same version forever: the agent lists again).
                let gone = Failure::new(
                    410,
                    "Expired",
                    format!(
                        "too old resource version: {rv} ({})",
                        store.resource_version
                    ),
                );
                if store.gone_at_start {
                    return gone.into_response();
                }
                let event = json!({"type": "ERROR", "object": gone.to_json()});
                return lines(futures::stream::iter([event]));
            }
            Some(rv) if rv > 0 => (VecDeque::new(), rv),
            _ => {
                let current = store
                    .objects
                    .iter()
                    .filter(|((g, p, ns, _), e)| filter.sees(g, p, ns, &e.object))
                    .map(|(_, e)| json!({"type": "ADDED", "object": e.object}))
                    .collect();
                (current, store.resource_version)
            }
        }
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let state = Stream {
        shared,
        filter,
        latest,
        epoch,
        pending,
        seen,
        deadline,
    };
    lines(futures::stream::unfold(state, |mut state| async move {
        Some((state.next().await?, state))
    }))
}

/// A response streaming `events`, one JSON object a line.
fn lines(events: impl futures::Stream<Item = Value> + Send + 'static) -> Response {
    let lines = events.map(|event| Ok::<_, Infallible>(Bytes::from(format!("{event}\n"))));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(lines))
        .expect("a streaming response")
}

/// One open watch.
struct Stream {
    shared: Arc<Shared>,
    filter: Filter,
    latest: watch::Receiver<u64>,
    epoch: watch::Receiver<u64>,
    pending: VecDeque<Value>,
    /// The newest resourceVersion already looked at.
    seen: u64,
    deadline: Option<Instant>,
}

impl Stream {
    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if self.epoch.has_changed().unwrap_or(true) {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            self.latest.borrow_and_update();
            {
                let store = self.shared.store.lock().unwrap();
                let filter = &self.filter;
                // Events are in resourceVersion order: skip what was seen without scanning it.
                let start = store
                    .events
                    .partition_point(|e| e.resource_version <= self.seen);
                self.pending = store.events[start..]
                    .iter()
                    .filter(|e| filter.sees(&e.group, &e.plural, &e.namespace, &e.object))
                    .map(|e| json!({"type": e.kind, "object": e.object}))
                    .collect();
                self.seen = store.resource_version;
            }
            if !self.pending.is_empty() {
                continue;
            }
            let deadline = self.deadline;
            let expired = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.latest.changed() => changed.ok()?,
                _ = self.epoch.changed() => return None,
                () = expired => return None,
            }
        }
    }
}
