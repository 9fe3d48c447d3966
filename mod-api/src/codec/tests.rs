use super::*;
use crate::error::ErrorKind;

#[test]
fn round_trip_and_garbage() {
    let v = (7u64, String::from("seven"), vec![1u8, 2, 3]);
    let bytes = encode(&v).unwrap();
    let back: (u64, String, Vec<u8>) = decode(&bytes).unwrap();
    assert_eq!(back, v);

    let err = decode::<(u64, String)>(&[0xff, 0xff, 0xff]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);

    let mut long = bytes.clone();
    long.push(0);
    let err = decode::<(u64, String, Vec<u8>)>(&long).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
}

/// A bincode length prefix of 2^40 (`fd` + u64 LE), then a few bytes.
fn bincode_bomb() -> Vec<u8> {
    let mut b = Bincode::encode(&(1u64 << 40)).unwrap();
    assert_eq!(b[0], 0xfd);
    b.extend_from_slice(b"abc");
    b
}

/// Before the limit, each of these aborted the process allocating 1 TiB.
#[test]
fn bincode_length_bombs_are_codec_errors() {
    let bomb = bincode_bomb();
    let kind = |r: Result<()>| r.unwrap_err().kind();
    let string = Bincode::decode::<String>(&bomb).map(drop);
    assert_eq!(kind(string), ErrorKind::Codec);
    let bytes = Bincode::decode::<serde_bytes_like::Buf>(&bomb).map(drop);
    assert_eq!(kind(bytes), ErrorKind::Codec);
    let seq = Bincode::decode::<Vec<u64>>(&bomb).map(drop);
    assert_eq!(kind(seq), ErrorKind::Codec);
    let nested = Bincode::decode::<Vec<String>>(&bomb).map(drop);
    assert_eq!(kind(nested), ErrorKind::Codec);
    // Behind a valid prefix: a u64, then the bomb as the string.
    let mut behind = Bincode::encode(&7u64).unwrap();
    behind.extend_from_slice(&bomb);
    let pair = Bincode::decode::<(u64, String)>(&behind).map(drop);
    assert_eq!(kind(pair), ErrorKind::Codec);
}

/// Values at every tier boundary still decode: the limit never rejects valid input.
#[test]
fn valid_values_of_every_size_decode() {
    for len in [
        0usize,
        1,
        4000,
        4096,
        4097,
        65_536,
        70_000,
        1 << 20,
        (1 << 20) + 1,
        3 << 20,
    ] {
        let text = "x".repeat(len);
        let many: Vec<String> = (0..len / 1000 + 1).map(|i| "y".repeat(i % 997)).collect();
        let v = (text, many, vec![9u8; len / 2]);
        assert_eq!(
            Bincode::decode::<(String, Vec<String>, Vec<u8>)>(&Bincode::encode(&v).unwrap())
                .unwrap(),
            v
        );
        #[cfg(feature = "postcard")]
        assert_eq!(
            Postcard::decode::<(String, Vec<String>, Vec<u8>)>(&Postcard::encode(&v).unwrap())
                .unwrap(),
            v
        );
    }
}

/// bincode counts each primitive at its size in memory (8 bytes for a
/// `u64` that a varint writes in 1): many small integers claim several
/// times their encoded size, and still decode at every tier.
#[test]
fn many_small_integers_decode() {
    for n in [1usize, 300, 1200, 5_000, 70_000, 400_000] {
        let ids: Vec<u64> = (0..n as u64).map(|i| i % 200).collect();
        let wide: Vec<u128> = vec![1; n / 4];
        let v = (ids, wide);
        let bytes = Bincode::encode(&v).unwrap();
        assert_eq!(
            Bincode::decode::<(Vec<u64>, Vec<u128>)>(&bytes).unwrap(),
            v,
            "n = {n}"
        );
    }
}

#[cfg(feature = "postcard")]
#[test]
fn postcard_length_bombs_are_codec_errors() {
    // LEB128 varint of 2^40 (a length prefix is written as a u64 is), then a few bytes.
    let mut bomb = Postcard::encode(&(1u64 << 40)).unwrap();
    assert_eq!(bomb.len(), 6);
    bomb.extend_from_slice(b"abc");
    for r in [
        Postcard::decode::<String>(&bomb).map(drop),
        Postcard::decode::<serde_bytes_like::Buf>(&bomb).map(drop),
        Postcard::decode::<Vec<u64>>(&bomb).map(drop),
        Postcard::decode::<Vec<String>>(&bomb).map(drop),
    ] {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Codec);
    }
}

/// Random and mutated inputs never panic or abort (the fuzz runner does millions).
#[test]
fn random_inputs_are_errors_or_values() {
    let seed = encode(&(42u64, String::from("hello"), vec![String::from("a"); 3])).unwrap();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..20_000 {
        let mut input = if i % 2 == 0 { seed.clone() } else { Vec::new() };
        let extra = (next() % 24) as usize;
        input.extend((0..extra).map(|_| next() as u8));
        if let Some(b) = input.get_mut(next() as usize % seed.len()) {
            *b = next() as u8;
        }
        let _ = Bincode::decode::<(u64, String, Vec<String>)>(&input);
        let _ = Bincode::decode::<Vec<u8>>(&input);
        let _ = decode::<crate::Error>(&input);
        let _ = decode::<crate::Instance>(&input);
    }
}

/// A byte buffer decoded through serde's bytes path (as `serde_bytes` does).
mod serde_bytes_like {
    /// Owned bytes via `deserialize_byte_buf`.
    pub struct Buf;

    impl<'de> serde::Deserialize<'de> for Buf {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Buf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, _: &[u8]) -> Result<Buf, E> {
                    Ok(Buf)
                }
                fn visit_byte_buf<E>(self, _: Vec<u8>) -> Result<Buf, E> {
                    Ok(Buf)
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
}

/// The measured size is the encoded size, on the fast paths too.
#[test]
fn check_value_size_measures_what_encode_writes() {
    fn exact<T: Serialize + std::any::Any>(value: T) {
        let len = encode(&value).unwrap().len();
        assert!(check_value_size("cache", "t", &value, len).is_ok());
        let err = check_value_size("cache", "t", &value, len - 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
        assert!(!err.is_retryable());
    }
    for n in [0usize, 1, 127, 128, 250, 251, 300, 65_535, 65_536, 100_000] {
        exact(vec![7u8; n]);
        exact("s".repeat(n));
        exact(("s".repeat(n), n as u64));
    }
}

#[test]
fn a_reply_tells_the_method_error_by_its_first_byte() {
    let ok: std::result::Result<String, String> = Ok("ok".into());
    let err: std::result::Result<String, String> = Err("no".into());
    assert!(!reply_is_err(&encode(&ok).unwrap()));
    assert!(reply_is_err(&encode(&err).unwrap()));
    // A unit `Ok` and an empty reply are not errors.
    assert!(!reply_is_err(&encode(&Ok::<(), u8>(())).unwrap()));
    assert!(!reply_is_err(&[]));
}
