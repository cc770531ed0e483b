//! `troupe get` and `troupe delete`.

use std::process::ExitCode;

use troupe_common::pb::v1alpha1::{DeleteRequest, GetRequest, ListRequest};
use troupe_common::{Kind, Object};

use super::output::{print_list, print_one};
use super::{Client, server_error};

/// Page size the CLI lists with; it follows page tokens to the end.
const PAGE: u32 = 500;

pub(super) async fn get(
    client: &Client,
    kind: &str,
    name: Option<&str>,
    namespace: &str,
    output: &str,
    selector: &str,
) -> anyhow::Result<ExitCode> {
    let parsed = Kind::parse(kind)?;
    // A namespace (say, from TROUPE_NAMESPACE) means nothing to cluster-scoped kinds.
    let namespace = if parsed.is_cluster_scoped() {
        ""
    } else {
        namespace
    };
    if let Some(name) = name {
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
        let object = resource
            .and_then(|r| r.object)
            .ok_or_else(|| anyhow::anyhow!("empty answer"))?;
        print_one(&object, output)?;
        return Ok(ExitCode::SUCCESS);
    }
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
    let show_namespace = !parsed.is_cluster_scoped() && namespace.is_empty();
    if items.is_empty() && output == "table" {
        eprintln!("no {} found", parsed.plural());
        return Ok(ExitCode::SUCCESS);
    }
    print_list(&items, output, show_namespace)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn delete(
    client: &Client,
    kind: &str,
    name: &str,
    namespace: &str,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let namespace = if Kind::parse(kind)?.is_cluster_scoped() {
        ""
    } else {
        namespace
    };
    let request = DeleteRequest {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        expected_resource_version: 0,
        dry_run,
    };
    let response = client
        .clone()
        .delete(request)
        .await
        .map_err(server_error)?
        .into_inner();
    let suffix = if dry_run { " (dry run)" } else { "" };
    let name = |r: &troupe_common::pb::v1alpha1::ObjectReference| {
        if r.namespace.is_empty() {
            format!("{} {}", r.kind, r.name)
        } else {
            format!("{} {}/{}", r.kind, r.namespace, r.name)
        }
    };
    let pruning: Vec<String> = response.pruning.iter().map(name).collect();
    let done = |what: String| {
        if pruning.contains(&what) {
            println!("{what} deleted once its data plane has pruned its objects{suffix}");
        } else {
            println!("{what} deleted{suffix}");
        }
    };
    if let Some(object) = response.resource.and_then(|r| r.object) {
        done(object.key().to_string());
    }
    for child in &response.cascaded {
        done(name(child));
    }
    Ok(ExitCode::SUCCESS)
}
