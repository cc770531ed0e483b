//! The compact form of a signed JWT (`HEADER.CLAIMS.SIGNATURE`, each base64url): parsed here
//! into an [`Alg`], a key id and the claims, none of them trusted until [`super::jwks`] has
//! checked the signature over [`Jwt::signed`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::Error;

/// The signature algorithms accepted. `none` and the HMAC family are not among them: an
/// HMAC key would be the issuer's public key, which anyone can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Es256,
    Es384,
}

impl Alg {
    /// The algorithm `name` spells, if it is one accepted.
    fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            _ => return None,
        })
    }

    /// The name headers and JWKs use.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
        }
    }
}

/// A parsed, unverified JWT.
#[derive(Debug)]
pub(super) struct Jwt<'a> {
    /// The header's `alg`.
    pub alg: Alg,
    /// The header's `kid`, naming the key in the issuer's key set.
    pub kid: Option<String>,
    /// The claims object.
    pub claims: Map<String, Value>,
    /// The bytes the signature covers: `HEADER.CLAIMS` as sent.
    pub signed: &'a [u8],
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Splits and decodes `token`, refusing algorithms not accepted before anything else is
/// looked at.
pub(super) fn parse(token: &str) -> Result<Jwt<'_>, Error> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Malformed("not three dot-separated parts"));
    };
    let header = decode_object(header, Part::Header)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(Error::Malformed("the header has no alg"))?;
    let alg = Alg::parse(alg).ok_or_else(|| Error::Algorithm(alg.to_string()))?;
    // Extensions we do not understand must not be ignored (RFC 7515 §4.1.11).
    if header.contains_key("crit") {
        return Err(Error::Malformed("the header has critical extensions"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Error::Malformed("the header's kid is not a string")),
    };
    let claims_object = decode_object(claims, Part::Claims)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| Error::Malformed("the signature is not base64url"))?;
    let signed_len = token.len() - signature_len(token);
    Ok(Jwt {
        alg,
        kid,
        claims: claims_object,
        signed: &token.as_bytes()[..signed_len],
        signature,
    })
}

/// Length of the last part of `token` with its dot.
fn signature_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

/// Decodes one base64url part holding a JSON object; `what` names the part in messages.
fn decode_object(part: &str, what: Part) -> Result<Map<String, Value>, Error> {
    let (not_base64, not_object) = match what {
        Part::Header => (
            "the header is not base64url",
            "the header is not a JSON object",
        ),
        Part::Claims => (
            "the claims are not base64url",
            "the claims are not a JSON object",
        ),
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Error::Malformed(not_base64))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(Error::Malformed(not_object)),
    }
}

/// The JSON parts of a token.
#[derive(Clone, Copy)]
enum Part {
    Header,
    Claims,
}

/// A string claim, `Ok(None)` when absent.
pub(super) fn string_claim<'c>(
    claims: &'c Map<String, Value>,
    name: &str,
) -> Result<Option<&'c str>, Error> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::ClaimType(name.to_string(), "a string")),
    }
}

/// A claim that is a string or an array of strings (`aud`, groups); empty when absent.
pub(super) fn strings_claim(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, Error> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::ClaimType(name.to_string(), "a string or an array of strings")),
        Some(_) => Err(Error::ClaimType(
            name.to_string(),
            "a string or an array of strings",
        )),
    }
}

/// A NumericDate claim (seconds since the epoch), `Ok(None)` when absent.
pub(super) fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Error> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.floor() as i64))
            .map(Some)
            .ok_or_else(|| Error::ClaimType(name.to_string(), "a number of seconds")),
        Some(_) => Err(Error::ClaimType(name.to_string(), "a number of seconds")),
    }
}

/// `secs` since the epoch as `2026-12-01T19:00:00Z`, the form messages show times in.
pub(super) fn rfc3339(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} seconds after the epoch"),
    }
}
