//! What the control plane and `troupe-agent` must agree on for the agent protocol
//! (DESIGN §6): the protocol version, release ids, bootstrap tokens, certificate identities
//! and how a release's manifests are cut into chunks.

use std::fmt;

use crate::pb::v1alpha1::{DataPlaneIdentity, ReleaseResource};

/// The protocol version both sides speak.
pub const PROTOCOL_VERSION: u32 = 1;

/// One message towards an agent, or the status that ends its stream, as the control plane
/// queues it. Boxed while it waits: a channel allocates its slots 32 at a time, and unboxed
/// slots of this size made that block several kilobytes of every idle session.
pub type Outgoing = Box<Result<crate::pb::v1alpha1::ControlMessage, tonic::Status>>;

/// Largest piece of a release's manifests in one message. Well under the default 4 MiB
/// message limit, so one big release never needs a bigger limit and never holds a stream
/// for long.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Prefix of the SAN URI that names a data plane in an agent's client certificate.
pub const IDENTITY_URI_PREFIX: &str = "troupe://dataplane/";

/// The id of a release on the wire: `NAMESPACE/NAME`.
pub fn release_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Splits a release id into namespace and name.
pub fn parse_release_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
}

/// A data plane as written on command lines and in certificates: `NAMESPACE/NAME` for a
/// DataPlane, `NAME` for a ClusterDataPlane.
impl fmt::Display for DataPlaneIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

impl DataPlaneIdentity {
    /// Parses `NAMESPACE/NAME` (a DataPlane) or `NAME` (a ClusterDataPlane), checking that each
    /// part is a DNS label.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (namespace, name) = match text.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => ("", text),
        };
        if !namespace.is_empty() {
            crate::names::check_dns_label(namespace)
                .map_err(|e| format!("data plane {text:?}: namespace {e}"))?;
        }
        crate::names::check_dns_label(name)
            .map_err(|e| format!("data plane {text:?}: name {e}"))?;
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// The SAN URI naming this data plane in a client certificate.
    pub fn to_uri(&self) -> String {
        format!("{IDENTITY_URI_PREFIX}{self}")
    }

    /// The data plane a SAN URI names, if it is one of ours.
    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::parse(uri.strip_prefix(IDENTITY_URI_PREFIX)?).ok()
    }
}

/// A bootstrap token: `trp1.ID.SECRET.CAPIN`. The control plane stores the SHA-256 of the
/// secret under the id; the CA pin (hex SHA-256 of the CA certificate's DER) lets the agent
/// trust the agent endpoint on first contact without a CA file, as `kubeadm join` does with
/// its discovery hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// Public identifier, 16 hex digits.
    pub id: String,
    /// The secret, 32 hex digits.
    pub secret: String,
    /// Hex SHA-256 of the CA certificate (DER).
    pub ca_pin: String,
}

impl BootstrapToken {
    /// Parses a token, saying what is wrong without echoing the secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        match parts.as_slice() {
            ["trp1", id, secret, pin] if hex(id, 16) && hex(secret, 32) && hex(pin, 64) => {
                Ok(Self {
                    id: id.to_string(),
                    secret: secret.to_string(),
                    ca_pin: pin.to_ascii_lowercase(),
                })
            }
            _ => Err("malformed bootstrap token: expected trp1.ID.SECRET.CAPIN \
                      as printed by `troupe dataplane token create`"
                .into()),
        }
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trp1.{}.{}.{}", self.id, self.secret, self.ca_pin)
    }
}

/// Lowercase hex SHA-256 of `bytes`: content hashes and CA pins.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Encodes a release's resources as the JSON array the upserts carry.
pub fn encode_manifests(resources: &[ReleaseResource]) -> Vec<u8> {
    serde_json::to_vec(resources).expect("release resources serialize")
}

/// Decodes the JSON array of an upsert's concatenated chunks.
pub fn decode_manifests(bytes: &[u8]) -> Result<Vec<ReleaseResource>, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("manifests are not a resource list: {e}"))
}

/// Cuts `bytes` into chunks of at most [`CHUNK_BYTES`]; an empty payload is one empty chunk.
pub fn chunks(bytes: &[u8]) -> Vec<&[u8]> {
    if bytes.is_empty() {
        return vec![bytes];
    }
    bytes.chunks(CHUNK_BYTES).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_plane_identities_round_trip_through_text_and_uris() {
        for text in ["team-a/edge", "shared"] {
            let id = DataPlaneIdentity::parse(text).unwrap();
            assert_eq!(id.to_string(), text);
            assert_eq!(DataPlaneIdentity::from_uri(&id.to_uri()), Some(id));
        }
        assert!(DataPlaneIdentity::parse("Team/edge").is_err());
        assert!(DataPlaneIdentity::parse("a/b/c").is_err());
        assert_eq!(DataPlaneIdentity::from_uri("spiffe://x/y"), None);
    }

    #[test]
    fn tokens_parse_only_in_their_exact_shape() {
        let token = BootstrapToken {
            id: "0123456789abcdef".into(),
            secret: "0".repeat(32),
            ca_pin: "a".repeat(64),
        };
        assert_eq!(BootstrapToken::parse(&token.to_string()), Ok(token.clone()));
        let short = format!("trp1.{}.{}.{}", token.id, "0".repeat(31), token.ca_pin);
        let err = BootstrapToken::parse(&short).unwrap_err();
        assert!(!err.contains(&"0".repeat(31)), "{err}");
        assert!(BootstrapToken::parse("hello").is_err());
    }

    #[test]
    fn chunks_cover_the_payload_in_order() {
        let payload: Vec<u8> = (0..(CHUNK_BYTES * 2 + 5)).map(|i| i as u8).collect();
        let parts = chunks(&payload);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), payload);
        assert_eq!(chunks(&[]).len(), 1);
    }
}
