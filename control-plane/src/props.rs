//! Shared settings of this crate's property tests (`props` modules beside the code they test).
//!
//! Each property runs [`CASES`] cases unless `PROPTEST_CASES` says otherwise, so the whole set
//! stays well under the time of a debug test run. A failing case is shrunk, printed, and its
//! seed saved under `proptest-regressions/` in this crate; saved seeds run first on every later
//! run, so committing the file pins the case. `PROPTEST_RNG_SEED=N` replays a whole run.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{Map, Value};

/// Cases per property when `PROPTEST_CASES` is not set.
pub const CASES: u32 = 256;

/// The configuration every property of this crate runs with.
pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// Arbitrary JSON whose map keys come from `keys`, so generated paths and expressions often
/// meet what is there.
pub fn json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..300).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(keys).prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(keys), inner), 0..5).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}
