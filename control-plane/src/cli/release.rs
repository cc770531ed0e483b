//! `troupe release create COMPONENT`: snapshots a component into an immutable
//! ComponentRelease named by its content and prints whether it is new.

use std::process::ExitCode;

use clap::Subcommand;
use troupe_common::pb::v1alpha1::CreateReleaseRequest;

use super::context::{Context, server_error};

/// Cut releases of components.
#[derive(Debug, clap::Args)]
pub struct ReleaseCmd {
    /// What to do with releases.
    #[command(subcommand)]
    action: ReleaseCommand,
}

/// The `release` verbs.
#[derive(Debug, Subcommand)]
enum ReleaseCommand {
    /// Snapshot a component (with its workload, type and traits) into an immutable
    /// ComponentRelease named by its content; unchanged inputs return the existing release.
    Create(ReleaseCreateCmd),
}

impl ReleaseCmd {
    /// Runs the `release` verb given.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        match self.action {
            ReleaseCommand::Create(cmd) => cmd.run(ctx).await,
        }
    }
}

/// Snapshot a component (with its workload, type and traits) into an immutable
/// ComponentRelease named by its content; unchanged inputs return the existing release.
#[derive(Debug, clap::Args)]
struct ReleaseCreateCmd {
    /// The component.
    component: String,
    /// Namespace of the component.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
}

impl ReleaseCreateCmd {
    /// Cuts the release and prints its name and sequence number.
    async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let mut client = ctx.releases().await?;
        let (namespace, component) = (&self.namespace, &self.component);
        let request = CreateReleaseRequest {
            namespace: namespace.clone(),
            component: component.clone(),
        };
        let response = client
            .create_release(request)
            .await
            .map_err(server_error)?
            .into_inner();
        let release = response.release.unwrap_or_default();
        let meta = release.metadata.unwrap_or_default();
        let sequence = meta
            .annotations
            .get("troupe.dev/sequence")
            .cloned()
            .unwrap_or_default();
        let what = if response.created {
            "created"
        } else {
            "unchanged (same content)"
        };
        outln!(
            "componentrelease/{} (namespace {namespace}) {what}; release #{sequence} of {component}",
            meta.name
        );
        Ok(ExitCode::SUCCESS)
    }
}
