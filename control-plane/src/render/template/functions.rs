//! The minijinja environment every expression runs in, and the helper functions it offers:
//! `omit`, `dns_name`, `merge`, `sha256`, `hash`, `b64encode`, `b64decode`, `tojson` and
//! `fromjson` (the last six also as filters), plus the two internal fuel-metering functions.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use minijinja::value::{Kwargs, Rest, StringInput, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::value::{METER_VAR, Meter, Omit, Sizer, is_omit, to_json};

/// The fuel the environment gives every evaluation. It is only a ceiling: the charge function
/// takes back all but what the render call has left (see the module docs).
pub(super) const ENV_FUEL: u64 = 1 << 56;

/// Internal: pre-charges an evaluation down to its call's remaining budget.
pub(super) const CHARGE_FN: &str = "__troupe_charge";
/// Internal: books an evaluation's consumption on its call's meter.
pub(super) const METER_FN: &str = "__troupe_meter";

/// Longest DNS label.
const DNS_LABEL_MAX: usize = 63;
/// Hex characters of the hash suffix `dns_name` appends.
const DNS_HASH_LEN: usize = 8;
/// How deep the helpers walk nested values.
const HELPER_DEPTH: usize = 128;

/// The shared environment for a recursion limit. Environments hold no per-call state, so one
/// per distinct limit is created, lives for the process, and is shared by every engine that
/// uses that limit; being `'static` lets engines cache compiled expressions next to it.
pub(super) fn environment(recursion: usize) -> &'static Environment<'static> {
    static ENVIRONMENTS: Mutex<Vec<(usize, &'static Environment<'static>)>> =
        Mutex::new(Vec::new());
    let mut environments = ENVIRONMENTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, env)) = environments.iter().find(|(r, _)| *r == recursion) {
        return env;
    }
    let env: &'static Environment<'static> = Box::leak(Box::new(build(recursion)));
    environments.push((recursion, env));
    env
}

fn build(recursion: usize) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(ENV_FUEL));
    env.set_recursion_limit(recursion);
    // Debug mode makes undefined-value errors name the expression (`foo.bar` is undefined).
    env.set_debug(true);
    env.add_function(CHARGE_FN, charge);
    env.add_function(METER_FN, meter);
    env.add_function("omit", || Value::from_object(Omit));
    env.add_function("dns_name", dns_name);
    env.add_function("merge", merge);
    env.add_filter("service_ports", service_ports);
    env.add_filter("file_mounts", file_mounts);
    env.add_filter("to_map", to_map);
    env.add_test("containing", containing);
    // The unary helpers double as filters: `x | sha256` is `sha256(x)`.
    macro_rules! function_and_filter {
        ($($name:ident),*) => {$(
            env.add_function(stringify!($name), $name);
            env.add_filter(stringify!($name), $name);
        )*};
    }
    function_and_filter!(sha256, hash, b64encode, b64decode, tojson, fromjson);
    env
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

fn call_meter(state: &State) -> Result<std::sync::Arc<Meter>, Error> {
    state
        .lookup(METER_VAR)
        .and_then(|v| v.downcast_object::<Meter>())
        .ok_or_else(|| invalid("internal: no fuel meter in scope"))
}

/// Consumes, from this evaluation's fresh tracker, everything beyond what the call has left.
fn charge(state: &State) -> Result<u64, Error> {
    let precharge = ENV_FUEL.saturating_sub(call_meter(state)?.remaining());
    state.consume_fuel(precharge)?;
    Ok(precharge)
}

/// Books what the evaluation consumed past its pre-charge, and rejects an undefined result
/// with minijinja's own error, which names the undefined expression.
fn meter(state: &State, precharge: u64, value: Value) -> Result<Value, Error> {
    if value.is_undefined() {
        StringInput::new(state, &value)?;
    }
    if let Some((consumed, _)) = state.fuel_levels() {
        call_meter(state)?.book(consumed.saturating_sub(precharge));
    }
    Ok(value)
}

/// Charges fuel for `bytes` of work done outside the engine (1 fuel per 4 bytes, like
/// minijinja's own serialization).
fn charge_bytes(state: &State, bytes: usize) -> Result<(), Error> {
    state.consume_fuel(bytes as u64 / 4)
}

