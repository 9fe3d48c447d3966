//! The in-process cache: a [`moka`] sync cache per name.
//!
//! Values are kept by value (moved in, cloned out) and never serialized. moka's
//! sync cache, not its future one: none of its calls wait for anything but
//! short internal locks, so the async methods here never suspend and their
//! futures stay small; `get_or_load` runs its own single flight ([`mod_api::flight`]).
//!
//! # Expiry and eviction
//!
//! - The policy's TTI is moka's time to idle: reads (`get`, a hit of
//!   `get_or_load`) and writes refresh it; `contains` does not.
//! - The TTL (the policy's, or the one given to `set_with_ttl`, which replaces it
//!   for that entry) is a per-entry expiry through moka's [`Expiry`], so a
//!   per-entry TTL may be longer than the policy's. An entry goes at whichever of
//!   TTL and TTI comes first.
//! - `max_entries` is moka's `max_capacity` (each entry weighs 1) with LRU
//!   eviction. moka evicts in batched maintenance, so the count may briefly
//!   exceed the bound between writes; it holds exactly once pending maintenance
//!   ran ([`MokaCache::run_pending_tasks`]), and moka runs it on its own after
//!   a few writes. LRU (not moka's default TinyLFU admission) so that a value
//!   just `set` is kept and the least recently used one goes, as with Redis.
//!
//! # Compare-and-set
//!
//! moka's own compute calls exclude each other but not plain inserts, so
//! every write of a key (`set`, `set_with_ttl`, `remove`, a `get_or_load`
//! fill, `compare_and_set`) holds one of 64 mutexes, picked by the
//! key's hash, for the moka call alone (never across an await): a
//! compare-and-set's read and write are then one step for every writer, as
//! the Redis script is. Reads take no lock.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mod_api::cache::Loader;
use mod_api::{async_trait, Cache, CachePolicy, Cas, Result, Value};
use moka::policy::{EvictionPolicy, Expiry};

use mod_api::flight::{self, Flights};

/// Longest duration handed to moka: it panics above 1000 years, and nobody
/// needs more than "forever" (a century).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Write locks per cache (see "Compare-and-set" above): enough that writers
/// of different keys rarely share one on a many-core machine.
const STRIPES: usize = 64;

/// What the cache stores: the value and the TTL that applies to it.
#[derive(Clone)]
struct Entry<V> {
    value: V,
    /// The per-entry TTL, or the policy's, measured from the last write.
    ttl: Option<Duration>,
}

/// Tells moka when an entry ends: `ttl` after each write of it.
struct EntryExpiry;

impl<V> Expiry<String, Entry<V>> for EntryExpiry {
    fn expire_after_create(&self, _: &String, entry: &Entry<V>, _: Instant) -> Option<Duration> {
        entry.ttl
    }

    // An overwrite starts a new lifetime with the new entry's TTL (possibly none).
    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry<V>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        entry.ttl
    }
}

/// A named in-process cache of `V` values (see the [module docs](self)).
pub struct MokaCache<V> {
    name: String,
    /// The policy's TTL, applied to entries stored without their own.
    ttl: Option<Duration>,
    inner: moka::sync::Cache<String, Entry<V>>,
    /// The `get_or_load` calls running a loader.
    flights: Flights<V>,
    /// Write locks by key hash (see "Compare-and-set" in the module docs).
    stripes: Box<[Mutex<()>]>,
    hasher: RandomState,
}

impl<V: Value> MokaCache<V> {
    /// A cache named `name` with `policy` (its near-cache part is ignored: this
    /// cache is already in process). `max_entries = 0` stores nothing.
    pub fn new(name: &str, policy: &CachePolicy) -> Self {
        let mut builder = moka::sync::Cache::builder()
            .name(name)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(EntryExpiry);
        if let Some(max) = policy.max_entries {
            builder = builder.max_capacity(max);
        }
        if let Some(tti) = policy.tti {
            builder = builder.time_to_idle(tti.min(MAX_DURATION));
        }
        MokaCache {
            name: name.to_owned(),
            ttl: policy.ttl.map(|d| d.min(MAX_DURATION)),
            inner: builder.build(),
            flights: Flights::new(name, policy.max_value_bytes),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The write lock of `key`; held for one moka call, never across an await.
    fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        let at = self.hasher.hash_one(key) as usize % STRIPES;
        self.stripes[at].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts under the key's write lock.
    fn insert(&self, key: &str, entry: Entry<V>) {
        let _write = self.lock(key);
        self.inner.insert(key.to_owned(), entry);
    }

    /// Runs moka's pending maintenance: evictions beyond `max_entries` and
    /// removal of expired entries. Afterwards [`entry_count`](Self::entry_count)
    /// is at most `max_entries`.
    pub async fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks();
    }

    /// The number of entries as of the last maintenance (may include entries
    /// expired or evicted since; exact after [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    fn entry(&self, value: V, ttl: Option<Duration>) -> Entry<V> {
        Entry {
            value,
            ttl: ttl.or(self.ttl),
        }
    }
}

#[async_trait]
impl<V: Value> Cache<V> for MokaCache<V> {
    fn name(&self) -> &str {
        &self.name
    }

    // Spans and failures are the observe layer's (mod_api::layer).
    async fn get(&self, key: &str) -> Result<Option<V>> {
        Ok(self.inner.get(key).map(|e| e.value))
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<V>>> {
        Some(Ok(self.inner.get(key).map(|e| e.value)))
    }

    async fn set(&self, key: &str, value: V) -> Result<()> {
        let entry = self.entry(value, None);
        self.insert(key, entry);
        Ok(())
    }

    async fn set_with_ttl(&self, key: &str, value: V, ttl: Duration) -> Result<()> {
        let entry = self.entry(value, Some(ttl.min(MAX_DURATION)));
        self.insert(key, entry);
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<bool> {
        // moka's `remove` also returns an entry that expired but is not evicted
        // yet; `contains_key` sees only live ones. (A `set` racing between the
        // two calls is removed but reported as absent: harmless.)
        let _write = self.lock(key);
        let live = self.inner.contains_key(key);
        Ok(self.inner.remove(key).is_some() && live)
    }

    async fn contains(&self, key: &str) -> Result<bool> {
        // `contains_key` is not a read: it neither resets TTI nor counts for LRU.
        Ok(self.inner.contains_key(key))
    }

    async fn clear(&self) -> Result<()> {
        // Entries written before this instant become invisible at once; moka
        // frees their memory in its next maintenance.
        self.inner.invalidate_all();
        Ok(())
    }

    async fn get_or_load(&self, key: &str, loader: Loader<'_, V>) -> Result<V> {
        let read = || std::future::ready(Ok(self.inner.get(key).map(|e| e.value)));
        let fill = |value: V| {
            self.insert(key, self.entry(value, None));
            std::future::ready(())
        };
        flight::get_or_load(&self.flights, key, loader, read, fill).await
    }

    async fn compare_and_set(&self, key: &str, expected: Option<&V>, new: V) -> Result<Cas<V>>
    where
        V: PartialEq,
    {
        let _write = self.lock(key);
        // A read as `get` is (TTI, LRU), whatever the outcome.
        let current = self.inner.get(key).map(|e| e.value);
        if current.as_ref() != expected {
            return Ok(Cas::Mismatch(current));
        }
        self.inner.insert(key.to_owned(), self.entry(new, None));
        Ok(Cas::Stored)
    }
}

#[cfg(test)]
mod tests;
