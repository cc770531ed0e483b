//! The `troupe` command line: `server` runs the control plane; every other verb is a gRPC
//! client of it (`--server`, or `TROUPE_SERVER`).

mod apply;
mod dataplane;
mod diff;
mod get;
mod output;
mod promote;
mod release;
mod status;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tonic::transport::{Channel, Endpoint};
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::release_service_client::ReleaseServiceClient;
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;

use crate::agents::HubConfig;
use crate::server::{DEFAULT_MAX_MESSAGE_BYTES, ServerConfig};

const KINDS_HELP: &str = "KIND is a canonical, plural or short name: Namespace (ns), DataPlane (dp), \
ClusterDataPlane (cdp), Environment (env), DeploymentPipeline (pipeline), Project (proj), \
ComponentType (ct), ClusterComponentType (cct), Trait (trait), ClusterTrait (ctrait), Workflow (wf), \
ClusterWorkflow (cwf), Component (comp), Workload (wl), WorkflowRun (wfr), ComponentRelease (cr), \
ReleaseBinding (rb), Release (rel), Promotion (promo).";

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
    Server {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// Directory of the on-disk store (created if missing); `./troupe-dev` with --dev.
        #[arg(long, env = "TROUPE_DATA_DIR", required_unless_present_any = ["in_memory", "dev"])]
        data_dir: Option<PathBuf>,
        /// Keep everything in memory instead (lost when the server stops).
        #[arg(long, conflicts_with = "data_dir")]
        in_memory: bool,
        /// Largest gRPC message accepted or sent, in bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
        max_message_bytes: usize,
        /// Address of the agent endpoint (TLS; agents connect here). Port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:50052")]
        agent_listen: SocketAddr,
        /// A host name or address agents reach the agent endpoint by (its certificate is
        /// valid for these, `localhost` and `127.0.0.1`). Repeatable.
        #[arg(long = "agent-name")]
        agent_names: Vec<String>,
        /// Seconds between heartbeats on agent streams; three missed end a stream.
        #[arg(long, default_value_t = 10)]
        agent_heartbeat_seconds: u64,
        /// Largest release sent to an agent, in bytes of manifests; a larger one fails alone.
        #[arg(long, default_value_t = HubConfig::default().max_release_bytes)]
        agent_max_release_bytes: usize,
        /// Dev mode: load the sample platform and run an agent in this process for DataPlane
        /// acme/local, writing manifests under DATA_DIR/dataplane-local/.
        #[arg(long)]
        dev: bool,
    },
    /// Show where a component runs: each environment's release and whether it is ready.
    Status {
        /// The component.
        component: String,
        /// Namespace of the component.
        #[arg(short, long, env = "TROUPE_NAMESPACE")]
        namespace: String,
        /// Output format.
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        output: String,
    },
    /// Promote the release running in one environment to the next, along the pipeline.
    Promote {
        /// The component.
        component: String,
        /// Namespace of the component.
        #[arg(short, long, env = "TROUPE_NAMESPACE")]
        namespace: String,
        /// Target environment.
        #[arg(long)]
        to: String,
        /// Source environment; by default the one whose pipeline edge leads to --to.
        #[arg(long, default_value = "")]
        from: String,
        /// Who asks (recorded; approvers are matched against it). Default: $USER.
        #[arg(long = "as", env = "TROUPE_USER")]
        user: Option<String>,
        /// Why.
        #[arg(short, long, default_value = "")]
        message: String,
        /// Wait up to SECONDS for a pending promotion to finish.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
    /// Approve a pending promotion.
    Approve {
        /// The Promotion (as `promote` printed it).
        promotion: String,
        /// Namespace of the promotion.
        #[arg(short, long, env = "TROUPE_NAMESPACE")]
        namespace: String,
        /// Who approves. Default: $USER.
        #[arg(long = "as", env = "TROUPE_USER")]
        user: Option<String>,
        /// A comment.
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// Reject a pending promotion (or withdraw your own).
    Reject {
        /// The Promotion.
        promotion: String,
        /// Namespace of the promotion.
        #[arg(short, long, env = "TROUPE_NAMESPACE")]
        namespace: String,
        /// Who rejects. Default: $USER.
        #[arg(long = "as", env = "TROUPE_USER")]
        user: Option<String>,
        /// Why.
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// Report the result of a `check` gate of a pending promotion.
    Check {
        /// The Promotion.
        promotion: String,
        /// Name of the check gate.
        check: String,
        /// Namespace of the promotion.
        #[arg(short, long, env = "TROUPE_NAMESPACE")]
        namespace: String,
        /// The check passed.
        #[arg(long, conflicts_with = "failed", required_unless_present = "failed")]
        passed: bool,
        /// The check failed.
        #[arg(long)]
        failed: bool,
        /// Details.
        #[arg(short, long, default_value = "")]
        message: String,
        /// Who reports. Default: $USER.
        #[arg(long = "as", env = "TROUPE_USER")]
        user: Option<String>,
    },
    /// Point an environment back at an earlier release of a component.
    Rollback {
        /// The component.
        component: String,
        /// Namespace of the component.
        #[arg(short, long, env = "TROUPE_NAMESPACE")]
        namespace: String,
        /// The environment.
        #[arg(long = "env")]
        environment: String,
        /// The ComponentRelease to go back to; by default the one the environment ran before.
        #[arg(long, default_value = "")]
        to: String,
        /// Who asks. Default: $USER.
        #[arg(long = "as", env = "TROUPE_USER")]
        user: Option<String>,
        /// Why.
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// List a component's promotions and rollbacks: who, when, from, to, which release, outcome.
    History {
        /// The component.
        component: String,
        /// Namespace of the component.
        #[arg(short, long, env = "TROUPE_NAMESPACE")]
        namespace: String,
        /// Output format.
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        output: String,
    },
    /// Manage data planes' agents.
    Dataplane {
        /// What to do.
        #[command(subcommand)]
        action: DataPlaneCommand,
    },
    /// Create or update resources from YAML or JSON files (`-` reads standard input).
    Apply {
        /// A file, a directory of .yaml/.yml/.json files, or `-`. Repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Validate and show what would happen without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show one resource or list resources of a kind.
    #[command(after_help = KINDS_HELP)]
    Get {
        /// Kind of resource.
        kind: String,
        /// Name of one resource; omit to list.
        name: Option<String>,
        /// Namespace; when listing, omit to list every namespace.
        #[arg(short, long, env = "TROUPE_NAMESPACE", default_value = "")]
        namespace: String,
        /// Output format.
        #[arg(short, long, default_value = "table", value_parser = ["table", "yaml", "json"])]
        output: String,
        /// Label selector, e.g. `app=api,tier!=db`.
        #[arg(short = 'l', long, default_value = "")]
        selector: String,
    },
    /// Delete a resource (a Project takes its components and their children with it, an
    /// Environment its bindings; what an agent applied goes once the agent has pruned it).
    #[command(after_help = KINDS_HELP)]
    Delete {
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
    },
    /// Cut releases of components.
    Release {
        /// What to do with releases.
        #[command(subcommand)]
        action: ReleaseCommand,
    },
    /// Print the manifests a component would become in an environment; stores nothing.
    Render {
        /// The component.
        component: String,
        /// Namespace of the component.
        #[arg(short, long, env = "TROUPE_NAMESPACE")]
        namespace: String,
        /// Environment to render for.
        #[arg(long = "env")]
        environment: String,
        /// Render this ComponentRelease instead of the component's current state.
        #[arg(long, default_value = "")]
        release: String,
        /// Override an environmentConfigs value: `replicas=3`, or `traits.INSTANCE.key=value`.
        #[arg(long = "set")]
        sets: Vec<String>,
        /// Set an environment variable of the container, as a binding's workload overrides do:
        /// `LOG_LEVEL=debug`.
        #[arg(long = "set-env")]
        set_envs: Vec<String>,
        /// Output format.
        #[arg(short, long, default_value = "yaml", value_parser = ["yaml", "json"])]
        output: String,
    },
    /// Compare what a ReleaseBinding renders now (with optional `--set` changes to its
    /// overrides) with its stored Release; exits 1 when they differ.
    Diff {
        /// The ReleaseBinding.
        binding: String,
        /// Namespace of the binding.
        #[arg(short, long, env = "TROUPE_NAMESPACE")]
        namespace: String,
        /// Change an override for the comparison: `replicas=3`, `traits.INSTANCE.key=value`.
        #[arg(long = "set")]
        sets: Vec<String>,
        /// Set a container environment variable for the comparison: `LOG_LEVEL=debug`.
        #[arg(long = "set-env")]
        set_envs: Vec<String>,
    },
    /// Stream changes to resources of a kind (`all` for every kind) until interrupted.
    #[command(after_help = KINDS_HELP)]
    Watch {
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
    },
}

/// The `release` verbs.
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Snapshot a component (with its workload, type and traits) into an immutable
    /// ComponentRelease named by its content; unchanged inputs return the existing release.
    Create {
        /// The component.
        component: String,
        /// Namespace of the component.
        #[arg(short, long, env = "TROUPE_NAMESPACE")]
        namespace: String,
    },
}

/// The `dataplane` verbs.
#[derive(Debug, Subcommand)]
pub enum DataPlaneCommand {
    /// Bootstrap tokens agents register with.
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        action: TokenCommand,
    },
}

/// The `dataplane token` verbs.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token that registers an agent for one data plane, and print it.
    Create {
        /// The data plane: `NAMESPACE/NAME` (a DataPlane, created at registration if missing)
        /// or `NAME` (a ClusterDataPlane).
        data_plane: String,
        /// How long the token is accepted: seconds, or a number with s, m, h or d.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
}

/// Installs the log subscriber (stderr; `RUST_LOG` filters, default `info` for the server and
/// `warn` for client verbs).
pub fn init_tracing(args: &Args) {
    let default = if matches!(args.command, Command::Server { .. }) {
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
    match args.command {
        Command::Server {
            listen,
            data_dir,
            in_memory,
            max_message_bytes,
            agent_listen,
            agent_names,
            agent_heartbeat_seconds,
            agent_max_release_bytes,
            dev,
        } => {
            let data_dir = match (in_memory, data_dir, dev) {
                (true, _, _) => None,
                (false, None, true) => Some(PathBuf::from("troupe-dev")),
                (false, dir, _) => dir,
            };
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            names.extend(agent_names);
            let config = ServerConfig {
                listen,
                data_dir,
                max_message_bytes,
                agent_listen,
                agent_names: names,
                hub: HubConfig {
                    heartbeat: std::time::Duration::from_secs(agent_heartbeat_seconds.max(1)),
                    max_release_bytes: agent_max_release_bytes,
                    ..HubConfig::default()
                },
                dev,
            };
            crate::server::run(config, crate::server::shutdown_signal(), |ready| {
                // Scripts and tests read these lines to find a server started on port 0.
                println!("troupe server listening on {}", ready.api);
                let ca = ready
                    .ca_path
                    .map_or("in memory".to_string(), |p| p.display().to_string());
                println!(
                    "troupe agent endpoint listening on {} (CA {ca})",
                    ready.agents
                );
                if let Some(dir) = ready.dev_dataplane_dir {
                    println!(
                        "dev mode: data plane {} applies manifests under {}",
                        crate::server::DEV_DATA_PLANE,
                        dir.display()
                    );
                }
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            component,
            namespace,
            output,
        } => {
            status::run(
                &connect(&args.server).await?,
                &namespace,
                &component,
                &output,
            )
            .await
        }
        Command::Promote {
            component,
            namespace,
            to,
            from,
            user,
            message,
            wait,
        } => {
            let request = pb::PromoteRequest {
                namespace,
                component,
                from_environment: from,
                to_environment: to,
                requested_by: promote::user(user),
                message,
            };
            let answer = promoter(&args.server).await?.promote(request).await;
            let wait = wait.map(std::time::Duration::from_secs);
            promote::answered(&connect(&args.server).await?, answer, wait).await
        }
        Command::Approve {
            promotion,
            namespace,
            user,
            message,
        } => {
            let request = pb::ApproveRequest {
                namespace,
                promotion,
                user: promote::user(user),
                comment: message,
            };
            let answer = promoter(&args.server).await?.approve(request).await;
            promote::answered(&connect(&args.server).await?, answer, None).await
        }
        Command::Reject {
            promotion,
            namespace,
            user,
            message,
        } => {
            let request = pb::RejectRequest {
                namespace,
                promotion,
                user: promote::user(user),
                comment: message,
            };
            let answer = promoter(&args.server).await?.reject(request).await;
            // A rejection that took effect ends the promotion as Refused: what was asked.
            promote::answered(&connect(&args.server).await?, answer, None)
                .await
                .map(|_| ExitCode::SUCCESS)
        }
        Command::Check {
            promotion,
            check,
            namespace,
            passed,
            failed: _,
            message,
            user,
        } => {
            let request = pb::ReportCheckRequest {
                namespace,
                promotion,
                check,
                passed,
                message,
                reported_by: promote::user(user),
            };
            let answer = promoter(&args.server).await?.report_check(request).await;
            promote::answered(&connect(&args.server).await?, answer, None).await
        }
        Command::Rollback {
            component,
            namespace,
            environment,
            to,
            user,
            message,
        } => {
            let request = pb::RollbackRequest {
                namespace,
                component,
                environment,
                release: to,
                requested_by: promote::user(user),
                message,
            };
            let answer = promoter(&args.server).await?.rollback(request).await;
            promote::answered(&connect(&args.server).await?, answer, None).await
        }
        Command::History {
            component,
            namespace,
            output,
        } => {
            promote::history(
                &connect(&args.server).await?,
                &namespace,
                &component,
                &output,
            )
            .await
        }
        Command::Dataplane {
            action:
                DataPlaneCommand::Token {
                    action: TokenCommand::Create { data_plane, ttl },
                },
        } => dataplane::create_token(channel(&args.server).await?, &data_plane, &ttl).await,
        Command::Release {
            action:
                ReleaseCommand::Create {
                    component,
                    namespace,
                },
        } => {
            release::create(
                &mut release_client(&args.server).await?,
                &namespace,
                &component,
            )
            .await
        }
        Command::Render {
            component,
            namespace,
            environment,
            release,
            sets,
            set_envs,
            output,
        } => {
            let render = release::RenderArgs {
                namespace: &namespace,
                component: &component,
                environment: &environment,
                release: &release,
                sets: &sets,
                set_envs: &set_envs,
                output: &output,
            };
            release::render(&mut release_client(&args.server).await?, render).await
        }
        Command::Diff {
            binding,
            namespace,
            sets,
            set_envs,
        } => {
            let resources = connect(&args.server).await?;
            let mut releases = release_client(&args.server).await?;
            let changes = diff::Changes {
                sets: &sets,
                set_envs: &set_envs,
            };
            diff::run(&resources, &mut releases, &namespace, &binding, changes).await
        }
        Command::Apply { files, dry_run } => {
            apply::run(&connect(&args.server).await?, &files, dry_run).await
        }
        Command::Get {
            kind,
            name,
            namespace,
            output,
            selector,
        } => {
            get::get(
                &connect(&args.server).await?,
                &kind,
                name.as_deref(),
                &namespace,
                &output,
                &selector,
            )
            .await
        }
        Command::Delete {
            kind,
            name,
            namespace,
            dry_run,
            wait,
        } => {
            get::delete(
                &connect(&args.server).await?,
                &kind,
                &name,
                &namespace,
                dry_run,
                wait.map(std::time::Duration::from_secs),
            )
            .await
        }
        Command::Watch {
            kind,
            namespace,
            selector,
            since,
            output,
        } => {
            watch::run(
                &connect(&args.server).await?,
                &kind,
                &namespace,
                &selector,
                since,
                &output,
            )
            .await
        }
    }
}

/// A client of the resource service.
pub type Client = ResourceServiceClient<Channel>;

/// Largest message the CLI accepts (large lists).
const CLIENT_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

async fn channel(server: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(server.to_string())
        .with_context(|| format!("invalid server address {server:?}"))?
        .connect()
        .await
        .with_context(|| {
            format!("cannot reach the Troupe server at {server} (set --server or TROUPE_SERVER)")
        })
}

async fn release_client(server: &str) -> anyhow::Result<ReleaseServiceClient<Channel>> {
    Ok(ReleaseServiceClient::new(channel(server).await?)
        .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES))
}

async fn promoter(server: &str) -> anyhow::Result<promote::Promoter> {
    Ok(promote::Promoter::new(channel(server).await?))
}

async fn connect(server: &str) -> anyhow::Result<Client> {
    let channel = channel(server).await?;
    Ok(ResourceServiceClient::new(channel)
        .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(CLIENT_MAX_MESSAGE_BYTES))
}

/// A server error as the CLI prints it: the server's own message.
fn server_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", status.message(), status.code())
}
