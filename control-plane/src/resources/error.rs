//! The one error type of the resource layer. `api::status` maps each variant to a gRPC code.

use troupe_common::ObjectKey;

use crate::store::{Revision, StoreError};

/// Why a resource operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or object is malformed; `field` is a path such as `spec.owner.projectName`.
    #[error("{object}: {field}: {message}")]
    Invalid {
        /// The object, e.g. `Component acme/api`, or the request field's owner.
        object: String,
        /// Path of the offending field.
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(ObjectKey),
    /// A `resourceVersion` precondition failed.
    #[error(
        "{key}: the object was modified (expected resourceVersion {expected}, found {found}); read it again and reapply"
    )]
    Stale {
        /// The object.
        key: ObjectKey,
        /// The version the client expected.
        expected: Revision,
        /// The version found, or "no object".
        found: String,
    },
    /// A reference does not resolve.
    #[error("{object}: {field} refers to {target}, which does not exist; create it first")]
    MissingReference {
        /// The referring object.
        object: ObjectKey,
        /// The referring field.
        field: String,
        /// The missing object, as `Kind namespace/name`.
        target: String,
    },
    /// A reference resolves to an object that does not fit.
    #[error("{object}: {field}: {message}")]
    BadReference {
        /// The referring object.
        object: ObjectKey,
        /// The referring field.
        field: String,
        /// How the referenced object does not fit.
        message: String,
    },
    /// An immutable field was changed.
    #[error(
        "{object}: {field} is immutable ({change}); delete and recreate the object to change it"
    )]
    Immutable {
        /// The object.
        object: ObjectKey,
        /// The field.
        field: String,
        /// The refused change: `was X, now Y`.
        change: String,
    },
    /// The object cannot be deleted while others refer to it.
    #[error("{key} is still referenced by {}; delete or change them first", list_keys(referrers, *more))]
    StillReferenced {
        /// The object.
        key: ObjectKey,
        /// Some of the referrers.
        referrers: Vec<ObjectKey>,
        /// How many more referrers there are beyond those listed.
        more: usize,
    },
    /// The action is well-formed but not allowed in the object's current state or by policy:
    /// a promotion the pipeline does not permit, approving a promotion that is not pending.
    #[error("{object}: {message}")]
    Refused {
        /// The object acted on.
        object: ObjectKey,
        /// Why, and what would be allowed.
        message: String,
    },
    /// The user named in the request may not do this.
    #[error("{object}: {message}")]
    Forbidden {
        /// The object acted on.
        object: ObjectKey,
        /// Who was refused and who may.
        message: String,
    },
    /// A user asked to write or delete an object of a kind only the control plane writes
    /// (or deletes); `instead` says what does it.
    #[error("{object} is {verb} by the control plane: {instead}")]
    ControlPlaneOwned {
        /// The object.
        object: ObjectKey,
        /// `written` or `deleted`.
        verb: &'static str,
        /// What the user runs instead.
        instead: &'static str,
    },
    /// A user's write would move a release into an environment around what the pipeline
    /// requires on the way there (approvals, gates); `message` names the edge and what to
    /// run instead.
    #[error("{object}: {field}: {message}")]
    BypassesPipeline {
        /// The object.
        object: ObjectKey,
        /// The field whose change is refused.
        field: &'static str,
        /// What the pipeline requires, and the command that goes through it.
        message: String,
    },
    /// Rendering failed: a template, a schema or a patch does not work for these inputs.
    #[error("rendering {object}: {message}")]
    Render {
        /// The component rendered.
        object: ObjectKey,
        /// Where and why it failed.
        message: String,
    },
    /// A watch asked for revisions the event log no longer holds.
    #[error(
        "revision {requested} is older than the event log (oldest watchable revision: {oldest}); list again and watch from the list's revision"
    )]
    Compacted {
        /// Requested revision.
        requested: Revision,
        /// Oldest revision a watch can start after.
        oldest: Revision,
    },
    /// A stored value could not be decoded.
    #[error("stored {key} could not be decoded: {reason}")]
    Decode {
        /// Where it was stored.
        key: ObjectKey,
        /// What the decoder said.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl Error {
    /// Whether this is a commit that lost a race with another writer: something its checks
    /// read changed before it committed. Trying again from the checks may succeed.
    pub fn raced(&self) -> bool {
        matches!(
            self,
            Error::Store(StoreError::Conflict { .. } | StoreError::Changed { .. })
        )
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { requested, oldest } => Error::Compacted { requested, oldest },
            other => Error::Store(other),
        }
    }
}

impl Error {
    /// An [`Error::Invalid`] about `object`.
    pub fn invalid(
        object: impl ToString,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            object: object.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn list_keys(keys: &[ObjectKey], more: usize) -> String {
    let mut out = keys
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}
