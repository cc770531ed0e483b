//! `troupe auth whoami` and `troupe auth can-i`: who the server takes you for, and what you
//! may do.

use std::process::ExitCode;

use clap::Subcommand;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::auth_service_client::AuthServiceClient;

use super::context::{Context, server_error};

/// Who you are to the server, and what you may do.
#[derive(Debug, clap::Args)]
pub struct AuthCmd {
    /// What to ask.
    #[command(subcommand)]
    action: AuthAction,
}

/// The `auth` verbs.
#[derive(Debug, Subcommand)]
enum AuthAction {
    /// Print the user and groups the server takes your credentials for.
    Whoami {
        /// Output: text or json.
        #[arg(short, long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
    /// Whether you may do VERB to KIND [NAME]: prints yes or no (and why not); exits 0 for
    /// yes, 1 for no.
    CanI {
        /// get, list, watch, apply, delete, promote, approve, check, rollback, render, token
        /// or impersonate.
        verb: String,
        /// A kind (canonical, plural or short name), or ApiToken, User, Group, Server.
        kind: String,
        /// One object; its project and component are read from the server.
        name: Option<String>,
        /// Namespace (empty for cluster-scoped kinds).
        #[arg(short, long, env = "TROUPE_NAMESPACE", default_value = "")]
        namespace: String,
        /// Ask about this project, when NAME does not say.
        #[arg(long, default_value = "")]
        project: String,
        /// Ask about this component, when NAME does not say.
        #[arg(long, default_value = "")]
        component: String,
    },
}

impl AuthCmd {
    /// Runs the `auth` verb given.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let mut client = AuthServiceClient::new(ctx.channel().await?);
        match self.action {
            AuthAction::Whoami { output } => {
                let me = client
                    .who_am_i(pb::WhoAmIRequest {})
                    .await
                    .map_err(server_error)?
                    .into_inner();
                if output == "json" {
                    outln!("{}", serde_json::to_string_pretty(&me)?);
                } else {
                    outln!("user: {}", me.user);
                    outln!("groups: {}", me.groups.join(", "));
                    outln!("authenticated by: {}", me.authenticated_by);
                    if !me.impersonated_by.is_empty() {
                        outln!("impersonated by: {}", me.impersonated_by);
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            AuthAction::CanI {
                verb,
                kind,
                name,
                namespace,
                project,
                component,
            } => {
                let question = pb::AccessQuestion {
                    verb,
                    kind,
                    namespace,
                    name: name.unwrap_or_default(),
                    project,
                    component,
                };
                let answer = client
                    .check_access(pb::CheckAccessRequest {
                        questions: vec![question],
                    })
                    .await
                    .map_err(server_error)?
                    .into_inner()
                    .answers
                    .pop()
                    .unwrap_or_default();
                if answer.allowed {
                    outln!("yes");
                    Ok(ExitCode::SUCCESS)
                } else {
                    outln!("no: {}", answer.reason);
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
