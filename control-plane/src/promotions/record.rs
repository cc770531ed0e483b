//! The promotion records: creating one (named `{component}-{environment}-{n}`, superseding
//! pending ones to the same environment), ending one in a phase, and a component's history.

use std::collections::HashSet;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::selector::LabelSelector;
use troupe_common::{Kind, Object, ObjectKey};

use super::{LABEL_ENVIRONMENT, Promotions, is_pending, phase, refused};
use crate::releases::{LABEL_COMPONENT, LABEL_PROJECT};
use crate::resources::{Error, Origin};

impl Promotions {
    /// Promotions of a component, oldest first.
    pub async fn history(
        &self,
        namespace: &str,
        component: &str,
    ) -> Result<Vec<pb::Promotion>, Error> {
        let selector = LabelSelector::parse(&format!("{LABEL_COMPONENT}={component}"))
            .map_err(|e| Error::invalid("HistoryRequest", "component", e.to_string()))?;
        let mut out: Vec<pb::Promotion> = self.resources.list_as(namespace, &selector).await?;
        out.sort_by_key(|p| {
            let meta = p.metadata.clone().unwrap_or_default();
            let created = meta.create_time.map(|t| (t.seconds, t.nanos));
            (created, meta.name)
        });
        Ok(out)
    }

    /// Stores a new promotion (superseding pending ones to the same environment) and takes it
    /// as far as it goes now; one refused on the way is returned as [`Error::Refused`].
    pub(super) async fn start(
        &self,
        namespace: &str,
        spec: pb::PromotionSpec,
    ) -> Result<pb::Promotion, Error> {
        let key = self.create(namespace, spec, true).await?;
        let (promotion, _) = self.advance_locked(&key).await?;
        let status = promotion.status.clone().unwrap_or_default();
        if status.phase == phase::REFUSED {
            return Err(refused(&promotion, status.message));
        }
        Ok(promotion)
    }

    /// Stores a new promotion; with `supersede`, pending ones to the same environment end.
    pub(super) async fn create(
        &self,
        namespace: &str,
        spec: pb::PromotionSpec,
        supersede: bool,
    ) -> Result<ObjectKey, Error> {
        let owner = spec.owner.clone().unwrap_or_default();
        let earlier = self.history(namespace, &owner.component_name).await?;
        let name = next_name(&owner.component_name, &spec.target_environment, &earlier)
            .ok_or_else(|| Error::Refused {
                object: ObjectKey::new(Kind::Component, namespace, &owner.component_name),
                message: format!(
                    "every promotion number up to {} is taken; delete the component's promotion records or promote under a new component",
                    u64::MAX
                ),
            })?;
        let key = ObjectKey::new(Kind::Promotion, namespace, &name);
        for p in &earlier {
            let pending = is_pending(p);
            let same_target = p
                .spec
                .as_ref()
                .is_some_and(|s| s.target_environment == spec.target_environment);
            if supersede && pending && same_target {
                let old = ObjectKey::new(
                    Kind::Promotion,
                    namespace,
                    p.metadata.clone().unwrap_or_default().name,
                );
                self.finish(
                    &old,
                    phase::SUPERSEDED,
                    &format!("superseded by {name}"),
                    "",
                )
                .await?;
            }
        }
        let metadata = pb::ObjectMeta {
            name,
            namespace: namespace.to_string(),
            labels: [
                (LABEL_PROJECT.to_string(), owner.project_name.clone()),
                (LABEL_COMPONENT.to_string(), owner.component_name.clone()),
                (
                    LABEL_ENVIRONMENT.to_string(),
                    spec.target_environment.clone(),
                ),
            ]
            .into(),
            ..Default::default()
        };
        let promotion = pb::Promotion {
            metadata: Some(metadata),
            spec: Some(spec),
            ..Default::default()
        };
        self.resources
            .apply(Object::Promotion(promotion), Origin::ControlPlane, false)
            .await?;
        Ok(key)
    }

    /// Stores a promotion that ended before it began (refused on request).
    pub(super) async fn record(
        &self,
        namespace: &str,
        spec: pb::PromotionSpec,
        phase: &str,
        message: &str,
    ) -> Result<pb::Promotion, Error> {
        let key = self.create(namespace, spec, false).await?;
        self.finish(&key, phase, message, "").await?;
        self.promotion(&key)
    }

