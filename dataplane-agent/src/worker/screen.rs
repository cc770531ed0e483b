//! What of a release the agent applies: every object is checked against the agent's own
//! policy and against the owners index before the applier sees it. An object refused is
//! that object's failure (`Degraded`, saying why); the rest goes to the applier, and the
//! status entries come back in the release's order.

use std::collections::BTreeSet;

use troupe_common::pb::v1alpha1::{ReleaseResource, ReleaseResourceStatus};
use troupe_common::policy::Policy;
use troupe_common::status::Health;

use super::owners::ObjectKey;
use crate::apply::describe;

/// A release sorted into what goes to the applier and what is refused.
pub(super) struct Screened {
    /// The objects to apply, in the release's order.
    pub apply: Vec<ReleaseResource>,
    /// The objects refused: their place in the release and their status entry.
    pub refused: Vec<(usize, ReleaseResourceStatus)>,
    /// The ids of the objects refused, as recorded in the state.
    pub unapplied: BTreeSet<String>,
    /// The objects the release will own once applied.
    pub owned: BTreeSet<ObjectKey>,
}

/// Sorts the objects of `release`; `owner_of` says which release owns (or is applying) an
/// object.
pub(super) fn screen<'a>(
    release: &str,
    resources: &[ReleaseResource],
    policy: &Policy,
    owner_of: impl Fn(&ObjectKey) -> Option<&'a str>,
) -> Screened {
    let mut screened = Screened {
        apply: Vec::with_capacity(resources.len()),
        refused: Vec::new(),
        unapplied: BTreeSet::new(),
        owned: BTreeSet::new(),
    };
    for (i, resource) in resources.iter().enumerate() {
        let mut status = describe(resource);
        let api_version = match status.group.is_empty() {
            true => status.version.clone(),
            false => format!("{}/{}", status.group, status.version),
        };
        let key = ObjectKey::of(&status);
        let why = crate::policy::refusal(policy, &api_version, &status.kind, &status.namespace)
            .or_else(|| {
                owner_of(&key)
                    .filter(|owner| *owner != release)
                    .map(|owner| format!("owned by release {owner}"))
            });
        match why {
            Some(why) => {
                status.health = Health::Degraded.as_str().into();
                status.message = why;
                screened.unapplied.insert(resource.id.clone());
                screened.refused.push((i, status));
            }
            None => {
                screened.owned.insert(key);
                screened.apply.push(resource.clone());
            }
        }
    }
    screened
}

/// The status entries of the whole release: the applier's (in the order of
/// [`Screened::apply`]) with the refused ones put back in their places.
pub(super) fn merge(
    applied: Vec<ReleaseResourceStatus>,
    refused: Vec<(usize, ReleaseResourceStatus)>,
) -> Vec<ReleaseResourceStatus> {
    let mut applied = applied.into_iter();
    let mut refused = refused.into_iter().peekable();
    let mut all = Vec::new();
    loop {
        match refused.next_if(|(i, _)| *i == all.len()) {
            Some((_, status)) => all.push(status),
            None => match applied.next() {
                Some(status) => all.push(status),
                None => break,
            },
        }
    }
    all.extend(refused.map(|(_, status)| status));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_status(id: &str) -> ReleaseResourceStatus {
        ReleaseResourceStatus {
            id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn refused_entries_go_back_to_their_places_in_the_release() {
        let ids = |all: Vec<ReleaseResourceStatus>| -> Vec<String> {
            all.into_iter().map(|s| s.id).collect()
        };
        let applied = vec![mk_status("b"), mk_status("d")];
        let refused = vec![
            (0, mk_status("a")),
            (2, mk_status("c")),
            (4, mk_status("e")),
        ];
        assert_eq!(ids(merge(applied, refused)), ["a", "b", "c", "d", "e"]);
        assert_eq!(ids(merge(vec![mk_status("a")], vec![])), ["a"]);
        assert_eq!(ids(merge(vec![], vec![(0, mk_status("a"))])), ["a"]);
    }
}
