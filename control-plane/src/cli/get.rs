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
    wait: Option<std::time::Duration>,
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
    match wait {
        Some(limit) if !dry_run && !response.pruning.is_empty() => {
            wait_for_prunes(client, &response.pruning, limit).await
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Waits until every object in `pruning` has left the store (its data plane pruned it),
/// printing progress as it changes. Exits 2 if `limit` passes first.
async fn wait_for_prunes(
    client: &Client,
    pruning: &[troupe_common::pb::v1alpha1::ObjectReference],
    limit: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut left: Vec<_> = pruning.to_vec();
    let total = left.len();
    let mut shown = usize::MAX;
    loop {
        let mut still = Vec::with_capacity(left.len());
        for r in left {
            let request = GetRequest {
                kind: r.kind.clone(),
                namespace: r.namespace.clone(),
                name: r.name.clone(),
            };
            match client.clone().get(request).await {
                Err(status) if status.code() == tonic::Code::NotFound => {}
                Err(status) => return Err(server_error(status)),
                Ok(_) => still.push(r),
            }
        }
        left = still;
        if left.len() != shown {
            shown = left.len();
            println!("pruned {} of {total}", total - shown);
        }
        if left.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        if tokio::time::Instant::now() >= deadline {
            let names: Vec<String> = left
                .iter()
                .map(|r| format!("{} {}/{}", r.kind, r.namespace, r.name))
                .collect();
            eprintln!(
                "still waiting for their data planes to prune: {}",
                names.join(", ")
            );
            return Ok(ExitCode::from(2));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
