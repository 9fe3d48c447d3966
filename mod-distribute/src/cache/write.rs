//! The write path of the Redis cache: `set` (overwrite first or indexed
//! write) and `remove` (see the [parent](super) docs, "Operations").

use std::sync::atomic::Ordering;

use mod_api::session::now_millis;
use mod_api::{Result, Value};
use redis::{Cmd, Pipeline};

use super::entry::with_payload;
use super::lua::{NO_EXPIRY, SET_DEADLINE};
use super::{RedisCache, Shared};
use crate::redis::keys::Joined;
use crate::redis::redis_error;
use crate::redis::script::{evalsha, run};

/// Bounds of [`Shared::overwrites`]: how many recent writes of new keys (or
/// overwrites) it remembers.
const BIAS_LIMIT: i32 = 8;

impl Shared {
    /// Whether recent writes mostly replaced live entries, so that a `SET XX`
    /// (one command, no index change) likely succeeds.
    fn expects_overwrite(&self) -> bool {
        self.overwrites.load(Ordering::Relaxed) >= 0
    }

    /// Records whether a write found its key live (`existed`) or new.
    fn saw_write(&self, existed: bool) {
        let now = self.overwrites.load(Ordering::Relaxed);
        let next = if existed { now + 1 } else { now - 1 };
        // Racy on purpose: a lost update only shifts a heuristic.
        self.overwrites
            .store(next.clamp(-BIAS_LIMIT, BIAS_LIMIT), Ordering::Relaxed);
    }

    pub(super) fn invalidation(&self, key: &str) -> Vec<u8> {
        let mut msg = Vec::with_capacity(self.key_msg.len() + key.len());
        msg.extend_from_slice(&self.key_msg);
        msg.extend_from_slice(key.as_bytes());
        msg
    }

    /// `SET <entry> <payload> [PX px] [XX]`.
    fn set_cmd(&self, key: &str, payload: &[u8], px: Option<u64>, xx: bool) -> Cmd {
        let mut set = Cmd::with_capacity(6, payload.len() + self.entry_base.len() + key.len() + 32);
        set.arg("SET")
            .arg(Joined(&self.entry_base, key))
            .arg(payload);
        if let Some(px) = px {
            set.arg("PX").arg(px);
        }
        if xx {
            set.arg("XX");
        }
        set
    }

    /// Appends the near-cache invalidation of `key`, if this cache has a near cache.
    fn publish(&self, pipe: &mut Pipeline, key: &str) {
        if let Some(channel) = &self.channel {
            pipe.cmd("PUBLISH")
                .arg(channel)
                .arg(self.invalidation(key))
                .ignore();
        }
    }
}

impl<V: Value> RedisCache<V> {
    /// Whether a write with `ttl` (ms) keeps nothing: it expires at once, or
    /// the cache's policy holds no entry at all.
    pub(super) fn stores_nothing(&self, ttl: Option<u64>) -> bool {
        ttl == Some(0) || self.tti_ms == Some(0) || self.shared.max_entries == Some(0)
    }

    /// Writes `value` with `ttl` (ms, `None` = none; the TTI applies on top).
    /// `fresh`: the caller just saw the key missing (skip the overwrite try).
    pub(super) async fn store(
        &self,
        key: &str,
        value: &V,
        ttl: Option<u64>,
        fresh: bool,
    ) -> Result<()> {
        if self.stores_nothing(ttl) {
            // Expires at once (or the cache holds nothing): same as removing it.
            self.delete(key).await?;
            return Ok(());
        }
        let s = &*self.shared;
        let new_member = match (ttl, self.tti_ms) {
            (Some(ttl), Some(tti)) => self.store_deadline(key, value, ttl, tti).await?,
            (ttl, tti) => {
                let px = ttl.or(tti);
                let replaced =
                    !fresh && s.expects_overwrite() && self.overwrite(key, value, px).await?;
                if replaced {
                    s.saw_write(true);
                    false
                } else {
                    let added = self.store_indexed(key, value, px).await?;
                    s.saw_write(!added);
                    added
                }
            }
        };
        if let Some(near) = &self.near {
            // Our own write is visible to us at once, whatever the pub/sub does.
            near.invalidate(key).await;
        }
        if new_member {
            self.shared.clone().new_member();
        }
        Ok(())
    }

