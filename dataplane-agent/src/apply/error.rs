//! What can go wrong putting a release somewhere: one error for every applier.
//!
//! Each variant names what it was about (the release, the object, the file) and keeps its
//! source, so the message sent back to the control plane in a failed `Ack` says what to fix.

use std::path::PathBuf;

/// An apply or a prune that did not go through.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The release id is not `NAMESPACE/NAME`.
    #[error("bad release id {0:?}")]
    BadRelease(String),
    /// A rendered object cannot be applied as it is.
    #[error("object {id}: {reason}")]
    BadObject {
        /// The object's id in the release.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A rendered object lacks what names it, so it has nowhere to go.
    #[error("object {id} has no kind or name")]
    Unnamed {
        /// The object's id in the release.
        id: String,
    },
    /// A rendered object cannot be written out as YAML.
    #[error("{id}: {source}")]
    Render {
        /// The object's id in the release.
        id: String,
        /// What the encoder said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file or folder of the target could not be read, written or removed.
    #[error("{action} {path}: {source}")]
    Io {
        /// `creating`, `reading`, `writing`, `pruning`.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The cluster does not serve the object's kind, or could not be asked.
    #[error("finding {kind} ({api_version}) on the cluster: {}", said(source))]
    Discovery {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// The API server refused a request about an object.
    #[error("{action} {object}: {}", said(source))]
    Request {
        /// `applying`, `listing`, `deleting`.
        action: &'static str,
        /// `Kind namespace/name`, or the kind for a list.
        object: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// The record of a release's kinds cannot be read or written.
    #[error("the record of the release's kinds in {dir}: {source}")]
    Record {
        /// Where the record is kept.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What the API server said, as people read it: `Forbidden (403): services "web" is
/// forbidden: …` for a refusal (its reason, code and message, as kubectl prints them), the
/// client's own message for anything else.
fn said(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => {
            let reason = if status.reason.is_empty() {
                "Failure"
            } else {
                status.reason.as_str()
            };
            format!("{reason} ({}): {}", status.code, status.message)
        }
        other => other.to_string(),
    }
}

impl Error {
    /// An [`Error::Io`] about `path`, for `map_err`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed() {
        let io = Error::io("writing", "/t/acme/api/configmap_a.yaml")(std::io::Error::other(
            "disk full",
        ));
        assert_eq!(
            io.to_string(),
            "writing /t/acme/api/configmap_a.yaml: disk full"
        );
        let unnamed = Error::Unnamed {
            id: "ConfigMap/a".into(),
        };
        assert_eq!(
            unnamed.to_string(),
            "object ConfigMap/a has no kind or name"
        );
        assert_eq!(
            Error::BadRelease("nope".into()).to_string(),
            "bad release id \"nope\""
        );
    }
}
