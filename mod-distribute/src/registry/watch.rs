//! Local fan-out of watches: per watched service, the last snapshot accepted
//! and the channels of this process's watchers.
//!
//! Refreshes of one service are serialised (one task at a time, re-run when
//! asked again meanwhile), so accepted versions only grow. Each watcher also
//! remembers the last version it was sent and is never sent one not above it.
//! A failed fetch changes nothing: watchers keep the last good snapshot and the
//! next resync (every sweep) tries again.

use std::sync::Weak;

use mod_api::registry::{Snapshot, Watch};
use mod_api::Result;
use redis::Value;
use tokio::sync::mpsc;

use super::RedisRegistry;
use crate::redis::redis_error;

/// One local watcher.
struct Sink {
    tx: mpsc::UnboundedSender<Snapshot>,
    /// The version last sent to it.
    sent: u64,
}

/// A service watched in this process.
#[derive(Default)]
pub(super) struct Watched {
    /// The last snapshot a refresh accepted.
    last: Option<Snapshot>,
    sinks: Vec<Sink>,
    /// `watch` calls fetching their first snapshot (keep the entry meanwhile).
    joining: usize,
    /// A refresh task runs for this service.
    fetching: bool,
    /// A refresh was asked for while one ran: run once more.
    again: bool,
}

impl Watched {
    /// Sends `snap` to every watcher not already past it; drops closed ones.
    fn broadcast(&mut self, snap: &Snapshot) {
        self.sinks.retain_mut(|sink| {
            if sink.sent >= snap.version {
                return !sink.tx.is_closed();
            }
            sink.sent = snap.version;
            sink.tx.send(snap.clone()).is_ok()
        });
    }

    /// Takes a freshly fetched snapshot. Returns the version to raise Redis
    /// above when the fetched one went back (Redis lost data, e.g. a restart
    /// without persistence): versions seen by watchers must never repeat.
    fn accept(&mut self, snap: Snapshot) -> Option<u64> {
        if let Some(last) = &self.last {
            let went_back = snap.version < last.version
                || (snap.version == last.version && snap.instances != last.instances);
            if went_back {
                return Some(last.version);
            }
            if snap.version == last.version {
                return None;
            }
        }
        self.broadcast(&snap);
        self.last = Some(snap);
        None
    }

    fn idle(&self) -> bool {
        self.sinks.is_empty() && self.joining == 0
    }
}

impl RedisRegistry {
    /// Opens a watch: the current snapshot first, then one per change.
    pub(super) async fn open_watch(&self, service: &str) -> Result<Watch> {
        // Known before the fetch, so a notification arriving meanwhile is not
        // ignored for want of an entry.
        self.lock().entry(service.to_owned()).or_default().joining += 1;
        let mut joining = Joining {
            registry: self,
            service,
            armed: true,
        };
        let fetched = self.fetch(service, 0).await;
        let (watch, stale) = {
            let mut watched = self.lock();
            joining.armed = false;
            let entry = watched.entry(service.to_owned()).or_default();
            entry.joining = entry.joining.saturating_sub(1);
            let snap = match fetched {
                Ok(snap) => snap,
                Err(e) => {
                    if entry.idle() {
                        watched.remove(service);
                    }
                    return Err(e);
                }
            };
            // A refresh may have accepted a newer snapshot meanwhile: start there.
            let (first, stale) = match &entry.last {
                Some(last) if last.version > snap.version => (last.clone(), true),
                _ => (snap, false),
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let sent = first.version;
            // The receiver is alive, so this cannot fail.
            let _ = tx.send(first);
            entry.sinks.push(Sink { tx, sent });
            if stale {
                tracing::debug!(%service, "watch fetch older than the last accepted snapshot");
            }
            (Watch::new(rx), stale)
        };
        if stale {
            self.request_refresh(service, None);
        }
        Ok(watch)
    }

    /// Asks for a refresh of a watched `service`; with `seen`, only when that
    /// version is not the last accepted one. A lower version is news too: Redis
    /// lost data (a restart without persistence), and the refresh raises the
    /// version again at once instead of waiting for the next resync.
    pub(super) fn request_refresh(&self, service: &str, seen: Option<u64>) {
        let mut watched = self.lock();
        let Some(entry) = watched.get_mut(service) else {
            return;
        };
        if let (Some(seen), Some(last)) = (seen, &entry.last) {
            if last.version == seen {
                return;
            }
        }
        if entry.fetching {
            entry.again = true;
            return;
        }
        entry.fetching = true;
        tokio::spawn(refresh(self.me.clone(), service.to_owned()));
    }

    /// Drops closed watchers and unwatched services; refreshes every watched
    /// service whose version in Redis differs from the last accepted one (one
    /// round trip when nothing moved). Covers lost notifications.
    pub(super) async fn resync(&self) -> Result<()> {
        let known: Vec<(String, Option<u64>)> = {
            let mut watched = self.lock();
            watched.retain(|_, entry| {
                entry.sinks.retain(|sink| !sink.tx.is_closed());
                !entry.idle()
            });
            watched
                .iter()
                .map(|(name, entry)| (name.clone(), entry.last.as_ref().map(|s| s.version)))
                .collect()
        };
        if known.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(format!("{}:versions", self.base));
        for (name, _) in &known {
            cmd.arg(name);
        }
        let current: Vec<Value> = cmd
            .query_async(&mut self.redis.conn())
            .await
            .map_err(redis_error)?;
        for ((name, last), now) in known.iter().zip(current) {
            let now = match now {
                Value::Nil => Some(0),
                Value::BulkString(b) => std::str::from_utf8(&b).ok().and_then(|t| t.parse().ok()),
                Value::Int(v) => u64::try_from(v).ok(),
                _ => None,
            };
            if now.is_none() || now != *last {
                self.request_refresh(name, None);
            }
        }
        Ok(())
    }
}

/// Undoes a `watch` call's `joining` count if the call is dropped mid-fetch.
struct Joining<'a> {
    registry: &'a RedisRegistry,
    service: &'a str,
    armed: bool,
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut watched = self.registry.lock();
        if let Some(entry) = watched.get_mut(self.service) {
            entry.joining = entry.joining.saturating_sub(1);
            if entry.idle() {
                watched.remove(self.service);
            }
        }
    }
}

/// What a refresh does after one fetch.
enum Next {
    Done,
    Again { min: u64 },
}

/// Fetches `service` until no refresh is pending, fanning out new versions.
async fn refresh(registry: Weak<RedisRegistry>, service: String) {
    let mut min = 0;
    loop {
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let fetched = registry.fetch(&service, min).await;
        let next = {
            let mut watched = registry.lock();
            let Some(entry) = watched.get_mut(&service) else {
                return;
            };
            min = 0;
            match fetched {
                Ok(snap) => {
                    if let Some(seen) = entry.accept(snap) {
                        tracing::warn!(%service, seen, "registry version went back (Redis lost data); raising it");
                        min = seen + 1;
                        entry.again = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(%service, error = %e, "registry refresh failed; watchers keep the last snapshot")
                }
            }
            if entry.again {
                entry.again = false;
                Next::Again { min }
            } else {
                entry.fetching = false;
                Next::Done
            }
        };
        match next {
            Next::Done => return,
            Next::Again { min: m } => min = m,
        }
    }
}
