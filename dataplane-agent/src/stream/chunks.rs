//! Joins the chunks of an upsert (DESIGN §6: a release over [`CHUNK_BYTES`] comes in several
//! `ReleaseUpsert` messages in a row) into one [`Upsert`], so that a release is applied only
//! once all of it is in. A release announced, or grown, over the agent's limit is refused
//! alone: its remaining chunks are skipped and the next release is taken as usual.

use troupe_common::agent::CHUNK_BYTES;
use troupe_common::pb::v1alpha1 as pb;

use crate::worker::Upsert;

/// Collects the chunks of one upsert.
#[derive(Default)]
pub(super) struct Chunks {
    /// The first chunk, the bytes so far and the index expected next.
    current: Option<(pb::ReleaseUpsert, Vec<u8>, u32)>,
    /// A release refused for its size: its remaining chunks are skipped.
    refused: Option<(String, i64)>,
}

/// What one more chunk makes.
pub(super) enum Step {
    /// More chunks are to come.
    Incomplete,
    /// The upsert is whole.
    Complete(Upsert),
    /// The release (id, generation) is refused, for the reason given; its other chunks are
    /// skipped.
    Refused(String, i64, String),
}

impl Chunks {
    /// Takes the next chunk; a release over `max_bytes` is refused alone.
    pub(super) fn add(&mut self, chunk: pb::ReleaseUpsert, max_bytes: usize) -> Step {
        let key = (chunk.release.clone(), chunk.generation);
        if self.refused.as_ref() == Some(&key) {
            if chunk.chunk_index + 1 == chunk.chunk_count {
                self.refused = None;
            }
            return Step::Incomplete;
        }
        if chunk.chunk_index == 0 {
            let announced = (chunk.chunk_count as usize).saturating_mul(CHUNK_BYTES);
            if announced > max_bytes.saturating_add(CHUNK_BYTES) {
                let error = format!(
                    "the release has {} chunks (up to {announced} bytes); this agent accepts at most {max_bytes} bytes (--max-release-bytes)",
                    chunk.chunk_count
                );
                if chunk.chunk_count > 1 {
                    self.refused = Some(key.clone());
                }
                return Step::Refused(key.0, key.1, error);
            }
            self.current = None;
        }
        let (head, mut buffer) = match self.current.take() {
            Some((head, buffer, next))
                if head.release == chunk.release
                    && head.generation == chunk.generation
                    && chunk.chunk_index == next =>
            {
                (head, buffer)
            }
            _ if chunk.chunk_index == 0 => (chunk.clone(), Vec::new()),
            _ => {
                return Step::Refused(
                    key.0,
                    key.1,
                    format!("chunk {} arrived out of order", chunk.chunk_index),
                );
            }
        };
        buffer.extend_from_slice(&chunk.manifests);
        if buffer.len() > max_bytes {
            self.refused = (chunk.chunk_index + 1 < chunk.chunk_count).then(|| key.clone());
            return Step::Refused(
                key.0,
                key.1,
                format!("the release is over {max_bytes} bytes (--max-release-bytes)"),
            );
        }
        if chunk.chunk_index + 1 < chunk.chunk_count {
            self.current = Some((head, buffer, chunk.chunk_index + 1));
            return Step::Incomplete;
        }
        Step::Complete(Upsert {
            release: head.release,
            generation: head.generation,
            content_hash: head.content_hash,
            manifests: buffer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(index: u32, count: u32, bytes: &[u8]) -> pb::ReleaseUpsert {
        pb::ReleaseUpsert {
            release: "acme/big".into(),
            generation: 2,
            content_hash: "h".into(),
            chunk_index: index,
            chunk_count: count,
            manifests: bytes.to_vec(),
        }
    }

    #[test]
    fn chunks_join_in_order_and_an_oversized_release_is_refused_alone() {
        let mut chunks = Chunks::default();
        let full = vec![7u8; CHUNK_BYTES];
        assert!(matches!(
            chunks.add(chunk(0, 3, &full), usize::MAX),
            Step::Incomplete
        ));
        assert!(matches!(
            chunks.add(chunk(1, 3, &full), usize::MAX),
            Step::Incomplete
        ));
        match chunks.add(chunk(2, 3, b"tail"), usize::MAX) {
            Step::Complete(a) => assert_eq!(a.manifests.len(), 2 * CHUNK_BYTES + 4),
            _ => panic!("expected the whole release"),
        }

        // Announced too big: refused at once, its other chunks skipped, the next one fine.
        assert!(matches!(
            chunks.add(chunk(0, 5, &full), CHUNK_BYTES),
            Step::Refused(..)
        ));
        for i in 1..5 {
            assert!(matches!(
                chunks.add(chunk(i, 5, &full), CHUNK_BYTES),
                Step::Incomplete
            ));
        }
        let mut small = chunk(0, 1, b"[]");
        small.release = "acme/small".into();
        assert!(matches!(chunks.add(small, CHUNK_BYTES), Step::Complete(_)));

        // A chunk out of order is refused.
        assert!(matches!(
            chunks.add(chunk(1, 2, &full), usize::MAX),
            Step::Refused(..)
        ));
    }
}
