//! The in-process session store.
//!
//! # Design
//!
//! Two [`DashMap`]s: sessions by id, and a principal → ids index. Why dashmap
//! rather than moka: an update must check the version and write under one lock
//! (a dashmap entry lock), and expiry is two deadlines computed from the stored
//! timestamps (`Session::expires_ms`), which a plain comparison on access
//! expresses exactly; moka would need its compute API for the check-and-set and
//! a recomputed per-entry expiry on every validate.
//!
//! Expired sessions are invisible to every operation. They are removed lazily
//! when touched, and by a sweep that `create` (the only operation that adds
//! memory) runs at most once per sweep interval (the idle timeout, clamped to
//! 1 s ..= 60 s). No background task: nothing outlives the store.
//!
//! Lock order, to rule out deadlocks: an index entry may be held while a
//! session entry is locked, never the reverse (session locks are released
//! before the index is touched).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use mod_api::session::now_millis;
use mod_api::{async_trait, Error, ErrorKind, Result, Session, SessionConfig, SessionId};
use mod_api::{SessionStore, Value};

/// Bounds of the interval between sweeps of expired sessions.
const SWEEP_MIN: Duration = Duration::from_secs(1);
const SWEEP_MAX: Duration = Duration::from_secs(60);
/// Longest timeout honoured: "forever" for a session.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// An in-process [`SessionStore`] (see the [module docs](self)).
pub struct MemorySessions<D> {
    name: String,
    config: SessionConfig,
    /// Live (and not yet removed expired) sessions by id.
    sessions: DashMap<String, Session<D>>,
    /// The ids of each principal's sessions (for `destroy_principal`).
    by_principal: DashMap<String, HashSet<String>>,
    /// When `create` next sweeps, ms since the Unix epoch.
    next_sweep_ms: AtomicU64,
    sweep_every_ms: u64,
}

impl<D: Value> MemorySessions<D> {
    /// An empty store named `name` (used in traces) with `config`'s expiry.
    ///
    /// Timeouts above a century are treated as a century, so that deadline
    /// arithmetic on milliseconds cannot overflow.
    pub fn new(name: &str, mut config: SessionConfig) -> Self {
        config.idle_timeout = config.idle_timeout.min(FOREVER);
        config.absolute_lifetime = config.absolute_lifetime.min(FOREVER);
        let every = config.idle_timeout.clamp(SWEEP_MIN, SWEEP_MAX).as_millis() as u64;
        MemorySessions {
            name: name.to_owned(),
            config,
            sessions: DashMap::new(),
            by_principal: DashMap::new(),
            next_sweep_ms: AtomicU64::new(now_millis().saturating_add(every)),
            sweep_every_ms: every,
        }
    }

    /// Removes every expired session now; returns how many it removed.
    ///
    /// Not needed for correctness (expired sessions are never returned), only
    /// to free memory; `create` calls it once per sweep interval.
    pub fn sweep_expired(&self) -> usize {
        let now = now_millis();
        let mut gone = Vec::new();
        self.sessions.retain(|id, s| {
            let live = self.live(s, now);
            if !live {
                gone.push((id.clone(), s.principal.clone()));
            }
            live
        });
        for (id, principal) in &gone {
            self.forget(id, principal);
        }
        if !gone.is_empty() {
            tracing::debug!(store = %self.name, removed = gone.len(), "swept expired sessions");
        }
        gone.len()
    }

    fn live(&self, session: &Session<D>, now: u64) -> bool {
        now < session.expires_ms(&self.config)
    }

    /// Drops `id` from its principal's index entry (and the entry once empty).
    fn forget(&self, id: &str, principal: &str) {
        if let Some(mut ids) = self.by_principal.get_mut(principal) {
            ids.remove(id);
        }
        self.by_principal
            .remove_if(principal, |_, ids| ids.is_empty());
    }

    /// Removes `id` if it is expired (lazy cleanup after an access found it so).
    fn evict_if_expired(&self, id: &str, now: u64) {
        if let Some((id, s)) = self.sessions.remove_if(id, |_, s| !self.live(s, now)) {
            self.forget(&id, &s.principal);
        }
    }

