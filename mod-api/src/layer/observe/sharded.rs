//! [`Sharded`]: a count that many threads add to without sharing a cache
//! line. Each thread adds to a shard of its own (threads beyond [`OWNED`]
//! share one more); a shard whose unsent sum reaches [`FLUSH_EVERY`] moves
//! it into the recorder's counter or gauge, and [`flush_counts`] moves every
//! shard's before a scrape. A plain recorder
//! counter is one atomic that every thread writes, which costs more than an
//! in-memory block operation when two cores take turns with its cache line.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::Registered;

use metrics::{Counter, Gauge};

/// Shards a thread can own (threads beyond that share one more).
pub(super) const OWNED: usize = 8;

/// The shard of the threads that own none: added to with `fetch_add`.
const SHARED: usize = OWNED;

/// A shard's unsent sum that is moved on at once (so counts lag by at most
/// this much per shard between scrapes).
const FLUSH_EVERY: i64 = 1024;

/// One shard, alone on its cache line: the running total of what its
/// threads added, and how much of it has reached the recorder.
#[repr(align(64))]
#[derive(Default)]
struct Shard {
    total: AtomicI64,
    sent: AtomicI64,
}

/// Where a shard's sum goes.
enum Sink {
    Counter(Counter),
    Gauge(Gauge),
}

/// A sharded count in front of a recorder counter or gauge.
pub(crate) struct Sharded {
    shards: [Shard; OWNED + 1],
    sink: Sink,
}

/// This thread's place among the shards.
struct Slot {
    /// A shard index only this thread writes (`< OWNED`), or [`SHARED`].
    shard: usize,
}

/// Owned shard indexes given back by threads that ended.
static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static NEXT_OWNED: AtomicUsize = AtomicUsize::new(0);

impl Slot {
    fn claim() -> Slot {
        let free = FREE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let shard = free.unwrap_or_else(|| {
            let next = NEXT_OWNED.fetch_add(1, Ordering::Relaxed);
            if next < OWNED {
                next
            } else {
                NEXT_OWNED.store(OWNED, Ordering::Relaxed);
                SHARED
            }
        });
        Slot { shard }
    }
}

impl Drop for Slot {
    // The next thread to start owns the shard (its writes come after ours:
    // the lock orders them).
    fn drop(&mut self) {
        if self.shard != SHARED {
            FREE.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.shard);
        }
    }
}

thread_local! {
    static SLOT: Slot = Slot::claim();
}

/// This thread's shard index: its own (`< OWNED`), or [`SHARED`].
#[inline(always)]
pub(super) fn shard_index() -> usize {
    SLOT.try_with(|slot| slot.shard).unwrap_or(SHARED)
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
    #[inline(always)]
    pub(crate) fn add(&self, n: i64) {
        let index = shard_index();
        let shard = &self.shards[index];
        // An owned shard has one writer: a plain load and store, no locked
        // instruction (which costs as much as the rest of the count).
        let total = if index == SHARED {
            shard.total.fetch_add(n, Ordering::Relaxed) + n
        } else {
            let total = shard.total.load(Ordering::Relaxed) + n;
            shard.total.store(total, Ordering::Relaxed);
            total
        };
        if (total - shard.sent.load(Ordering::Relaxed)).abs() >= FLUSH_EVERY {
            self.send(shard);
        }
    }

    /// Moves what `shard` has not sent yet into the recorder. Whoever sends
    /// (the owner, a flush) moves `sent` forward atomically, so what they
    /// send together is what was added: a counter only ever forward
    /// (`fetch_max`), a gauge by the difference of the totals it swapped.
    #[cold]
    #[inline(never)]
    fn send(&self, shard: &Shard) {
        let total = shard.total.load(Ordering::Relaxed);
        match &self.sink {
            Sink::Counter(c) => {
                let sent = shard.sent.fetch_max(total, Ordering::Relaxed);
                if total > sent {
                    c.increment((total - sent) as u64);
                }
            }
            Sink::Gauge(g) => {
                let sent = shard.sent.swap(total, Ordering::Relaxed);
                if total != sent {
                    g.increment((total - sent) as f64);
                }
            }
        }
    }

    fn flush(&self) {
        for shard in &self.shards {
            self.send(shard);
        }
    }
}

impl Drop for Sharded {
    // A closed block's last counts still reach the recorder.
    fn drop(&mut self) {
        self.flush();
    }
}

/// Moves every sharded count and batched latency of this process into the
/// recorder, so what it renders next is exact.
/// [`refresh_gauges`](super::refresh_gauges) calls it; with a recorder of
/// your own, call either before each scrape (otherwise counts lag by at most
/// 1024 per thread and series, call latencies by 64).
pub fn flush_counts() {
    let _one_at_a_time = FLUSHING.lock().unwrap_or_else(|e| e.into_inner());
    for sharded in LIVE.live() {
        sharded.flush();
    }
    super::histogram::flush_histograms();
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn every_add_of_every_thread_reaches_the_recorder() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (counter, gauge) = metrics::with_local_recorder(&recorder, || {
            (metrics::counter!("adds"), metrics::gauge!("level"))
        });
        let (counter, gauge) = (Sharded::counter(counter), Sharded::gauge(gauge));
        // Flushes race with the owners' adds all along.
        let stop = Arc::new(AtomicBool::new(false));
        let flusher = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    flush_counts();
                    std::thread::yield_now();
                }
            })
        };
        // Waves of more threads than owned shards: some share the shared
        // shard, and the owned ones pass to the next wave's threads.
        const WAVES: usize = 3;
        const THREADS: usize = OWNED + 3;
        const ADDS: i64 = 5_000;
        for _ in 0..WAVES {
            let wave: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (counter, gauge) = (counter.clone(), gauge.clone());
                    std::thread::spawn(move || {
                        for n in 0..ADDS {
                            counter.add(1);
                            gauge.add(if n % 2 == 0 { 3 } else { -1 });
                        }
                    })
                })
                .collect();
            for thread in wave {
                thread.join().unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
        flusher.join().unwrap();
        flush_counts();
        let values: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
            .collect();
        let expected = (WAVES * THREADS) as i64 * ADDS;
        assert_eq!(values.len(), 2, "{values:?}");
        for (name, value) in values {
            match (name.as_str(), value) {
                ("adds", DebugValue::Counter(n)) => assert_eq!(n as i64, expected),
                ("level", DebugValue::Gauge(g)) => assert_eq!(g.into_inner(), expected as f64),
                other => panic!("unexpected metric {other:?}"),
            }
        }
    }
}
