//! `troupe servers`: the control-plane servers sharing the store, and which one leads.

use std::process::ExitCode;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::server_service_client::ServerServiceClient;

use super::context::{Context, server_error};
use super::output::columns;

/// List the control-plane servers of the store and which one leads (runs the controllers).
#[derive(Debug, clap::Args)]
pub struct ServersCmd {
    /// Output: table or json.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

impl ServersCmd {
    /// Lists the servers.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let servers = ServerServiceClient::new(ctx.channel().await?)
            .list_servers(pb::ListServersRequest {})
            .await
            .map_err(server_error)?
            .into_inner()
            .servers;
        if self.output == "json" {
            outln!("{}", serde_json::to_string_pretty(&servers)?);
        } else {
            out!("{}", table(&servers));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// NAME (`*` marks the server that answered), LEADER, ENDPOINTS.
fn table(servers: &[pb::ServerInfo]) -> String {
    let mut rows = vec![["NAME", "LEADER", "ENDPOINTS"].map(String::from).to_vec()];
    for s in servers {
        let mark = if s.answering { " *" } else { "" };
        let leader = if s.leader { "yes" } else { "-" };
        rows.push(vec![
            format!("{}{mark}", s.name),
            leader.into(),
            s.endpoints.clone(),
        ]);
    }
    columns(&rows)
}
