//! One question ([`Op`]: get, apply, list everywhere, watch everything) asked through any of
//! four tools ([`Tool`]: grpcurl, Python, Node, the CLI), and the answer reduced to what a
//! test compares across them ([`Answer`]): the status code, the message, and the keys of the
//! objects that came back (`Component acme/api`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Instant;

use serde_json::{Value, json};

use super::{Client, ProbeResult, cli_as, code};
use crate::{PATIENCE, Server};

/// A tool a user calls the API with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// grpcurl.
    Grpcurl,
    /// The generated Python client.
    Python,
    /// The generated Node client.
    Node,
    /// The `troupe` CLI.
    Cli,
}

impl Tool {
    /// Every tool.
    pub const ALL: [Tool; 4] = [Tool::Grpcurl, Tool::Python, Tool::Node, Tool::Cli];

    /// The tool's name, written as a label value by the objects it applies.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Grpcurl => "grpcurl",
            Tool::Python => "python",
            Tool::Node => "node",
            Tool::Cli => "cli",
        }
    }
}

/// One question to the API.
#[derive(Debug, Clone)]
pub enum Op {
    /// ResourceService.Get of KIND NAMESPACE/NAME.
    Get {
        /// Kind.
        kind: &'static str,
        /// Namespace.
        namespace: &'static str,
        /// Name.
        name: &'static str,
    },
    /// ResourceService.Apply of this object (JSON with apiVersion and kind); the tool's name
    /// is written as its label `written-by`.
    Apply(Value),
    /// ResourceService.List of a kind in every namespace.
    ListAll(&'static str),
    /// ResourceService.Watch of every kind in every namespace, read up to the bookmark that
    /// ends the current objects.
    WatchAll,
}

/// An answer as a test compares it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The gRPC status code.
    pub code: i32,
    /// The status message.
    pub message: String,
    /// Keys of the objects in the answer: `Component acme/api`, `Namespace acme`.
    pub keys: BTreeSet<String>,
}

impl Op {
    /// Get of `kind` acme/`name`.
    pub fn get(kind: &'static str, name: &'static str) -> Op {
        Op::Get {
            kind,
            namespace: "acme",
            name,
        }
    }

    /// The call the probe clients make, applying objects labelled `written-by: label`.
    pub fn call(&self, label: &str) -> Value {
        let call = |method: &str, request: Value| json!({"service": "ResourceService", "method": method, "request": request});
        match self {
            Op::Get {
                kind,
                namespace,
                name,
            } => call(
                "Get",
                json!({"kind": kind, "namespace": namespace, "name": name}),
            ),
            Op::Apply(object) => {
                let kind = object["kind"].as_str().expect("an object with a kind");
                let field = kind[..1].to_ascii_lowercase() + &kind[1..];
                call(
                    "Apply",
                    json!({"resource": {field: labelled(object, label)}}),
                )
            }
            Op::ListAll(kind) => call("List", json!({"kind": kind, "namespace": ""})),
            Op::WatchAll => {
                let mut watch = call("Watch", json!({"kind": "", "namespace": ""}));
                watch["stream"] = json!(true);
                watch["until"] = json!("EVENT_TYPE_BOOKMARK");
                watch["timeoutMs"] = json!(PATIENCE.as_millis() as u64);
                watch
            }
        }
    }
}

/// `object` with label `written-by: label`.
fn labelled(object: &Value, label: &str) -> Value {
    let mut object = object.clone();
    object["metadata"]["labels"]["written-by"] = json!(label);
    object
}

/// Asks `ops` in order through `tool` as the holder of `token`.
pub fn ask(server: &Server, tool: Tool, token: &str, ops: &[&Op]) -> Vec<Answer> {
    let client = match tool {
        Tool::Grpcurl => Client::Grpcurl,
        Tool::Python => Client::Python,
        Tool::Node => Client::Node,
        Tool::Cli => return ops.iter().map(|op| ask_cli(server, token, op)).collect(),
    };
    let calls = Value::Array(ops.iter().map(|op| op.call(tool.name())).collect());
    client
        .probe(server, token, &calls)
        .into_iter()
        .map(
            |ProbeResult {
                 code,
                 message,
                 body,
             }| Answer {
                code,
                message,
                keys: keys_of(&body),
            },
        )
        .collect()
}

