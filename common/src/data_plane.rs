//! Where a `DataPlaneRef` points: the one mapping from the reference an Environment (and each
//! Release rendered for it) carries to the store key of a DataPlane or ClusterDataPlane.

use crate::kind::{Kind, scoped_kind};
use crate::object::ObjectKey;
use crate::pb::v1alpha1::DataPlaneRef;

impl DataPlaneRef {
    /// The kind referenced: `DataPlane` (also when empty) or `ClusterDataPlane`; `None` for
    /// any other value, which validation refuses.
    pub fn data_plane_kind(&self) -> Option<Kind> {
        scoped_kind(&self.kind, Kind::DataPlane, Kind::ClusterDataPlane)
    }

    /// The data plane referenced from an object in `namespace`: a DataPlane there, or a
    /// ClusterDataPlane. A kind validation would refuse reads as `DataPlane`.
    pub fn key(&self, namespace: &str) -> ObjectKey {
        let kind = self.data_plane_kind().unwrap_or(Kind::DataPlane);
        ObjectKey::scoped(kind, namespace, &self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_ref(kind: &str, name: &str) -> DataPlaneRef {
        DataPlaneRef {
            kind: kind.into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_data_plane_is_in_the_referrers_namespace_a_cluster_data_plane_in_none() {
        assert_eq!(
            mk_ref("", "east").key("acme"),
            ObjectKey::new(Kind::DataPlane, "acme", "east")
        );
        assert_eq!(
            mk_ref("DataPlane", "east").key("acme"),
            ObjectKey::new(Kind::DataPlane, "acme", "east")
        );
        assert_eq!(
            mk_ref("ClusterDataPlane", "shared").key("acme"),
            ObjectKey::new(Kind::ClusterDataPlane, "", "shared")
        );
    }

    #[test]
    fn an_unknown_kind_is_no_data_plane_kind() {
        assert_eq!(mk_ref("Gadget", "x").data_plane_kind(), None);
        assert_eq!(mk_ref("Gadget", "x").key("acme").kind, Kind::DataPlane);
    }
}
