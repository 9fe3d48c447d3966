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

use crate::error::{Error, ErrorKind, Result};
use crate::Value;

/// A boxed loader future for [`Cache::get_or_load`].
pub type Loader<'a, V> = Pin<Box<dyn Future<Output = Result<V>> + Send + 'a>>;

/// How a cache evicts and expires entries.
///
/// `max_entries` is exact where the backend claims
/// [`Capabilities::exact_max_entries`](crate::Capabilities::exact_max_entries),
/// else approximate (the backend's docs say how). With both `ttl` and `tti` an entry goes at
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
    /// A small in-process cache in front of a remote one, where the backend
    /// claims [`Capabilities::near_cache`](crate::Capabilities::near_cache);
    /// other backends (an in-process one has no use for it) ignore it.
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

    /// The outcome of [`get`](Self::get) when the backend has it without
    /// waiting (an in-process cache), `None` when the read must wait (a
    /// network round trip). Call `get`: this is the hook a layer uses to
    /// finish an observed read in one allocation instead of two. The default
    /// is `None`; a layer forwards it to the cache it wraps.
    fn get_now(&self, key: &str) -> Option<Result<Option<V>>> {
        let _ = key;
        None
    }

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

    /// Stores `new` under `key` only if the entry is `expected` now (`None`:
    /// absent or expired), as one atomic step for every writer of the key on
    /// every node; otherwise changes nothing and returns the current value.
    ///
    /// Values compare with `PartialEq` (the distributed backend compares the
    /// stored bytes first, then the decoded value). A stored value gets the
    /// policy's expiry from now, as with [`set`](Self::set) (a per-entry TTL
    /// of the replaced entry is not kept). It counts as a read of the entry
    /// (refreshes its TTI) whatever the outcome.
    /// A near cache is invalidated as by `set`. For a read-modify-write loop
    /// see [`CacheExt::update`].
    async fn compare_and_set(&self, key: &str, expected: Option<&V>, new: V) -> Result<Cas<V>>
    where
        V: PartialEq;
}

/// What [`Cache::compare_and_set`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas<V> {
    /// The entry was as expected; the new value is stored.
    Stored,
    /// The entry was not as expected and nothing changed: its current value
    /// (`None`: absent), to compute the next attempt from.
    Mismatch(Option<V>),
}

/// Attempts [`CacheExt::update`] makes before it gives up with a conflict:
/// generous, since each failed attempt means another writer succeeded; only a
/// value that never equals itself (a NaN inside) exhausts it.
const UPDATE_ATTEMPTS: usize = 1_000;

/// What a caller of [`CacheExt::try_get_or_insert_with`] whose loader was
/// not the one that ran gets when that loader failed (`E::from` this error).
const PEER_LOADER_FAILED: &str = "the load of this key by a concurrent caller failed";

