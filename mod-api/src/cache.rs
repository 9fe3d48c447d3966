//! Cache: typed, named key-value caches with expiry.
//!
//! Open one with [`Backend::cache`](crate::Backend::cache). Caches of different
//! names never see each other's keys. Values are stored by value: changing a
//! value after `set` does not change the cached one.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::Value;

/// A boxed loader future for [`Cache::get_or_load`].
pub type Loader<'a, V> = Pin<Box<dyn Future<Output = Result<V>> + Send + 'a>>;

/// How a cache evicts and expires entries.
///
/// `max_entries` is exact in the monolith; in Redis it is approximate (see the
/// distributed backend's docs). With both `ttl` and `tti` an entry goes at
/// whichever comes first; a per-entry TTL from [`Cache::set_with_ttl`] replaces
/// the policy's TTL for that entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CachePolicy {
    /// Maximum number of entries; `None` is unbounded.
    pub max_entries: Option<u64>,
    /// Time to live: an entry expires this long after it was set.
    #[serde(with = "crate::config::opt_duration")]
    pub ttl: Option<Duration>,
    /// Time to idle: an entry expires this long after it was last read or set.
    #[serde(with = "crate::config::opt_duration")]
    pub tti: Option<Duration>,
    /// A small in-process cache in front of a remote one (distributed package only;
    /// the monolith is already in-process and ignores it).
    pub near: Option<NearCachePolicy>,
    /// Largest encoded value `set` accepts (default
    /// [`DEFAULT_MAX_VALUE_BYTES`](crate::codec::DEFAULT_MAX_VALUE_BYTES), 16 MiB);
    /// a larger one fails with `PayloadTooLarge` before it reaches any store.
    pub max_value_bytes: usize,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            max_entries: None,
            ttl: None,
            tti: None,
            near: None,
            max_value_bytes: crate::codec::DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

impl CachePolicy {
    /// An unbounded policy without expiry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the maximum number of entries.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = Some(n);
        self
    }

    /// Sets the time to live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the time to idle.
    pub fn tti(mut self, tti: Duration) -> Self {
        self.tti = Some(tti);
        self
    }

    /// Sets the largest encoded value `set` accepts.
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.max_value_bytes = n;
        self
    }

    /// Enables a near cache.
    pub fn near(mut self, near: NearCachePolicy) -> Self {
        self.near = Some(near);
        self
    }
}

/// The near cache of a remote cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NearCachePolicy {
    /// Maximum entries held in process.
    pub max_entries: u64,
    /// Upper bound on staleness should an invalidation message be lost.
    #[serde(with = "crate::config::opt_duration")]
    pub ttl: Option<Duration>,
}

impl Default for NearCachePolicy {
    fn default() -> Self {
        NearCachePolicy {
            max_entries: 10_000,
            ttl: Some(Duration::from_secs(60)),
        }
    }
}

/// A typed cache of `V` values under string keys.
///
/// Its methods are `async fn`s. They go through `async_trait` so that the
/// trait stays usable as `dyn` (handles are `Arc<dyn …>`), which makes rustdoc
/// show them desugared (`Pin<Box<dyn Future …>>`, `'life0`); each method's
/// doc therefore ends with its plain `async fn` signature.
#[async_trait]
pub trait Cache<V: Value>: Send + Sync {
    /// The cache's name.
    fn name(&self) -> &str;

    /// The value under `key`, if present and not expired.
    ///
    /// Signature: `async fn get(&self, key: &str) -> Result<Option<V>>`
    async fn get(&self, key: &str) -> Result<Option<V>>;

    /// Stores `value` under `key` with the policy's expiry.
    ///
    /// Signature: `async fn set(&self, key: &str, value: V) -> Result<()>`
    async fn set(&self, key: &str, value: V) -> Result<()>;

    /// Stores `value` under `key`, expiring `ttl` after now regardless of the policy's TTL.
    ///
    /// Signature: `async fn set_with_ttl(&self, key: &str, value: V, ttl: Duration) -> Result<()>`
    async fn set_with_ttl(&self, key: &str, value: V, ttl: Duration) -> Result<()>;

    /// Removes `key`; `true` when it was present.
    ///
    /// Signature: `async fn remove(&self, key: &str) -> Result<bool>`
    async fn remove(&self, key: &str) -> Result<bool>;

    /// Whether `key` is present (does not count as a read for TTI).
    ///
    /// Signature: `async fn contains(&self, key: &str) -> Result<bool>`
    async fn contains(&self, key: &str) -> Result<bool>;

    /// Removes every entry of this cache (and only of this cache).
    ///
    /// Signature: `async fn clear(&self) -> Result<()>`
    async fn clear(&self) -> Result<()>;

    /// The value under `key`, or the result of `loader`, stored then returned.
    ///
    /// Concurrent misses of one key in one process run one loader; the others
    /// wait for its value. A loader error is returned to every waiter and nothing
    /// is stored.
    ///
    /// Signature: `async fn get_or_load(&self, key: &str, loader: Loader<'_, V>) -> Result<V>`
    async fn get_or_load(&self, key: &str, loader: Loader<'_, V>) -> Result<V>;
}

/// Conveniences for every cache.
pub trait CacheExt<V: Value>: Cache<V> {
    /// [`Cache::get_or_load`] with a closure that makes the loader future.
    fn get_or_insert_with<'a, F, Fut>(
        &'a self,
        key: &'a str,
        make: F,
    ) -> Pin<Box<dyn Future<Output = Result<V>> + Send + 'a>>
    where
        F: FnOnce() -> Fut + Send + 'a,
        Fut: Future<Output = Result<V>> + Send + 'a,
    {
        Box::pin(async move {
            self.get_or_load(key, Box::pin(async move { make().await }))
                .await
        })
    }
}

impl<V: Value, C: Cache<V> + ?Sized> CacheExt<V> for C {}
