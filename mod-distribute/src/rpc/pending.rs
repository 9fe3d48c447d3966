//! The calls a client connection waits on, with their deadlines.
//!
//! Deadlines are enforced by the connection's task, with one timer for the
//! earliest of them, instead of a timer per call: registering and clearing a
//! timer cost as much as the rest of a call's bookkeeping. Calls of one
//! connection mostly share a timeout, so a new call's deadline is later than
//! the armed one and touches no timer at all; the sweep at the armed time
//! fails the calls past their deadline and arms the next.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mod_api::{Error, Result};
use tokio::sync::oneshot;

use super::IdBuildHasher;

/// What a caller receives: the reply bytes or the call's error.
pub(crate) type Reply = Result<Vec<u8>>;

/// No deadline is pending.
pub(crate) const NONE: u64 = u64::MAX;

/// One call waiting for its reply.
pub(crate) struct Waiter {
    /// Where the reply goes.
    pub tx: oneshot::Sender<Reply>,
    /// The deadline, in ms since the [`Pending`]'s epoch (rounded up).
    pub due: u64,
    /// For the timeout's message.
    pub service: &'static str,
    /// For the timeout's message.
    pub method: &'static str,
    /// The time the call was given, for the timeout's message.
    pub budget: Duration,
}

/// The waiting calls of one connection, by call id.
pub(crate) struct Pending {
    epoch: Instant,
    map: Mutex<HashMap<u64, Waiter, IdBuildHasher>>,
    /// The earliest deadline among the waiters as of the last sweep or insert
    /// ([`NONE`]: none); changed under the map's lock only.
    next_due: AtomicU64,
}

impl Pending {
    pub(crate) fn new() -> Self {
        Pending {
            epoch: Instant::now(),
            map: Mutex::new(HashMap::default()),
            next_due: AtomicU64::new(NONE),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<u64, Waiter, IdBuildHasher>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `deadline` in ms since the epoch, rounded up so a sweep is never early.
    pub(crate) fn due(&self, deadline: Instant) -> u64 {
        let d = deadline.saturating_duration_since(self.epoch);
        let ms = d.as_millis() as u64;
        ms + u64::from(!d.subsec_nanos().is_multiple_of(1_000_000))
    }

    /// The instant `due` ms after the epoch.
    pub(crate) fn instant(&self, due: u64) -> Instant {
        self.epoch + Duration::from_millis(due)
    }

    /// Whether no call is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Adds a waiter; `true` when its deadline is earlier than the armed one,
    /// so the connection's task must re-arm.
    pub(crate) fn insert(&self, id: u64, waiter: Waiter) -> bool {
        let due = waiter.due;
        let mut map = self.map();
        map.insert(id, waiter);
        self.next_due.fetch_min(due, Ordering::AcqRel) > due
    }

    /// Takes the waiter of `id` (`None`: it got its reply or gave up already).
    pub(crate) fn remove(&self, id: u64) -> Option<Waiter> {
        self.map().remove(&id)
    }

    /// Takes every waiter.
    pub(crate) fn drain(&self) -> Vec<(u64, Waiter)> {
        self.map().drain().collect()
    }

    /// The deadline the connection's task must wake up at ([`NONE`]: none).
    pub(crate) fn next_due(&self) -> u64 {
        self.next_due.load(Ordering::Acquire)
    }

    /// Fails the calls past their deadline with `Timeout` and returns their
    /// ids (to send CANCEL), then records the next deadline.
    pub(crate) fn sweep(&self, addr: &str) -> Vec<u64> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let mut expired = Vec::new();
        {
            let mut map = self.map();
            let ids: Vec<u64> = map
                .iter()
                .filter(|(_, w)| w.due <= now)
                .map(|(&id, _)| id)
                .collect();
            for id in ids {
                if let Some(w) = map.remove(&id) {
                    expired.push((id, w));
                }
            }
            let next = map.values().map(|w| w.due).min().unwrap_or(NONE);
            self.next_due.store(next, Ordering::Release);
        }
        expired
            .into_iter()
            .map(|(id, w)| {
                let _ = w.tx.send(Err(Error::timeout(format!(
                    "rpc call {}::{} to {addr} timed out after {:?}",
                    w.service, w.method, w.budget
                ))));
                id
            })
            .collect()
    }
}
