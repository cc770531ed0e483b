//! `GET /api/v1/namespaces/NS/pods/NAME/log`: what a container wrote, as the kubelet serves it
//! through the API server. A Pod with several containers needs `container`; a container that
//! has not started is a 400 naming why it waits; `follow=true` streams lines as they come
//! until the container ends (or the Pod goes, or [`super::KubeApi::expire_watches`] cuts
//! every open stream, as a restart of the API server does).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::Shared;
use super::kubelet::{container_names, container_state, pod_key};
use super::store::Failure;

/// Serves the log of a container of Pod `namespace/name`.
pub(crate) fn serve(
    shared: Arc<Shared>,
    namespace: &str,
    name: &str,
    container: Option<&str>,
    follow: bool,
) -> Response {
    let container = {
        let store = shared.store.lock().unwrap();
        let Some(entry) = store.objects.get(&pod_key(namespace, name)) else {
            return Failure::not_found("", "pods", name).into_response();
        };
        match pick(&entry.object, name, container) {
            Ok(container) => container,
            Err(failure) => return failure.into_response(),
        }
    };
    let mut stream = LogStream {
        shared: shared.clone(),
        key: (namespace.into(), name.into(), container),
        sent: 0,
        latest: shared.latest.subscribe(),
        epoch: shared.epoch.subscribe(),
        follow,
        done: false,
    };
    stream.latest.borrow_and_update();
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next().await?;
        Some((Ok::<_, Infallible>(Bytes::from(chunk)), stream))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(body))
        .expect("a streaming response")
}

/// The container a log request names, checked as the API server does.
fn pick(pod: &serde_json::Value, name: &str, container: Option<&str>) -> Result<String, Failure> {
    let (init, apps) = (
        container_names(pod, "initContainers"),
        container_names(pod, "containers"),
    );
    let container = match container {
        Some(container) => container.to_string(),
        None if apps.len() == 1 => apps[0].clone(),
        None => {
            return Err(Failure::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}] or one of the init containers: [{}]",
                apps.join(" "),
                init.join(" ")
            )));
        }
    };
    if !init.contains(&container) && !apps.contains(&container) {
        return Err(Failure::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    let state = container_state(pod, &container);
    if state.get("running").is_none() && state.get("terminated").is_none() {
        let default = if init.contains(&container) {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let reason = state["waiting"]["reason"].as_str().unwrap_or(default);
        return Err(Failure::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    }
    Ok(container)
}

/// One open log request.
struct LogStream {
    shared: Arc<Shared>,
    /// Namespace, Pod, container.
    key: (String, String, String),
    /// Lines already sent.
    sent: usize,
    latest: watch::Receiver<u64>,
    epoch: watch::Receiver<u64>,
    follow: bool,
    done: bool,
}

impl LogStream {
    /// The next lines, or `None` at the end.
    async fn next(&mut self) -> Option<String> {
        loop {
            if self.done || self.epoch.has_changed().unwrap_or(true) {
                return None;
            }
            self.latest.borrow_and_update();
            let (chunk, ended) = {
                let store = self.shared.store.lock().unwrap();
                let lines = store.logs.get(&self.key).map(Vec::as_slice).unwrap_or(&[]);
                let chunk: String = lines[self.sent.min(lines.len())..]
                    .iter()
                    .map(|line| format!("{line}\n"))
                    .collect();
                self.sent = lines.len();
                let pod = store.objects.get(&pod_key(&self.key.0, &self.key.1));
                let ended = pod.is_none_or(|entry| {
                    container_state(&entry.object, &self.key.2)
                        .get("terminated")
                        .is_some()
                });
                (chunk, ended)
            };
            if ended || !self.follow {
                self.done = true;
            }
            if !chunk.is_empty() {
                return Some(chunk);
            }
            if self.done {
                return None;
            }
            tokio::select! {
                changed = self.latest.changed() => changed.ok()?,
                _ = self.epoch.changed() => return None,
            }
        }
    }
}
