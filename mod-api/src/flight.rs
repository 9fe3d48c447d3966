//! Single flight for [`Cache::get_or_load`](crate::Cache::get_or_load), for
//! backends: at most one loader runs per key (per cache handle), and callers
//! that miss the same key meanwhile wait for its outcome. A leader that is
//! cancelled (its future dropped) frees the key without an outcome; its
//! followers then try again, and one of them leads.
//!
//! Backends call [`get_or_load`] with their own read and fill; the rest
//! ([`Flights`], [`Role`], [`follow`]) is its machinery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use std::future::Future;

use crate::cache::Loader;
use crate::codec::check_value_size;
use crate::Error;
use tokio::sync::watch;

/// The loader's outcome as shared with waiters (`None` while it runs).
type Slot<V> = Option<Result<V, Error>>;

/// The loads in flight of one cache handle, by key.
pub struct Flights<V> {
    map: Mutex<HashMap<String, watch::Receiver<Slot<V>>>>,
    /// Loads finished so far (of any key).
    finished: AtomicU64,
    /// The cache's name and `max_value_bytes`: a loaded value over it is
    /// returned but not filled.
    cache: String,
    max_value_bytes: usize,
}

/// What a caller of [`Flights::join`] does.
pub enum Role<'a, V> {
    /// Runs the loader, then [`Leader::finish`]es.
    Leader(Leader<'a, V>),
    /// Waits for the leader's outcome.
    Follower(watch::Receiver<Slot<V>>),
}

/// The one caller that loads a key; dropping it (cancellation) frees the key,
/// and its followers retry.
pub struct Leader<'a, V> {
    flights: &'a Flights<V>,
    key: String,
    tx: watch::Sender<Slot<V>>,
}

impl<V> Flights<V> {
    /// The flights of cache `cache`, whose values are limited to `max_value_bytes`.
    pub fn new(cache: &str, max_value_bytes: usize) -> Self {
        Flights {
            map: Mutex::new(HashMap::new()),
            finished: AtomicU64::new(0),
            cache: cache.to_owned(),
            max_value_bytes,
        }
    }
}

impl<V: Clone> Flights<V> {
    /// How many loads have finished. A leader whose caller read this before
    /// its cache miss, and finds it unchanged, knows no load stored the key
    /// in between (a finish counts before its key is freed).
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::SeqCst)
    }

    /// Joins the load of `key`, or starts it.
    pub fn join(&self, key: &str) -> Role<'_, V> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_owned(), rx);
        Role::Leader(Leader {
            flights: self,
            key: key.to_owned(),
            tx,
        })
    }

    /// How many loads are in flight.
    pub fn in_flight(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl<V> Leader<'_, V> {
    /// Hands the outcome to every follower (errors detached: kind, message,
    /// retryable flag and the source's text) and frees the key.
    pub fn finish(self, outcome: &Result<V, Error>)
    where
        V: Clone,
    {
        let shared = match outcome {
            Ok(v) => Ok(v.clone()),
            Err(e) => Err(e.to_detached()),
        };
        self.tx.send_replace(Some(shared));
        self.flights.finished.fetch_add(1, Ordering::SeqCst);
    }
}

impl<V> Drop for Leader<'_, V> {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

/// Waits for a leader; `None` when it was cancelled before finishing.
pub async fn follow<V: Clone>(mut rx: watch::Receiver<Slot<V>>) -> Option<Result<V, Error>> {
    let slot = rx.wait_for(Option::is_some).await.ok()?;
    match slot.as_ref()? {
        Ok(v) => Some(Ok(v.clone())),
        Err(e) => Some(Err(e.to_detached())),
    }
}

/// [`Cache::get_or_load`](crate::Cache::get_or_load) on top of a backend's
/// `read` (the entry now, `None` on a miss) and `fill` (stores a loaded
/// value; it handles its own failures: the caller gets the value anyway). A
/// loaded value over the cache's `max_value_bytes` is returned, not filled
/// (a WARN says so).
///
/// A hit returns at once. On a miss the caller joins the key's load: a
/// follower waits for the leader's outcome; the leader reads once more if a
/// load finished since its miss (that load stored the key), else runs
/// `loader`, fills, and hands the outcome to its followers. A loader error
/// reaches every waiter and nothing is stored.
pub async fn get_or_load<V, R, RF, F, FF>(
    flights: &Flights<V>,
    key: &str,
    loader: Loader<'_, V>,
    mut read: R,
    fill: F,
) -> Result<V, Error>
where
    V: crate::Value,
    R: FnMut() -> RF,
    RF: Future<Output = Result<Option<V>, Error>>,
    F: FnOnce(V) -> FF,
    FF: Future<Output = ()>,
{
    loop {
        let finished = flights.finished();
        if let Some(v) = read().await? {
            return Ok(v);
        }
        let leader = match flights.join(key) {
            Role::Leader(leader) => leader,
            Role::Follower(rx) => match follow(rx).await {
                Some(outcome) => return outcome,
                // The leader was cancelled: try again, maybe as the leader.
                None => continue,
            },
        };
        if flights.finished() != finished {
            if let Some(v) = read().await? {
                leader.finish(&Ok(v.clone()));
                return Ok(v);
            }
        }
        // Every caller, this one too, gets the error as waiters do (kind,
        // retryable flag, the source chain folded into the message).
        let outcome = loader.await.map_err(|e| e.to_detached());
        match &outcome {
            // Filled before the flight ends, so a later miss finds it.
            Ok(v) => match check_value_size("cache", &flights.cache, v, flights.max_value_bytes) {
                Ok(()) => fill(v.clone()).await,
                Err(e) => {
                    tracing::warn!(cache = %flights.cache, error = %e, "loaded value not stored")
                }
            },
            Err(e) => tracing::debug!(key, kind = %e.kind(), "loader failed"),
        }
        leader.finish(&outcome);
        return outcome;
    }
}
