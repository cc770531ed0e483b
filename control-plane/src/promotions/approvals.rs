//! Approvals and external check results on a pending promotion: who may approve or reject
//! (the edge's approvers; the requester only withdraws), and which checks the edge expects.

use troupe_common::ObjectKey;
use troupe_common::pb::v1alpha1 as pb;

use super::{Actor, Promotions, phase};
use crate::resources::Error;

impl Promotions {
    /// Adds `who`'s approval to a pending promotion, or (`reject`) ends it as refused.
    pub async fn approve(
        &self,
        key: &ObjectKey,
        who: &Actor,
        comment: &str,
        reject: bool,
    ) -> Result<pb::Promotion, Error> {
        let user = &who.user;
        if user.is_empty() {
            return Err(Error::invalid("ApproveRequest", "user", "required"));
        }
        let _guard = self.lock.lock().await;
        let promotion = self.pending(key)?;
        let spec = promotion.spec.clone().unwrap_or_default();
        let edge = self.edge_of(key, &spec)?;
        let verb = if reject { "reject" } else { "approve" };
        if !edge.requires_approval && !reject {
            return Err(Error::Refused {
                object: key.clone(),
                message: format!(
                    "the edge {} → {} needs no approval",
                    spec.source_environment, spec.target_environment
                ),
            });
        }
        let requester = who.user == spec.requested_by;
        if !edge.approvers.is_empty() && !edge.approvers.iter().any(|a| who.is(a)) && !requester {
            return Err(Error::Forbidden {
                object: key.clone(),
                message: format!(
                    "{user} may not {verb} promotions to {} (approvers: {})",
                    spec.target_environment,
                    edge.approvers.join(", ")
                ),
            });
        }
        if reject {
            let by = if requester { "withdrawn" } else { "rejected" };
            let message = if comment.is_empty() {
                format!("{by} by {}", who.display())
            } else {
                format!("{by} by {}: {comment}", who.display())
            };
            self.finish(key, phase::REFUSED, &message, "").await?;
            return self.promotion(key);
        }
        if requester {
            return Err(Error::Forbidden {
                object: key.clone(),
                message: format!(
                    "{user} asked for this promotion; another approver must approve it"
                ),
            });
        }
        let approval = pb::Approval {
            user: who.user.clone(),
            time: Some(troupe_common::timestamp::now_seconds()),
            comment: comment.to_string(),
            impersonated_by: who.impersonated_by.clone(),
        };
        self.resources
            .update_status(key, move |_, object| {
                if let Some(p) = object.typed_mut::<pb::Promotion>() {
                    let status = p.status.get_or_insert_default();
                    if !status.approvals.iter().any(|a| a.user == approval.user) {
                        status.approvals.push(approval.clone());
                    }
                }
            })
            .await?;
        Ok(self.advance_locked(key).await?.0)
    }

    /// Records an external check's result on a pending promotion.
    pub async fn report_check(
        &self,
        key: &ObjectKey,
        result: pb::CheckResult,
    ) -> Result<pb::Promotion, Error> {
        if result.name.is_empty() {
            return Err(Error::invalid("ReportCheckRequest", "check", "required"));
        }
        let _guard = self.lock.lock().await;
        let promotion = self.pending(key)?;
        let spec = promotion.spec.unwrap_or_default();
        let edge = self.edge_of(key, &spec)?;
        let checks: Vec<&str> = edge
            .gates
            .iter()
            .filter(|g| g.r#type == "check")
            .map(|g| g.name.as_str())
            .collect();
        if !checks.contains(&result.name.as_str()) {
            return Err(Error::invalid(
                "ReportCheckRequest",
                "check",
                format!(
                    "the edge {} → {} has no check gate {:?} (its checks: {})",
                    spec.source_environment,
                    spec.target_environment,
                    result.name,
                    if checks.is_empty() {
                        "none".into()
                    } else {
                        checks.join(", ")
                    }
                ),
            ));
        }
        let result = pb::CheckResult {
            time: Some(troupe_common::timestamp::now_seconds()),
            ..result
        };
        self.resources
            .update_status(key, move |_, object| {
                if let Some(p) = object.typed_mut::<pb::Promotion>() {
                    let checks = &mut p.status.get_or_insert_default().checks;
                    checks.retain(|c| c.name != result.name);
                    checks.push(result.clone());
                }
            })
            .await?;
        Ok(self.advance_locked(key).await?.0)
    }
}
