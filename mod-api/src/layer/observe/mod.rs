//! The observe layer: see [`ObserveLayer`].

mod cache;
mod histogram;
mod probe;
mod queue;
mod registry;
mod session;
mod sharded;

use std::sync::{Arc, Mutex, Weak};

use super::Layer;
use crate::cache::Cache;
use crate::queue::Queue;
use crate::registry::Registry;
use crate::session::SessionStore;
use crate::Value;

pub(crate) use histogram::ShardedHistogram;
pub(crate) use probe::BoxFuture;
pub use probe::{HitMiss, LATENCY_SAMPLE};
pub use sharded::flush_counts;
pub(crate) use sharded::Sharded;

/// Brings modkit's metrics up to date — what a metrics endpoint calls
/// before it renders: moves the sharded counts into the recorder
/// ([`flush_counts`]) and sets the sampled gauges (`modkit_queue_depth` of
/// every open, metered queue: one `len()` each, at most 1 s). Does nothing
/// while metrics are off.
pub async fn refresh_gauges() {
    flush_counts();
    queue::sample_depths().await;
}

/// Things of this process that a scrape visits (queues to sample, counts to
/// flush), held weakly: a dropped one leaves the list at the next visit.
struct Registered<T: ?Sized>(Mutex<Vec<Weak<T>>>);

impl<T: ?Sized> Registered<T> {
    const fn new() -> Self {
        Registered(Mutex::new(Vec::new()))
    }

    fn add(&self, item: Weak<T>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(item);
    }

    /// The live ones (the lock is not held while the caller uses them).
    fn live(&self) -> Vec<Arc<T>> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    }
}

/// The observe layer: tracing and metrics around every block operation.
///
/// - A DEBUG span `modkit.block` with `block`, `name`, `op` and the key (a
///   session id shows its first characters only).
/// - A failure is a WARN event with the error kind (DEBUG for `NotFound` and
///   `Conflict`, outcomes the caller handles).
/// - With metrics on ([`enable_metrics`](super::enable_metrics) before the
///   block opened): `modkit_block_ops_total{block,name,op}`,
///   `modkit_block_errors_total{block,name,op,kind}`,
///   `modkit_block_op_seconds{block,name,op}`; for caches
///   `modkit_cache_requests_total{name,result="hit"|"miss"}`; for queues
///   `modkit_queue_unacked{name}` (deliveries handed to this process's
///   consumers and not acknowledged by them) and `modkit_queue_depth{name}`
///   (set by [`refresh_gauges`]).
///
/// When no subscriber takes WARN events and metrics are off, an operation
/// runs as the backend's own future: the layer costs a branch.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<V: Value> Layer<dyn Cache<V>> for ObserveLayer {
    fn layer(&self, inner: Arc<dyn Cache<V>>) -> Arc<dyn Cache<V>> {
        Arc::new(cache::ObservedCache::new(inner))
    }
}

impl<M: Value> Layer<dyn Queue<M>> for ObserveLayer {
    fn layer(&self, inner: Arc<dyn Queue<M>>) -> Arc<dyn Queue<M>> {
        queue::ObservedQueue::wrap(inner)
    }
}

impl<D: Value> Layer<dyn SessionStore<D>> for ObserveLayer {
    fn layer(&self, inner: Arc<dyn SessionStore<D>>) -> Arc<dyn SessionStore<D>> {
        Arc::new(session::ObservedSessions::new(inner))
    }
}

impl Layer<dyn Registry> for ObserveLayer {
    fn layer(&self, inner: Arc<dyn Registry>) -> Arc<dyn Registry> {
        Arc::new(registry::ObservedRegistry::new(inner))
    }
}
