//! `troupe-bench list`: `List` page by page as the store grows. Components go straight into a
//! sled store in batches (no validation: the figures are about reading), then pages of 500
//! are read through the resource layer, as the API handler reads them: the first page, one
//! from the middle, the last, and the whole kind page by page. Flat figures across sizes mean
//! a page costs the same however many objects the kind holds. For scale, `all_at_once_ms` is
//! one read of the whole kind, which is what every page cost when pages were cut from it.
//!
//! At each size it also deletes empty Projects beside the Components: a delete looks only
//! at the deleted object's referrers (an index), so its time should not grow with the
//! Components either. `referrer_index_build_ms` is the first delete, which builds the index.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::{Map, Value};
use troupe_common::Kind;
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::Resource;
use troupe_common::selector::LabelSelector;
use troupe_control_plane::resources::{DEFAULT_PAGE_SIZE, Origin, Resources};
use troupe_control_plane::store::{SledStore, Store, Txn};

use crate::{mk_component, round2};

/// Objects written per commit while filling the store.
const BATCH: usize = 1_000;
/// Reads of each single page, for a median.
const REPEAT: usize = 9;

/// Measures at each store size in `sizes` (ascending), growing one store.
pub async fn run(sizes: Vec<usize>) -> anyhow::Result<Map<String, Value>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(dir.path())?);
    let resources = Arc::new(Resources::new(store.clone()));
    let mut figures = Map::new();
    let mut stored = 0;
    let first_size = sizes.first().copied().unwrap_or_default();
    for size in sizes {
        while stored < size {
            let mut txn = Txn::default();
            for i in stored..(stored + BATCH).min(size) {
                let object = mk_component(&name(i));
                let value = Resource {
                    object: Some(object.clone()),
                }
                .encode_to_vec();
                txn = txn.put(object.key(), value);
            }
            stored = (stored + BATCH).min(size);
            store.commit(txn)?;
        }
        let page = DEFAULT_PAGE_SIZE as usize;
        let after = |i: usize| format!("acme/{}", name(i));
        let first = median(&resources, String::new()).await?;
        let middle = median(&resources, after(size / 2)).await?;
        let last = median(&resources, after(size.saturating_sub(page + 1))).await?;
        let (pages, whole) = whole(&resources).await?;
        let label = format!("{}k", size / 1_000);
        figures.insert(format!("first_page_ms_{label}"), ms(first));
        figures.insert(format!("middle_page_ms_{label}"), ms(middle));
        figures.insert(format!("last_page_ms_{label}"), ms(last));
        figures.insert(
            format!("per_page_ms_{label}"),
            ms(whole / pages.max(1) as u32),
        );
        figures.insert(format!("pages_{label}"), pages.into());
        let start = Instant::now();
        let all = resources
            .list(Kind::Component, "acme", &LabelSelector::default(), 0, "")
            .await?;
        anyhow::ensure!(
            all.items.len() == size,
            "{} of {size} listed",
            all.items.len()
        );
        figures.insert(format!("all_at_once_ms_{label}"), ms(start.elapsed()));
        if size == first_size {
            let first = delete_empty_project(&store, &resources, &format!("empty-{label}")).await?;
            figures.insert(format!("referrer_index_build_ms_{label}"), ms(first));
        }
        let mut times = Vec::with_capacity(REPEAT);
        for i in 0..REPEAT {
            let name = format!("empty-{label}-{i}");
            times.push(delete_empty_project(&store, &resources, &name).await?);
        }
        times.sort();
        figures.insert(
            format!("delete_empty_project_ms_{label}"),
            ms(times[REPEAT / 2]),
        );
    }
    Ok(figures)
}

/// Puts an empty Project `name` beside the Components, then times its delete (the checks
/// for referrers, the commit and the flush).
async fn delete_empty_project(
    store: &Arc<SledStore>,
    resources: &Arc<Resources>,
    name: &str,
) -> anyhow::Result<Duration> {
    let yaml = format!(
        "apiVersion: troupe.dev/v1alpha1\nkind: Project\nmetadata: {{name: {name}, namespace: acme}}\nspec: {{deploymentPipelineRef: default}}\n"
    );
    let project = from_yaml(&yaml)?.remove(0);
    let value = Resource {
        object: Some(project.clone()),
    }
    .encode_to_vec();
    store.commit(Txn::default().put(project.key(), value))?;
    let start = Instant::now();
    resources
        .delete(&project.key(), Origin::User, 0, false)
        .await?;
    Ok(start.elapsed())
}

fn name(i: usize) -> String {
    format!("c-{i:07}")
}

fn ms(d: Duration) -> Value {
    round2(d.as_secs_f64() * 1000.0).into()
}

async fn read_page(resources: &Resources, token: &str) -> anyhow::Result<String> {
    let page = resources
        .list(
            Kind::Component,
            "acme",
            &LabelSelector::default(),
            DEFAULT_PAGE_SIZE as usize,
            token,
        )
        .await?;
    anyhow::ensure!(!page.items.is_empty(), "an empty page after {token:?}");
    Ok(page.next_page_token)
}

/// The median time to read the page after `token`.
async fn median(resources: &Resources, token: String) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(REPEAT);
    for _ in 0..REPEAT {
        let start = Instant::now();
        read_page(resources, &token).await?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[REPEAT / 2])
}

/// Reads every page; returns how many and the time they took together.
async fn whole(resources: &Resources) -> anyhow::Result<(usize, Duration)> {
    let (mut pages, mut token) = (0, String::new());
    let start = Instant::now();
    loop {
        token = read_page(resources, &token).await?;
        pages += 1;
        if token.is_empty() {
            return Ok((pages, start.elapsed()));
        }
    }
}