    /// `SET XX`: replaces a live entry, which is indexed already (see the
    /// parent docs); `false` when there was none and nothing was written.
    async fn overwrite(&self, key: &str, value: &V, px: Option<u64>) -> Result<bool> {
        let s = &*self.shared;
        let mut conn = s.redis.conn();
        let replaced = if s.channel.is_none() {
            let cmd = with_payload(value, |payload| s.set_cmd(key, payload, px, true))?;
            let reply: Option<redis::Value> =
                cmd.query_async(&mut conn).await.map_err(redis_error)?;
            reply.is_some()
        } else {
            let pipe = with_payload(value, |payload| {
                let mut pipe = Pipeline::with_capacity(2);
                pipe.add_command(s.set_cmd(key, payload, px, true));
                // Also sent when nothing was replaced: a spurious invalidation is harmless.
                s.publish(&mut pipe, key);
                pipe
            })?;
            let (reply,): (Option<redis::Value>,) =
                pipe.query_async(&mut conn).await.map_err(redis_error)?;
            reply.is_some()
        };
        Ok(replaced)
    }

    /// `SET` then `ZADD` of the index member (one pipeline); whether the member is new.
    async fn store_indexed(&self, key: &str, value: &V, px: Option<u64>) -> Result<bool> {
        let s = &*self.shared;
        let score = match px {
            Some(px) => now_millis().saturating_add(px),
            None => NO_EXPIRY + now_millis(),
        };
        let pipe = with_payload(value, |payload| {
            let mut pipe = Pipeline::with_capacity(3);
            pipe.add_command(s.set_cmd(key, payload, px, false))
                .ignore();
            pipe.cmd("ZADD").arg(&s.idx).arg(score).arg(key);
            s.publish(&mut pipe, key);
            pipe
        })?;
        let (added,): (i64,) = pipe
            .query_async(&mut s.redis.conn())
            .await
            .map_err(redis_error)?;
        Ok(added > 0)
    }

    /// A TTI cache with a TTL: the script stamps the deadline with the Redis clock.
    async fn store_deadline(&self, key: &str, value: &V, ttl: u64, tti: u64) -> Result<bool> {
        let s = &*self.shared;
        let cmd = with_payload(value, |payload| {
            let mut cmd = evalsha(
                &SET_DEADLINE,
                2,
                8,
                payload.len() + s.entry_base.len() + s.idx.len() + 3 * key.len() + 128,
            );
            cmd.arg(Joined(&s.entry_base, key))
                .arg(&s.idx)
                .arg(payload)
                .arg(ttl)
                .arg(tti)
                .arg(key);
            match &s.channel {
                Some(channel) => cmd.arg(channel).arg(s.invalidation(key)),
                None => cmd.arg("").arg(""),
            };
            cmd
        })?;
        let added: i64 = run(&mut s.redis.conn(), &SET_DEADLINE, &cmd).await?;
        Ok(added > 0)
    }

    /// Removes `key`; whether it was there.
    pub(super) async fn delete(&self, key: &str) -> Result<bool> {
        let s = &*self.shared;
        let mut pipe = Pipeline::with_capacity(3);
        // Index member first, entry second (see the parent docs).
        pipe.cmd("ZREM").arg(&s.idx).arg(key).ignore();
        pipe.add_command(self.key_cmd("DEL", key));
        s.publish(&mut pipe, key);
        let (deleted,): (i64,) = pipe
            .query_async(&mut s.redis.conn())
            .await
            .map_err(redis_error)?;
        if let Some(near) = &self.near {
            near.invalidate(key).await;
        }
        Ok(deleted > 0)
    }
}