fn ask_cli(server: &Server, token: &str, op: &Op) -> Answer {
    let (out, keys) = match op {
        Op::Get {
            kind,
            namespace,
            name,
        } => {
            let out = cli_as(
                server,
                token,
                &["get", kind, name, "-n", namespace, "-o", "json"],
                None,
            );
            let keys = serde_json::from_slice(&out.stdout).map(|v| keys_of(&v));
            (out, keys.unwrap_or_default())
        }
        Op::Apply(object) => {
            let text = labelled(object, Tool::Cli.name()).to_string();
            let out = cli_as(server, token, &["apply", "-f", "-"], Some(&text));
            // `workload/api (namespace acme) configured`: the object the CLI applied.
            let kind = object["kind"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let applied = crate::stdout(&out).starts_with(&format!("{kind}/{name} "));
            let keys = applied.then(|| object_key(object)).flatten();
            (out, keys.into_iter().collect())
        }
        Op::ListAll(kind) => {
            let out = cli_as(server, token, &["get", kind, "-o", "json"], None);
            let keys = serde_json::from_slice(&out.stdout).map(|v| keys_of(&v));
            (out, keys.unwrap_or_default())
        }
        Op::WatchAll => return watch_cli(server, token),
    };
    let (code, message) = cli_status(out.status.success(), &crate::stderr(&out));
    Answer {
        code,
        message,
        keys,
    }
}

/// `troupe watch all` until its BOOKMARK line (the current objects are all printed).
fn watch_cli(server: &Server, token: &str) -> Answer {
    let mut child = server
        .cli_command(Some(token))
        .args(["watch", "all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running troupe watch");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let mut keys = BTreeSet::new();
    let mut bookmarked = false;
    while let Ok(line) = receive.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        // `ADDED     12        Component acme/api`, under a header `EVENT REVISION OBJECT`.
        let mut columns = line.split_whitespace();
        let event = columns.next().unwrap_or_default();
        if event == "BOOKMARK" {
            bookmarked = true;
            break;
        }
        let key = columns.skip(1).collect::<Vec<_>>().join(" ");
        if !key.is_empty() && event != "EVENT" {
            keys.insert(key);
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("waiting for troupe watch");
    let (code, message) = if bookmarked {
        (code::OK, String::new())
    } else {
        cli_status(false, &crate::stderr(&out))
    };
    Answer {
        code,
        message,
        keys,
    }
}

/// The status a CLI run ended with: OK when it succeeded, else the code its error line names
/// (`error: MESSAGE (PermissionDenied)`) and the message.
pub fn cli_status(succeeded: bool, stderr: &str) -> (i32, String) {
    if succeeded {
        return (code::OK, String::new());
    }
    for line in stderr.lines() {
        let line = line.trim().trim_start_matches("error: ");
        let status = line.strip_suffix(')').and_then(|l| l.rsplit_once(" ("));
        if let Some((message, name)) = status
            && let Some(code) = super::code_named(name)
        {
            return (code, message.to_string());
        }
    }
    panic!("the CLI failed without a gRPC status:\n{stderr}");
}

/// The keys of the objects in a JSON answer: one object (`get -o json`), a Resource
/// (`{"component": {...}}`), a response holding `resource` or `items`, or a list of watch
/// events.
pub fn keys_of(body: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut add = |v: &Value| keys.extend(object_key(v));
    match body {
        Value::Array(events) => events.iter().for_each(|e| add(&e["resource"])),
        Value::Object(map) if map.contains_key("items") => {
            body["items"].as_array().into_iter().flatten().for_each(add)
        }
        Value::Object(map) if map.contains_key("resource") => add(&body["resource"]),
        _ => add(body),
    }
    keys
}

/// `Kind namespace/name` of an object, or of the object a Resource holds.
fn object_key(v: &Value) -> Option<String> {
    let object = match v["kind"].as_str() {
        Some(_) if v["metadata"].is_object() => v,
        _ => v
            .as_object()?
            .values()
            .find(|o| o["kind"].is_string() && o["metadata"].is_object())?,
    };
    let kind = object["kind"].as_str()?;
    let name = object["metadata"]["name"].as_str()?;
    Some(match object["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_component(name: &str) -> Value {
        json!({"apiVersion": "troupe.dev/v1alpha1", "kind": "Component",
               "metadata": {"name": name, "namespace": "acme"}})
    }

    #[test]
    fn keys_come_from_every_shape_of_answer() {
        let one = BTreeSet::from(["Component acme/api".to_string()]);
        let resource = json!({"component": mk_component("api"), "object": "component"});
        assert_eq!(keys_of(&mk_component("api")), one, "get -o json");
        assert_eq!(keys_of(&json!({"resource": resource})), one, "Get");
        let list = json!({"items": [resource, {"namespace": {"kind": "Namespace",
                          "metadata": {"name": "acme", "namespace": ""}}}]});
        let both = BTreeSet::from(["Component acme/api".into(), "Namespace acme".into()]);
        assert_eq!(keys_of(&list), both, "List");
        let events = json!([{"type": "EVENT_TYPE_ADDED", "resource": resource},
                            {"type": "EVENT_TYPE_BOOKMARK", "resource": null}]);
        assert_eq!(keys_of(&events), one, "Watch");
    }

    #[test]
    fn the_cli_status_is_read_from_its_error_line() {
        assert_eq!(cli_status(true, ""), (code::OK, String::new()));
        let stderr = "error: dev may not get Component acme/x (project b) (PermissionDenied)\n";
        assert_eq!(
            cli_status(false, stderr),
            (
                code::PERMISSION_DENIED,
                "dev may not get Component acme/x (project b)".to_string()
            )
        );
        assert_eq!(super::super::code_named("Cancelled"), Some(1));
        assert_eq!(super::super::code_named("Unauthenticated"), Some(16));
        assert_eq!(super::super::code_named("Nope"), None);
    }
}
