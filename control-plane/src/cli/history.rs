//! `troupe history COMPONENT`: every promotion and rollback of a component, oldest first, as
//! a table or as the Promotions' JSON.

use std::process::ExitCode;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object};

use super::context::{Client, Context};
use super::output::columns;

/// List a component's promotions and rollbacks: who, when, from, to, which release, outcome.
#[derive(Debug, clap::Args)]
pub struct HistoryCmd {
    /// The component.
    component: String,
    /// Namespace of the component.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// Output format.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

impl HistoryCmd {
    /// Prints the promotions as a table or a JSON array.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let promotions =
            promotions(&ctx.resources().await?, &self.namespace, &self.component).await?;
        if self.output == "json" {
            let items: Vec<serde_json::Value> = promotions
                .iter()
                .map(|p| serde_json::to_value(p).unwrap_or_default())
                .collect();
            outln!("{}", serde_json::to_string_pretty(&items)?);
            return Ok(ExitCode::SUCCESS);
        }
        out!("{}", table(&promotions));
        Ok(ExitCode::SUCCESS)
    }
}

/// Every promotion and rollback of a component, oldest first.
async fn promotions(
    client: &Client,
    namespace: &str,
    component: &str,
) -> anyhow::Result<Vec<pb::Promotion>> {
    let selector = format!("{}={component}", crate::releases::LABEL_COMPONENT);
    let items = super::get::list(client, Kind::Promotion.name(), namespace, &selector).await?;
    let mut promotions: Vec<pb::Promotion> = items
        .into_iter()
        .filter_map(|object| match object {
            Object::Promotion(p) => Some(p),
            _ => None,
        })
        .collect();
    promotions.sort_by_key(|p| {
        let meta = p.metadata.clone().unwrap_or_default();
        (meta.create_time.map(|t| (t.seconds, t.nanos)), meta.name)
    });
    Ok(promotions)
}

/// The promotions as aligned columns under a header.
fn table(promotions: &[pb::Promotion]) -> String {
    let mut lines = vec![
        [
            "TIME", "NAME", "ACTION", "FROM", "TO", "RELEASE", "BY", "OUTCOME", "MESSAGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in promotions {
        let meta = p.metadata.clone().unwrap_or_default();
        let spec = p.spec.clone().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        let dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
        lines.push(vec![
            meta.create_time.map(time).unwrap_or_default(),
            meta.name,
            spec.action,
            dash(spec.source_environment),
            spec.target_environment,
            dash(spec.release_name),
            dash(spec.requested_by),
            dash(status.phase),
            status.message,
        ]);
    }
    columns(&lines)
}

/// A timestamp as `2026-11-24T10:00:00Z`: its RFC 3339 form to the second.
fn time(t: pbjson_types::Timestamp) -> String {
    let text = serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    // `YYYY-MM-DDTHH:MM:SS` is the first 19 characters, whatever fraction or offset follows.
    text.get(..19).map(|s| format!("{s}Z")).unwrap_or(text)
}
