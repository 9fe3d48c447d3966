//! The Redis cache: typed, named caches shared by every node, with an optional
//! near cache ([`crate::near`]) in front.
//!
//! # Keys
//!
//! `<n>` is the cache name with `%` and `:` escaped (`%25`, `%3A`), so no name
//! can forge another's keys.
//!
//! | key | type | what |
//! |-----|------|------|
//! | `<prefix>:cache:<n>:k:<key>` | string | one entry: a tag byte, then the codec bytes. Tag `0`: no TTL deadline; tag `1`: 15 ASCII digits of the TTL deadline (ms, Redis clock) follow (only TTI caches with a TTL write it). The key's own expiry is the entry's expiry |
//! | `<prefix>:cache:<n>:idx` | zset | the cache's keys (members = user keys), score = expiry deadline in ms, or 2^50 + write time for entries without expiry. Used by `clear` and `max_entries` |
//! | `<prefix>:cache:<n>:clearing` | zset | keys a `clear` still has to delete (left only by a crashed clear; the next clear finishes it) |
//! | `<prefix>:near` | channel | near-cache invalidations (see [`crate::near`]) |
//!
//! # Operations (round trips)
//!
//! - `get`: one `GET` (no TTI); a Lua script with a TTI (reads and moves the
//!   expiry to min(now + TTI, TTL deadline) atomically). With a near cache: an
//!   in-process lookup, and on a miss one round trip (`GET` + `PTTL`, or the script).
//! - `set`: while recent writes of this handle mostly replaced live entries,
//!   first one `SET key v [PX ttl] XX` (+ `PUBLISH` with a near cache): a
//!   live entry is already indexed, so replacing it needs no index write
//!   (its index score stays until upkeep finds it due and re-scores it).
//!   When nothing was replaced (or the handle mostly writes new keys, or
//!   `get_or_load` just missed), one pipeline `SET key v [PX ttl]` + `ZADD
//!   idx` (+ `PUBLISH`). Not MULTI, and still safe: writers write the entry
//!   before the index member, removers drop the member before the entry,
//!   and every index change that deletes entries is an atomic script; so
//!   concurrent operations never leave a live entry missing from the index
//!   (at worst the index holds a member whose entry is gone, which upkeep
//!   drops). Only a connection lost between the two commands of one `set`
//!   (which then fails) could leave an unindexed entry, which `clear` would
//!   miss until it expires or is removed. A TTI cache with a TTL uses a
//!   script instead (the deadline is stamped with the Redis clock).
//! - `remove`: one pipeline `ZREM` + `DEL`; `contains`: `EXISTS` (no TTI refresh).
//! - `compare_and_set`: one script (compare the stored codec bytes, then
//!   `SET` + `ZADD` + `PUBLISH`), atomic against every other command; see
//!   `cas.rs` for values equal by `PartialEq` but not byte for byte.
//! - `clear`: a script moves the index aside and deletes its entries 500 per
//!   round trip, so a big cache never blocks Redis for long; other caches are
//!   untouched (nothing scans the keyspace). Entries set while a clear runs
//!   may survive it (they are concurrent with it).
//!
//! # Expiry and `max_entries` (approximate)
//!
//! Redis expires entries itself (`PX`/`PXAT`). Index members of expired
//! entries are dropped by the upkeep script, which a handle runs in the
//! background after every `max(1, min(64, max_entries / 16))` new members it
//! added (64 without `max_entries`, 1024 when the policy has neither TTL
//! nor TTI). The same script evicts, while the index holds more than
//! `max_entries` members, the lowest scores: the entries closest to expiry —
//! for a TTL cache the oldest written, for a TTI cache the least recently
//! read — and among entries without expiry the oldest written. So a cache can
//! exceed `max_entries` by about `max_entries / 16` per writing node between
//! upkeeps; [`RedisCache::maintain`] enforces the bound now.
//!
//! # Entries that do not decode
//!
//! An entry whose stored bytes do not decode as `V` (written by another
//! program, a build with another value type, or by hand) is never a crash:
//! `get` fails with `ErrorKind::Codec` (not retryable; logged at WARN) and
//! leaves the entry alone, so the caller learns that the data is bad rather
//! than seeing a miss; `get_or_load` treats it as a miss: it runs the loader
//! and overwrites the entry with the loaded value (once, no loop). `remove`,
//! `contains` and `clear` work on it as on any entry.
//!
//! Every node must open a cache with the same policy (the entry format and
//! near-cache invalidations depend on it).

mod cas;
mod entry;
mod lua;
mod upkeep;
mod write;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use mod_api::backend::check_name;
use mod_api::cache::Loader;
use mod_api::{async_trait, Cache, CachePolicy, Cas, ErrorKind, Result, Value};
use redis::{Cmd, Pipeline};

