//! The `troupe` command line: `server` runs the control plane; `login`, `logout` and
//! `context` keep the config file's contexts; every other verb is a gRPC client of the server
//! (`--server`, `--ca`, `--token`, or the current context).
//!
//! Each verb is one `clap::Args` struct in its own file with its flags and a `run`; this
//! module parses the command line into one of them and hands it the shared [`Context`].

/// `print!` for command output: see [`stdout`] for what happens when the reader has gone.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::stdout::write(format_args!($($arg)*)) };
}

/// `println!` for command output: see [`stdout`] for what happens when the reader has gone.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::stdout::write_line(format_args!($($arg)*)) };
}

mod stdout;

mod apply;
mod auth;
mod build;
mod config;
mod context;
mod dataplane;
mod delete;
mod diff;
mod get;
mod graph;
mod history;
mod login;
mod migrate;
mod output;
mod overrides;
mod promote;
mod release;
mod render;
mod server;
mod servers;
mod status;
mod token;
mod trace;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use self::apply::ApplyCmd;
use self::auth::AuthCmd;
use self::build::{BuildCmd, CancelCmd, LogsCmd, RetryCmd};
use self::context::{Context, Flags};
use self::dataplane::DataPlaneCmd;
use self::delete::DeleteCmd;
use self::diff::DiffCmd;
use self::get::GetCmd;
use self::graph::GraphCmd;
use self::history::HistoryCmd;
use self::login::{ContextCmd, LoginCmd, LogoutCmd};
use self::migrate::MigrateCmd;
use self::promote::{ApproveCmd, CheckCmd, PromoteCmd, RejectCmd, RollbackCmd};
use self::release::ReleaseCmd;
use self::render::RenderCmd;
use self::server::ServerCmd;
use self::servers::ServersCmd;
use self::status::StatusCmd;
use self::token::TokenCmd;
use self::trace::{RecordImageCmd, TraceCmd, WebhookSecretCmd};
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
    /// URL of the Troupe server: https://HOST:PORT, or http:// for a plaintext one (default:
    /// the current context's, else https://127.0.0.1:50051). Several servers of one control
    /// plane, comma-separated, are tried in order: the first that accepts the connection
    /// serves the command.
    #[arg(long, global = true, env = "TROUPE_SERVER")]
    pub server: Option<String>,
    /// PEM file of the CA to trust the server by (default: the context's, else the system's).
    #[arg(long, global = true, env = "TROUPE_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// API token, sent as `authorization: Bearer TOKEN` with every call (default: the
    /// context's).
    #[arg(long, global = true, env = "TROUPE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Context of the CLI config to use instead of the current one (for login and logout:
    /// the one to write or remove).
    #[arg(long, global = true, env = "TROUPE_CONTEXT")]
    pub context: Option<String>,
    /// Act as this user (impersonation, as kubectl's --as: the call is judged by that user's
    /// grants and records name both; needs the `impersonate` verb on User USER).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// With --as: a group of the impersonated user (repeatable; needs `impersonate` on Group).
    #[arg(
        long = "as-group",
        global = true,
        value_name = "GROUP",
        requires = "as_user"
    )]
    pub as_groups: Vec<String>,
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
    // Boxed: its flags make it several times larger than any other command.
    Server(Box<ServerCmd>),
    /// Check that a server answers with a token, then save both as the current context.
    Login(LoginCmd),
    /// Forget a context and its token.
    Logout(LogoutCmd),
    /// List the CLI config's contexts, or choose the current one.
    Context(ContextCmd),
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
    /// Start a build of a component: a WorkflowRun of its workflow (prints the run's name).
    Build(BuildCmd),
    /// Print a run's log lines as `[step] text` (`-f` follows it until the run ends).
    Logs(LogsCmd),
    /// Cancel a run: its current step is stopped within the grace period.
    Cancel(CancelCmd),
    /// Run a finished run again: a new attempt with the same inputs.
    Retry(RetryCmd),
    /// Trace an image, commit, component or release: the commit and run that built it, the
    /// release that carries it, the environments that run it.
    Trace(TraceCmd),
    /// Make a new secret for a component's push webhook, and print it.
    WebhookSecret(WebhookSecretCmd),
    /// Record an image built outside Troupe on a component's Workload.
    RecordImage(RecordImageCmd),
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
    /// Show the components of a namespace, their endpoints, and the connections between them
    /// with their state in each environment (a table, JSON, Graphviz DOT or Mermaid).
    Graph(GraphCmd),
    /// Compare what a ReleaseBinding renders now (with optional `--set` changes to its
    /// overrides) with its stored Release; exits 1 when they differ.
    Diff(DiffCmd),
    /// Stream changes to resources of a kind (`all` for every kind) until interrupted.
    #[command(after_help = KINDS_HELP)]
    Watch(WatchCmd),
    /// Manage API tokens (bearer tokens for people and CI).
    Token(TokenCmd),
    /// Who you are to the server (`whoami`), and what you may do (`can-i`).
    Auth(AuthCmd),
    /// List the control-plane servers sharing the store, and which one leads.
    Servers(ServersCmd),
    /// Move a stopped server's store and state from its data directory into an empty etcd
    /// store, for servers started with `--store etcd://…` to go on from; `--from-etcd` moves
    /// an etcd store back into a data directory.
    Migrate(MigrateCmd),
}