    fn maybe_sweep(&self, now: u64) {
        let due = self.next_sweep_ms.load(Ordering::Relaxed);
        let next = now.saturating_add(self.sweep_every_ms);
        // One caller per interval wins the exchange and sweeps.
        if now >= due
            && self
                .next_sweep_ms
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep_expired();
        }
    }

    fn not_found(&self) -> Error {
        tracing::debug!(store = %self.name, "session not found or expired");
        Error::not_found("session not found or expired")
    }
}

#[async_trait]
impl<D: Value> SessionStore<D> for MemorySessions<D> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn create(&self, principal: &str, data: D) -> Result<Session<D>> {
        let id = SessionId::generate()?;
        let now = now_millis();
        let session = Session {
            id: id.clone(),
            principal: principal.to_owned(),
            data,
            version: 1,
            created_ms: now,
            last_seen_ms: now,
        };
        {
            // Index first (lock order), so `destroy_principal` either sees the
            // new session or runs entirely before it exists.
            let mut ids = self.by_principal.entry(principal.to_owned()).or_default();
            self.sessions
                .insert(id.as_str().to_owned(), session.clone());
            ids.insert(id.as_str().to_owned());
        }
        self.maybe_sweep(now);
        Ok(session)
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session<D>>> {
        let now = now_millis();
        match self.sessions.get(id.as_str()) {
            Some(s) if self.live(&s, now) => return Ok(Some(s.clone())),
            Some(_) => {}
            None => return Ok(None),
        }
        self.evict_if_expired(id.as_str(), now);
        Ok(None)
    }

    async fn validate(&self, id: &SessionId) -> Result<Option<Session<D>>> {
        let now = now_millis();
        match self.sessions.get_mut(id.as_str()) {
            Some(mut s) if self.live(&s, now) => {
                s.last_seen_ms = s.last_seen_ms.max(now);
                return Ok(Some(s.clone()));
            }
            Some(_) => {}
            None => return Ok(None),
        }
        self.evict_if_expired(id.as_str(), now);
        Ok(None)
    }

