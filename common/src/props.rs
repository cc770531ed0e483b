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
