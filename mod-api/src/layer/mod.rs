//! Layers: cross-cutting behaviour written once and wrapped around a handle.
//!
//! A [`Layer`] takes a handle — a building block (`dyn Cache<V>`, `dyn Queue<M>`,
//! `dyn SessionStore<D>`, `dyn Registry`) or a call seam (`dyn Transport`,
//! `dyn Dispatch`) — and returns one of the same type that adds behaviour
//! around it, the way tower's `Layer` wraps a `Service` and OpenDAL's wraps an
//! accessor. Backends implement the blocks plainly; the stack around them is
//! applied in one place, so every backend gets the same behaviour.
//!
//! A layer of your own is a type that implements [`Layer`] for the handle
//! types it wraps, applied to one handle with [`Layer::layer`].
//!
//! # Metrics
//!
//! modkit records metrics through the [`metrics`] facade crate. They cost
//! nothing until [`enable_metrics`] is called (the `prometheus` feature of the
//! facade calls it when it installs its recorder); handles opened before that
//! record nothing, so enable metrics before opening blocks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod calls;

pub use calls::{ClientCalls, ServerCalls, Side};

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

/// Whether [`enable_metrics`] was called.
pub fn metrics_enabled() -> bool {
    METRICS.load(Ordering::Acquire)
}