/// The loader of [`CacheExt::optionally_get_or_insert_with`] found nothing:
/// shared with waiters as an error (so nothing is stored), read back as `None`.
const NOTHING_LOADED: &str = "modkit: the loader found no value (nothing cached)";

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

    /// [`get_or_insert_with`](Self::get_or_insert_with) with a loader that
    /// fails with the caller's own error type `E` (a service's
    /// [`AppError`](crate::AppError), say), so a business failure need not
    /// travel as a `modkit::Error`.
    ///
    /// Nothing is stored when the loader fails. The caller whose loader ran
    /// gets its error back as it was. Concurrent callers of the same key that
    /// waited for that load (single flight: only one loader runs) get
    /// `E::from(modkit::Error)` of kind [`Internal`](crate::ErrorKind::Internal),
    /// retryable, whose message holds the loader error's text: their own
    /// loader never ran, and trying again runs it. Cache failures are
    /// `E::from` the cache's error.
    fn try_get_or_insert_with<'a, E, F, Fut>(
        &'a self,
        key: &'a str,
        make: F,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<V, E>> + Send + 'a>>
    where
        E: From<Error> + std::fmt::Display + Send + 'a,
        F: FnOnce() -> Fut + Send + 'a,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'a,
    {
        Box::pin(async move {
            // The loader's own error, if it ran and failed: the flight shares
            // only a `modkit::Error` with waiters, the caller gets `E` itself.
            let mut own: Option<E> = None;
            let slot = &mut own;
            let loaded = self
                .get_or_load(
                    key,
                    Box::pin(async move {
                        make().await.map_err(|e| {
                            let shared = Error::internal(format!("{PEER_LOADER_FAILED}: {e}"))
                                .with_retryable(true);
                            *slot = Some(e);
                            shared
                        })
                    }),
                )
                .await;
            match (loaded, own) {
                (Ok(v), _) => Ok(v),
                (Err(_), Some(e)) => Err(e),
                (Err(e), None) => Err(E::from(e)),
            }
        })
    }

    /// [`get_or_insert_with`](Self::get_or_insert_with) with a loader that
    /// may find nothing: `Ok(None)` from the loader is returned as `None` and
    /// nothing is cached (the next call loads again), so "not found" needs no
    /// error. Concurrent callers that waited for that load get `None` too.
    ///
    /// ```
    /// use mod_api::{Cache, CacheExt, CachePolicy, Result};
    ///
    /// async fn price(prices: &dyn Cache<u64>, sku: &str) -> Result<Option<u64>> {
    ///     prices
    ///         .optionally_get_or_insert_with(sku, || async move {
    ///             Ok(match sku {
    ///                 "tea" => Some(350), // from the database
    ///                 _ => None,
    ///             })
    ///         })
    ///         .await
    /// }
    /// ```
    fn optionally_get_or_insert_with<'a, F, Fut>(
        &'a self,
        key: &'a str,
        make: F,
    ) -> Pin<Box<dyn Future<Output = Result<Option<V>>> + Send + 'a>>
    where
        F: FnOnce() -> Fut + Send + 'a,
        Fut: Future<Output = Result<Option<V>>> + Send + 'a,
    {
        Box::pin(async move {
            let loader = Box::pin(async move {
                make()
                    .await?
                    .ok_or_else(|| Error::not_found(NOTHING_LOADED))
            });
            match self.get_or_load(key, loader).await {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.kind() == ErrorKind::NotFound && e.message() == NOTHING_LOADED => {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
    }
    /// Read-modify-write of `key` without lost updates: `f` gets the current
    /// value (`None`: absent) and returns the new one, which is stored with
    /// [`Cache::compare_and_set`]; when another writer changed the entry
    /// meanwhile, `f` runs again on the value that writer left. Returns the
    /// value stored. Fails with [`ErrorKind::Conflict`] (retryable) only after
    /// 1000 lost races in a row.
    ///
    /// ```
    /// use mod_api::{Cache, CacheExt, Result};
    ///
    /// async fn hit(counters: &dyn Cache<u64>, page: &str) -> Result<u64> {
    ///     counters.update(page, |n| n.copied().unwrap_or(0) + 1).await
    /// }
    /// ```
    fn update<'a, F>(
        &'a self,
        key: &'a str,
        mut f: F,
    ) -> Pin<Box<dyn Future<Output = Result<V>> + Send + 'a>>
    where
        V: PartialEq,
        F: FnMut(Option<&V>) -> V + Send + 'a,
    {
        Box::pin(async move {
            let mut current = self.get(key).await?;
            for _ in 0..UPDATE_ATTEMPTS {
                let new = f(current.as_ref());
                match self
                    .compare_and_set(key, current.as_ref(), new.clone())
                    .await?
                {
                    Cas::Stored => return Ok(new),
                    Cas::Mismatch(now) => current = now,
                }
            }
            Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "cache {}: key {key:?} kept changing during update",
                    self.name()
                ),
            )
            .with_retryable(true))
        })
    }
}

impl<V: Value, C: Cache<V> + ?Sized> CacheExt<V> for C {}
