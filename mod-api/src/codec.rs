//! The wire codec: how values become bytes when they leave the process.
//!
//! The monolith never calls a codec on a hot path; the distributed backends and
//! the RPC layer use [`DefaultCodec`]. It is bincode 2 in serde mode (pinned to an
//! exact version, so every process of a deployment agrees on the format), or
//! postcard with the `postcard` feature. Both sides of a deployment must be built
//! with the same choice.
//!
//! bincode is marked unmaintained (RUSTSEC-2025-0141); the format is stable and the
//! version is pinned, and postcard is offered as the maintained alternative.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Turns serializable values into bytes and back.
///
/// Generic and static (not object safe) so that encoding is monomorphised on the
/// hot path.
pub trait Codec: Send + Sync + 'static {
    /// A short name for logs and diagnostics.
    const NAME: &'static str;

    /// Encodes `value`, appending to `buf`.
    fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()>;

    /// Decodes a whole `T` from `bytes`; trailing bytes are an error.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T>;

    /// Encodes `value` into a new buffer.
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        Self::encode_into(value, &mut buf)?;
        Ok(buf)
    }

    /// The length `value` would encode to. The default encodes; codecs
    /// override it with a measuring pass that allocates nothing.
    fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize> {
        Self::encode(value).map(|b| b.len())
    }
}

/// The largest encoded value (cache entry, session data, queue message) a
/// building block accepts unless its configuration says otherwise: 16 MiB, the
/// default RPC frame limit, and well under the value limits of the stores
/// backends keep values in.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// Fails with a non-retryable [`ErrorKind::PayloadTooLarge`](crate::ErrorKind)
/// when an encoded value of `len` bytes is over `max` (the caller reports it).
/// `block` and `name` say where, e.g. `("cache", "users")`.
pub fn check_value_len(block: &str, name: &str, len: usize, max: usize) -> Result<()> {
    if len <= max {
        return Ok(());
    }
    Err(Error::new(
        crate::ErrorKind::PayloadTooLarge,
        format!("{block} {name:?}: value of {len} bytes exceeds max_value_bytes {max}"),
    ))
}

/// [`check_value_len`] for a value not encoded yet: measures it with
/// [`Codec::encoded_len`] (no allocation), so both packages accept the same
/// values. Byte vectors and strings are measured without a pass over them.
pub fn check_value_size<T: Serialize + std::any::Any>(
    block: &str,
    name: &str,
    value: &T,
    max: usize,
) -> Result<()> {
    let any = value as &dyn std::any::Any;
    let flat = any
        .downcast_ref::<Vec<u8>>()
        .map(Vec::len)
        .or_else(|| any.downcast_ref::<String>().map(String::len));
    let len = match flat {
        // Both codecs write a length prefix (encoded as a u64 is) and the bytes.
        Some(n) => DefaultCodec::encoded_len(&(n as u64))? + n,
        None => DefaultCodec::encoded_len(value)?,
    };
    check_value_len(block, name, len, max)
}

/// bincode 2 (serde mode, standard configuration: little endian, varint).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl Codec for Bincode {
    const NAME: &'static str = "bincode2";

    fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
        let failed = |e: bincode::error::EncodeError| {
            tracing::warn!(error = %e, "encode failed");
            Error::codec("cannot encode value").with_source(e)
        };
        let config = bincode::config::standard();
        // Sized first: bincode writes a `Vec<u8>` byte by byte, and growing the
        // buffer as it goes took more time than the encoding itself.
        let mut size = bincode::enc::write::SizeWriter::default();
        bincode::serde::encode_into_writer(value, &mut size, config).map_err(failed)?;
        buf.reserve(size.bytes_written);
        bincode::serde::encode_into_writer(value, Append(buf), config).map_err(failed)
    }

    fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize> {
        let mut size = bincode::enc::write::SizeWriter::default();
        bincode::serde::encode_into_writer(value, &mut size, bincode::config::standard())
            .map_err(|e| Error::codec("cannot encode value").with_source(e))?;
        Ok(size.bytes_written)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
        let (value, used) = bounded_decode::<T>(bytes).map_err(|e| {
            tracing::warn!(error = %e, len = bytes.len(), "decode failed");
            Error::codec(format!("cannot decode {}", std::any::type_name::<T>())).with_source(e)
        })?;
        if used != bytes.len() {
            tracing::warn!(used, len = bytes.len(), "trailing bytes after value");
            return Err(Error::codec(format!(
                "{} trailing bytes after {}",
                bytes.len() - used,
                std::any::type_name::<T>()
            )));
        }
        Ok(value)
    }
}

