//! The one mapping from resource errors to gRPC statuses (DESIGN §4). Internal faults are
//! logged in full and answered with a short message.

use tonic::{Code, Status};

use crate::resources::Error;
use crate::store::StoreError;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::Invalid { .. } | Error::Immutable { .. } | Error::Render { .. } => {
                Code::InvalidArgument
            }
            Error::NotFound(_) => Code::NotFound,
            Error::Stale { .. } => Code::Aborted,
            Error::MissingReference { .. }
            | Error::BadReference { .. }
            | Error::StillReferenced { .. }
            | Error::Refused { .. } => Code::FailedPrecondition,
            // Who writes what: no state of the system makes these writes a user's to make,
            // only another path (the control plane's) does; hence not FAILED_PRECONDITION.
            Error::Forbidden { .. }
            | Error::ControlPlaneOwned { .. }
            | Error::BypassesPipeline { .. } => Code::PermissionDenied,
            Error::Compacted { .. } => Code::OutOfRange,
            // Other writers kept changing what this write's checks read.
            Error::Store(
                crate::store::StoreError::Conflict { .. }
                | crate::store::StoreError::Changed { .. },
            ) => Code::Aborted,
            // This server's leadership ended while it wrote: another server serves the call.
            // Or the store is out of reach for now: the call may go through if made again.
            Error::Store(
                crate::store::StoreError::Fenced { .. } | crate::store::StoreError::Unavailable(_),
            ) => Code::Unavailable,
            // The store's limits, each with what to change: a write bigger than one request
            // (as a request bigger than --max-message-bytes is), a store out of space.
            Error::Store(crate::store::StoreError::TooLarge(_)) => Code::OutOfRange,
            Error::Store(crate::store::StoreError::NoSpace(_)) => Code::ResourceExhausted,
            Error::Decode { .. } | Error::Store(_) => {
                tracing::error!(error = %error, "internal error");
                return Status::internal("internal error in the control plane; see its log");
            }
        };
        Status::new(code, error.to_string())
    }
}

/// A store failure outside a resource write (`what`: the server's own state, such as
/// tokens), with the code a resource write failing the same way gets: UNAVAILABLE while the
/// store is out of reach, RESOURCE_EXHAUSTED while it is full, INTERNAL (logged) otherwise.
pub(crate) fn store_failure(what: &str, error: StoreError) -> Status {
    let status = Status::from(Error::Store(error));
    match status.code() {
        Code::Internal => status,
        code => Status::new(code, format!("{what}: {}", status.message())),
    }
}

/// An I/O failure while `what`: a store failure it carries is told as [`store_failure`]
/// does; any other is INTERNAL, with its message.
pub(crate) fn io_failure(what: &str, error: std::io::Error) -> Status {
    match error.downcast::<StoreError>() {
        Ok(store) => store_failure(what, store),
        Err(error) => Status::internal(format!("{what}: {error}")),
    }
}