    async fn update(&self, id: &SessionId, expected_version: u64, data: D) -> Result<Session<D>> {
        let now = now_millis();
        match self.sessions.get_mut(id.as_str()) {
            // Check and set under the entry's write lock: no lost update.
            Some(mut s) if self.live(&s, now) => {
                if s.version != expected_version {
                    tracing::debug!(store = %self.name, stored = s.version, "version conflict");
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "session is at version {}, not {expected_version}: re-read and retry",
                            s.version
                        ),
                    ));
                }
                s.data = data;
                s.version += 1;
                s.last_seen_ms = s.last_seen_ms.max(now);
                return Ok(s.clone());
            }
            Some(_) => {}
            None => return Err(self.not_found()),
        }
        self.evict_if_expired(id.as_str(), now);
        Err(self.not_found())
    }

    async fn rotate(&self, id: &SessionId) -> Result<Session<D>> {
        let now = now_millis();
        let principal = match self.sessions.get(id.as_str()) {
            Some(s) if self.live(&s, now) => Some(s.principal.clone()),
            Some(_) => None,
            None => return Err(self.not_found()),
        };
        let Some(principal) = principal else {
            self.evict_if_expired(id.as_str(), now);
            return Err(self.not_found());
        };
        let new_id = SessionId::generate()?;
        // Hold the principal's index entry across the swap, so that a concurrent
        // `destroy_principal` sees either the old id or the new one.
        let Entry::Occupied(mut ids) = self.by_principal.entry(principal.clone()) else {
            return Err(self.not_found());
        };
        let old = self.sessions.remove_if(id.as_str(), |_, s| {
            self.live(s, now) && s.principal == principal
        });
        let Some((old_key, old)) = old else {
            drop(ids);
            self.evict_if_expired(id.as_str(), now);
            return Err(self.not_found());
        };
        let session = Session {
            id: new_id.clone(),
            version: old.version + 1,
            last_seen_ms: old.last_seen_ms.max(now),
            ..old
        };
        self.sessions
            .insert(new_id.as_str().to_owned(), session.clone());
        ids.get_mut().remove(&old_key);
        ids.get_mut().insert(new_id.as_str().to_owned());
        Ok(session)
    }

    async fn destroy(&self, id: &SessionId) -> Result<bool> {
        let now = now_millis();
        let Some((id, s)) = self.sessions.remove(id.as_str()) else {
            return Ok(false);
        };
        self.forget(&id, &s.principal);
        Ok(self.live(&s, now))
    }

    async fn destroy_principal(&self, principal: &str) -> Result<usize> {
        let now = now_millis();
        // Holding the index entry keeps `create` and `rotate` of this principal
        // out until every listed session is gone.
        let Entry::Occupied(ids) = self.by_principal.entry(principal.to_owned()) else {
            return Ok(0);
        };
        let mut ended = 0;
        for id in ids.get() {
            let removed = self.sessions.remove_if(id, |_, s| s.principal == principal);
            if removed.is_some_and(|(_, s)| self.live(&s, now)) {
                ended += 1;
            }
        }
        ids.remove();
        tracing::debug!(store = %self.name, ended, "destroyed the principal's sessions");
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(idle_ms: u64) -> MemorySessions<u32> {
        let config = SessionConfig {
            idle_timeout: Duration::from_millis(idle_ms),
            absolute_lifetime: Duration::from_secs(60),
            ..SessionConfig::default()
        };
        MemorySessions::new("unit", config)
    }

    #[tokio::test]
    async fn huge_timeouts_do_not_overflow() {
        let config = SessionConfig {
            idle_timeout: Duration::MAX,
            absolute_lifetime: Duration::MAX,
            ..SessionConfig::default()
        };
        let s = MemorySessions::new("unit", config);
        let a = s.create("p", 1u32).await.unwrap();
        assert!(s.validate(&a.id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn sweep_frees_expired_sessions_and_their_index() {
        let s = store(100);
        for i in 0..10 {
            s.create(&format!("p{}", i % 3), i).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(s.sweep_expired(), 10);
        assert!(s.sessions.is_empty());
        assert!(s.by_principal.is_empty());
    }

    #[tokio::test]
    async fn create_sweeps_once_per_interval() {
        let s = store(100); // sweep interval clamps to 1 s
        for i in 0..5 {
            s.create("p", i).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let fresh = s.create("q", 9).await.unwrap();
        assert_eq!(s.sessions.len(), 1);
        assert!(s.sessions.contains_key(fresh.id.as_str()));
        assert!(!s.by_principal.contains_key("p"));
    }

    #[tokio::test]
    async fn lazy_access_removes_an_expired_session() {
        let s = store(100);
        let a = s.create("p", 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(s.get(&a.id).await.unwrap().is_none());
        assert!(s.sessions.is_empty());
        assert!(s.by_principal.is_empty());
    }

    #[tokio::test]
    async fn destroy_principal_does_not_count_expired_sessions() {
        let s = store(100);
        s.create("p", 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.create("p", 2).await.unwrap();
        assert_eq!(s.destroy_principal("p").await.unwrap(), 1);
        assert!(s.sessions.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotate_racing_destroy_principal_leaves_nothing_alive() {
        let s = std::sync::Arc::new(store(60_000));
        for _ in 0..200 {
            let a = s.create("p", 1).await.unwrap();
            let (s1, s2) = (s.clone(), s.clone());
            let rot = tokio::spawn(async move { s1.rotate(&a.id).await });
            let kill = tokio::spawn(async move { s2.destroy_principal("p").await });
            let rotated = rot.await.unwrap();
            assert_eq!(kill.await.unwrap().unwrap(), 1);
            if let Ok(new) = rotated {
                assert!(s.get(&new.id).await.unwrap().is_none());
            }
            assert!(s.sessions.is_empty());
            assert!(s.by_principal.is_empty());
        }
    }
}
