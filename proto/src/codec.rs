//! The codec every generated client and server uses: prost's, with a small
//! first buffer. Tonic gives each stream an 8 KiB buffer to encode into and
//! another to decode from, allocated when the stream opens; an agent's
//! session is one long-lived stream each way, so 10,000 mostly idle agents
//! cost a coordinator those buffers 10,000 times over, for messages
//! (heartbeats, acknowledgements) of a few dozen bytes. A buffer still
//! grows to fit a bigger message (a log chunk, an assignment), as before.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The first size of each stream's encode and decode buffer.
pub const FIRST_BUFFER_BYTES: usize = 1024;
/// How much an encoder batches before it yields: tonic's default.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Prost's codec with [`FIRST_BUFFER_BYTES`] buffers.
#[derive(Debug, Clone, Copy)]
pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        SmallBuffers(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(FIRST_BUFFER_BYTES, YIELD_THRESHOLD)
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
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