/// Compact JSON of a value, charged to the evaluation's fuel.
fn json_of(state: &State, value: &Value) -> Result<Json, Error> {
    let sizer = Sizer::new(usize::MAX, usize::MAX);
    let json = to_json(value, &sizer, HELPER_DEPTH)
        .map_err(invalid)?
        .ok_or_else(|| invalid("omit() cannot be serialized"))?;
    charge_bytes(state, sizer.used())?;
    Ok(json)
}

/// The bytes a hash covers: a string's UTF-8, or the compact JSON of anything else.
fn hash_input(state: &State, value: &Value) -> Result<Vec<u8>, Error> {
    match value.kind() {
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            charge_bytes(state, s.len())?;
            Ok(s.as_bytes().to_vec())
        }
        _ => Ok(json_of(state, value)?.to_string().into_bytes()),
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    troupe_common::hex::encode(&Sha256::digest(bytes))
}

/// `dns_name(part, ...)`: a stable DNS label from the parts, hash-suffixed.
fn dns_name(state: &State, parts: Rest<String>) -> Result<String, Error> {
    if parts.is_empty() {
        return Err(invalid("dns_name() needs at least one part"));
    }
    charge_bytes(state, parts.iter().map(String::len).sum())?;
    Ok(dns_label(&parts))
}

/// Joins `parts` with '-', lowercases, maps characters outside `[a-z0-9-]` to '-', collapses
/// and trims dashes, truncates to fit, and appends '-' and 8 hex of sha256 of the parts
/// joined with NUL. An empty readable prefix leaves just the hash.
pub(super) fn dns_label(parts: &[String]) -> String {
    let mut readable = String::new();
    for c in parts.join("-").to_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (readable.is_empty() || readable.ends_with('-'))) {
            readable.push(c);
        }
    }
    readable.truncate(DNS_LABEL_MAX - DNS_HASH_LEN - 1);
    let readable = readable.trim_end_matches('-');
    let hash = &hex_sha256(parts.join("\0").as_bytes())[..DNS_HASH_LEN];
    if readable.is_empty() {
        hash.to_owned()
    } else {
        format!("{readable}-{hash}")
    }
}

/// `workload.endpoints | service_ports`: the endpoints as Kubernetes `ServicePort`s
/// (`name`, `port`, `targetPort`, and `protocol` UDP for UDP endpoints, TCP otherwise).
fn service_ports(endpoints: Value) -> Result<Value, Error> {
    let mut ports = Vec::new();
    for endpoint in endpoints.try_iter()? {
        let field = |name: &str| endpoint.get_attr(name).unwrap_or(Value::UNDEFINED);
        let port = field("port");
        let target = field("targetPort");
        let target = if target.is_undefined() || target.is_none() {
            port.clone()
        } else {
            target
        };
        let protocol = if field("type").as_str() == Some("UDP") {
            "UDP"
        } else {
            "TCP"
        };
        ports.push(Value::from(BTreeMap::from([
            ("name", field("name")),
            ("port", port),
            ("targetPort", target),
            ("protocol", Value::from(protocol)),
        ])));
    }
    Ok(Value::from(ports))
}

/// `configurations.files | file_mounts("files")`: one Kubernetes `VolumeMount` per file, of
/// the volume named `volume`, with the file's name as `subPath`.
fn file_mounts(files: Value, volume: String) -> Result<Value, Error> {
    let mut mounts = Vec::new();
    for file in files.try_iter()? {
        mounts.push(Value::from(BTreeMap::from([
            ("name", Value::from(volume.as_str())),
            ("mountPath", file.get_attr("mountPath")?),
            ("subPath", file.get_attr("name")?),
        ])));
    }
    Ok(Value::from(mounts))
}

/// `items | to_map("name", "value")`: a map from each item's `key` attribute to its `value`
/// attribute; a later item wins over an earlier one with the same key.
fn to_map(items: Value, key: String, value: String) -> Result<Value, Error> {
    let mut map = BTreeMap::new();
    for item in items.try_iter()? {
        let k = item.get_attr(&key)?;
        if k.is_undefined() || k.is_none() {
            return Err(invalid(format!("to_map: an item has no {key:?}")));
        }
        map.insert(k, item.get_attr(&value)?);
    }
    Ok(Value::from(map))
}

/// The test `containing`: `endpoints | selectattr("visibility", "containing", "external")`
/// keeps the items whose `visibility` list (or string) contains `"external"`.
fn containing(haystack: Value, needle: Value) -> Result<bool, Error> {
    if let Some(text) = haystack.as_str() {
        return Ok(needle.as_str().is_some_and(|n| text.contains(n)));
    }
    if haystack.is_undefined() || haystack.is_none() {
        return Ok(false);
    }
    Ok(haystack.try_iter()?.any(|item| item == needle))
}

