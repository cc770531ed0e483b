//! An issuer's JSON Web Key Set: the RSA and EC public keys its tokens are signed with, and
//! the signature check of a [`Jwt`] against them. Keys of other types (symmetric, OKP) and
//! encryption keys are skipped when the set is read, so they can never verify anything.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;

use super::Error;
use super::jwt::{Alg, Jwt};

/// The verification keys of one issuer.
#[derive(Debug, Default)]
pub(super) struct KeySet {
    keys: Vec<Key>,
}

/// One signing key.
#[derive(Debug)]
struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, when it pins the key to one algorithm.
    alg: Option<String>,
    material: Material,
}

#[derive(Debug)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point, `04 || x || y`.
    P256(Vec<u8>),
    P384(Vec<u8>),
}

impl Material {
    /// Whether a token signed with `alg` may be checked with this key.
    fn fits(&self, alg: Alg) -> bool {
        match self {
            Material::Rsa { .. } => matches!(alg, Alg::Rs256 | Alg::Rs384 | Alg::Rs512),
            Material::P256(_) => alg == Alg::Es256,
            Material::P384(_) => alg == Alg::Es384,
        }
    }

    /// The key type as a JWK names it, for messages.
    fn kty(&self) -> &'static str {
        match self {
            Material::Rsa { .. } => "RSA",
            Material::P256(_) => "EC P-256",
            Material::P384(_) => "EC P-384",
        }
    }
}

/// A JWK as the set spells it; the fields of key types we do not use are ignored.
#[derive(Deserialize)]
struct RawKey {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Reads a JWKS document. A key that cannot be read is skipped (an issuer may publish
    /// kinds we do not support next to the ones it signs with); a document that is not a key
    /// set is an error.
    pub(super) fn from_json(body: &[u8]) -> Result<KeySet, String> {
        let raw: RawKeySet = serde_json::from_slice(body)
            .map_err(|e| format!("the key set is not a JWKS document: {e}"))?;
        let keys = raw
            .keys
            .into_iter()
            .filter_map(|key| serde_json::from_value::<RawKey>(key).ok())
            .filter_map(Key::from_raw)
            .collect();
        Ok(KeySet { keys })
    }

    /// Whether the set may hold the key a token with `kid` was signed with: a key of that
    /// id, or any key for a token that names none.
    pub(super) fn has(&self, kid: Option<&str>) -> bool {
        match kid {
            Some(kid) => self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
            None => !self.keys.is_empty(),
        }
    }

    /// Checks the signature of `jwt` with the key its `kid` names (or, without a `kid`, with
    /// every key that fits its algorithm).
    pub(super) fn verify(&self, jwt: &Jwt<'_>) -> Result<(), Error> {
        let named: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| jwt.kid.is_none() || k.kid == jwt.kid)
            .collect();
        let fitting: Vec<&Key> = named.iter().copied().filter(|k| k.fits(jwt.alg)).collect();
        if fitting.is_empty() {
            return Err(match named.first() {
                Some(key) => Error::KeyMismatch {
                    alg: jwt.alg.as_str(),
                    key: key.describe(),
                },
                None => Error::UnknownKey(jwt.kid.clone().unwrap_or_default()),
            });
        }
        if fitting
            .iter()
            .any(|k| k.verify(jwt.alg, jwt.signed, &jwt.signature))
        {
            Ok(())
        } else {
            Err(Error::BadSignature)
        }
    }
}

impl Key {
    fn from_raw(raw: RawKey) -> Option<Key> {
        if raw.use_.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let b64 = |field: &Option<String>| URL_SAFE_NO_PAD.decode(field.as_deref()?).ok();
        let point = |len: usize| {
            let (x, y) = (b64(&raw.x)?, b64(&raw.y)?);
            (x.len() == len && y.len() == len).then(|| [&[4u8][..], &x, &y].concat())
        };
        let material = match (raw.kty.as_str(), raw.crv.as_deref()) {
            ("RSA", _) => Material::Rsa {
                n: b64(&raw.n)?,
                e: b64(&raw.e)?,
            },
            ("EC", Some("P-256")) => Material::P256(point(32)?),
            ("EC", Some("P-384")) => Material::P384(point(48)?),
            _ => return None,
        };
        Some(Key {
            kid: raw.kid,
            alg: raw.alg,
            material,
        })
    }

    fn fits(&self, alg: Alg) -> bool {
        self.material.fits(alg) && self.alg.as_deref().is_none_or(|a| a == alg.as_str())
    }

    /// `key "k1" (RSA, RS256)`, for messages.
    fn describe(&self) -> String {
        let kid = self.kid.as_deref().unwrap_or("without kid");
        match &self.alg {
            Some(alg) => format!("key {kid:?} ({}, {alg})", self.material.kty()),
            None => format!("key {kid:?} ({})", self.material.kty()),
        }
    }

    /// Whether `sig` is this key's signature of `message` under `alg` (false for an `alg`
    /// the key does not fit).
    fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        let rsa = |n: &[u8], e: &[u8], params| {
            RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .is_ok()
        };
        match (&self.material, alg) {
            (Material::Rsa { n, e }, Alg::Rs256) => {
                rsa(n, e, &signature::RSA_PKCS1_2048_8192_SHA256)
            }
            (Material::Rsa { n, e }, Alg::Rs384) => {
                rsa(n, e, &signature::RSA_PKCS1_2048_8192_SHA384)
            }
            (Material::Rsa { n, e }, Alg::Rs512) => {
                rsa(n, e, &signature::RSA_PKCS1_2048_8192_SHA512)
            }
            (Material::P256(point), Alg::Es256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            (Material::P384(point), Alg::Es384) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            _ => false,
        }
    }
}
