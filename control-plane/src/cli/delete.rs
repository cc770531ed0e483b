//! `troupe delete KIND NAME`: deletes one resource, printing it and every child the deletion
//! cascades to; with `--wait`, follows the data planes until they have pruned what it removed.

use std::process::ExitCode;

use troupe_common::Kind;
use troupe_common::pb::v1alpha1::{DeleteRequest, DeleteResponse, GetRequest, ObjectReference};

use super::context::{Client, Context, server_error};

/// Delete a resource (a Project takes its components and their children with it, an
/// Environment its bindings; what an agent applied goes once the agent has pruned it).
#[derive(Debug, clap::Args)]
pub struct DeleteCmd {
    /// Kind of resource.
    kind: String,
    /// Name of the resource.
    name: String,
    /// Namespace (not for cluster-scoped kinds).
    #[arg(short, long, env = "TROUPE_NAMESPACE", default_value = "")]
    namespace: String,
    /// Show what would be deleted without deleting.
    #[arg(long)]
    dry_run: bool,
    /// Wait up to SECONDS for data planes to prune what the deletion removes, showing
    /// progress.
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u64>,
}

impl DeleteCmd {
    /// Deletes, prints what went, and with `--wait` waits for the prunes.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let client = ctx.resources().await?;
        let namespace = if Kind::parse(&self.kind)?.is_cluster_scoped() {
            ""
        } else {
            &self.namespace
        };
        let request = DeleteRequest {
            kind: self.kind.clone(),
            namespace: namespace.into(),
            name: self.name.clone(),
            expected_resource_version: 0,
            dry_run: self.dry_run,
        };
        let response = client
            .clone()
            .delete(request)
            .await
            .map_err(server_error)?
            .into_inner();
        print_deleted(&response, self.dry_run);
        match self.wait.map(std::time::Duration::from_secs) {
            Some(limit) if !self.dry_run && !response.pruning.is_empty() => {
                wait_for_prunes(&client, &response.pruning, limit).await
            }
            _ => Ok(ExitCode::SUCCESS),
        }
    }
}

/// One line for the deleted resource and each cascaded child, saying which wait for their
/// data plane to prune them.
fn print_deleted(response: &DeleteResponse, dry_run: bool) {
    let suffix = if dry_run { " (dry run)" } else { "" };
    let name = |r: &ObjectReference| {
        if r.namespace.is_empty() {
            format!("{} {}", r.kind, r.name)
        } else {
            format!("{} {}/{}", r.kind, r.namespace, r.name)
        }
    };
    let pruning: Vec<String> = response.pruning.iter().map(name).collect();
    let done = |what: String| {
        if pruning.contains(&what) {
            outln!("{what} deleted once its data plane has pruned its objects{suffix}");
        } else {
            outln!("{what} deleted{suffix}");
        }
    };
    if let Some(object) = response.resource.as_ref().and_then(|r| r.object.as_ref()) {
        done(object.key().to_string());
    }
    for child in &response.cascaded {
        done(name(child));
    }
}

/// Waits until every object in `pruning` has left the store (its data plane pruned it),
/// printing progress as it changes. Exits 2 if `limit` passes first.
async fn wait_for_prunes(
    client: &Client,
    pruning: &[ObjectReference],
    limit: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let deadline = super::deadline_after(limit);
    let mut left: Vec<_> = pruning.to_vec();
    let total = left.len();
    let mut shown = usize::MAX;
    loop {
        let mut still = Vec::with_capacity(left.len());
        for r in left {
            let request = GetRequest {
                kind: r.kind.clone(),
                namespace: r.namespace.clone(),
                name: r.name.clone(),
            };
            match client.clone().get(request).await {
                Err(status) if status.code() == tonic::Code::NotFound => {}
                Err(status) => return Err(server_error(status)),
                Ok(_) => still.push(r),
            }
        }
        left = still;
        if left.len() != shown {
            shown = left.len();
            outln!("pruned {} of {total}", total - shown);
        }
        if left.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            let names: Vec<String> = left
                .iter()
                .map(|r| format!("{} {}/{}", r.kind, r.namespace, r.name))
                .collect();
            eprintln!(
                "still waiting for their data planes to prune: {}",
                names.join(", ")
            );
            return Ok(ExitCode::from(2));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
