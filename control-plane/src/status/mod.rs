//! Status derivations: what the control plane says about Releases, ReleaseBindings and
//! DataPlanes, as pure functions of plain values.
//!
//! This floor sits below the controllers and the agent hub, which own the writes:
//! the agent hub feeds what agents report into [`release`] and [`plane`] and writes Release and
//! DataPlane status; the binding controller feeds a binding and its Release into [`binding`]
//! and is the only writer of ReleaseBinding status. Nothing here reads the store or the clock
//! beyond condition transition times, so every reason a user can see is unit-tested here.
//!
//! The words themselves (condition types, reasons, health) are [`troupe_common::status`].

pub mod binding;
pub mod plane;
pub mod release;

use troupe_common::pb::v1alpha1::Condition;
use troupe_common::status::{ConditionStatus, ConditionType};

/// Sets condition `type_` in `conditions`, keeping its transition time when its status did
/// not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: bool,
    reason: impl AsRef<str>,
    message: &str,
    generation: i64,
) {
    let status = ConditionStatus::from(status).as_str();
    let existing = conditions.iter_mut().find(|c| c.r#type == type_);
    let transition = match &existing {
        Some(c) if c.status == status => c.last_transition_time,
        _ => Some(troupe_common::timestamp::now_seconds()),
    };
    let condition = Condition {
        r#type: type_.as_str().to_string(),
        status: status.to_string(),
        reason: reason.as_ref().to_string(),
        message: message.to_string(),
        last_transition_time: transition,
        observed_generation: generation,
    };
    match existing {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

/// The condition of type `type_`, if set.
pub fn find_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.r#type == type_)
}

/// Whether a condition holds (its status is `True`).
pub fn holds(condition: &Condition) -> bool {
    condition.status == ConditionStatus::True
}

#[cfg(test)]
mod tests {
    use troupe_common::status::Reason;

    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut conditions = vec![];
        set_condition(
            &mut conditions,
            ConditionType::Ready,
            false,
            Reason::Applying,
            "applying",
            1,
        );
        let first = conditions[0].last_transition_time;
        assert!(first.is_some());
        conditions[0].last_transition_time = Some(pbjson_types::Timestamp {
            seconds: 7,
            nanos: 0,
        });
        set_condition(
            &mut conditions,
            ConditionType::Ready,
            false,
            Reason::ResourcesProgressing,
            "rolling out",
            2,
        );
        assert_eq!(conditions.len(), 1);
        let ready = find_condition(&conditions, ConditionType::Ready).unwrap();
        assert_eq!(ready.last_transition_time.unwrap().seconds, 7);
        assert_eq!(
            (ready.reason.as_str(), ready.observed_generation),
            ("ResourcesProgressing", 2)
        );
        set_condition(
            &mut conditions,
            ConditionType::Ready,
            true,
            Reason::ResourcesHealthy,
            "",
            2,
        );
        let ready = find_condition(&conditions, ConditionType::Ready).unwrap();
        assert!(holds(ready));
        assert_eq!(ready.status, "True");
        assert_ne!(ready.last_transition_time.unwrap().seconds, 7);
    }
}
