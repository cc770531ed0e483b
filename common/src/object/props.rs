//! Property tests of proto decoding: any bytes given to the decoder of a resource (every
//! kind, through the `Resource` oneof the store and the API carry) or of an agent protocol
//! message either fail to decode or give a value that re-encodes to itself and, for
//! resources, converts to a JSON document and back; an upsert's manifests decode or fail. Inputs are real encodings mutated, and
//! arbitrary bytes behind each kind's own field tag so every kind's decoder is reached.
//! Replay: see `crate::props`.

use proptest::prelude::*;
use prost::Message;
use prost::encoding::{WireType, decode_key, encode_key, encode_varint};

use crate::document::{from_json_document, to_json};
use crate::pb::v1alpha1::{
    self as pb, AgentMessage, ControlMessage, Resource, agent_message, control_message,
};
use crate::props::{corpus, mutate, mutations};

fn encoded_corpus() -> Vec<Vec<u8>> {
    corpus()
        .iter()
        .map(|o| {
            Resource {
                object: Some(o.clone()),
            }
            .encode_to_vec()
        })
        .collect()
}

/// Every kind's oneof field tag in `Resource`, read from an encoding of that kind.
fn kind_tags() -> Vec<u32> {
    encoded_corpus()
        .iter()
        .map(|bytes| decode_key(&mut bytes.as_slice()).expect("a key").0)
        .collect()
}

/// `inner` as the body of the `Resource` field `tag`.
fn wrapped(tag: u32, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(tag, WireType::LengthDelimited, &mut out);
    encode_varint(inner.len() as u64, &mut out);
    out.extend_from_slice(inner);
    out
}

/// Decodes `bytes` as a resource; what decodes must survive every conversion the server
/// makes of a stored or received object.
fn check_resource(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(resource) = Resource::decode(bytes) else {
        return Ok(());
    };
    let again = Resource::decode(resource.encode_to_vec().as_slice());
    prop_assert_eq!(again.as_ref(), Ok(&resource));
    let Some(mut object) = resource.object else {
        return Ok(());
    };
    object.set_type_meta();
    let _ = object.key();
    let doc = to_json(&object);
    let back = from_json_document(doc.clone(), 1)
        .map_err(|e| TestCaseError::fail(format!("{doc} does not decode: {e}")))?;
    prop_assert_eq!(to_json(&back), doc);
    Ok(())
}

fn agent_samples() -> Vec<Vec<u8>> {
    use agent_message::Message as A;
    use control_message::Message as C;
    let agent = [
        A::Hello(pb::Hello::default()),
        A::Ack(pb::Ack::default()),
        A::Status(pb::StatusReport::default()),
        A::Heartbeat(pb::Heartbeat::default()),
    ]
    .into_iter()
    .map(|m| AgentMessage { message: Some(m) }.encode_to_vec());
    let control = [
        C::Welcome(pb::Welcome::default()),
        C::Upsert(pb::ReleaseUpsert::default()),
        C::Remove(pb::ReleaseRemove::default()),
        C::SyncComplete(pb::SyncComplete::default()),
        C::Heartbeat(pb::Heartbeat::default()),
    ]
    .into_iter()
    .map(|m| ControlMessage { message: Some(m) }.encode_to_vec());
    agent.chain(control).collect()
}

fn check_agent_messages(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = AgentMessage::decode(bytes) {
        prop_assert_eq!(AgentMessage::decode(m.encode_to_vec().as_slice()), Ok(m));
    }
    if let Ok(m) = ControlMessage::decode(bytes) {
        prop_assert_eq!(ControlMessage::decode(m.encode_to_vec().as_slice()), Ok(m));
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::props::config())]

    #[test]
    fn mutated_resources_decode_or_fail_cleanly(pick in any::<usize>(), edits in mutations()) {
        let corpus = encoded_corpus();
        check_resource(&mutate(corpus[pick % corpus.len()].clone(), &edits))?;
    }

    #[test]
    fn arbitrary_bytes_of_every_kind_decode_or_fail_cleanly(
        pick in any::<usize>(),
        inner in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let tags = kind_tags();
        check_resource(&wrapped(tags[pick % tags.len()], &inner))?;
    }

    #[test]
    fn agent_protocol_messages_decode_or_fail_cleanly(
        pick in any::<usize>(),
        edits in mutations(),
        raw in prop::collection::vec(any::<u8>(), 0..48),
    ) {
        let samples = agent_samples();
        check_agent_messages(&mutate(samples[pick % samples.len()].clone(), &edits))?;
        let mut tagged = samples[pick % samples.len()][..1].to_vec();
        tagged.extend_from_slice(&raw);
        check_agent_messages(&tagged)?;
        check_agent_messages(&raw)?;
        // The manifests an upsert's chunks carry, as the agent decodes them.
        let sample = crate::agent::encode_manifests(&[pb::ReleaseResource::default()]);
        for bytes in [raw.clone(), mutate(sample, &edits)] {
            if let Ok(resources) = crate::agent::decode_manifests(&bytes) {
                let again =
                    crate::agent::decode_manifests(&crate::agent::encode_manifests(&resources));
                prop_assert_eq!(again, Ok(resources));
            }
        }
    }
}
