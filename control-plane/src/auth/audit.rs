//! The audit log: one JSON line for every mutating call and every denial.
//!
//! ```json
//! {"time":"2026-12-01T19:40:02Z","server":"cp-1:50051","principal":"alice","via":"token:alice","verb":"apply",
//!  "kind":"Component","namespace":"acme","project":"shop","component":"api","name":"api",
//!  "decision":"allow","revision":812}
//! ```
//!
//! `server` is the name of the server that wrote the line (`--replica`, by default
//! `HOSTNAME:API_PORT`). A denial has `"decision":"deny"` and a `reason`; a call without valid credentials has
//! `"verb":"authenticate"` and an empty principal. `impersonatedBy` names the real caller of
//! an impersonated call. Lines go to `DATA_DIR/audit.log` by default (appended, mode 0600,
//! written through to the OS before the call returns, not fsynced), or to the server's log
//! stream (target `troupe::audit`) with `--audit-log -`.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use super::{Principal, Target, Verb, Via};

/// The audit log of one server.
pub struct Audit {
    sink: Sink,
    /// The server's name among the servers of its store, on every line: several servers on
    /// one etcd each write their own log, and the lines gathered from all say which wrote each.
    server: String,
}

/// Where audit lines go.
enum Sink {
    /// Appended to a file.
    File(Mutex<std::fs::File>),
    /// Written to the log stream.
    Log,
}

/// One audit line.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    time: String,
    server: &'a str,
    principal: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    impersonated_by: Option<&'a str>,
    via: String,
    verb: &'a str,
    kind: &'a str,
    namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    project: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    component: &'a str,
    name: &'a str,
    decision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
}

impl Audit {
    /// Appends to the file at `path` (created mode 0600 if missing), each line naming `server`.
    pub fn to_file(path: &Path, server: &str) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(path)
            .map_err(|e| anyhow::anyhow!("opening the audit log {}: {e}", path.display()))?;
        Ok(Audit {
            sink: Sink::File(Mutex::new(file)),
            server: server.to_string(),
        })
    }

    /// Writes to the log stream (target `troupe::audit`), each line naming `server`.
    pub fn to_log(server: &str) -> Self {
        Audit {
            sink: Sink::Log,
            server: server.to_string(),
        }
    }

    /// An allowed mutating call that took effect at `revision` (when it wrote to the store).
    pub fn allowed(&self, who: &Principal, verb: Verb, target: &Target, revision: Option<u64>) {
        self.write(who, verb.as_str(), target, "allow", None, revision);
    }

    /// A denied call, and why.
    pub fn denied(&self, who: &Principal, verb: Verb, target: &Target, reason: &str) {
        self.write(who, verb.as_str(), target, "deny", Some(reason), None);
    }

    /// A call without valid credentials, and what was wrong with them.
    pub fn unauthenticated(&self, reason: &str) {
        let nobody = Principal {
            name: String::new(),
            groups: vec![],
            via: Via::Internal,
            impersonated_by: None,
        };
        self.write(
            &nobody,
            "authenticate",
            &Target::default(),
            "deny",
            Some(reason),
            None,
        );
    }

    fn write(
        &self,
        who: &Principal,
        verb: &str,
        target: &Target,
        decision: &str,
        reason: Option<&str>,
        revision: Option<u64>,
    ) {
        let line = Line {
            time: super::tokens::rfc3339(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            server: &self.server,
            principal: &who.name,
            impersonated_by: who.impersonated_by.as_ref().map(|p| p.name.as_str()),
            via: via(who),
            verb,
            kind: &target.kind,
            namespace: &target.namespace,
            project: &target.project,
            component: &target.component,
            name: &target.name,
            decision,
            reason,
            revision,
        };
        let Ok(text) = serde_json::to_string(&line) else {
            return;
        };
        match &self.sink {
            Sink::File(file) => {
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = file.write_all(format!("{text}\n").as_bytes()) {
                    tracing::error!(error = %e, line = %text, "cannot write the audit log");
                }
            }
            Sink::Log => tracing::info!(target: "troupe::audit", "{text}"),
        }
    }
}

/// How a principal authenticated, as audit lines and `WhoAmI` spell it.
pub fn via(who: &Principal) -> String {
    let real = who.impersonated_by.as_deref().unwrap_or(who);
    match &real.via {
        Via::Token(name) => format!("token:{name}"),
        Via::Oidc(issuer) => format!("oidc:{issuer}"),
        Via::Internal => "internal".to_string(),
    }
}
