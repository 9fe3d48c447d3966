//! [`Probe`]: what the observe layer does around one operation of one block.

use std::sync::Arc;
use std::time::Instant;

use metrics::Histogram;
use tracing::{Instrument, Level};

use super::sharded::Sharded;
use crate::error::{ErrorKind, Result};

pub(crate) use crate::BoxFuture;

/// One operation in this many has its latency measured (per thread): two
/// clock reads and a histogram record per operation would cost more than an
/// in-memory block operation itself; counts and errors are exact. 64, not
/// 8: with the Prometheus recorder, recording 1 in 8 cut the monolith
/// cache's reads to 0.65 of moka's, 1 in 64 to 0.81 (`compare --metrics`;
/// 0.88 since reads answered at once skip the layer's future). 256 measured
/// no better than 64: what is left is the counts and the code around them.
pub const LATENCY_SAMPLE: u32 = 64;

thread_local! {
    /// Block operations observed on this thread, for [`LATENCY_SAMPLE`].
    static TICKS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this operation is one whose latency is measured.
#[inline(always)]
fn sampled() -> bool {
    TICKS.with(|t| {
        let n = t.get().wrapping_add(1);
        t.set(n);
        n % LATENCY_SAMPLE == 0
    })
}

/// The metric handles of one operation, registered once when the block opens.
struct OpMeter {
    calls: Arc<Sharded>,
    seconds: Histogram,
}

/// Observes the operations of one open block: a DEBUG span around each, a
/// WARN event for each failure (DEBUG for the outcomes callers handle:
/// `NotFound`, `Conflict`), and, when metrics are on, counts, errors by kind
/// and latency.
pub(crate) struct Probe {
    block: &'static str,
    name: Arc<str>,
    ops: &'static [&'static str],
    /// One per entry of `ops`; empty when metrics were off at open.
    meters: Box<[OpMeter]>,
}

impl Probe {
    /// The probe of block `block` (`"cache"`, …) named `name`, whose
    /// operations are `ops` (indexed by the `op` argument of [`observe`](Self::observe)).
    pub(crate) fn new(block: &'static str, name: &str, ops: &'static [&'static str]) -> Probe {
        let meters = if super::super::metrics_enabled() {
            ops.iter()
                .map(|op| OpMeter {
                    calls: Sharded::counter(metrics::counter!("modkit_block_ops_total", "block" => block, "name" => name.to_owned(), "op" => *op)),
                    seconds: metrics::histogram!("modkit_block_op_seconds", "block" => block, "name" => name.to_owned(), "op" => *op),
                })
                .collect()
        } else {
            Box::default()
        };
        Probe {
            block,
            name: name.into(),
            ops,
            meters,
        }
    }

    /// The block's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether metrics were on when the block opened.
    #[inline(always)]
    pub(crate) fn metered(&self) -> bool {
        !self.meters.is_empty()
    }

    /// Whether anything would see an observation now: metrics, or a
    /// subscriber that takes modkit's events. Without either the operation's
    /// own future is returned unwrapped (no allocation, no clock read).
    #[inline(always)]
    pub(crate) fn active(&self) -> bool {
        self.metered() || tracing::enabled!(Level::WARN)
    }

    /// `fut` (operation `ops[op]`, on `key` if it has one) observed; `fut`
    /// itself when nothing would see it.
    pub(crate) fn observe<'f, T: Send + 'f>(
        &'f self,
        op: usize,
        key: Option<&'f str>,
        fut: BoxFuture<'f, Result<T>>,
    ) -> BoxFuture<'f, Result<T>> {
        self.observe_then(op, key, fut, |_| {})
    }

    /// [`observe`](Self::observe), then `then` with the outcome, when metrics
    /// are on (a block's own counts: hits, deliveries), in the same future.
    pub(crate) fn observe_then<'f, T: Send + 'f>(
        &'f self,
        op: usize,
        key: Option<&'f str>,
        fut: BoxFuture<'f, Result<T>>,
        then: impl FnOnce(&Result<T>) + Send + 'f,
    ) -> BoxFuture<'f, Result<T>> {
        if !self.active() {
            return fut;
        }
        Box::pin(async move {
            let start = (self.metered() && sampled()).then(Instant::now);
            // No span (nor its enter and exit at every poll) when nothing
            // takes DEBUG: metrics alone need only the outcome.
            let outcome = if tracing::enabled!(Level::DEBUG) {
                fut.instrument(self.span(op, key)).await
            } else {
                fut.await
            };
            self.record(op, start, &outcome);
            if self.metered() {
                then(&outcome);
            }
            outcome
        })
    }

    /// For an operation the backend finishes without waiting (see
    /// [`Cache::get_now`](crate::cache::Cache::get_now)): `Some` (with the
    /// start when its latency is measured) when it is to be observed here
    /// and now, then [`record`](Self::record) its outcome; `None` when nothing
    /// would see it, or when a DEBUG span is wanted (the caller then takes
    /// the path of [`observe`](Self::observe)).
    #[inline(always)]
    pub(crate) fn start_now(&self) -> Option<Option<Instant>> {
        if !self.active() || tracing::enabled!(Level::DEBUG) {
            return None;
        }
        Some((self.metered() && sampled()).then(Instant::now))
    }

    /// The DEBUG span of one operation.
    fn span(&self, op: usize, key: Option<&str>) -> tracing::Span {
        tracing::debug_span!(
            "modkit.block",
            block = self.block,
            name = &*self.name,
            op = self.ops[op],
            key
        )
    }

    /// Records the outcome of an operation (started at `start` when its
    /// latency is measured).
    #[inline(always)]
    pub(crate) fn record<T>(&self, op: usize, start: Option<Instant>, outcome: &Result<T>) {
        if let Some(meter) = self.meters.get(op) {
            meter.calls.add(1);
            if let Some(start) = start {
                meter.seconds.record(start.elapsed().as_secs_f64());
            }
        }
        if let Err(error) = outcome {
            self.failed(op, error);
        }
    }

    /// The event and count of a failed operation.
    #[cold]
    #[inline(never)]
    fn failed(&self, op: usize, error: &crate::Error) {
        let (block, name, op) = (self.block, &*self.name, self.ops[op]);
        let kind = error.kind();
        if matches!(kind, ErrorKind::NotFound | ErrorKind::Conflict) {
            tracing::debug!(block, name, op, %kind, "{error}");
        } else {
            tracing::warn!(block, name, op, %kind, "{error}");
        }
        if self.metered() {
            metrics::counter!("modkit_block_errors_total", "block" => block, "name" => name.to_owned(), "op" => op, "kind" => kind.as_str())
                .increment(1);
        }
    }
}

/// A pair of hit/miss counters (`metric{name, result}`), sharded (see
/// [`flush_counts`](super::flush_counts)); nothing while metrics are off.
pub struct HitMiss {
    counts: Option<(Arc<Sharded>, Arc<Sharded>)>,
}

impl HitMiss {
    /// The counters `metric{name, result="hit"|"miss"}`.
    pub fn new(metric: &'static str, name: &str) -> HitMiss {
        let counts = super::super::metrics_enabled().then(|| {
            let count = |result: &'static str| {
                Sharded::counter(
                    metrics::counter!(metric, "name" => name.to_owned(), "result" => result),
                )
            };
            (count("hit"), count("miss"))
        });
        HitMiss { counts }
    }

    /// Counts one hit (`true`) or miss.
    #[inline(always)]
    pub fn count(&self, hit: bool) {
        if let Some((hits, misses)) = &self.counts {
            if hit { hits } else { misses }.add(1);
        }
    }
}
