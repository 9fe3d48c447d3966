//! Layers: cross-cutting behaviour written once and wrapped around a handle.
//!
//! A [`Layer`] takes a handle — a building block (`dyn Cache<V>`, `dyn Queue<M>`,
//! `dyn SessionStore<D>`, `dyn Registry`) or a call seam (`dyn Transport`,
//! `dyn Dispatch`) — and returns one of the same type that adds behaviour
//! around it, the way tower's `Layer` wraps a `Service` and OpenDAL's wraps an
//! accessor. Backends implement the blocks plainly; the stack around them is
//! applied in one place, so every backend gets the same behaviour.
//!
//! # The stack
//!
//! Every block a backend opens goes through [`OpenBlocks::open`](crate::backend::OpenBlocks::open),
//! which wraps it, outermost first, in
//!
//! 1. [`ObserveLayer`]: a DEBUG span per operation, a WARN event per failure
//!    with the error kind, and metrics (counts, errors by kind, latency);
//! 2. [`CheckLayer`]: input checks (names, `max_value_bytes`), so a refused
//!    call is observed like any other and never reaches the backend;
//! 3. the backend's block.
//!
//! Calls to services get the same treatment from the call layers (client and
//! server side).
//!
//! # A layer of your own
//!
//! A layer is a type that implements [`Layer`] for the handle types it
//! wraps, applied to one handle with [`Layer::layer`]. Here, a limit on how
//! many reads of one cache run at once:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use mod_api::cache::Loader;
//! use mod_api::layer::Layer;
//! use mod_api::{async_trait, Backend, Cache, CachePolicy, Cas, Config, Error, ErrorKind, Result};
//! use tokio::sync::Semaphore;
//!
//! /// At most `n` operations of the wrapped cache at once.
//! struct Limit(Arc<Semaphore>);
//!
//! struct Limited<V> {
//!     inner: Arc<dyn Cache<V>>,
//!     permits: Arc<Semaphore>,
//! }
//!
//! impl<V: mod_api::Value> Layer<dyn Cache<V>> for Limit {
//!     fn layer(&self, inner: Arc<dyn Cache<V>>) -> Arc<dyn Cache<V>> {
//!         Arc::new(Limited { inner, permits: self.0.clone() })
//!     }
//! }
//!
//! #[async_trait]
//! impl<V: mod_api::Value> Cache<V> for Limited<V> {
//!     fn name(&self) -> &str { self.inner.name() }
//!     async fn get(&self, key: &str) -> Result<Option<V>> {
//!         let _permit = self.permits.acquire().await.map_err(|_| Error::new(ErrorKind::Closed, "limit closed"))?;
//!         self.inner.get(key).await
//!     }
//!     // The others pass straight through.
//!     async fn set(&self, key: &str, value: V) -> Result<()> { self.inner.set(key, value).await }
//!     async fn set_with_ttl(&self, key: &str, value: V, ttl: Duration) -> Result<()> { self.inner.set_with_ttl(key, value, ttl).await }
//!     async fn remove(&self, key: &str) -> Result<bool> { self.inner.remove(key).await }
//!     async fn contains(&self, key: &str) -> Result<bool> { self.inner.contains(key).await }
//!     async fn clear(&self) -> Result<()> { self.inner.clear().await }
//!     async fn get_or_load(&self, key: &str, loader: Loader<'_, V>) -> Result<V> { self.inner.get_or_load(key, loader).await }
//!     async fn compare_and_set(&self, key: &str, expected: Option<&V>, new: V) -> Result<Cas<V>>
//!     where V: PartialEq {
//!         self.inner.compare_and_set(key, expected, new).await
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mod_api::Result<()> {
//! # let app = mod_monolith::Monolith::new(Config::default())?;
//! // `app`: the `modkit::App` (here the monolith backend it runs)
//! let prices = Limit(Arc::new(Semaphore::new(8))).layer(app.cache::<u64>("prices", CachePolicy::new())?);
//! prices.set("tea", 350).await?;
//! assert_eq!(prices.get("tea").await?, Some(350));
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! modkit records metrics through the [`metrics`] facade crate. They cost
//! nothing until [`enable_metrics`] is called (the `prometheus` feature of the
//! facade calls it when it installs its recorder); handles opened before that
//! record nothing, so enable metrics before opening blocks.

mod calls;
mod check;
mod observe;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use calls::{ClientCalls, ServerCalls, Side};

pub use check::CheckLayer;
pub use observe::{flush_counts, refresh_gauges, HitMiss, ObserveLayer, LATENCY_SAMPLE};

/// `inner` in the standard stack: [`ObserveLayer`] around [`CheckLayer`]
/// (values limited to `max_value_bytes`) around the backend's block.
pub fn standard<B: ?Sized>(inner: Arc<B>, max_value_bytes: usize) -> Arc<B>
where
    CheckLayer: Layer<B>,
    ObserveLayer: Layer<B>,
{
    ObserveLayer.layer(CheckLayer::new(max_value_bytes).layer(inner))
}

/// Wraps a handle of type `B` (a block or a call seam) in behaviour of its own.
///
/// `B` is unsized: `dyn Cache<V>`, `dyn Queue<M>`, `dyn SessionStore<D>`,
/// `dyn Registry`, `dyn Transport` or `dyn Dispatch`.
pub trait Layer<B: ?Sized>: Send + Sync {
    /// `inner` with this layer's behaviour around it.
    fn layer(&self, inner: Arc<B>) -> Arc<B>;
}

static METRICS: AtomicBool = AtomicBool::new(false);

/// Turns modkit's metrics on for handles opened from now on: they record
/// into the `metrics` recorder installed in the process. Call it after
/// installing a recorder (`metrics::set_global_recorder`), before opening blocks.
pub fn enable_metrics() {
    METRICS.store(true, Ordering::Release);
}

/// Counts one message of queue `queue` moved to its dead-letter queue, for
/// `reason` (`"max_deliveries"`, `"undecodable"`):
/// `modkit_queue_dead_lettered_total{name,reason}`. For backends.
pub fn dead_lettered(queue: &str, reason: &'static str) {
    if metrics_enabled() {
        metrics::counter!("modkit_queue_dead_lettered_total", "name" => queue.to_owned(), "reason" => reason)
            .increment(1);
    }
}

/// Whether [`enable_metrics`] was called.
pub fn metrics_enabled() -> bool {
    METRICS.load(Ordering::Acquire)
}
