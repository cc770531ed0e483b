//! `troupe apply -f`: reads every document first (a malformed file applies nothing), then
//! applies them in order, printing one line per object like kubectl.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use troupe_common::document;
use troupe_common::pb::v1alpha1::{ApplyOutcome, ApplyRequest};
use troupe_common::{Object, ObjectKey};

use super::context::{Context, server_error};

/// Create or update resources from YAML or JSON files (`-` reads standard input).
#[derive(Debug, clap::Args)]
pub struct ApplyCmd {
    /// A file, a directory of .yaml/.yml/.json files, or `-`. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Validate and show what would happen without writing anything.
    #[arg(long)]
    dry_run: bool,
}

impl ApplyCmd {
    /// Applies every object; exits 1 when any was refused.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let client = ctx.resources().await?;
        let dry_run = self.dry_run;
        let mut failed = 0;
        for object in read_objects(&self.files)? {
            let key = object.key();
            let request = ApplyRequest {
                resource: Some(object.into()),
                dry_run,
            };
            match client.clone().apply(request).await {
                Ok(response) => {
                    let outcome = match response.into_inner().outcome() {
                        ApplyOutcome::Created => "created",
                        ApplyOutcome::Configured => "configured",
                        ApplyOutcome::Unchanged | ApplyOutcome::Unspecified => "unchanged",
                    };
                    let suffix = if dry_run { " (dry run)" } else { "" };
                    outln!("{} {outcome}{suffix}", display(&key));
                }
                Err(status) => {
                    failed += 1;
                    eprintln!("error: {}", server_error(status));
                }
            }
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

/// Every object of every source, in order; a malformed document fails them all.
fn read_objects(sources: &[String]) -> anyhow::Result<Vec<Object>> {
    let mut objects: Vec<Object> = Vec::new();
    for source in sources {
        for (name, text) in read_source(source)? {
            let parsed = document::from_yaml(&text).with_context(|| name.clone())?;
            objects.extend(parsed);
        }
    }
    if objects.is_empty() {
        anyhow::bail!("no objects found in {}", sources.join(", "));
    }
    Ok(objects)
}

/// `component/api -n acme` style identity for result lines.
fn display(key: &ObjectKey) -> String {
    let kind = key.kind.name().to_ascii_lowercase();
    if key.namespace.is_empty() {
        format!("{kind}/{}", key.name)
    } else {
        format!("{kind}/{} (namespace {})", key.name, key.namespace)
    }
}

/// `(display name, contents)` of every file a source names.
fn read_source(source: &str) -> anyhow::Result<Vec<(String, String)>> {
    if source == "-" {
        let text = std::io::read_to_string(std::io::stdin()).context("reading standard input")?;
        return Ok(vec![("<stdin>".into(), text)]);
    }
    let path = Path::new(source);
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("reading directory {source}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        files.sort();
        return files
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?;
                Ok((p.display().to_string(), text))
            })
            .collect();
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {source}"))?;
    Ok(vec![(source.to_string(), text)])
}
