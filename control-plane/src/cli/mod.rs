//! The `troupe` command line: `server` runs the control plane; every other verb is a gRPC
//! client of it (`--server`, or `TROUPE_SERVER`).
//!
//! Each verb is one `clap::Args` struct in its own file with its flags and a `run`; this
//! module parses the command line into one of them and hands it the shared [`Context`].

mod apply;
mod context;
mod dataplane;
mod delete;
mod diff;
mod get;
mod history;
mod output;
mod overrides;
mod promote;
mod release;
mod render;
mod server;
mod status;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use self::apply::ApplyCmd;
use self::context::Context;
use self::dataplane::DataPlaneCmd;
use self::delete::DeleteCmd;
use self::diff::DiffCmd;
use self::get::GetCmd;
use self::history::HistoryCmd;
use self::promote::{ApproveCmd, CheckCmd, PromoteCmd, RejectCmd, RollbackCmd};
use self::release::ReleaseCmd;
use self::render::RenderCmd;
use self::server::ServerCmd;
use self::status::StatusCmd;
use self::watch::WatchCmd;

/// How a KIND argument may be spelled (after the help of the verbs that take one).
const KINDS_HELP: &str = "KIND is a canonical, plural or short name: Namespace (ns), DataPlane (dp), \
ClusterDataPlane (cdp), Environment (env), DeploymentPipeline (pipeline), Project (proj), \
ComponentType (ct), ClusterComponentType (cct), Trait (trait), ClusterTrait (ctrait), Workflow (wf), \
ClusterWorkflow (cwf), Component (comp), Workload (wl), WorkflowRun (wfr), ComponentRelease (cr), \
ReleaseBinding (rb), Release (rel), Promotion (promo), Role (role), ClusterRole (crole), \
RoleBinding (rolebinding), ClusterRoleBinding (crb).";

/// Troupe: a control plane for internal developer platforms.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, about, after_help = KINDS_HELP)]
pub struct Args {
    /// Address of the Troupe server.
    #[arg(
        long,
        global = true,
        env = "TROUPE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Log format of the server: text or json.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane server.
    Server(ServerCmd),
    /// Show where a component runs: each environment's release and whether it is ready.
    Status(StatusCmd),
    /// Promote the release running in one environment to the next, along the pipeline.
    Promote(PromoteCmd),
    /// Approve a pending promotion.
    Approve(ApproveCmd),
    /// Reject a pending promotion (or withdraw your own).
    Reject(RejectCmd),
    /// Report the result of a `check` gate of a pending promotion.
    Check(CheckCmd),
    /// Point an environment back at an earlier release of a component.
    Rollback(RollbackCmd),
    /// List a component's promotions and rollbacks: who, when, from, to, which release, outcome.
    History(HistoryCmd),
    /// Manage data planes' agents.
    Dataplane(DataPlaneCmd),
    /// Create or update resources from YAML or JSON files (`-` reads standard input).
    Apply(ApplyCmd),
    /// Show one resource or list resources of a kind.
    #[command(after_help = KINDS_HELP)]
    Get(GetCmd),
    /// Delete a resource (a Project takes its components and their children with it, an
    /// Environment its bindings; what an agent applied goes once the agent has pruned it).
    #[command(after_help = KINDS_HELP)]
    Delete(DeleteCmd),
    /// Cut releases of components.
    Release(ReleaseCmd),
    /// Print the manifests a component would become in an environment; stores nothing.
    Render(RenderCmd),
    /// Compare what a ReleaseBinding renders now (with optional `--set` changes to its
    /// overrides) with its stored Release; exits 1 when they differ.
    Diff(DiffCmd),
    /// Stream changes to resources of a kind (`all` for every kind) until interrupted.
    #[command(after_help = KINDS_HELP)]
    Watch(WatchCmd),
}

/// Installs the log subscriber (stderr; `RUST_LOG` filters, default `info` for the server and
/// `warn` for client verbs).
pub fn init_tracing(args: &Args) {
    let default = if matches!(args.command, Command::Server(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs one verb.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ctx = Context::new(args.server);
    match args.command {
        Command::Server(cmd) => cmd.run().await,
        Command::Status(cmd) => cmd.run(&ctx).await,
        Command::Promote(cmd) => cmd.run(&ctx).await,
        Command::Approve(cmd) => cmd.run(&ctx).await,
        Command::Reject(cmd) => cmd.run(&ctx).await,
        Command::Check(cmd) => cmd.run(&ctx).await,
        Command::Rollback(cmd) => cmd.run(&ctx).await,
        Command::History(cmd) => cmd.run(&ctx).await,
        Command::Dataplane(cmd) => cmd.run(&ctx).await,
        Command::Apply(cmd) => cmd.run(&ctx).await,
        Command::Get(cmd) => cmd.run(&ctx).await,
        Command::Delete(cmd) => cmd.run(&ctx).await,
        Command::Release(cmd) => cmd.run(&ctx).await,
        Command::Render(cmd) => cmd.run(&ctx).await,
        Command::Diff(cmd) => cmd.run(&ctx).await,
        Command::Watch(cmd) => cmd.run(&ctx).await,
    }
}