use self::entry::{decode_entry, millis};
use self::lua::{CLEAR, GET_TTI};
use crate::near::{clear_message, key_message_prefix, NearCache, NearHub};
use crate::redis::keys::{segment, Joined};
use crate::redis::script::{evalsha, run};
use crate::redis::{redis_error, Redis};
use mod_api::flight::{self, Flights};

/// Entries deleted per `clear` round trip, and upkeep work per script run.
const BATCH: usize = 500;

/// Keys and settings shared with background upkeep.
struct Shared {
    redis: Redis,
    name: String,
    /// `<prefix>:cache:<n>:k:` — an entry's key is this plus the user key.
    entry_base: String,
    idx: String,
    clearing: String,
    /// The near channel and message headers, when this cache has a near cache.
    channel: Option<String>,
    key_msg: Vec<u8>,
    clear_msg: Vec<u8>,
    max_entries: Option<u64>,
    upkeep_every: u64,
    new_members: AtomicU64,
    upkeep_running: AtomicBool,
    /// Recent writes that replaced a live entry minus those of new keys
    /// (clamped): `set` tries a plain overwrite first while it is not negative.
    overwrites: AtomicI32,
}

/// A named Redis cache of `V` values (see the [module docs](self)).
pub struct RedisCache<V> {
    shared: Arc<Shared>,
    ttl_ms: Option<u64>,
    tti_ms: Option<u64>,
    near: Option<Arc<NearCache<V>>>,
    flights: Flights<V>,
    _values: PhantomData<fn() -> V>,
}

impl<V: Value> RedisCache<V> {
    /// A handle on cache `name` with `policy`. With `near` and `policy.near`
    /// both set, reads go through a near cache kept coherent by `near`.
    pub fn new(
        redis: Redis,
        near: Option<Arc<NearHub>>,
        name: &str,
        policy: &CachePolicy,
    ) -> Result<Self> {
        check_name("cache", name)?;
        let n = segment(name);
        let near = match (near, &policy.near) {
            (Some(hub), Some(np)) => Some(NearCache::new(hub, name, np, policy.tti)),
            _ => None,
        };
        let ttl_ms = policy.ttl.map(millis);
        let tti_ms = policy.tti.map(millis);
        let upkeep_every = match policy.max_entries {
            Some(max) => (max / 16).clamp(1, 64),
            None if ttl_ms.is_some() || tti_ms.is_some() => 64,
            // Entries may still get a per-entry TTL: sweep now and then.
            None => 1024,
        };
        let shared = Shared {
            entry_base: redis.key(&["cache", &n, "k", ""]),
            idx: redis.key(&["cache", &n, "idx"]),
            clearing: redis.key(&["cache", &n, "clearing"]),
            channel: near.as_ref().map(|_| redis.key(&["near"])),
            key_msg: key_message_prefix(name),
            clear_msg: clear_message(name),
            redis,
            name: name.to_owned(),
            max_entries: policy.max_entries,
            upkeep_every,
            new_members: AtomicU64::new(0),
            upkeep_running: AtomicBool::new(false),
            overwrites: AtomicI32::new(0),
        };
        Ok(RedisCache {
            shared: Arc::new(shared),
            ttl_ms,
            tti_ms,
            near,
            flights: Flights::new(name, policy.max_value_bytes),
            _values: PhantomData,
        })
    }

    /// Runs index upkeep now: drops members of expired entries and evicts down
    /// to `max_entries`. Returns how many entries it evicted.
    #[tracing::instrument(level = "debug", skip_all, fields(cache = %self.shared.name))]
    pub async fn maintain(&self) -> Result<u64> {
        self.shared.maintain().await
    }

