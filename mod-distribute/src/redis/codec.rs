//! Values to and from codec bytes, with a fast path for `Vec<u8>` values:
//! the stored form of cache entries and session data.
//!
//! serde sees a `Vec<u8>` as a sequence of `u8`, which the codecs walk one
//! byte at a time (in profiles, most of the client cost of a cache `get` of a
//! 64-byte value). Both codecs (bincode 2 and postcard) write a byte sequence
//! and serde bytes the same way — a length prefix, then the raw bytes — so a
//! `Vec<u8>` is encoded and decoded as serde bytes instead: the same stored
//! form, copied in one go (the tests check the forms are identical). A
//! cache read even keeps the buffer Redis's reply came in: the codec points
//! at the bytes inside it, and the header before them is cut off.

use std::any::Any;
use std::fmt;

use mod_api::codec::{decode, Codec, DefaultCodec};
use mod_api::{Error, Result, Value};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A byte slice serialized as serde bytes.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A byte vector deserialized from serde bytes.
struct ByteBuf(Vec<u8>);

struct ByteBufVisitor;

impl<'de> Visitor<'de> for ByteBufVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> std::result::Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_byte_buf(ByteBufVisitor).map(ByteBuf)
    }
}

/// Where a codec found serde bytes: borrowed from the input (address and
/// length only, so the type owns nothing), or a copy when it could not lend.
enum BytesAt {
    Borrowed { addr: usize, len: usize },
    Copied(Vec<u8>),
}

struct BytesAtVisitor;

impl<'de> Visitor<'de> for BytesAtVisitor {
    type Value = BytesAt;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> std::result::Result<BytesAt, E> {
        Ok(BytesAt::Borrowed {
            addr: v.as_ptr() as usize,
            len: v.len(),
        })
    }

    fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<BytesAt, E> {
        Ok(BytesAt::Copied(v.to_vec()))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> std::result::Result<BytesAt, E> {
        Ok(BytesAt::Copied(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<BytesAt, A::Error> {
        ByteBufVisitor.visit_seq(seq).map(BytesAt::Copied)
    }
}

impl<'de> Deserialize<'de> for BytesAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_bytes(BytesAtVisitor)
    }
}

/// Appends the codec bytes of `value` to `buf`.
pub(crate) fn encode_value_into<V: Value>(value: &V, buf: &mut Vec<u8>) -> Result<()> {
    match (value as &dyn Any).downcast_ref::<Vec<u8>>() {
        Some(bytes) => DefaultCodec::encode_into(&Bytes(bytes), buf),
        None => DefaultCodec::encode_into(value, buf),
    }
}

/// The codec bytes of `value`.
pub(crate) fn encode_value<V: Value>(value: &V) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    encode_value_into(value, &mut buf)?;
    Ok(buf)
}

/// Decodes a value from its codec bytes.
pub(crate) fn decode_value<V: Value>(bytes: &[u8]) -> Result<V> {
    let mut slot: Option<V> = None;
    if let Some(out) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Vec<u8>>>() {
        *out = Some(decode::<ByteBuf>(bytes)?.0);
    }
    match slot {
        Some(v) => Ok(v),
        None => decode(bytes),
    }
}

/// Decodes a value from the codec bytes at `bytes[start..]`; a `Vec<u8>`
/// value takes over `bytes` itself (cut to the value) instead of a copy.
pub(crate) fn decode_value_from<V: Value>(bytes: Vec<u8>, start: usize) -> Result<V> {
    let mut slot: Option<V> = None;
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<Vec<u8>>>() {
        Some(out) => *out = Some(take_bytes(bytes, start)?),
        None => return decode(bytes.get(start..).unwrap_or_default()),
    }
    slot.ok_or_else(|| Error::internal("byte vector lost in decoding"))
}

/// The serde bytes encoded at `bytes[start..]`, in `bytes` itself when the
/// codec lends them.
fn take_bytes(mut bytes: Vec<u8>, start: usize) -> Result<Vec<u8>> {
    let at = decode::<BytesAt>(bytes.get(start..).unwrap_or_default())?;
    match at {
        BytesAt::Copied(v) => Ok(v),
        BytesAt::Borrowed { len: 0, .. } => Ok(Vec::new()),
        BytesAt::Borrowed { addr, len } => {
            // The codec lent a slice of the input: find it in `bytes`.
            let from = addr.wrapping_sub(bytes.as_ptr() as usize);
            match from.checked_add(len) {
                Some(to) if from >= start && to <= bytes.len() => {
                    bytes.truncate(to);
                    bytes.drain(..from);
                    Ok(bytes)
                }
                _ => Err(Error::codec("codec lent bytes outside its input")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_vectors_keep_the_codec_form() {
        for len in [0usize, 1, 64, 250, 251, 252, 300, 65_535, 65_536, 70_000] {
            let v: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut fast = Vec::new();
            encode_value_into(&v, &mut fast).unwrap();
            assert_eq!(fast, mod_api::codec::encode(&v).unwrap(), "len {len}");
            assert_eq!(decode_value::<Vec<u8>>(&fast).unwrap(), v);
            // Both codecs lend: a read keeps Redis's buffer.
            let lent = matches!(decode::<BytesAt>(&fast), Ok(BytesAt::Borrowed { .. }));
            assert!(lent, "len {len}: the codec copied");
            let mut stored = b"head".to_vec();
            stored.extend_from_slice(&fast);
            assert_eq!(decode_value_from::<Vec<u8>>(stored, 4).unwrap(), v);
        }
        let other = vec![1u32, 2, 3];
        let mut buf = Vec::new();
        encode_value_into(&other, &mut buf).unwrap();
        assert_eq!(decode_value::<Vec<u32>>(&buf).unwrap(), other);
        let mut stored = vec![0];
        stored.extend_from_slice(&buf);
        assert_eq!(decode_value_from::<Vec<u32>>(stored, 1).unwrap(), other);
        assert!(decode_value::<Vec<u8>>(&[200]).is_err(), "truncated");
        assert!(
            decode_value_from::<Vec<u8>>(vec![0, 200], 1).is_err(),
            "truncated"
        );
        assert!(
            decode_value_from::<Vec<u8>>(vec![0, 1, 7, 7], 1).is_err(),
            "trailing"
        );
    }
}
