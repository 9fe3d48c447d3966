//! [`ShardedHistogram`]: latencies that many threads record without sharing
//! a cache line. Each thread appends to a batch of its own shard (threads
//! beyond the owned shards share one more); a full batch, or
//! [`flush_counts`](super::flush_counts), moves it into the recorder's
//! histogram. Every worker recording every call into one recorder histogram
//! made them take turns with its cache line: 7 % of `invoke.remote.c64`.

use std::sync::{Arc, Mutex};

use metrics::Histogram;

use super::sharded::{shard_index, OWNED};
use super::Registered;

/// Values a shard holds before it moves them on (so a histogram lags by at
/// most this many values per shard between scrapes).
const BATCH: usize = 64;

/// One shard's batch, alone on its cache line. Its lock is taken by its
/// owner thread only, except by a flush: uncontended.
#[repr(align(64))]
#[derive(Default)]
struct Batch(Mutex<Vec<f64>>);

/// A batched histogram in front of a recorder histogram.
pub(crate) struct ShardedHistogram {
    batches: [Batch; OWNED + 1],
    sink: Histogram,
}

/// Every live batched histogram, for [`flush_histograms`].
static LIVE: Registered<ShardedHistogram> = Registered::new();

impl ShardedHistogram {
    /// A batched histogram in front of `sink`.
    pub(crate) fn new(sink: Histogram) -> Arc<ShardedHistogram> {
        let histogram = Arc::new(ShardedHistogram {
            batches: Default::default(),
            sink,
        });
        LIVE.add(Arc::downgrade(&histogram));
        histogram
    }

    /// Records `value`.
    pub(crate) fn record(&self, value: f64) {
        let mut batch = self.batches[shard_index()].lock();
        batch.push(value);
        if batch.len() >= BATCH {
            self.send(&mut batch);
        }
    }

    fn send(&self, batch: &mut Vec<f64>) {
        for value in batch.drain(..) {
            self.sink.record(value);
        }
    }

    fn flush(&self) {
        for batch in &self.batches {
            self.send(&mut batch.lock());
        }
    }
}

impl Batch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<f64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ShardedHistogram {
    // A closed layer's last values still reach the recorder.
    fn drop(&mut self) {
        self.flush();
    }
}

/// Moves every batched value of this process into the recorder (called by
/// [`flush_counts`](super::flush_counts)).
pub(super) fn flush_histograms() {
    for histogram in LIVE.live() {
        histogram.flush();
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn every_value_of_every_thread_reaches_the_recorder() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let sink = metrics::with_local_recorder(&recorder, || metrics::histogram!("latency"));
        let histogram = ShardedHistogram::new(sink);
        const THREADS: usize = OWNED + 3;
        const VALUES: usize = 1_000;
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let histogram = histogram.clone();
                std::thread::spawn(move || {
                    for v in 0..VALUES {
                        histogram.record((t * VALUES + v) as f64);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        super::super::flush_counts();
        let snapshot = snapshotter.snapshot().into_vec();
        let [(_, _, _, DebugValue::Histogram(values))] = snapshot.as_slice() else {
            panic!("one histogram expected: {snapshot:?}");
        };
        let mut got: Vec<f64> = values.iter().map(|v| v.into_inner()).collect();
        got.sort_by(f64::total_cmp);
        let expected: Vec<f64> = (0..THREADS * VALUES).map(|v| v as f64).collect();
        assert_eq!(got, expected);
    }
}
