//! The in-process registry: instances under leases, per-service versions, watchers.
//!
//! One mutex guards all state. Every operation is a short, non-blocking map
//! update, so a lock is simpler than sharding and keeps a change and the
//! notification of its watchers atomic (watchers never see versions out of order).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use mod_api::registry::checks;
use mod_api::registry::{ConsumerInfo, Instance, Registry, Snapshot, Status, Watch};
use mod_api::Result;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One registered instance and its lease.
struct Entry {
    instance: Instance,
    ttl: Duration,
    deadline: Instant,
}

/// The instances and watchers of one service.
///
/// Kept after its last instance leaves so that the version never goes back
/// (a watcher comparing versions across re-subscriptions stays correct).
#[derive(Default)]
struct ServiceState {
    version: u64,
    instances: BTreeMap<String, Entry>,
    watchers: Vec<mpsc::UnboundedSender<Snapshot>>,
}

impl ServiceState {
    fn snapshot(&self, service: &str) -> Snapshot {
        Snapshot {
            service: service.to_owned(),
            version: self.version,
            instances: self
                .instances
                .values()
                .map(|e| e.instance.clone())
                .collect(),
        }
    }

    /// Records a change: bumps the version and tells every live watcher.
    fn changed(&mut self, service: &str) {
        self.version += 1;
        if self.watchers.is_empty() {
            return;
        }
        let snapshot = self.snapshot(service);
        // A failed send means the receiver is gone: forget that watcher.
        self.watchers.retain(|tx| tx.send(snapshot.clone()).is_ok());
    }

    /// Removes instances whose lease ran out by `now`; one change for all of them.
    fn expire(&mut self, service: &str, now: Instant) {
        let before = self.instances.len();
        self.instances.retain(|id, e| {
            let live = e.deadline > now;
            if !live {
                tracing::info!(%service, %id, "instance lease expired; removed");
            }
            live
        });
        if self.instances.len() != before {
            self.changed(service);
        }
    }
}

#[derive(Default)]
struct State {
    services: HashMap<String, ServiceState>,
    /// Service → consumer ids.
    consumers: HashMap<String, BTreeSet<String>>,
}

/// The monolith's [`Registry`]: all in memory, shared by every node of the process.
///
/// Leases are checked lazily by every read and eagerly by a sweeper task that
/// runs every `sweep`, so an instance whose heartbeats stop is gone (and its
/// watchers told) within TTL plus one sweep.
pub struct MemoryRegistry {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryRegistry")
            .field("services", &state.services.len())
            .finish_non_exhaustive()
    }
}

impl MemoryRegistry {
    /// A new registry whose sweeper runs every `sweep` (at least 1 ms).
    ///
    /// Call it inside a tokio runtime. The sweeper holds only a [`Weak`], so it
    /// ends once the registry is dropped. Without a runtime there is no sweeper
    /// (reads still drop expired instances, but idle watchers are not told).
    pub fn new(sweep: Duration) -> Arc<Self> {
        let registry = Arc::new(MemoryRegistry {
            state: Mutex::new(State::default()),
        });
        let weak = Arc::downgrade(&registry);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(sweeper(weak, sweep.max(Duration::from_millis(1))));
            }
            Err(_) => tracing::warn!("MemoryRegistry created outside a tokio runtime: no sweeper"),
        }
        registry
    }

    /// Removes every expired instance and every closed watcher, now.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        for (service, s) in state.services.iter_mut() {
            s.expire(service, now);
            s.watchers.retain(|tx| !tx.is_closed());
        }
    }

    /// The state, even if a thread panicked while holding it (every update is
    /// a single map operation, so the state is never half-written).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The service's state with expired instances removed, if it exists.
    fn live<'a>(state: &'a mut State, service: &str) -> Option<&'a mut ServiceState> {
        let s = state.services.get_mut(service)?;
        s.expire(service, Instant::now());
        Some(s)
    }
}

