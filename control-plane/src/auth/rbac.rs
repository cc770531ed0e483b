//! Role-based access: Role / ClusterRole rules, RoleBinding / ClusterRoleBinding subjects and
//! scopes. (Interface only; the evaluator is being written.)

use std::sync::Arc;

use troupe_common::Object;

use super::{Principal, Target, Verb};
use crate::resources::Resources;

/// How much of a kind a caller may list or watch in a namespace (or everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every object: no filtering needed.
    Everything,
    /// Only some projects or components: check each object.
    Some,
    /// None at all.
    Nothing,
}

/// The role and binding objects, indexed for fast checks, following every change.
pub struct Rbac {
    _resources: Arc<Resources>,
}

impl Rbac {
    /// Writes the built-in cluster roles that are missing, loads every role and binding and
    /// follows their changes.
    pub async fn start(resources: Arc<Resources>) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            _resources: resources,
        }))
    }

    /// Whether `who` may do `verb` to `target`; the error says what grant was missing.
    pub fn check(&self, who: &Principal, verb: Verb, target: &Target) -> Result<(), String> {
        let _ = (who, verb, target);
        Ok(())
    }

    /// How much of `kind` in `namespace` (empty: every namespace) `who` may `verb`.
    pub fn reach(&self, who: &Principal, verb: Verb, kind: &str, namespace: &str) -> Reach {
        let _ = (who, verb, kind, namespace);
        Reach::Everything
    }

    /// Returns once every role and binding change up to `revision` is in the index, so a
    /// caller that just wrote one is judged by it.
    pub async fn caught_up(&self, revision: u64) {
        let _ = revision;
    }
}

/// The target an object is: its kind, namespace and name, and the project and component it
/// belongs to (a Component's own project, the owner of a Workload, ReleaseBinding …).
pub fn target_of(object: &Object) -> Target {
    let key = object.key();
    Target {
        kind: key.kind.name().to_string(),
        namespace: key.namespace,
        project: String::new(),
        component: String::new(),
        name: key.name,
    }
}
