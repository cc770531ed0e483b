//! The gRPC codec of every Troupe service: prost, with small starting buffers.
//!
//! tonic gives each call an encode and a decode buffer of 8 KiB at its start, and a
//! long-lived stream holds both while it idles: the control plane holds one such stream per
//! connected agent and one per open watch. These buffers start at [`START_BYTES`] and grow
//! with the messages that pass, so an idle stream costs 14 KiB less and a busy one the same.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Bytes each call's encode and decode buffers start with.
pub const START_BYTES: usize = 1024;
/// Bytes a streaming encoder gathers before it yields (tonic's default).
const YIELD_BYTES: usize = 32 * 1024;

/// The prost codec with buffers that start small (see the module docs).
#[derive(Debug, Clone)]
pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(START_BYTES, YIELD_BYTES))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(START_BYTES, YIELD_BYTES))
    }
}
