//! The in-process half of a near cache: a moka cache per Redis cache, with the
//! invalidation counters that make fills race-safe (see the [parent](super)).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mod_api::{async_trait, NearCachePolicy, Value};
use moka::policy::Expiry;

use super::{NearHub, NearTarget};

/// Invalidation counters per near cache (keys hash onto them).
const STRIPES: usize = 64;
/// Longest duration handed to moka (it panics above 1000 years).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A snapshot of invalidation counters taken before a Redis read (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    stripe: usize,
    stripe_seq: u64,
    all_seq: u64,
    hub_epoch: u64,
}

#[derive(Clone)]
struct Entry<V> {
    value: V,
    ttl: Duration,
}

struct EntryExpiry;

impl<V> Expiry<String, Entry<V>> for EntryExpiry {
    fn expire_after_create(&self, _: &String, entry: &Entry<V>, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry<V>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The in-process near cache of one Redis cache.
pub(crate) struct NearCache<V> {
    hub: Arc<NearHub>,
    entries: moka::future::Cache<String, Entry<V>>,
    /// Longest life of an entry (near policy TTL, half the cache's TTI).
    max_ttl: Duration,
    stripes: [AtomicU64; STRIPES],
    all: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

impl<V: Value> NearCache<V> {
    /// A near cache of cache `name`, registered with `hub`.
    pub(crate) fn new(
        hub: Arc<NearHub>,
        name: &str,
        policy: &NearCachePolicy,
        tti: Option<Duration>,
    ) -> Arc<Self> {
        let mut max_ttl = policy.ttl.unwrap_or(MAX_DURATION).min(MAX_DURATION);
        if let Some(tti) = tti {
            max_ttl = max_ttl.min(tti / 2);
        }
        let entries = moka::future::Cache::builder()
            .name(name)
            .max_capacity(policy.max_entries)
            .expire_after(EntryExpiry)
            .build();
        let near = Arc::new(NearCache {
            hub,
            entries,
            max_ttl,
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
            all: AtomicU64::new(0),
            hasher: Default::default(),
        });
        let weak: Weak<NearCache<V>> = Arc::downgrade(&near);
        near.hub.register(name, weak);
        near
    }

    fn stripe(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % STRIPES
    }

    /// The near copy of `key`, if the hub is subscribed and one is there.
    pub(crate) async fn get(&self, key: &str) -> Option<V> {
        if !self.hub.is_connected() {
            return None;
        }
        self.entries.get(key).await.map(|e| e.value)
    }

    /// Takes a ticket; call before reading Redis.
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        let stripe = self.stripe(key);
        Ticket {
            stripe,
            stripe_seq: self.stripes[stripe].load(Ordering::SeqCst),
            all_seq: self.all.load(Ordering::SeqCst),
            hub_epoch: self.hub.epoch(),
        }
    }

    fn still_valid(&self, t: &Ticket) -> bool {
        self.hub.is_connected()
            && self.stripes[t.stripe].load(Ordering::SeqCst) == t.stripe_seq
            && self.all.load(Ordering::SeqCst) == t.all_seq
            && self.hub.epoch() == t.hub_epoch
    }

    /// Copies a value read from Redis (with `remaining` Redis lifetime, `None`
    /// when it has no expiry) unless an invalidation raced the read.
    pub(crate) async fn fill(&self, key: &str, value: V, remaining: Option<Duration>, t: Ticket) {
        let ttl = remaining.map_or(self.max_ttl, |r| r.min(self.max_ttl));
        if ttl.is_zero() || !self.still_valid(&t) {
            return;
        }
        self.entries
            .insert(key.to_owned(), Entry { value, ttl })
            .await;
        if !self.still_valid(&t) {
            self.entries.invalidate(key).await;
        }
    }

    /// Evicts `key` (after a local write, or when told by the hub).
    pub(crate) async fn invalidate(&self, key: &str) {
        self.stripes[self.stripe(key)].fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate(key).await;
    }

    /// Evicts every entry.
    pub(crate) fn invalidate_all(&self) {
        self.all.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
    }
}

#[async_trait]
impl<V: Value> NearTarget for NearCache<V> {
    async fn invalidate_key(&self, key: &str) {
        self.invalidate(key).await;
    }

    fn invalidate_everything(&self) {
        self.invalidate_all();
    }
}
