//! Timestamps as the resource model carries them (`google.protobuf.Timestamp`).

use std::time::{SystemTime, UNIX_EPOCH};

use pbjson_types::Timestamp;

/// `time` to the nanosecond.
pub fn at(time: SystemTime) -> Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

/// Now, to the nanosecond (creation and deletion times).
pub fn now() -> Timestamp {
    at(SystemTime::now())
}

/// Now, to the second (conditions, heartbeats, observations: what people read).
pub fn now_seconds() -> Timestamp {
    Timestamp { nanos: 0, ..now() }
}
