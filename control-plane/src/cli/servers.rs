//! `troupe servers`: the control-plane servers sharing the store, which one leads, and the
//! store's etcd members as the answering server reaches them.

use std::process::ExitCode;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::server_service_client::ServerServiceClient;

use super::context::{Context, server_error};
use super::output::columns;

/// List the control-plane servers of the store, which one leads (runs the controllers), and
/// which of the store's etcd members the answering server reaches.
#[derive(Debug, clap::Args)]
pub struct ServersCmd {
    /// Output: table or json.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

impl ServersCmd {
    /// Lists the servers.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let listed = ServerServiceClient::new(ctx.channel().await?)
            .list_servers(pb::ListServersRequest {})
            .await
            .map_err(server_error)?
            .into_inner();
        if self.output == "json" {
            outln!("{}", serde_json::to_string_pretty(&listed)?);
        } else {
            out!("{}", table(&listed.servers));
            if !listed.store_members.is_empty() {
                out!("\n{}", members(&listed.store_members));
            }
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

/// ETCD MEMBER, REACHABLE.
fn members(members: &[pb::StoreMember]) -> String {
    let mut rows = vec![["ETCD MEMBER", "REACHABLE"].map(String::from).to_vec()];
    for m in members {
        let reachable = if m.reachable { "yes" } else { "no" };
        rows.push(vec![m.endpoint.clone(), reachable.into()]);
    }
    columns(&rows)
}
