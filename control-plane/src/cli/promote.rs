//! `troupe promote`, `approve`, `reject`, `check` and `rollback`: each asks the promotion
//! service for one change and prints the Promotion as it then stands (`promote --wait`
//! follows a pending one until it ends). Exits 1 when the promotion ended without succeeding.

use std::process::ExitCode;
use std::time::Duration;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object};

use super::context::{Client, Context, server_error};
use crate::promotions::phase;

/// Promote the release running in one environment to the next, along the pipeline.
#[derive(Debug, clap::Args)]
pub struct PromoteCmd {
    /// The component.
    component: String,
    /// Namespace of the component.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// Target environment.
    #[arg(long)]
    to: String,
    /// Source environment; by default the one whose pipeline edge leads to --to.
    #[arg(long, default_value = "")]
    from: String,
    /// Why.
    #[arg(short, long, default_value = "")]
    message: String,
    /// Wait up to SECONDS for a pending promotion to finish.
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u64>,
}

impl PromoteCmd {
    /// Starts the promotion; with `--wait`, follows it while it is pending.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let request = pb::PromoteRequest {
            namespace: self.namespace,
            component: self.component,
            from_environment: self.from,
            to_environment: self.to,
            requested_by: String::new(),
            message: self.message,
        };
        let answer = ctx.promoter().await?.promote(request).await;
        answered(ctx, answer, self.wait.map(Duration::from_secs)).await
    }
}

/// Approve a pending promotion.
#[derive(Debug, clap::Args)]
pub struct ApproveCmd {
    /// The Promotion (as `promote` printed it).
    promotion: String,
    /// Namespace of the promotion.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// A comment.
    #[arg(short, long, default_value = "")]
    message: String,
}

impl ApproveCmd {
    /// Records the approval.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let request = pb::ApproveRequest {
            namespace: self.namespace,
            promotion: self.promotion,
            user: String::new(),
            comment: self.message,
        };
        let answer = ctx.promoter().await?.approve(request).await;
        answered(ctx, answer, None).await
    }
}

/// Reject a pending promotion (or withdraw your own).
#[derive(Debug, clap::Args)]
pub struct RejectCmd {
    /// The Promotion.
    promotion: String,
    /// Namespace of the promotion.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// Why.
    #[arg(short, long, default_value = "")]
    message: String,
}

impl RejectCmd {
    /// Records the rejection.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let request = pb::RejectRequest {
            namespace: self.namespace,
            promotion: self.promotion,
            user: String::new(),
            comment: self.message,
        };
        let answer = ctx.promoter().await?.reject(request).await;
        // A rejection that took effect ends the promotion as Refused: what was asked.
        answered(ctx, answer, None).await.map(|_| ExitCode::SUCCESS)
    }
}

/// Report the result of a `check` gate of a pending promotion.
#[derive(Debug, clap::Args)]
pub struct CheckCmd {
    /// The Promotion.
    promotion: String,
    /// Name of the check gate.
    check: String,
    /// Namespace of the promotion.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// The check passed.
    #[arg(long, conflicts_with = "failed", required_unless_present = "failed")]
    passed: bool,
    /// The check failed.
    #[allow(
        dead_code,
        reason = "clap needs the flag; `passed` alone carries the result"
    )]
    #[arg(long)]
    failed: bool,
    /// Details.
    #[arg(short, long, default_value = "")]
    message: String,
}

impl CheckCmd {
    /// Records the check's result.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let request = pb::ReportCheckRequest {
            namespace: self.namespace,
            promotion: self.promotion,
            check: self.check,
            passed: self.passed,
            message: self.message,
            reported_by: String::new(),
        };
        let answer = ctx.promoter().await?.report_check(request).await;
        answered(ctx, answer, None).await
    }
}

/// Point an environment back at an earlier release of a component.
#[derive(Debug, clap::Args)]
pub struct RollbackCmd {
    /// The component.
    component: String,
    /// Namespace of the component.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// The environment.
    #[arg(long = "env")]
    environment: String,
    /// The ComponentRelease to go back to; by default the one the environment ran before.
    #[arg(long, default_value = "")]
    to: String,
    /// Why.
    #[arg(short, long, default_value = "")]
    message: String,
}

impl RollbackCmd {
    /// Starts the rollback.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let request = pb::RollbackRequest {
            namespace: self.namespace,
            component: self.component,
            environment: self.environment,
            release: self.to,
            requested_by: String::new(),
            message: self.message,
        };
        let answer = ctx.promoter().await?.rollback(request).await;
        answered(ctx, answer, None).await
    }
}

/// Who the CLI acts as: `--as`, `TROUPE_USER`, else the login name.
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
    outln!("{}", describe(&promotion));
    let mut promotion = promotion;
    if let Some(limit) = wait {
        let meta = promotion.metadata.clone().unwrap_or_default();
        let deadline = super::deadline_after(limit);
        let mut last = describe(&promotion);
        while phase_of(&promotion) == phase::PENDING {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
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
                outln!("{now}");
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
async fn answered<T: Answer>(
    ctx: &Context,
    answer: Result<tonic::Response<T>, tonic::Status>,
    wait: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let client = ctx.resources().await?;
    let promotion = answer.map_err(server_error)?.into_inner().promotion();
    report(&client, promotion, wait).await
}

/// A PromotionService response: each carries the promotion as it stands.
trait Answer {
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