async fn sweeper(registry: Weak<MemoryRegistry>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(registry) = registry.upgrade() else {
            tracing::debug!("registry dropped; sweeper ends");
            return;
        };
        registry.sweep();
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn register(&self, instance: Instance, ttl: Duration) -> Result<()> {
        let service = instance.service.clone();
        let entry = Entry {
            ttl,
            deadline: Instant::now() + ttl,
            instance,
        };
        let mut state = self.lock();
        let s = state.services.entry(service.clone()).or_default();
        s.instances.insert(entry.instance.id.clone(), entry);
        s.changed(&service);
        tracing::debug!(version = s.version, "instance registered");
        Ok(())
    }

    async fn heartbeat(&self, service: &str, id: &str) -> Result<()> {
        let mut state = self.lock();
        // Choice: a lease past its deadline is expired even if the sweeper has not
        // removed it yet. `live` removes it (telling watchers) before we look, so
        // the heartbeat is NotFound and the caller re-registers: the same answer
        // as a Redis key that has already expired.
        let entry = Self::live(&mut state, service).and_then(|s| s.instances.get_mut(id));
        match entry {
            Some(e) => {
                e.deadline = Instant::now() + e.ttl;
                Ok(())
            }
            None => Err(checks::not_found(service, id)),
        }
    }

    async fn deregister(&self, service: &str, id: &str) -> Result<bool> {
        let mut state = self.lock();
        let Some(s) = Self::live(&mut state, service) else {
            return Ok(false);
        };
        let removed = s.instances.remove(id).is_some();
        if removed {
            s.changed(service);
        }
        Ok(removed)
    }

    async fn set_status(&self, service: &str, id: &str, status: Status) -> Result<()> {
        let mut state = self.lock();
        let s = Self::live(&mut state, service).ok_or_else(|| checks::not_found(service, id))?;
        let e = s
            .instances
            .get_mut(id)
            .ok_or_else(|| checks::not_found(service, id))?;
        // Setting the status it already has is not a change: no new version.
        if e.instance.status != status {
            e.instance.status = status;
            s.changed(service);
        }
        Ok(())
    }

    async fn lookup(&self, service: &str) -> Result<Vec<Instance>> {
        let mut state = self.lock();
        Ok(Self::live(&mut state, service)
            .map(|s| s.instances.values().map(|e| e.instance.clone()).collect())
            .unwrap_or_default())
    }

    async fn services(&self) -> Result<Vec<String>> {
        self.sweep();
        let state = self.lock();
        let mut names: Vec<String> = state
            .services
            .iter()
            .filter(|(_, s)| !s.instances.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    async fn watch(&self, service: &str) -> Result<Watch> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        let s = state.services.entry(service.to_owned()).or_default();
        s.expire(service, Instant::now());
        // Sent under the lock, so no change can slip in between the first
        // snapshot and the subscription. The receiver is alive: send cannot fail.
        let _ = tx.send(s.snapshot(service));
        s.watchers.push(tx);
        Ok(Watch::new(rx))
    }

    async fn register_consumer(&self, consumer: ConsumerInfo) -> Result<()> {
        self.lock()
            .consumers
            .entry(consumer.service)
            .or_default()
            .insert(consumer.consumer);
        Ok(())
    }

    async fn deregister_consumer(&self, consumer: &ConsumerInfo) -> Result<bool> {
        let mut state = self.lock();
        let Some(set) = state.consumers.get_mut(&consumer.service) else {
            return Ok(false);
        };
        let removed = set.remove(&consumer.consumer);
        if set.is_empty() {
            state.consumers.remove(&consumer.service);
        }
        Ok(removed)
    }

    async fn consumers(&self, service: &str) -> Result<Vec<ConsumerInfo>> {
        let state = self.lock();
        // A BTreeSet iterates in order: the result is sorted by consumer.
        Ok(state
            .consumers
            .get(service)
            .map(|set| {
                set.iter()
                    .map(|c| ConsumerInfo {
                        service: service.to_owned(),
                        consumer: c.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mod_api::ErrorKind;

    fn inst(id: &str) -> Instance {
        Instance::new("svc", id, format!("mem://{id}"))
    }

    #[tokio::test]
    async fn heartbeat_past_deadline_is_not_found_and_tells_watchers() {
        // A sweep far in the future: only the heartbeat can notice the expiry.
        let reg = MemoryRegistry::new(Duration::from_secs(3600));
        reg.register(inst("a"), Duration::from_millis(100))
            .await
            .unwrap();
        let mut w = reg.watch("svc").await.unwrap();
        assert_eq!(w.next().await.unwrap().instances.len(), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let err = reg.heartbeat("svc", "a").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let snap = w.try_next().expect("watcher told of the expiry");
        assert!(snap.instances.is_empty());
    }

    #[tokio::test]
    async fn sweeper_expires_without_reads() {
        let reg = MemoryRegistry::new(Duration::from_millis(50));
        reg.register(inst("a"), Duration::from_millis(100))
            .await
            .unwrap();
        let mut w = reg.watch("svc").await.unwrap();
        let first = w.next().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let snap = w.try_next().expect("sweeper told the watcher");
        assert!(snap.instances.is_empty());
        assert!(snap.version > first.version);
    }

    #[tokio::test]
    async fn version_survives_the_last_instance_leaving() {
        let reg = MemoryRegistry::new(Duration::from_secs(1));
        reg.register(inst("a"), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(reg.deregister("svc", "a").await.unwrap());
        let snap = reg.watch("svc").await.unwrap().next().await.unwrap();
        assert_eq!(snap.version, 2);
        assert!(reg.services().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn same_status_is_not_a_change() {
        let reg = MemoryRegistry::new(Duration::from_secs(1));
        reg.register(inst("a"), Duration::from_secs(10))
            .await
            .unwrap();
        let mut w = reg.watch("svc").await.unwrap();
        w.next().await.unwrap();
        reg.set_status("svc", "a", Status::Up).await.unwrap();
        assert!(w.try_next().is_none());
    }

    #[tokio::test]
    async fn closed_watchers_are_dropped_and_sweeper_ends_with_registry() {
        let reg = MemoryRegistry::new(Duration::from_millis(10));
        drop(reg.watch("svc").await.unwrap());
        reg.sweep();
        assert!(reg.lock().services["svc"].watchers.is_empty());
        let weak = Arc::downgrade(&reg);
        let mut w = reg.watch("svc").await.unwrap();
        w.next().await.unwrap();
        drop(reg);
        assert!(weak.upgrade().is_none());
        // The sender went with the registry: the watch ends.
        assert!(w.next().await.is_none());
    }
}
