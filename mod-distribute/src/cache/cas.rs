//! `compare_and_set` of the Redis cache: one script compares the stored
//! codec bytes and writes as `set` does (see [`COMPARE_AND_SET`]).
//!
//! Bytes are compared first because Redis cannot decode; values equal by
//! `PartialEq` may still encode differently (a `HashMap`'s order), so a
//! mismatch whose current value equals the expected one is tried again with
//! the current bytes as the expectation (a few times: each retry means a
//! concurrent write replaced those bytes).

use mod_api::{Cas, Result, Value};

use super::entry::TAG_PLAIN;
use super::lua::COMPARE_AND_SET;
use super::RedisCache;
use crate::redis::codec::{decode_value, encode_value, encode_value_into};
use crate::redis::keys::Joined;
use crate::redis::script::{evalsha, run};

/// Script runs of one `compare_and_set` whose current value equals the
/// expected one but not byte for byte.
const EQUAL_BUT_NOT_SAME_BYTES: usize = 4;

impl<V: Value + PartialEq> RedisCache<V> {
    /// See [`Cache::compare_and_set`](mod_api::Cache::compare_and_set).
    pub(super) async fn cas(&self, key: &str, expected: Option<&V>, new: V) -> Result<Cas<V>> {
        let s = &*self.shared;
        if self.stores_nothing(self.ttl_ms) {
            // This cache holds nothing (as in `store`): every entry is absent.
            return Ok(match expected {
                None => Cas::Stored,
                Some(_) => Cas::Mismatch(None),
            });
        }
        let mut payload = vec![TAG_PLAIN];
        encode_value_into(&new, &mut payload)?;
        let mut expect = expected.map(encode_value).transpose()?;
        let mut conn = s.redis.conn();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let expect_bytes = expect.as_deref().unwrap_or_default();
            let mut cmd = evalsha(
                &COMPARE_AND_SET,
                2,
                10,
                s.entry_base.len()
                    + s.idx.len()
                    + 3 * key.len()
                    + expect_bytes.len()
                    + payload.len()
                    + 128,
            );
            cmd.arg(Joined(&s.entry_base, key))
                .arg(&s.idx)
                .arg(if expect.is_some() { "1" } else { "0" })
                .arg(expect_bytes)
                .arg(&payload)
                .arg(self.ttl_ms.unwrap_or(0))
                .arg(self.tti_ms.unwrap_or(0))
                .arg(key);
            match &s.channel {
                Some(channel) => cmd.arg(channel).arg(s.invalidation(key)),
                None => cmd.arg("").arg(""),
            };
            let (status, bytes): (i64, Vec<u8>) = run(&mut conn, &COMPARE_AND_SET, &cmd).await?;
            match status {
                1 => {
                    if bytes == b"1" {
                        self.shared.clone().new_member();
                    }
                    break Cas::Stored;
                }
                0 => break Cas::Mismatch(None),
                _ => {
                    let current: V = decode_value(&bytes)?;
                    if expected == Some(&current) && attempt < EQUAL_BUT_NOT_SAME_BYTES {
                        expect = Some(bytes);
                        continue;
                    }
                    break Cas::Mismatch(Some(current));
                }
            }
        };
        if let Some(near) = &self.near {
            // Stored: our own write is visible to us at once. Mismatch: the
            // near copy that led the caller to expect another value is stale.
            near.invalidate(key).await;
        }
        Ok(outcome)
    }
}