    /// Ends a promotion in `phase`.
    pub(super) async fn finish(
        &self,
        key: &ObjectKey,
        phase: &str,
        message: &str,
        previous: &str,
    ) -> Result<(), Error> {
        let (phase, message, previous) =
            (phase.to_string(), message.to_string(), previous.to_string());
        self.resources
            .update_status(key, move |_, object| {
                if let Some(p) = object.typed_mut::<pb::Promotion>() {
                    let status = p.status.get_or_insert_default();
                    status.phase = phase.clone();
                    status.message = message.clone();
                    if !previous.is_empty() {
                        status.previous_release = previous.clone();
                    }
                    status.completion_time = Some(troupe_common::timestamp::now_seconds());
                }
            })
            .await?;
        Ok(())
    }
}

/// `{component}-{environment}-{n}`, numbered after every earlier promotion of the component.
///
/// Records of a component go only with the component, and each one this service made took the
/// count of records before it plus one: so that count plus one is the next number, and numbers
/// are never read back out of names (a name such as `api-production-18446744073709551615` can
/// neither overflow the numbering nor move it). A name already taken is skipped. `None` when the
/// numbers have run out: never a wrapped or repeated number.
fn next_name(component: &str, environment: &str, earlier: &[pb::Promotion]) -> Option<String> {
    let taken: HashSet<&str> = earlier
        .iter()
        .filter_map(|p| p.metadata.as_ref().map(|m| m.name.as_str()))
        .collect();
    numbered_after(component, environment, earlier.len(), &taken)
}

/// The first `{component}-{environment}-{n}` after `count` records that is not taken; `None`
/// when the numbers run out.
fn numbered_after(
    component: &str,
    environment: &str,
    count: usize,
    taken: &HashSet<&str>,
) -> Option<String> {
    let first = u64::try_from(count).ok()?.checked_add(1)?;
    (first..=u64::MAX)
        .map(|n| numbered(component, environment, n))
        .find(|name| !taken.contains(name.as_str()))
}

/// `{component}-{environment}-{n}`, the component shortened to fit a DNS label.
fn numbered(component: &str, environment: &str, n: u64) -> String {
    let name = format!("{component}-{environment}-{n}");
    if name.len() <= 63 {
        return name;
    }
    let suffix = format!("-{n}");
    let keep = 63 - suffix.len();
    format!(
        "{}{suffix}",
        &component[..keep.min(component.len())].trim_end_matches('-')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_promotions(names: &[&str]) -> Vec<pb::Promotion> {
        names
            .iter()
            .map(|name| pb::Promotion {
                metadata: Some(pb::ObjectMeta {
                    name: name.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn names_count_the_component_s_records() {
        assert_eq!(next_name("api", "staging", &[]).unwrap(), "api-staging-1");
        let earlier = mk_promotions(&["api-staging-1", "api-production-2"]);
        assert_eq!(
            next_name("api", "production", &earlier).unwrap(),
            "api-production-3"
        );
    }

    #[test]
    fn huge_numbers_in_names_neither_overflow_nor_move_the_numbering() {
        let earlier = mk_promotions(&[
            "api-staging-1",
            "api-production-18446744073709551615",
            "api-production-99999999999999999999999",
        ]);
        assert_eq!(
            next_name("api", "production", &earlier).unwrap(),
            "api-production-4"
        );
    }

    #[test]
    fn numbers_run_out_with_an_error_not_a_repeat() {
        let none = HashSet::new();
        assert_eq!(numbered_after("api", "production", usize::MAX, &none), None);
        let last = format!("api-production-{}", u64::MAX);
        assert_eq!(
            numbered_after("api", "production", usize::MAX - 1, &none),
            Some(last.clone())
        );
        let taken = HashSet::from([last.as_str()]);
        assert_eq!(
            numbered_after("api", "production", usize::MAX - 1, &taken),
            None
        );
    }

    #[test]
    fn a_taken_name_is_skipped() {
        let earlier = mk_promotions(&["api-staging-1", "api-production-3"]);
        assert_eq!(
            next_name("api", "production", &earlier).unwrap(),
            "api-production-4"
        );
        assert_eq!(
            next_name("api", "staging", &earlier).unwrap(),
            "api-staging-3"
        );
    }

    #[test]
    fn long_names_keep_their_number_within_a_dns_label() {
        let component = "a".repeat(60);
        let name = next_name(&component, "production", &mk_promotions(&["x"])).unwrap();
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("a-2"), "{name}");
    }
}
