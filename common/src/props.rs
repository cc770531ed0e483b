//! Shared settings of this crate's property tests (`props` modules beside the code they test).
//!
//! Each property runs [`CASES`] cases unless `PROPTEST_CASES` says otherwise, so the whole set
//! stays well under the time of a debug test run. A failing case is shrunk, printed, and its
//! seed saved under `proptest-regressions/` in this crate; saved seeds run first on every later
//! run, so committing the file pins the case. `PROPTEST_RNG_SEED=N` replays a whole run.

use proptest::test_runner::{Config, FileFailurePersistence};

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

/// Objects of every kind to mutate: the examples shipped in `examples/`, plus a minimal
/// document of each kind they lack. Read once per test binary.
pub fn corpus() -> &'static [crate::Object] {
    static CORPUS: std::sync::OnceLock<Vec<crate::Object>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(read_corpus)
}

fn read_corpus() -> Vec<crate::Object> {
    let mut objects = Vec::new();
    for text in [
        include_str!("../../examples/platform.yaml"),
        include_str!("../../examples/samples/more-types-and-traits.yaml"),
        include_str!("../../examples/access/access.yaml"),
    ] {
        objects.extend(crate::document::from_yaml(text).expect("the examples parse"));
    }
    for kind in crate::Kind::ALL {
        if objects.iter().all(|o| o.kind() != kind) {
            let doc = serde_json::json!({
                "apiVersion": crate::API_VERSION,
                "kind": kind.name(),
                "metadata": {"name": "x", "namespace": "acme", "labels": {"app": "api"}},
            });
            objects.push(crate::document::from_json_document(doc, 1).expect("a minimal document"));
        }
    }
    objects
}

/// Edits that take well-formed bytes somewhere nearby: flip, overwrite, insert, cut.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR the byte at the position with the mask.
    Flip(usize, u8),
    /// Put the bytes at the position, growing the input if needed.
    Overwrite(usize, Vec<u8>),
    /// Insert the bytes at the position.
    Insert(usize, Vec<u8>),
    /// Keep only the first bytes.
    Truncate(usize),
}

/// Up to four mutations.
pub fn mutations() -> impl proptest::strategy::Strategy<Value = Vec<Mutation>> {
    use proptest::prelude::*;
    let bytes = || prop::collection::vec(any::<u8>(), 1..8);
    let one = prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        (any::<usize>(), bytes()).prop_map(|(at, b)| Mutation::Overwrite(at, b)),
        (any::<usize>(), bytes()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    prop::collection::vec(one, 1..4)
}

/// `input` with `mutations` applied; positions wrap around its length.
pub fn mutate(mut input: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = input.len().max(1);
        match m {
            Mutation::Flip(at, mask) => {
                if let Some(b) = input.get_mut(at % len) {
                    *b ^= mask;
                }
            }
            Mutation::Overwrite(at, bytes) => {
                let at = at % len;
                for (i, b) in bytes.iter().enumerate() {
                    match input.get_mut(at + i) {
                        Some(slot) => *slot = *b,
                        None => input.push(*b),
                    }
                }
            }
            Mutation::Insert(at, bytes) => {
                let at = at % (input.len() + 1);
                input.splice(at..at, bytes.iter().copied());
            }
            Mutation::Truncate(at) => input.truncate(at % len),
        }
    }
    input
}
