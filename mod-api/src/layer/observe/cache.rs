//! The observe layer around a cache: spans, failures, metrics, hits and misses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::probe::{BoxFuture, HitMiss, Probe};
use crate::cache::{Cache, Cas, Loader};
use crate::error::Result;
use crate::Value;

const OPS: &[&str] = &[
    "get",
    "set",
    "set_with_ttl",
    "remove",
    "contains",
    "clear",
    "get_or_load",
    "compare_and_set",
];

/// A cache observed by [`ObserveLayer`](super::ObserveLayer).
pub(super) struct ObservedCache<V> {
    inner: Arc<dyn Cache<V>>,
    probe: Probe,
    requests: HitMiss,
}

impl<V: Value> ObservedCache<V> {
    /// Counts a read's hit or miss (nothing while metrics are off).
    #[inline(always)]
    fn count(&self, got: &Result<Option<V>>) {
        if let Ok(value) = got {
            self.requests.count(value.is_some());
        }
    }

    pub(super) fn new(inner: Arc<dyn Cache<V>>) -> Self {
        let probe = Probe::new("cache", inner.name(), OPS);
        let requests = HitMiss::new("modkit_cache_requests_total", inner.name());
        ObservedCache {
            inner,
            probe,
            requests,
        }
    }
}

// Written out as `async_trait` expands them, so that an operation nobody
// observes returns the backend's own future (see `Probe::observe`).
impl<V: Value> Cache<V> for ObservedCache<V> {
    fn name(&self) -> &str {
        self.probe.name()
    }

    fn get<'a, 'b, 'f>(&'a self, key: &'b str) -> BoxFuture<'f, Result<Option<V>>>
    where
        'a: 'f,
        'b: 'f,
    {
        // A read the backend answers at once is observed without a future
        // of the layer's own (one allocation, not two: a tenth of an
        // in-memory read).
        if let Some(got) = self.get_now(key) {
            return Box::pin(std::future::ready(got));
        }
        let count = |got: &Result<Option<V>>| self.count(got);
        self.probe
            .observe_then(0, Some(key), self.inner.get(key), count)
    }

    #[inline(always)]
    fn get_now(&self, key: &str) -> Option<Result<Option<V>>> {
        let start = self.probe.start_now()?;
        let got = self.inner.get_now(key)?;
        self.probe.record(0, start, &got);
        self.count(&got);
        Some(got)
    }

    fn set<'a, 'b, 'f>(&'a self, key: &'b str, value: V) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe.observe(1, Some(key), self.inner.set(key, value))
    }

    fn set_with_ttl<'a, 'b, 'f>(
        &'a self,
        key: &'b str,
        value: V,
        ttl: Duration,
    ) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
        'b: 'f,
    {
        let fut = self.inner.set_with_ttl(key, value, ttl);
        self.probe.observe(2, Some(key), fut)
    }

    fn remove<'a, 'b, 'f>(&'a self, key: &'b str) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe.observe(3, Some(key), self.inner.remove(key))
    }

    fn contains<'a, 'b, 'f>(&'a self, key: &'b str) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe.observe(4, Some(key), self.inner.contains(key))
    }

    fn clear<'a, 'f>(&'a self) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
    {
        self.probe.observe(5, None, self.inner.clear())
    }

    fn get_or_load<'a, 'b, 'l, 'f>(
        &'a self,
        key: &'b str,
        loader: Loader<'l, V>,
    ) -> BoxFuture<'f, Result<V>>
    where
        'a: 'f,
        'b: 'f,
        'l: 'f,
    {
        if !self.probe.metered() {
            return self
                .probe
                .observe(6, Some(key), self.inner.get_or_load(key, loader));
        }
        // A miss is a call whose own loader ran (a waiter on another
        // caller's load counts as a hit: it read no backend for it).
        let loaded = Arc::new(AtomicBool::new(false));
        let flag = loaded.clone();
        let loader: Loader<'l, V> = Box::pin(async move {
            flag.store(true, Ordering::Relaxed);
            loader.await
        });
        let count = move |got: &Result<V>| {
            if got.is_ok() {
                self.requests.count(!loaded.load(Ordering::Relaxed));
            }
        };
        let fut = self.inner.get_or_load(key, loader);
        self.probe.observe_then(6, Some(key), fut, count)
    }

    fn compare_and_set<'a, 'b, 'c, 'f>(
        &'a self,
        key: &'b str,
        expected: Option<&'c V>,
        new: V,
    ) -> BoxFuture<'f, Result<Cas<V>>>
    where
        V: PartialEq,
        'a: 'f,
        'b: 'f,
        'c: 'f,
    {
        let fut = self.inner.compare_and_set(key, expected, new);
        self.probe.observe(7, Some(key), fut)
    }
}
