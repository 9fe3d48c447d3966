//! The stored form of a cache entry: a tag byte, an optional TTL deadline,
//! then the codec bytes (see the key table in the [parent](super)).

use std::cell::RefCell;
use std::time::Duration;

use mod_api::{Error, Result, Value};

use crate::redis::codec::{decode_value_from, encode_value_into};

/// Longest expiry sent to Redis (100 years); longer ones are clamped.
pub(crate) const MAX_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
pub(crate) const TAG_PLAIN: u8 = b'0';
pub(crate) const TAG_DEADLINE: u8 = b'1';
const DEADLINE_HEADER: usize = 16;

thread_local! {
    /// Reused encoding buffer: `set` encodes without allocating.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A duration as Redis milliseconds: 0 means "already expired"; anything
/// shorter than 1 ms rounds up to 1 ms; capped at 100 years.
pub(crate) fn millis(d: Duration) -> u64 {
    if d.is_zero() {
        0
    } else {
        (d.as_millis().min(MAX_MS as u128) as u64).max(1)
    }
}

/// Encodes `value` behind a tag byte into the thread's scratch buffer and
/// hands the bytes to `f` (which copies them into a command).
pub(crate) fn with_payload<V: Value, R>(value: &V, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            buf.push(TAG_PLAIN);
            encode_value_into(value, &mut buf)?;
            let out = f(&buf);
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::new();
            }
            Ok(out)
        }
        Err(_) => {
            let mut buf = vec![TAG_PLAIN];
            encode_value_into(value, &mut buf)?;
            Ok(f(&buf))
        }
    })
}

/// Decodes a stored entry (tag byte, optional deadline header, codec bytes),
/// reusing its buffer where the value can (see [`decode_value_from`]).
pub(crate) fn decode_entry<V: Value>(cache: &str, bytes: Vec<u8>) -> Result<V> {
    let start = match bytes.first() {
        Some(&TAG_PLAIN) => 1,
        Some(&TAG_DEADLINE) if bytes.len() >= DEADLINE_HEADER => DEADLINE_HEADER,
        _ => {
            tracing::warn!(%cache, len = bytes.len(), "cache entry with an unknown header");
            return Err(Error::codec(format!(
                "cache {cache:?}: entry with an unknown header"
            )));
        }
    };
    decode_value_from(bytes, start)
}
