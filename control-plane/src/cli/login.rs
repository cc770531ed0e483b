//! `troupe login`, `troupe logout` and `troupe context`: the verbs that keep the config file's
//! contexts ([`super::config`]). They take the global `--server`, `--ca`, `--token` and
//! `--context` as what to write, not as what to connect with.

use std::process::ExitCode;

use anyhow::Context as _;
use troupe_common::pb::v1alpha1::WhoAmIRequest;
use troupe_common::pb::v1alpha1::auth_service_client::AuthServiceClient;

use super::config::{self, Config, NamedContext};
use super::context::{Context, Flags, server_error};

/// Check that a server answers with a token, then save both as a context and make it current.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Give the server with --server URL, the token with --token TOKEN (or \
TROUPE_TOKEN), the CA with --ca FILE for a server whose certificate the system does not trust, \
and the context's name with --context NAME (default: the server's HOST:PORT)."
)]
pub struct LoginCmd {}

impl LoginCmd {
    /// Checks the server, then writes the context.
    pub(super) async fn run(self, flags: Flags) -> anyhow::Result<ExitCode> {
        let server = flags
            .server
            .context("troupe login needs the server: --server URL (https://HOST:PORT[,…])")?;
        let token = flags
            .token
            .context("troupe login needs a token: --token TOKEN (or TROUPE_TOKEN)")?;
        let ca = flags.ca.as_deref().map(config::read_ca).transpose()?;
        let ctx = Context::new(server.clone(), ca.clone(), Some(token.clone()));
        let me = AuthServiceClient::new(ctx.channel().await?)
            .who_am_i(WhoAmIRequest {})
            .await
            .map_err(server_error)?
            .into_inner();
        let name = match flags.context {
            Some(name) => name,
            None => default_name(&server)?,
        };
        let path = config_path()?;
        let mut config = Config::load(&path)?;
        config.upsert(NamedContext {
            name: name.clone(),
            server: server.clone(),
            ca,
            token: Some(token),
        });
        config.current_context = Some(name.clone());
        config.save(&path)?;
        outln!(
            "logged in to {server} as {}: context {name} is current",
            me.user
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Forget a context and its token (the current one unless --context names another).
#[derive(Debug, clap::Args)]
pub struct LogoutCmd {}

impl LogoutCmd {
    /// Removes the context from the config file.
    pub(super) fn run(self, flags: Flags) -> anyhow::Result<ExitCode> {
        let path = config_path()?;
        let mut config = Config::load(&path)?;
        let name = flags
            .context
            .or_else(|| config.current_context.clone())
            .context("no current context to log out of (name one with --context)")?;
        anyhow::ensure!(
            config.remove(&name),
            "no context {name:?} in {}",
            path.display()
        );
        config.save(&path)?;
        outln!("context {name} removed");
        Ok(ExitCode::SUCCESS)
    }
}

/// List the contexts of the config file, or choose the current one.
#[derive(Debug, clap::Args)]
pub struct ContextCmd {
    #[command(subcommand)]
    command: ContextVerb,
}

#[derive(Debug, clap::Subcommand)]
enum ContextVerb {
    /// List the contexts; `*` marks the current one.
    List,
    /// Make a context current.
    Use {
        /// The context's name.
        name: String,
    },
}

impl ContextCmd {
    /// Lists or switches contexts.
    pub(super) fn run(self) -> anyhow::Result<ExitCode> {
        let path = config_path()?;
        let mut config = Config::load(&path)?;
        match self.command {
            ContextVerb::List => {
                let width = config.contexts.iter().map(|c| c.name.len()).max();
                let width = width.unwrap_or(0).max("NAME".len());
                outln!("CURRENT  {:width$}  SERVER", "NAME");
                for c in &config.contexts {
                    let mark = if config.current_context.as_deref() == Some(&c.name) {
                        "*"
                    } else {
                        ""
                    };
                    outln!("{mark:7}  {:width$}  {}", c.name, c.server);
                }
            }
            ContextVerb::Use { name } => {
                anyhow::ensure!(
                    config.get(&name).is_some(),
                    "no context {name:?} in {} (see `troupe context list`)",
                    path.display()
                );
                config.current_context = Some(name.clone());
                config.save(&path)?;
                outln!("context {name} is current");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn config_path() -> anyhow::Result<std::path::PathBuf> {
    config::path().context("no place for the CLI config: set TROUPE_CONFIG or HOME")
}

/// A context's name when login is not given one: the (first) server's `HOST:PORT`.
fn default_name(server: &str) -> anyhow::Result<String> {
    let first = super::context::servers(server).next().unwrap_or(server);
    let uri: tonic::codegen::http::Uri = first
        .parse()
        .with_context(|| format!("invalid server address {server:?}"))?;
    uri.authority()
        .map(|a| a.to_string())
        .with_context(|| format!("server address {server:?} has no host"))
}
