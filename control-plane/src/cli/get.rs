//! `troupe get KIND [NAME]`: one resource, or every resource of a kind (following page
//! tokens to the end), as a table, YAML or JSON; YAML and JSON apply back unchanged.

use std::process::ExitCode;

use troupe_common::pb::v1alpha1::{GetRequest, ListRequest};
use troupe_common::{Kind, Object};

use super::context::{Client, Context, server_error};
use super::output::{print_list, print_one};

/// Page size the CLI lists with; it follows page tokens to the end.
const PAGE: u32 = 500;

/// Show one resource or list resources of a kind.
#[derive(Debug, clap::Args)]
pub struct GetCmd {
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
}

impl GetCmd {
    /// Prints the resource or the listing.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let client = ctx.resources().await?;
        let parsed = Kind::parse(&self.kind)?;
        // A namespace (say, from TROUPE_NAMESPACE) means nothing to cluster-scoped kinds.
        let namespace = if parsed.is_cluster_scoped() {
            ""
        } else {
            &self.namespace
        };
        if let Some(name) = &self.name {
            let object = get(&client, &self.kind, namespace, name).await?;
            print_one(&object, &self.output)?;
            return Ok(ExitCode::SUCCESS);
        }
        let items = list(&client, &self.kind, namespace, &self.selector).await?;
        let show_namespace = !parsed.is_cluster_scoped() && namespace.is_empty();
        if items.is_empty() && self.output == "table" {
            eprintln!("no {} found", parsed.plural());
            return Ok(ExitCode::SUCCESS);
        }
        print_list(&items, &self.output, show_namespace)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// One resource.
async fn get(client: &Client, kind: &str, namespace: &str, name: &str) -> anyhow::Result<Object> {
    let request = GetRequest {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    };
    let resource = client
        .clone()
        .get(request)
        .await
        .map_err(server_error)?
        .into_inner()
        .resource;
    resource
        .and_then(|r| r.object)
        .ok_or_else(|| anyhow::anyhow!("empty answer"))
}

/// Every resource of a kind the selector matches, page by page.
pub(super) async fn list(
    client: &Client,
    kind: &str,
    namespace: &str,
    selector: &str,
) -> anyhow::Result<Vec<Object>> {
    let mut items: Vec<Object> = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListRequest {
            kind: kind.into(),
            namespace: namespace.into(),
            label_selector: selector.into(),
            page_size: PAGE,
            page_token,
        };
        let page = client
            .clone()
            .list(request)
            .await
            .map_err(server_error)?
            .into_inner();
        items.extend(page.items.into_iter().filter_map(|r| r.object));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(items)
}