/// Installs the log subscriber (stderr; `RUST_LOG` filters, default `info` for the server and
/// `warn` for client verbs).
pub fn init_tracing(args: &Args) {
    // rustls warns about clients that send an IP address as the TLS server name (gRPC's
    // Node client does); that is theirs to fix and harmless here.
    let default = if matches!(args.command, Command::Server(_)) {
        "info,rustls=error"
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
    let flags = Flags {
        server: args.server,
        ca: args.ca,
        token: args.token,
        context: args.context,
        as_user: args.as_user,
        as_groups: args.as_groups,
    };
    // Only the verbs that talk to the server read the config file.
    let ctx = || Context::resolve(flags.clone());
    match args.command {
        Command::Server(cmd) => cmd.run().await,
        Command::Login(cmd) => cmd.run(flags).await,
        Command::Logout(cmd) => cmd.run(flags),
        Command::Context(cmd) => cmd.run(),
        Command::Status(cmd) => cmd.run(&ctx()?).await,
        Command::Promote(cmd) => cmd.run(&ctx()?).await,
        Command::Approve(cmd) => cmd.run(&ctx()?).await,
        Command::Reject(cmd) => cmd.run(&ctx()?).await,
        Command::Check(cmd) => cmd.run(&ctx()?).await,
        Command::Rollback(cmd) => cmd.run(&ctx()?).await,
        Command::History(cmd) => cmd.run(&ctx()?).await,
        Command::Build(cmd) => cmd.run(&ctx()?).await,
        Command::Logs(cmd) => cmd.run(&ctx()?).await,
        Command::Cancel(cmd) => cmd.run(&ctx()?).await,
        Command::Retry(cmd) => cmd.run(&ctx()?).await,
        Command::Trace(cmd) => cmd.run(&ctx()?).await,
        Command::WebhookSecret(cmd) => cmd.run(&ctx()?).await,
        Command::RecordImage(cmd) => cmd.run(&ctx()?).await,
        Command::Dataplane(cmd) => cmd.run(&ctx()?).await,
        Command::Apply(cmd) => cmd.run(&ctx()?).await,
        Command::Get(cmd) => cmd.run(&ctx()?).await,
        Command::Delete(cmd) => cmd.run(&ctx()?).await,
        Command::Release(cmd) => cmd.run(&ctx()?).await,
        Command::Render(cmd) => cmd.run(&ctx()?).await,
        Command::Graph(cmd) => cmd.run(&ctx()?).await,
        Command::Diff(cmd) => cmd.run(&ctx()?).await,
        Command::Watch(cmd) => cmd.run(&ctx()?).await,
        Command::Token(cmd) => cmd.run(&ctx()?).await,
        Command::Auth(cmd) => cmd.run(&ctx()?).await,
        Command::Servers(cmd) => cmd.run(&ctx()?).await,
        Command::Migrate(cmd) => cmd.run(),
    }
}

/// When a `--wait` of `limit` started now ends; `None` for a limit past any instant the clock
/// can show (`--wait 18446744073709551615`), which is a wait without end.
fn deadline_after(limit: std::time::Duration) -> Option<tokio::time::Instant> {
    tokio::time::Instant::now().checked_add(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_too_long_for_the_clock_have_no_deadline() {
        assert_eq!(
            deadline_after(std::time::Duration::from_secs(u64::MAX)),
            None
        );
        assert!(deadline_after(std::time::Duration::from_secs(60)).is_some());
    }
}
