//! `troupe watch`: prints each change as it happens, until interrupted or the server ends the
//! stream.

use std::process::ExitCode;

use troupe_common::pb::v1alpha1::{EventType, WatchRequest};

use super::output::{event_line, json_line, yaml_doc};
use super::{Client, server_error};

pub(super) async fn run(
    client: &Client,
    kind: &str,
    namespace: &str,
    selector: &str,
    since: u64,
    output: &str,
) -> anyhow::Result<ExitCode> {
    let kind = if kind.eq_ignore_ascii_case("all") {
        String::new()
    } else {
        kind.to_string()
    };
    let request = WatchRequest {
        kind,
        namespace: namespace.into(),
        label_selector: selector.into(),
        since_revision: since,
    };
    let mut stream = client
        .clone()
        .watch(request)
        .await
        .map_err(server_error)?
        .into_inner();
    if output == "table" {
        println!("{:<9} {:<9} OBJECT", "EVENT", "REVISION");
    }
    while let Some(event) = stream.message().await.map_err(server_error)? {
        let object = event.resource.as_ref().and_then(|r| r.object.as_ref());
        let name = match event.r#type() {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
            EventType::Unspecified => "UNKNOWN",
        };
        match (output, object) {
            ("json", Some(o)) => {
                println!(
                    r#"{{"type":"{name}","revision":{},"object":{}}}"#,
                    event.revision,
                    json_line(o)
                )
            }
            ("yaml", Some(o)) => print!("# {name} at revision {}\n{}", event.revision, yaml_doc(o)),
            ("json" | "yaml", None) => {}
            _ => println!("{}", event_line(name, event.revision, object)),
        }
    }
    Ok(ExitCode::SUCCESS)
}