/// Decodes with a byte limit of the smallest tier that holds 16 times the input.
///
/// Why: bincode allocates a string or byte buffer of the length its prefix
/// claims before it reads the bytes, so 9 bytes claiming 2^40 allocated 1 TiB
/// and aborted the process. With a limit, bincode counts the bytes every such
/// buffer claims and fails once the count passes it. It also counts every
/// primitive at its size in memory (8 bytes for a `u64`), which a varint
/// encodes in as little as 1 byte: a valid value claims at most 16 times the
/// bytes it occupies (a `u128` of 1 byte), so a limit of 16 times the input
/// never rejects one (a `Vec<u64>` of small ids claimed 8 times its size,
/// and was refused while the limit was the input's length). The limit is a
/// const generic, hence tiers: a decode allocates at most the input's tier
/// (4 KiB at least; 4 GiB at most, so a value with more than 4 GiB of
/// strings, bytes and primitives does not decode). Sequences are
/// preallocated by serde's cautious size hint (at most 1 MiB each) and grow
/// only as their elements decode.
fn bounded_decode<T: DeserializeOwned>(
    bytes: &[u8],
) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
    use bincode::config::standard;
    use bincode::serde::decode_from_slice as from;
    const K: usize = 1024;
    match bytes.len().saturating_mul(16) {
        n if n <= 4 * K => from(bytes, standard().with_limit::<{ 4 * K }>()),
        n if n <= 64 * K => from(bytes, standard().with_limit::<{ 64 * K }>()),
        n if n <= K * K => from(bytes, standard().with_limit::<{ K * K }>()),
        n if n <= 16 * K * K => from(bytes, standard().with_limit::<{ 16 * K * K }>()),
        n if n <= 256 * K * K => from(bytes, standard().with_limit::<{ 256 * K * K }>()),
        // Past any frame or value size modkit accepts by default.
        _ => from(bytes, standard().with_limit::<{ u32::MAX as usize }>()),
    }
}

/// A bincode writer appending to a vector.
struct Append<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for Append<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), bincode::error::EncodeError> {
        // Most writes are one byte (each element of a `Vec<u8>`): a push
        // inlines, a copy of a slice of unknown length calls `memcpy`.
        match bytes {
            [b] => self.0.push(*b),
            _ => self.0.extend_from_slice(bytes),
        }
        Ok(())
    }
}

/// postcard (with the `postcard` feature).
#[cfg(feature = "postcard")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

#[cfg(feature = "postcard")]
impl Codec for Postcard {
    const NAME: &'static str = "postcard";

    fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
        let bytes = postcard::to_allocvec(value).map_err(|e| {
            tracing::warn!(error = %e, "encode failed");
            Error::codec("cannot encode value").with_source(e)
        })?;
        buf.extend_from_slice(&bytes);
        Ok(())
    }

    fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize> {
        postcard::experimental::serialized_size(value)
            .map_err(|e| Error::codec("cannot encode value").with_source(e))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
        let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| {
            tracing::warn!(error = %e, len = bytes.len(), "decode failed");
            Error::codec(format!("cannot decode {}", std::any::type_name::<T>())).with_source(e)
        })?;
        if !rest.is_empty() {
            return Err(Error::codec(format!(
                "{} trailing bytes after {}",
                rest.len(),
                std::any::type_name::<T>()
            )));
        }
        Ok(value)
    }
}

/// The codec this build uses on the wire: postcard with the `postcard` feature, else bincode 2.
#[cfg(not(feature = "postcard"))]
pub type DefaultCodec = Bincode;
/// The codec this build uses on the wire: postcard with the `postcard` feature, else bincode 2.
#[cfg(feature = "postcard")]
pub type DefaultCodec = Postcard;

/// Whether `reply`, a method's `Result<T, E>` as a dispatcher encodes it,
/// holds the method's own error (`Err`): what call metrics count as an
/// `application` error without decoding `T` or `E`.
///
/// Both codecs write an enum's variant index first, as a varint: `Ok` is a
/// first byte 0, `Err` a first byte 1.
pub fn reply_is_err(reply: &[u8]) -> bool {
    reply.first() == Some(&1)
}

/// Encodes with [`DefaultCodec`].
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    DefaultCodec::encode(value)
}

/// Decodes with [`DefaultCodec`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    DefaultCodec::decode(bytes)
}

#[cfg(test)]
mod tests;