    /// The number of members of the cache's index: the entry count, plus
    /// expired entries not yet swept (an upper bound).
    pub async fn indexed_len(&self) -> Result<u64> {
        let mut conn = self.shared.redis.conn();
        redis::cmd("ZCARD")
            .arg(&self.shared.idx)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)
    }

    /// `get` for `get_or_load`: an entry that does not decode counts as a
    /// miss, so the loaded value overwrites it (see "Bad data in Redis" in the
    /// crate docs) instead of failing every load of the key until it expires.
    async fn get_or_miss(&self, key: &str) -> Result<Option<V>> {
        match self.get(key).await {
            Err(e) if e.kind() == ErrorKind::Codec => {
                tracing::warn!(
                    cache = %self.shared.name, key, error = %e.to_detached(),
                    "undecodable cache entry: loading the value again to overwrite it"
                );
                Ok(None)
            }
            got => got,
        }
    }

    /// How many entries the near cache holds, if there is one.
    #[cfg(test)]
    pub(crate) fn near_len(&self) -> Option<usize> {
        self.near.as_ref().map(|n| n.len())
    }

    fn key_cmd(&self, command: &str, key: &str) -> Cmd {
        let mut cmd =
            Cmd::with_capacity(2, command.len() + self.shared.entry_base.len() + key.len());
        cmd.arg(command).arg(Joined(&self.shared.entry_base, key));
        cmd
    }

    /// Reads without near cache: the entry and its remaining lifetime when
    /// `with_ttl` (for the near cache).
    async fn fetch(&self, key: &str, with_ttl: bool) -> Result<Option<(V, Option<Duration>)>> {
        let mut conn = self.shared.redis.conn();
        let name = &self.shared.name;
        if let Some(tti) = self.tti_ms {
            let bytes = self.shared.entry_base.len() + self.shared.idx.len() + 2 * key.len() + 20;
            let mut cmd = evalsha(&GET_TTI, 2, 4, bytes);
            cmd.arg(Joined(&self.shared.entry_base, key))
                .arg(&self.shared.idx)
                .arg(tti)
                .arg(key);
            let got: Option<(Vec<u8>, i64)> = run(&mut conn, &GET_TTI, &cmd).await?;
            return got
                .map(|(bytes, left)| {
                    Ok((
                        decode_entry(name, bytes)?,
                        Some(Duration::from_millis(left.max(0) as u64)),
                    ))
                })
                .transpose();
        }
        if !with_ttl {
            let got: Option<Vec<u8>> = self
                .key_cmd("GET", key)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            return got
                .map(|bytes| Ok((decode_entry(name, bytes)?, None)))
                .transpose();
        }
        let mut pipe = Pipeline::with_capacity(2);
        pipe.add_command(self.key_cmd("GET", key))
            .add_command(self.key_cmd("PTTL", key));
        let (got, pttl): (Option<Vec<u8>>, i64) =
            pipe.query_async(&mut conn).await.map_err(redis_error)?;
        // -1: no expiry; -2: expired between the two commands (not worth a copy).
        let left = match pttl {
            -1 => None,
            ms => Some(Duration::from_millis(ms.max(0) as u64)),
        };
        got.map(|bytes| Ok((decode_entry(name, bytes)?, left)))
            .transpose()
    }
}

#[async_trait]
impl<V: Value> Cache<V> for RedisCache<V> {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn get(&self, key: &str) -> Result<Option<V>> {
        let Some(near) = &self.near else {
            return Ok(self.fetch(key, false).await?.map(|(v, _)| v));
        };
        if let Some(v) = near.get(key).await {
            return Ok(Some(v));
        }
        let ticket = near.ticket(key);
        let Some((v, left)) = self.fetch(key, true).await? else {
            return Ok(None);
        };
        near.fill(key, v.clone(), left, ticket).await;
        Ok(Some(v))
    }

    async fn set(&self, key: &str, value: V) -> Result<()> {
        self.store(key, &value, self.ttl_ms, false).await
    }

    async fn set_with_ttl(&self, key: &str, value: V, ttl: Duration) -> Result<()> {
        self.store(key, &value, Some(millis(ttl)), false).await
    }

    async fn remove(&self, key: &str) -> Result<bool> {
        self.delete(key).await
    }

    async fn contains(&self, key: &str) -> Result<bool> {
        let mut conn = self.shared.redis.conn();
        let n: i64 = self
            .key_cmd("EXISTS", key)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(n > 0)
    }

    async fn clear(&self) -> Result<()> {
        let s = &*self.shared;
        let mut conn = s.redis.conn();
        let bytes = s.idx.len() + s.clearing.len() + s.entry_base.len() + s.clear_msg.len() + 64;
        let mut first = true;
        loop {
            let mut cmd = evalsha(&CLEAR, 2, 7, bytes);
            cmd.arg(&s.idx)
                .arg(&s.clearing)
                .arg(&s.entry_base)
                .arg(BATCH)
                .arg(if first { "1" } else { "0" })
                .arg(s.channel.as_deref().unwrap_or(""))
                .arg(&s.clear_msg);
            let left: u64 = run(&mut conn, &CLEAR, &cmd).await?;
            first = false;
            if left == 0 {
                break;
            }
        }
        if let Some(near) = &self.near {
            near.invalidate_all();
        }
        Ok(())
    }

    async fn get_or_load(&self, key: &str, loader: Loader<'_, V>) -> Result<V> {
        let fill = |value: V| async move {
            // The caller still gets the value; the cache just missed a fill.
            if let Err(e) = self.store(key, &value, self.ttl_ms, true).await {
                tracing::warn!(cache = %self.shared.name, error = %e, "loaded value not stored");
            }
        };
        flight::get_or_load(&self.flights, key, loader, || self.get_or_miss(key), fill).await
    }

    async fn compare_and_set(&self, key: &str, expected: Option<&V>, new: V) -> Result<Cas<V>>
    where
        V: PartialEq,
    {
        self.cas(key, expected, new).await
    }
}

#[cfg(test)]
mod cas_tests;
#[cfg(test)]
mod tests;
