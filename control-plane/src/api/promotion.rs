//! `troupe.v1alpha1.PromotionService` handlers: promote, approve, reject, report a check,
//! roll back.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::promotion_service_server::PromotionService;
use troupe_common::{Kind, ObjectKey};

use super::auth::{actor, component_target, stored_target};
use crate::auth::{Auth, Principal, Target, Verb};
use crate::promotions::{PromoteRequest, Promotions, RollbackRequest};
use crate::resources::Resources;

pub use pb::promotion_service_server::PromotionServiceServer;

/// The `troupe.v1alpha1.PromotionService` implementation.
pub struct PromotionApi {
    promotions: Arc<Promotions>,
    resources: Arc<Resources>,
    auth: Arc<Auth>,
}

impl PromotionApi {
    /// Serves `promotions` to whom `auth` allows.
    pub fn new(promotions: Arc<Promotions>, resources: Arc<Resources>, auth: Arc<Auth>) -> Self {
        Self {
            promotions,
            resources,
            auth,
        }
    }

    /// Who acts: the caller, or the user a request's deprecated `requestedBy` / `user` /
    /// `reportedBy` field names, which is impersonation.
    async fn actor<T>(&self, request: &Request<T>, named: &str) -> Result<Principal, Status> {
        let caller = self.auth.caller(request).await?;
        self.auth.impersonate(caller, named, vec![])
    }

    /// Whether `who` may `verb` the stored promotion at `key` (judged by its namespace when
    /// there is none, so nothing leaks about whether it exists); the target, to audit.
    fn allow_promotion(
        &self,
        who: &Principal,
        verb: Verb,
        key: &ObjectKey,
    ) -> Result<Target, Status> {
        let (_, target) = stored_target(&self.resources, key);
        self.auth.allow(who, verb, &target)?;
        Ok(target)
    }

    /// Whether `who` may `verb` promotions of `component` in `namespace`; the target, to
    /// audit.
    fn allow_component(
        &self,
        who: &Principal,
        verb: Verb,
        namespace: &str,
        component: &str,
    ) -> Result<Target, Status> {
        let target = component_target(&self.resources, Kind::Promotion, namespace, component);
        self.auth.allow(who, verb, &target)?;
        Ok(target)
    }

    /// Audits a call that went through, with the revision of the promotion it left.
    fn record(&self, who: &Principal, verb: Verb, target: Target, promotion: &pb::Promotion) {
        let meta = promotion.metadata.as_ref();
        let target = Target {
            name: meta.map(|m| m.name.clone()).unwrap_or_default(),
            ..target
        };
        let revision = meta.map(|m| m.resource_version);
        self.auth.record(who, verb, &target, revision);
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
        let who = self
            .actor(&request, &request.get_ref().requested_by)
            .await?;
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        let target = self.allow_component(&who, Verb::Promote, &r.namespace, &r.component)?;
        let promotion = self
            .promotions
            .promote(PromoteRequest {
                namespace: r.namespace,
                component: r.component,
                from: r.from_environment,
                to: r.to_environment,
                requested_by: actor(&who),
                message: r.message,
            })
            .await
            .map_err(|e| self.auth.refused(&who, Verb::Promote, &target, e.into()))?;
        self.record(&who, Verb::Promote, target, &promotion);
        Ok(Response::new(pb::PromoteResponse {
            promotion: Some(promotion),
        }))
    }

    async fn approve(
        &self,
        request: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        let who = self.actor(&request, &request.get_ref().user).await?;
        let r = request.into_inner();
        let key = promotion_key(&r.namespace, &r.promotion)?;
        let target = self.allow_promotion(&who, Verb::Approve, &key)?;
        let promotion = self
            .promotions
            .approve(&key, &actor(&who), &r.comment, false)
            .await
            .map_err(|e| self.auth.refused(&who, Verb::Approve, &target, e.into()))?;
        self.record(&who, Verb::Approve, target, &promotion);
        Ok(Response::new(pb::ApproveResponse {
            promotion: Some(promotion),
        }))
    }

    async fn reject(
        &self,
        request: Request<pb::RejectRequest>,
    ) -> Result<Response<pb::RejectResponse>, Status> {
        let who = self.actor(&request, &request.get_ref().user).await?;
        let r = request.into_inner();
        let key = promotion_key(&r.namespace, &r.promotion)?;
        let target = self.allow_promotion(&who, Verb::Approve, &key)?;
        let promotion = self
            .promotions
            .approve(&key, &actor(&who), &r.comment, true)
            .await
            .map_err(|e| self.auth.refused(&who, Verb::Approve, &target, e.into()))?;
        self.record(&who, Verb::Approve, target, &promotion);
        Ok(Response::new(pb::RejectResponse {
            promotion: Some(promotion),
        }))
    }

    async fn report_check(
        &self,
        request: Request<pb::ReportCheckRequest>,
    ) -> Result<Response<pb::ReportCheckResponse>, Status> {
        let who = self.actor(&request, &request.get_ref().reported_by).await?;
        let r = request.into_inner();
        let key = promotion_key(&r.namespace, &r.promotion)?;
        let target = self.allow_promotion(&who, Verb::Check, &key)?;
        let by = actor(&who);
        let result = pb::CheckResult {
            name: r.check,
            passed: r.passed,
            message: r.message,
            reported_by: by.user,
            time: None,
            impersonated_by: by.impersonated_by,
        };
        let promotion = self
            .promotions
            .report_check(&key, result)
            .await
            .map_err(|e| self.auth.refused(&who, Verb::Check, &target, e.into()))?;
        self.record(&who, Verb::Check, target, &promotion);
        Ok(Response::new(pb::ReportCheckResponse {
            promotion: Some(promotion),
        }))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let who = self
            .actor(&request, &request.get_ref().requested_by)
            .await?;
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        let target = self.allow_component(&who, Verb::Rollback, &r.namespace, &r.component)?;
        let promotion = self
            .promotions
            .rollback(RollbackRequest {
                namespace: r.namespace,
                component: r.component,
                environment: r.environment,
                release: r.release,
                requested_by: actor(&who),
                message: r.message,
            })
            .await
            .map_err(|e| self.auth.refused(&who, Verb::Rollback, &target, e.into()))?;
        self.record(&who, Verb::Rollback, target, &promotion);
        Ok(Response::new(pb::RollbackResponse {
            promotion: Some(promotion),
        }))
    }
}
