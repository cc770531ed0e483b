//! `troupe trace`, `webhook-secret` and `record-image`: where a build came from and where it
//! runs, the secret a git host signs pushes with, and an image built outside Troupe.

use std::process::ExitCode;

use troupe_common::pb::v1alpha1 as pb;

use super::context::{Context, server_error};

/// Trace an image, a commit, a component or a ComponentRelease: which commit and run built
/// it, which release carries it, and which environments run it now.
#[derive(Debug, clap::Args)]
pub struct TraceCmd {
    /// An image (`registry/app:tag`), a commit (7 to 40 hex characters), a component or a
    /// ComponentRelease.
    query: String,
    /// Namespace to look in.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// Output format.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

impl TraceCmd {
    /// Prints one line per build the query leads to.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let request = pb::TraceRequest {
            namespace: self.namespace.clone(),
            query: self.query.clone(),
        };
        let response = ctx
            .builds()
            .await?
            .trace(request)
            .await
            .map_err(server_error)?
            .into_inner();
        if self.output == "json" {
            outln!("{}", serde_json::to_string_pretty(&response)?);
            return Ok(ExitCode::SUCCESS);
        }
        if response.entries.is_empty() {
            eprintln!(
                "nothing in namespace {} is {:?}: no image, commit, component or release by that name",
                self.namespace, self.query
            );
            return Ok(ExitCode::FAILURE);
        }
        out!("{}", table(&response.entries));
        Ok(ExitCode::SUCCESS)
    }
}

/// The entries as a table: component, image, commit, run, release, environments.
fn table(entries: &[pb::TraceEntry]) -> String {
    let header = ["COMPONENT", "IMAGE", "COMMIT", "RUN", "RELEASE", "RUNS IN"];
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            let build = e.build.clone().unwrap_or_default();
            let run = match (build.run.as_str(), build.run_url.as_str()) {
                ("", "") => "-".to_string(),
                ("", url) => url.to_string(),
                (run, _) if e.run_phase.is_empty() => run.to_string(),
                (run, _) => format!("{run} ({})", e.run_phase),
            };
            [
                e.component.clone(),
                or_dash(&e.image),
                or_dash(&build.commit),
                run,
                if e.release.is_empty() {
                    "(not released)".into()
                } else {
                    e.release.clone()
                },
                if e.environments.is_empty() {
                    "-".into()
                } else {
                    e.environments.join(",")
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text += padded.join("  ").trim_end();
        text.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    text
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_string()
    }
}

/// Make a new secret for a component's push webhook (the one before stops working) and
/// print it with where to send pushes.
#[derive(Debug, clap::Args)]
pub struct WebhookSecretCmd {
    /// The component.
    component: String,
    /// Namespace of the component.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
}

impl WebhookSecretCmd {
    /// Prints the secret, then the path on the server's `--webhook-addr`.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let request = pb::CreateWebhookSecretRequest {
            namespace: self.namespace,
            component: self.component,
        };
        let response = ctx
            .builds()
            .await?
            .create_webhook_secret(request)
            .await
            .map_err(server_error)?
            .into_inner();
        outln!("{}", response.secret);
        eprintln!(
            "send push events (content type application/json) to http://WEBHOOK_ADDR{} signed with this secret",
            response.path
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Record an image built outside Troupe on a component's Workload, with its commit and a
/// link to the build: autoDeploy takes it from there, and `troupe trace` finds it.
#[derive(Debug, clap::Args)]
pub struct RecordImageCmd {
    /// The component.
    component: String,
    /// The image reference.
    image: String,
    /// Namespace of the component.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// The commit it was built from.
    #[arg(long, default_value = "")]
    commit: String,
    /// Its digest, e.g. sha256:….
    #[arg(long, default_value = "")]
    digest: String,
    /// The source repository.
    #[arg(long, default_value = "")]
    repository: String,
    /// A link to the build.
    #[arg(long, default_value = "")]
    run_url: String,
}

impl RecordImageCmd {
    /// Records the image and prints the Workload's.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let request = pb::RecordImageRequest {
            namespace: self.namespace,
            component: self.component,
            image: self.image,
            digest: self.digest,
            commit: self.commit,
            repository: self.repository,
            run_url: self.run_url,
        };
        let workload = ctx
            .builds()
            .await?
            .record_image(request)
            .await
            .map_err(server_error)?
            .into_inner()
            .workload
            .unwrap_or_default();
        let name = workload.metadata.map(|m| m.name).unwrap_or_default();
        let image = workload
            .spec
            .and_then(|s| s.container)
            .map(|c| c.image)
            .unwrap_or_default();
        outln!("workload/{name} image {image}");
        Ok(ExitCode::SUCCESS)
    }
}
