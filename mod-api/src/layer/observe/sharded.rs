//! [`Sharded`]: a count that many threads add to without sharing a cache
//! line. Each thread adds to its own shard; a shard that reaches
//! [`FLUSH_EVERY`] moves its sum into the recorder's counter or gauge, and
//! [`flush_counts`] moves every shard's before a scrape. A plain recorder
//! counter is one atomic that every thread writes, which costs more than an
//! in-memory block operation when two cores take turns with its cache line.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::Registered;

use metrics::{Counter, Gauge};

/// Shards per count (threads beyond that share them round robin).
const SHARDS: usize = 8;

/// A shard's sum that is moved on at once (so counts lag by at most this
/// much per shard between scrapes).
const FLUSH_EVERY: i64 = 1024;

/// One shard, alone on its cache line.
#[repr(align(64))]
#[derive(Default)]
struct Shard(AtomicI64);

/// Where a shard's sum goes.
enum Sink {
    Counter(Counter),
    Gauge(Gauge),
}

/// A sharded count in front of a recorder counter or gauge.
pub(crate) struct Sharded {
    shards: [Shard; SHARDS],
    sink: Sink,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// Every live sharded count, for [`flush_counts`].
static LIVE: Registered<Sharded> = Registered::new();

/// Held for a whole [`flush_counts`], so that when one returns, a count taken
/// from its shard by a concurrent flush has reached the recorder too.
static FLUSHING: Mutex<()> = Mutex::new(());

impl Sharded {
    /// A sharded count in front of `counter`.
    pub(crate) fn counter(counter: Counter) -> Arc<Sharded> {
        Self::register(Sink::Counter(counter))
    }

    /// A sharded count (of ups and downs) in front of `gauge`.
    pub(crate) fn gauge(gauge: Gauge) -> Arc<Sharded> {
        Self::register(Sink::Gauge(gauge))
    }

    fn register(sink: Sink) -> Arc<Sharded> {
        let sharded = Arc::new(Sharded {
            shards: Default::default(),
            sink,
        });
        LIVE.add(Arc::downgrade(&sharded));
        sharded
    }

    /// Adds `n` (negative: a gauge going down).
    pub(crate) fn add(&self, n: i64) {
        let shard = &self.shards[SHARD.with(|s| *s)];
        let sum = shard.0.fetch_add(n, Ordering::Relaxed) + n;
        if sum.abs() >= FLUSH_EVERY {
            self.send(shard.0.swap(0, Ordering::Relaxed));
        }
    }

    fn flush(&self) {
        let sum: i64 = self
            .shards
            .iter()
            .map(|s| s.0.swap(0, Ordering::Relaxed))
            .sum();
        self.send(sum);
    }

    fn send(&self, sum: i64) {
        match &self.sink {
            Sink::Counter(c) if sum > 0 => c.increment(sum as u64),
            Sink::Gauge(g) if sum != 0 => g.increment(sum as f64),
            _ => {}
        }
    }
}

impl Drop for Sharded {
    // A closed block's last counts still reach the recorder.
    fn drop(&mut self) {
        self.flush();
    }
}

/// Moves every sharded count of this process into the recorder, so what it
/// renders next is exact. [`refresh_gauges`](super::refresh_gauges) calls it;
/// with a recorder of your own, call either before each scrape (counts
/// otherwise lag by at most 1024 per thread and series).
pub fn flush_counts() {
    let _one_at_a_time = FLUSHING.lock().unwrap_or_else(|e| e.into_inner());
    for sharded in LIVE.live() {
        sharded.flush();
    }
}
