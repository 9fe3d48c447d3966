//! The in-process half of a near cache: a sharded map per Redis cache, with
//! the invalidation counters that make fills race-safe (see the [parent](super)).
//!
//! A plain concurrent map with a deadline per entry, not a full cache
//! library: a near hit is the whole point (a lookup, a clock read, a clone).
//! `max_entries` is kept approximately: a fill that finds the map over it
//! first drops a batch of entries (expired ones and those closest to their
//! deadline, among a sample).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use mod_api::layer::HitMiss;
use mod_api::{async_trait, NearCachePolicy, Value};

use super::{NearHub, NearTarget};

/// Invalidation counters per near cache (keys hash onto them).
const STRIPES: usize = 64;
/// Longest life of a near entry (also keeps `Instant` arithmetic in range).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Entries looked at per eviction, per entry to evict.
const SAMPLE_FACTOR: usize = 4;

/// A snapshot of invalidation counters taken before a Redis read (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    stripe: usize,
    stripe_seq: u64,
    all_seq: u64,
    hub_epoch: u64,
}

struct Entry<V> {
    value: V,
    deadline: Instant,
}

/// The in-process near cache of one Redis cache.
pub(crate) struct NearCache<V> {
    hub: Arc<NearHub>,
    entries: DashMap<String, Entry<V>>,
    max_entries: usize,
    /// Longest life of an entry (near policy TTL, half the cache's TTI).
    max_ttl: Duration,
    stripes: [AtomicU64; STRIPES],
    all: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
    /// `modkit_cache_near_requests_total` (noops while metrics are off).
    requests: HitMiss,
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
        let near = Arc::new(NearCache {
            hub,
            entries: DashMap::new(),
            max_entries: usize::try_from(policy.max_entries).unwrap_or(usize::MAX),
            max_ttl,
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
            all: AtomicU64::new(0),
            hasher: Default::default(),
            requests: HitMiss::new("modkit_cache_near_requests_total", name),
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
        let now = Instant::now();
        if let Some(e) = self.entries.get(key) {
            if e.deadline > now {
                self.requests.count(true);
                return Some(e.value.clone());
            }
        }
        self.entries.remove_if(key, |_, e| e.deadline <= now);
        self.requests.count(false);
        None
    }

    /// How many entries the near copy holds (expired ones included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
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
        if ttl.is_zero() || self.max_entries == 0 || !self.still_valid(&t) {
            return;
        }
        if self.entries.len() >= self.max_entries {
            self.make_room();
        }
        let deadline = Instant::now() + ttl;
        self.entries
            .insert(key.to_owned(), Entry { value, deadline });
        if !self.still_valid(&t) {
            self.entries.remove(key);
        }
    }

    /// Drops about `max_entries / 16` entries (at least enough to get under
    /// the bound): expired ones, and those closest to their deadline among a
    /// sample.
    fn make_room(&self) {
        let len = self.entries.len();
        let goal = (len + 1).saturating_sub(self.max_entries) + (self.max_entries / 16).max(1);
        let now = Instant::now();
        // Collect first: removing while iterating would lock a shard twice.
        let mut sample: Vec<(Instant, String)> = self
            .entries
            .iter()
            .take(goal.saturating_mul(SAMPLE_FACTOR))
            .map(|e| (e.deadline, e.key().clone()))
            .collect();
        sample.sort_unstable_by_key(|(deadline, _)| *deadline);
        for (i, (deadline, key)) in sample.into_iter().enumerate() {
            if i >= goal && deadline > now {
                break;
            }
            self.entries.remove(&key);
        }
    }

    /// Evicts `key` (after a local write, or when told by the hub).
    pub(crate) async fn invalidate(&self, key: &str) {
        self.stripes[self.stripe(key)].fetch_add(1, Ordering::SeqCst);
        self.entries.remove(key);
    }

    /// Evicts every entry.
    pub(crate) fn invalidate_all(&self) {
        self.all.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
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
