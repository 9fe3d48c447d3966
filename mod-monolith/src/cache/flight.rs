//! Single flight for `get_or_load`: at most one loader runs per key at a time,
//! and callers that miss the same key meanwhile wait for its outcome.
//!
//! moka's sync cache cannot run an async loader, so the cache keeps this table
//! of running loads itself. A leader that is cancelled (its future dropped)
//! closes its channel without an outcome; its waiters then try again, and one
//! of them leads.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use mod_api::Error;
use tokio::sync::watch;

/// What a load produced: the value, or the error (detached, so it can be
/// shared). `None` until the leader is done.
type Outcome<V> = Option<Result<V, Error>>;

/// The loads running in one cache, by key.
pub(super) struct Flights<V> {
    running: Mutex<HashMap<String, watch::Receiver<Outcome<V>>>>,
}

/// A caller's part in the load of a key.
pub(super) enum Role<'a, V> {
    /// No load was running: this caller runs it and reports through the guard.
    Leader(Leader<'a, V>),
    /// Another caller runs it: wait on this.
    Waiter(watch::Receiver<Outcome<V>>),
}

/// The running load of one key; dropping it ends the flight (without an
/// outcome unless [`Leader::finish`] gave one).
pub(super) struct Leader<'a, V> {
    flights: &'a Flights<V>,
    key: String,
    done: watch::Sender<Outcome<V>>,
}

impl<V: Clone + Send + Sync> Flights<V> {
    /// An empty table.
    pub(super) fn new() -> Self {
        Flights {
            running: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<Outcome<V>>>> {
        // The map stays consistent even if a holder panicked: every change is one call.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the load of `key`, leading it if none runs.
    pub(super) fn join(&self, key: &str) -> Role<'_, V> {
        let mut running = self.lock();
        if let Some(rx) = running.get(key) {
            return Role::Waiter(rx.clone());
        }
        let (done, rx) = watch::channel(None);
        running.insert(key.to_owned(), rx);
        Role::Leader(Leader {
            flights: self,
            key: key.to_owned(),
            done,
        })
    }

    /// Waits for the leader's outcome; `None` when it was cancelled.
    pub(super) async fn wait(mut rx: watch::Receiver<Outcome<V>>) -> Outcome<V> {
        let outcome = rx.wait_for(Option::is_some).await.ok()?;
        match &*outcome {
            Some(Ok(value)) => Some(Ok(value.clone())),
            Some(Err(e)) => Some(Err(e.to_detached())),
            None => None,
        }
    }
}

impl<V> Leader<'_, V> {
    /// Hands the outcome to the waiters and ends the flight.
    pub(super) fn finish(self, outcome: Result<V, Error>) {
        // Stored even if nobody waits (then it is simply dropped with the channel).
        self.done.send_replace(Some(outcome));
    }
}

impl<V> Drop for Leader<'_, V> {
    fn drop(&mut self) {
        self.flights
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}