/// `merge(a, b, ...)`: deep merge of maps, later arguments win; none arguments are skipped.
fn merge(state: &State, maps: Rest<Value>) -> Result<Value, Error> {
    let mut merged = Value::from_pairs(Vec::<(Value, Value)>::new());
    for (i, map) in maps.iter().enumerate() {
        match map.kind() {
            ValueKind::None => {}
            ValueKind::Map => merged = merge_two(state, &merged, map, HELPER_DEPTH)?,
            kind => {
                return Err(invalid(format!(
                    "merge() argument {} is a {kind}, not a map",
                    i + 1
                )));
            }
        }
    }
    Ok(merged)
}

fn merge_two(state: &State, base: &Value, top: &Value, depth: usize) -> Result<Value, Error> {
    if base.kind() != ValueKind::Map || top.kind() != ValueKind::Map {
        return Ok(top.clone());
    }
    if depth == 0 {
        return Err(invalid("merge(): maps nest too deeply"));
    }
    let mut out = BTreeMap::new();
    for key in base.try_iter()? {
        let value = base.get_item(&key)?;
        out.insert(key, value);
    }
    for key in top.try_iter()? {
        let value = top.get_item(&key)?;
        if is_omit(&value) {
            out.remove(&key);
            continue;
        }
        let value = match out.get(&key) {
            Some(existing) => merge_two(state, existing, &value, depth - 1)?,
            None => value,
        };
        out.insert(key, value);
    }
    state.consume_fuel(out.len() as u64)?;
    Ok(Value::from_pairs(out))
}

/// `sha256(x)`: hex sha256 of a string, or of the compact JSON of anything else.
fn sha256(state: &State, value: Value) -> Result<String, Error> {
    Ok(hex_sha256(&hash_input(state, &value)?))
}

/// `hash(x, n=8)`: the first `n` hex characters of `sha256(x)`.
fn hash(state: &State, value: Value, n: Option<usize>, kwargs: Kwargs) -> Result<String, Error> {
    let n = match n {
        Some(n) => n,
        None => kwargs.get::<Option<usize>>("n")?.unwrap_or(8),
    };
    kwargs.assert_all_used()?;
    if !(1..=64).contains(&n) {
        return Err(invalid(format!(
            "hash(): n must be between 1 and 64, got {n}"
        )));
    }
    let mut hex = hex_sha256(&hash_input(state, &value)?);
    hex.truncate(n);
    Ok(hex)
}

/// `b64encode(s)`: standard base64 of a string's UTF-8 (or of bytes).
fn b64encode(state: &State, value: Value) -> Result<String, Error> {
    let bytes = match value.as_bytes() {
        Some(bytes) if value.kind() == ValueKind::Bytes => bytes.to_vec(),
        _ => StringInput::new(state, &value)?
            .as_str()
            .as_bytes()
            .to_vec(),
    };
    charge_bytes(state, bytes.len())?;
    Ok(STANDARD.encode(bytes))
}

/// `b64decode(s)`: decodes standard base64 into UTF-8 text.
fn b64decode(state: &State, encoded: String) -> Result<String, Error> {
    charge_bytes(state, encoded.len())?;
    let bytes = STANDARD
        .decode(encoded.trim())
        .map_err(|e| invalid(format!("b64decode(): invalid base64: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|_| invalid("b64decode(): the decoded bytes are not UTF-8 text"))
}

/// `tojson(x, indent=n)`: compact JSON, or pretty JSON indented by `n` spaces.
fn tojson(
    state: &State,
    value: Value,
    indent: Option<usize>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let indent = match indent {
        Some(n) => Some(n),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let json = json_of(state, &value)?;
    let Some(width) = indent else {
        return Ok(json.to_string());
    };
    let pad = " ".repeat(width.min(16));
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(&json, &mut serializer).map_err(|e| invalid(e.to_string()))?;
    String::from_utf8(out).map_err(|e| invalid(e.to_string()))
}

/// `fromjson(s)`: parses JSON text into a value (integers stay integers).
fn fromjson(state: &State, text: String) -> Result<Value, Error> {
    charge_bytes(state, text.len())?;
    let json: Json = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("fromjson(): invalid JSON: {e}")))?;
    Ok(Value::from(minijinja::value::Serde(json)))
}
