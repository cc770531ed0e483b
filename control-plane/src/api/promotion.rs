//! `troupe.v1alpha1.PromotionService` handlers: promote, approve, reject, report a check,
//! roll back.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::promotion_service_server::PromotionService;
use troupe_common::{Kind, ObjectKey};

use crate::promotions::{PromoteRequest, Promotions, RollbackRequest};

pub use pb::promotion_service_server::PromotionServiceServer;

/// The `troupe.v1alpha1.PromotionService` implementation.
pub struct PromotionApi {
    promotions: Arc<Promotions>,
}

impl PromotionApi {
    /// Serves `promotions`.
    pub fn new(promotions: Arc<Promotions>) -> Self {
        Self { promotions }
    }
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field}: required")));
    }
    Ok(())
}

fn promotion_key(namespace: &str, name: &str) -> Result<ObjectKey, Status> {
    required("namespace", namespace)?;
    required("promotion", name)?;
    Ok(ObjectKey::new(Kind::Promotion, namespace, name))
}

#[tonic::async_trait]
impl PromotionService for PromotionApi {
    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        let promotion = self
            .promotions
            .promote(PromoteRequest {
                namespace: r.namespace,
                component: r.component,
                from: r.from_environment,
                to: r.to_environment,
                requested_by: r.requested_by,
                message: r.message,
            })
            .await?;
        Ok(Response::new(pb::PromoteResponse {
            promotion: Some(promotion),
        }))
    }

    async fn approve(
        &self,
        request: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        let r = request.into_inner();
        let key = promotion_key(&r.namespace, &r.promotion)?;
        let promotion = self
            .promotions
            .approve(&key, &r.user, &r.comment, false)
            .await?;
        Ok(Response::new(pb::ApproveResponse {
            promotion: Some(promotion),
        }))
    }

    async fn reject(
        &self,
        request: Request<pb::RejectRequest>,
    ) -> Result<Response<pb::RejectResponse>, Status> {
        let r = request.into_inner();
        let key = promotion_key(&r.namespace, &r.promotion)?;
        let promotion = self
            .promotions
            .approve(&key, &r.user, &r.comment, true)
            .await?;
        Ok(Response::new(pb::RejectResponse {
            promotion: Some(promotion),
        }))
    }

    async fn report_check(
        &self,
        request: Request<pb::ReportCheckRequest>,
    ) -> Result<Response<pb::ReportCheckResponse>, Status> {
        let r = request.into_inner();
        let key = promotion_key(&r.namespace, &r.promotion)?;
        let result = pb::CheckResult {
            name: r.check,
            passed: r.passed,
            message: r.message,
            reported_by: r.reported_by,
            time: None,
        };
        let promotion = self.promotions.report_check(&key, result).await?;
        Ok(Response::new(pb::ReportCheckResponse {
            promotion: Some(promotion),
        }))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        let promotion = self
            .promotions
            .rollback(RollbackRequest {
                namespace: r.namespace,
                component: r.component,
                environment: r.environment,
                release: r.release,
                requested_by: r.requested_by,
                message: r.message,
            })
            .await?;
        Ok(Response::new(pb::RollbackResponse {
            promotion: Some(promotion),
        }))
    }
}
