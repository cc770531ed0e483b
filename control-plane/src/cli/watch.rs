//! `troupe watch`: prints each change as it happens, until interrupted or the server ends the
//! stream.

use std::process::ExitCode;

use troupe_common::pb::v1alpha1::{EventType, WatchRequest};

use super::context::{Context, server_error};
use super::output::{event_line, json_line, yaml_doc};

/// Stream changes to resources of a kind (`all` for every kind) until interrupted.
#[derive(Debug, clap::Args)]
pub struct WatchCmd {
    /// Kind of resource, or `all`.
    kind: String,
    /// Namespace; omit to watch every namespace.
    #[arg(short, long, env = "TROUPE_NAMESPACE", default_value = "")]
    namespace: String,
    /// Label selector.
    #[arg(short = 'l', long, default_value = "")]
    selector: String,
    /// Replay changes after this revision instead of starting with the current objects.
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Output format: one line per event, or the objects as YAML or JSON lines.
    #[arg(short, long, default_value = "table", value_parser = ["table", "yaml", "json"])]
    output: String,
}

impl WatchCmd {
    /// Prints events until the stream ends.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let client = ctx.resources().await?;
        let output = self.output.as_str();
        let kind = if self.kind.eq_ignore_ascii_case("all") {
            String::new()
        } else {
            self.kind.clone()
        };
        let request = WatchRequest {
            kind,
            namespace: self.namespace.clone(),
            label_selector: self.selector.clone(),
            since_revision: self.since,
        };
        let mut stream = client
            .clone()
            .watch(request)
            .await
            .map_err(server_error)?
            .into_inner();
        if output == "table" {
            outln!("{:<9} {:<9} OBJECT", "EVENT", "REVISION");
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
                    outln!(
                        r#"{{"type":"{name}","revision":{},"object":{}}}"#,
                        event.revision,
                        json_line(o)
                    )
                }
                ("yaml", Some(o)) => {
                    out!("# {name} at revision {}\n{}", event.revision, yaml_doc(o))
                }
                ("json" | "yaml", None) => {}
                _ => outln!("{}", event_line(name, event.revision, object)),
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
