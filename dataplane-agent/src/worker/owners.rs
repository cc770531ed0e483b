//! Who owns each object on the data plane: one release per object, so two releases that
//! render the same object (a shared name, a Namespace) never take it from each other and
//! pruning one never deletes what the other uses.
//!
//! An object is identified by its API group, kind, namespace and name ([`ObjectKey`]). The
//! first release to apply an object owns it until the object leaves that release or the
//! release is removed; meanwhile any other release that renders it gets a conflict for that
//! object alone. The index is rebuilt at start from the state on disk: every object a held
//! release applied, that is every object of it but those it recorded as not applied
//! ([`Held::unapplied`]), which is written before the ack like the rest of the release.

use std::collections::{BTreeMap, BTreeSet};

use troupe_common::pb::v1alpha1::ReleaseResourceStatus;

use crate::apply::describe;
use crate::state::Held;

/// What identifies an object on a data plane.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ObjectKey {
    /// API group, empty for the core group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of the object a status entry describes.
    pub fn of(status: &ReleaseResourceStatus) -> Self {
        Self {
            group: status.group.clone(),
            kind: status.kind.clone(),
            namespace: status.namespace.clone(),
            name: status.name.clone(),
        }
    }
}

/// The release that owns each object, by key.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    owner: BTreeMap<ObjectKey, String>,
    /// The keys each release owns, to let go of them at once.
    owned: BTreeMap<String, BTreeSet<ObjectKey>>,
}

impl Owners {
    /// The index of what the held releases applied. Should two records claim one object (a
    /// state written before owners were kept), the release first by id keeps it.
    pub fn from_held(held: &BTreeMap<String, Held>) -> Self {
        let mut owners = Self::default();
        for h in held.values().filter(|h| !h.is_pending()) {
            let keys = h
                .resources
                .iter()
                .filter(|r| !h.unapplied.contains(&r.id))
                .map(|r| ObjectKey::of(&describe(r)))
                .filter(|key| owners.owner_of(key).is_none())
                .collect();
            owners.set(&h.release, keys);
        }
        owners
    }

    /// The release that owns `key`, if any.
    pub fn owner_of(&self, key: &ObjectKey) -> Option<&str> {
        self.owner.get(key).map(String::as_str)
    }

    /// Makes `keys` exactly what `release` owns: it lets go of the others. Keys another
    /// release owns are the caller's to leave out.
    pub fn set(&mut self, release: &str, keys: BTreeSet<ObjectKey>) {
        self.let_go(release);
        for key in &keys {
            self.owner.insert(key.clone(), release.to_string());
        }
        if !keys.is_empty() {
            self.owned.insert(release.to_string(), keys);
        }
    }

    /// `release` owns nothing any more.
    pub fn let_go(&mut self, release: &str) {
        for key in self.owned.remove(release).unwrap_or_default() {
            if self.owner.get(&key).is_some_and(|o| o == release) {
                self.owner.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_key(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_release_lets_go_of_what_it_no_longer_owns_and_only_that() {
        let mut owners = Owners::default();
        owners.set("acme/a", [mk_key("x"), mk_key("y")].into());
        owners.set("acme/b", [mk_key("z")].into());
        owners.set("acme/a", [mk_key("x")].into());
        assert_eq!(owners.owner_of(&mk_key("x")), Some("acme/a"));
        assert_eq!(owners.owner_of(&mk_key("y")), None);
        owners.let_go("acme/a");
        assert_eq!(owners.owner_of(&mk_key("x")), None);
        assert_eq!(owners.owner_of(&mk_key("z")), Some("acme/b"));
    }
}
