//! `troupe token create|list|revoke`: Troupe API tokens for people and CI.

use std::process::ExitCode;

use clap::Subcommand;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::auth_service_client::AuthServiceClient;

use super::context::{Context, server_error};
use super::dataplane::parse_ttl;
use super::output::columns;
use crate::auth::tokens::rfc3339;

/// Manage API tokens (bearer tokens for people and CI).
#[derive(Debug, clap::Args)]
pub struct TokenCmd {
    /// What to do.
    #[command(subcommand)]
    action: TokenAction,
}

/// The `token` verbs.
#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create a token and print it (shown once; only its hash is kept).
    Create {
        /// The token's name: the user name of whoever presents it.
        name: String,
        /// Groups the token's user belongs to (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// How long it is accepted: seconds, or a number with s, m, h or d.
        #[arg(long, default_value = "30d")]
        ttl: String,
    },
    /// List current tokens (never their secrets).
    List {
        /// Output: table or json.
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        output: String,
    },
    /// Revoke a token now.
    Revoke {
        /// The token's name.
        name: String,
    },
}

impl TokenCmd {
    /// Runs the `token` verb given.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let mut client = AuthServiceClient::new(ctx.channel().await?);
        match self.action {
            TokenAction::Create { name, groups, ttl } => {
                let ttl = parse_ttl(&ttl)?;
                let response = client
                    .create_token(pb::CreateTokenRequest {
                        name: name.clone(),
                        groups,
                        ttl_seconds: ttl.as_secs() as i64,
                    })
                    .await
                    .map_err(server_error)?
                    .into_inner();
                outln!("{}", response.token);
                eprintln!(
                    "token {name}, valid for {}s; use it with `troupe login --token TOKEN` or `authorization: Bearer TOKEN`",
                    ttl.as_secs()
                );
            }
            TokenAction::List { output } => {
                let tokens = client
                    .list_tokens(pb::ListTokensRequest {})
                    .await
                    .map_err(server_error)?
                    .into_inner()
                    .tokens;
                if output == "json" {
                    outln!("{}", serde_json::to_string_pretty(&tokens)?);
                } else {
                    out!("{}", table(&tokens));
                }
            }
            TokenAction::Revoke { name } => {
                client
                    .revoke_token(pb::RevokeTokenRequest { name: name.clone() })
                    .await
                    .map_err(server_error)?;
                outln!("token {name} revoked");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn table(tokens: &[pb::ApiToken]) -> String {
    let time = |t: &Option<pbjson_types::Timestamp>| {
        t.as_ref()
            .map_or_else(|| "-".into(), |t| rfc3339(t.seconds.max(0) as u64))
    };
    let mut rows = vec![
        ["NAME", "GROUPS", "EXPIRES", "LAST USED", "CREATED BY"]
            .map(String::from)
            .to_vec(),
    ];
    for t in tokens {
        rows.push(vec![
            t.name.clone(),
            if t.groups.is_empty() {
                "-".into()
            } else {
                t.groups.join(",")
            },
            time(&t.expire_time),
            time(&t.last_used_time),
            t.created_by.clone(),
        ]);
    }
    columns(&rows)
}
