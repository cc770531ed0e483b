//! `troupe promote`, `approve`, `reject`, `check`, `rollback` and `history`.

use std::process::ExitCode;
use std::time::Duration;

use tonic::transport::Channel;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::promotion_service_client::PromotionServiceClient;
use troupe_common::{Kind, Object};

use super::output::columns;
use super::{Client, server_error};
use crate::promotions::phase;

/// The promotion service client.
pub(super) type Promoter = PromotionServiceClient<Channel>;

/// Who the CLI acts as: `--as`, `TROUPE_USER`, else the login name.
pub(super) fn user(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default()
}

/// One line about a promotion: `promotion/NAME: PHASE: MESSAGE`.
fn describe(p: &pb::Promotion) -> String {
    let name = p.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
    let status = p.status.clone().unwrap_or_default();
    format!("promotion/{name}: {}: {}", status.phase, status.message)
}

/// Prints the promotion, waiting with `wait` until it is no longer pending. Exits 1 when it
/// ended without succeeding.
async fn report(
    client: &Client,
    promotion: pb::Promotion,
    wait: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    println!("{}", describe(&promotion));
    let mut promotion = promotion;
    if let Some(limit) = wait {
        let meta = promotion.metadata.clone().unwrap_or_default();
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = describe(&promotion);
        while phase_of(&promotion) == phase::PENDING {
            if tokio::time::Instant::now() >= deadline {
                eprintln!("still pending after {}s", limit.as_secs());
                return Ok(ExitCode::from(2));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let request = pb::GetRequest {
                kind: Kind::Promotion.name().into(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
            };
            let object = client
                .clone()
                .get(request)
                .await
                .map_err(server_error)?
                .into_inner()
                .resource
                .and_then(|r| r.object);
            if let Some(Object::Promotion(p)) = object {
                promotion = p;
            }
            let now = describe(&promotion);
            if now != last {
                println!("{now}");
                last = now;
            }
        }
    }
    let phase = phase_of(&promotion);
    Ok(if phase == phase::SUCCEEDED || phase == phase::PENDING {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn phase_of(p: &pb::Promotion) -> String {
    p.status
        .as_ref()
        .map(|s| s.phase.clone())
        .unwrap_or_default()
}

/// Prints what a promotion verb answered; with `wait`, follows a pending promotion (see
/// [`report`]).
pub(super) async fn answered<T: Answer>(
    client: &Client,
    answer: Result<tonic::Response<T>, tonic::Status>,
    wait: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let promotion = answer.map_err(server_error)?.into_inner().promotion();
    report(client, promotion, wait).await
}

/// A PromotionService response: each carries the promotion as it stands.
pub(super) trait Answer {
    /// The promotion.
    fn promotion(self) -> pb::Promotion;
}

macro_rules! answers {
    ($($response:ident),*) => {
        $(impl Answer for pb::$response {
            fn promotion(self) -> pb::Promotion {
                self.promotion.unwrap_or_default()
            }
        })*
    };
}

answers!(
    PromoteResponse,
    ApproveResponse,
    RejectResponse,
    ReportCheckResponse,
    RollbackResponse
);

/// `troupe history`: every promotion and rollback of a component, oldest first.
pub(super) async fn history(
    client: &Client,
    namespace: &str,
    component: &str,
    output: &str,
) -> anyhow::Result<ExitCode> {
    let request = pb::ListRequest {
        kind: Kind::Promotion.name().into(),
        namespace: namespace.into(),
        label_selector: format!("{}={component}", crate::releases::LABEL_COMPONENT),
        ..Default::default()
    };
    let items = client
        .clone()
        .list(request)
        .await
        .map_err(server_error)?
        .into_inner()
        .items;
    let mut promotions: Vec<pb::Promotion> = items
        .into_iter()
        .filter_map(|r| match r.object {
            Some(Object::Promotion(p)) => Some(p),
            _ => None,
        })
        .collect();
    promotions.sort_by_key(|p| {
        let meta = p.metadata.clone().unwrap_or_default();
        (meta.create_time.map(|t| (t.seconds, t.nanos)), meta.name)
    });
    if output == "json" {
        let items: Vec<serde_json::Value> = promotions
            .iter()
            .map(|p| serde_json::to_value(p).unwrap_or_default())
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines = vec![
        [
            "TIME", "NAME", "ACTION", "FROM", "TO", "RELEASE", "BY", "OUTCOME", "MESSAGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in &promotions {
        let meta = p.metadata.clone().unwrap_or_default();
        let spec = p.spec.clone().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        let dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
        lines.push(vec![
            meta.create_time.map(time).unwrap_or_default(),
            meta.name,
            spec.action,
            dash(spec.source_environment),
            spec.target_environment,
            dash(spec.release_name),
            dash(spec.requested_by),
            dash(status.phase),
            status.message,
        ]);
    }
    print!("{}", columns(&lines));
    Ok(ExitCode::SUCCESS)
}

/// A timestamp as `2026-11-24T10:00:00Z`: its RFC 3339 form to the second.
fn time(t: pbjson_types::Timestamp) -> String {
    let text = serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    // `YYYY-MM-DDTHH:MM:SS` is the first 19 characters, whatever fraction or offset follows.
    text.get(..19).map(|s| format!("{s}Z")).unwrap_or(text)
}
