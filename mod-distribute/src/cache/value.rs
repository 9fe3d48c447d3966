//! Values to and from codec bytes, with a fast path for `Vec<u8>` values.
//!
//! serde sees a `Vec<u8>` as a sequence of `u8`, which the codecs walk one
//! byte at a time (in profiles, most of the client cost of a cache `get` of a
//! 64-byte value). Both codecs (bincode 2 and postcard) write a byte sequence
//! and serde bytes the same way — a length prefix, then the raw bytes — so a
//! `Vec<u8>` is encoded and decoded as serde bytes instead: the same stored
//! form, copied in one go (the tests check the forms are identical).

use std::any::Any;
use std::fmt;

use mod_api::codec::{decode, Codec, DefaultCodec};
use mod_api::{Result, Value};
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

/// Appends the codec bytes of `value` to `buf`.
pub(crate) fn encode_value_into<V: Value>(value: &V, buf: &mut Vec<u8>) -> Result<()> {
    match (value as &dyn Any).downcast_ref::<Vec<u8>>() {
        Some(bytes) => DefaultCodec::encode_into(&Bytes(bytes), buf),
        None => DefaultCodec::encode_into(value, buf),
    }
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
        }
        let other = vec![1u32, 2, 3];
        let mut buf = Vec::new();
        encode_value_into(&other, &mut buf).unwrap();
        assert_eq!(decode_value::<Vec<u32>>(&buf).unwrap(), other);
        assert!(decode_value::<Vec<u8>>(&[200]).is_err(), "truncated");
    }
}
