//! Liveness and readiness probes over plain HTTP/1.1, for a kubelet (or anything that polls).
//!
//! [`Readiness`] follows the stream's progress through [`Config::on_event`]: it turns ready
//! when a stream has synced ([`Event::Synced`]) and not ready again when that stream ends
//! ([`Event::Disconnected`]). [`serve`] answers on the `--health-addr` listener:
//!
//! - `GET /healthz`: `200 ok` while the process runs (its runtime answers at all);
//! - `GET /readyz`: `200 ok` while the agent holds a synced stream, else `503` and one line
//!   saying why (`not connected: …`);
//! - `GET /metrics`: the agent's [`Metrics`] in the Prometheus text format.
//!
//! The responder is a few lines over a tokio socket rather than a web framework: it reads one
//! request head, answers it and closes the connection, which is all a probe needs. Being
//! unready stops nothing: the agent keeps re-applying what it holds while disconnected.
//!
//! [`Config::on_event`]: crate::Config::on_event

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::{Event, stopped};

/// The path of the liveness probe.
pub const HEALTHZ: &str = "/healthz";
/// The path of the readiness probe.
pub const READYZ: &str = "/readyz";
/// The path of the Prometheus metrics.
pub const METRICS: &str = "/metrics";
/// The `Content-Type` of the probes' one-line answers.
const PLAIN: &str = "text/plain; charset=utf-8";

/// Largest request head read; a probe's is a few dozen bytes.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the agent is ready, and if not why; shared between the stream's events and the
/// probe server.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// `None` when ready, else why not.
    why_not: Arc<Mutex<Option<String>>>,
}

impl Default for Readiness {
    /// Not ready: no stream has synced yet.
    fn default() -> Self {
        Self {
            why_not: Arc::new(Mutex::new(Some("not connected: starting".into()))),
        }
    }
}

impl Readiness {
    /// Follows one event of the stream.
    pub fn observe(&self, event: &Event) {
        let next = match event {
            Event::Synced => None,
            Event::Disconnected { reason } => Some(format!("not connected: {reason}")),
            Event::Acked { .. } => return,
        };
        *self.why_not.lock().unwrap_or_else(|e| e.into_inner()) = next;
    }

    /// `Ok` when ready, else why not (one line).
    pub fn status(&self) -> Result<(), String> {
        match self
            .why_not
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            None => Ok(()),
            Some(why) => Err(why.replace(['\r', '\n'], " ")),
        }
    }

    /// A callback for [`Config::on_event`](crate::Config::on_event) that feeds this readiness.
    pub fn on_event(&self) -> Arc<dyn Fn(Event) + Send + Sync> {
        let readiness = self.clone();
        Arc::new(move |event| readiness.observe(&event))
    }
}

/// Answers probes and metrics scrapes on `listener` until `shutdown` turns true, one task per
/// connection.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pass, and try the next one.
                    tracing::warn!(error = %e, "accepting a probe connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let (readiness, metrics) = (readiness.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &readiness, &metrics).await {
                tracing::debug!(error = %e, "probe connection");
            }
        });
    }
}

/// Reads one request head and answers it; the connection closes afterwards.
async fn answer(
    mut stream: TcpStream,
    readiness: &Readiness,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (status, content_type, body) = match respond(&head, readiness) {
        Answer::Probe(status, line) => (status, PLAIN, line + "\n"),
        Answer::Metrics => ("200 OK", crate::metrics::CONTENT_TYPE, metrics.encode()),
    };
    let is_head = head.starts_with("HEAD ");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if is_head { "" } else { &body },
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The request head, up to the blank line (or as much as came before the peer stopped).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// What to answer a request.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A status line and a one-line body.
    Probe(&'static str, String),
    /// The metrics, encoded when sent.
    Metrics,
}

/// The answer to a request head.
fn respond(head: &str, readiness: &Readiness) -> Answer {
    let probe = |status, line: &str| Answer::Probe(status, line.to_string());
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next());
    let Some(target) = target.filter(|_| parts.next().is_some_and(|v| v.starts_with("HTTP/")))
    else {
        return probe("400 Bad Request", "bad request");
    };
    // A kubelet may add a query string; the path alone decides.
    let path = target.split('?').next().unwrap_or_default();
    if ![HEALTHZ, READYZ, METRICS].contains(&path) {
        let line = format!("not found: try {HEALTHZ}, {READYZ} or {METRICS}");
        return probe("404 Not Found", &line);
    }
    if method != "GET" && method != "HEAD" {
        return probe("405 Method Not Allowed", "method not allowed: use GET");
    }
    match (path, readiness.status()) {
        (METRICS, _) => Answer::Metrics,
        (HEALTHZ, _) | (_, Ok(())) => probe("200 OK", "ok"),
        (_, Err(why)) => Answer::Probe("503 Service Unavailable", why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_request(method: &str, path: &str) -> String {
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n")
    }

    #[test]
    fn readiness_follows_the_stream() {
        let readiness = Readiness::default();
        assert_eq!(readiness.status(), Err("not connected: starting".into()));
        readiness.observe(&Event::Synced);
        assert_eq!(readiness.status(), Ok(()));
        readiness.observe(&Event::Acked {
            release: "acme/api".into(),
            generation: 1,
        });
        assert_eq!(readiness.status(), Ok(()));
        readiness.observe(&Event::Disconnected {
            reason: "connecting to https://cp:50052:\ntransport error".into(),
        });
        assert_eq!(
            readiness.status(),
            Err("not connected: connecting to https://cp:50052: transport error".into())
        );
    }

    #[test]
    fn requests_are_answered_by_path_and_method() {
        let readiness = Readiness::default();
        let answer = |method: &str, path: &str| match respond(&mk_request(method, path), &readiness)
        {
            Answer::Probe(status, line) => (status, line),
            Answer::Metrics => ("metrics", String::new()),
        };
        assert_eq!(answer("GET", "/healthz"), ("200 OK", "ok".into()));
        assert_eq!(
            answer("GET", "/readyz?verbose"),
            ("503 Service Unavailable", "not connected: starting".into())
        );
        readiness.observe(&Event::Synced);
        assert_eq!(answer("HEAD", "/readyz"), ("200 OK", "ok".into()));
        assert_eq!(answer("GET", "/metrics").0, "metrics");
        assert_eq!(answer("GET", "/metric").0, "404 Not Found");
        assert_eq!(answer("POST", "/readyz").0, "405 Method Not Allowed");
        assert_eq!(
            respond("garbage", &readiness),
            Answer::Probe("400 Bad Request", "bad request".into())
        );
    }
}
