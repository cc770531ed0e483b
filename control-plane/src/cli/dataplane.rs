//! `troupe dataplane token create`: a bootstrap token for one data plane's agent, printed
//! with the command line that starts the agent with it.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use troupe_common::pb::v1alpha1::data_plane_service_client::DataPlaneServiceClient;
use troupe_common::pb::v1alpha1::{CreateBootstrapTokenRequest, DataPlaneIdentity};

use super::context::{Context, server_error};
use crate::auth::tokens::{MAX_TTL, MAX_TTL_DAYS};

/// Manage data planes' agents.
#[derive(Debug, clap::Args)]
pub struct DataPlaneCmd {
    /// What to do.
    #[command(subcommand)]
    action: DataPlaneCommand,
}

/// The `dataplane` verbs.
#[derive(Debug, Subcommand)]
enum DataPlaneCommand {
    /// Bootstrap tokens agents register with.
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        action: TokenCommand,
    },
}

/// The `dataplane token` verbs.
#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token that registers an agent for one data plane, and print it.
    Create(TokenCreateCmd),
}

impl DataPlaneCmd {
    /// Runs the `dataplane` verb given.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        match self.action {
            DataPlaneCommand::Token {
                action: TokenCommand::Create(cmd),
            } => cmd.run(ctx).await,
        }
    }
}

/// Create a token that registers an agent for one data plane, and print it.
#[derive(Debug, clap::Args)]
struct TokenCreateCmd {
    /// The data plane: `NAMESPACE/NAME` (a DataPlane, created at registration if missing)
    /// or `NAME` (a ClusterDataPlane).
    data_plane: String,
    /// How long the token is accepted: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "24h")]
    ttl: String,
}

impl TokenCreateCmd {
    /// Creates the token and prints it (standard output) and how to use it (standard error).
    async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let channel = ctx.channel().await?;
        let ttl = parse_ttl(&self.ttl)?;
        let id = DataPlaneIdentity::parse(&self.data_plane).map_err(anyhow::Error::msg)?;
        let response = DataPlaneServiceClient::new(channel)
            .create_bootstrap_token(CreateBootstrapTokenRequest {
                data_plane: Some(id.clone()),
                ttl_seconds: ttl.as_secs() as i64,
            })
            .await
            .map_err(server_error)?
            .into_inner();
        outln!("{}", response.token);
        eprintln!(
            "token for data plane {id}, valid for {}s; start the agent with:\n  troupe-agent --control-plane https://HOST:50052 --dataplane {id} --token {} --state-dir DIR --apply dir:PATH",
            ttl.as_secs(),
            response.token
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Parses `90`, `90s`, `15m`, `24h` or `7d`.
pub(super) fn parse_ttl(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("--ttl {text:?}: expected a number with s, m, h or d"))?;
    let unit_seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("--ttl {text:?}: the unit must be s, m, h or d"),
    };
    let ttl = n.checked_mul(unit_seconds).map(Duration::from_secs);
    match ttl {
        Some(Duration::ZERO) => anyhow::bail!("--ttl must be more than zero"),
        Some(ttl) if ttl <= MAX_TTL => Ok(ttl),
        _ => anyhow::bail!("--ttl {text:?}: longer than the largest TTL allowed, {MAX_TTL_DAYS}d"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_take_a_unit() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ttl("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("0").is_err());
    }

    #[test]
    fn ttls_too_long_are_refused_naming_the_limit() {
        for text in [
            "9223372036854775808",
            "213503982334601d",
            "3651d",
            "18446744073709551615s",
        ] {
            let error = parse_ttl(text).unwrap_err().to_string();
            assert!(
                error.contains("--ttl") && error.contains("3650d"),
                "{text}: {error}"
            );
        }
        assert_eq!(
            parse_ttl("3650d").unwrap(),
            Duration::from_secs(3650 * 86_400)
        );
    }
}
