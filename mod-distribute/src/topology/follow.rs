//! Following the controller group: one subscription per controller address,
//! merged by the highest epoch, applied to a [`Redis`] handle.

use super::{read_update, url_for, Alert, Topology, Update, HEARTBEAT};
use crate::redis::{redact, Redis};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mod_api::{Error, Result};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

/// How long a subscription may stay silent (three heartbeats) before it is
/// treated as lost and dialled again.
const SILENCE: Duration = Duration::from_millis(HEARTBEAT.as_millis() as u64 * 3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Between reconnects of one subscription (also the polling fallback).
const RETRY: Duration = Duration::from_millis(200);

/// The topology as this process knows it, and its alerts. Dropping the last
/// handle stops the subscriptions.
#[derive(Clone)]
pub struct Follower {
    inner: Arc<Shared>,
}

struct Shared {
    topology: watch::Sender<Topology>,
    alerts: broadcast::Sender<Alert>,
    relookup: Notify,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// When any controller last sent a line (ms since `born`).
    heard_ms: AtomicU64,
    born: Instant,
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("topology", &*self.inner.topology.borrow())
            .finish()
    }
}

impl Follower {
    /// Subscribes to every controller in `controllers` (`host:port`) and
    /// waits up to `first` for a topology with a primary.
    pub async fn subscribe(controllers: &[String], first: Duration) -> Result<Follower> {
        if controllers.is_empty() {
            return Err(Error::config("[redis] controllers: no controller address"));
        }
        let (topology, mut seen) = watch::channel(Topology::default());
        let follower = Follower {
            inner: Arc::new(Shared {
                topology,
                alerts: broadcast::channel(256).0,
                relookup: Notify::new(),
                tasks: Default::default(),
                heard_ms: AtomicU64::new(0),
                born: Instant::now(),
            }),
        };
        let weak = Arc::downgrade(&follower.inner);
        let tasks = controllers
            .iter()
            .map(|addr| tokio::spawn(subscription(addr.clone(), weak.clone())))
            .collect();
        *follower
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = tasks;
        let ready = tokio::time::timeout(first, seen.wait_for(|t| t.primary.is_some())).await;
        if ready.is_err() {
            return Err(Error::unavailable(
                "no controller answered with a topology that has a primary",
            )
            .with_context("controllers", controllers.join(","))
            .with_context("waited", format!("{first:?}")));
        }
        Ok(follower)
    }

    /// The topology of the highest epoch seen.
    pub fn topology(&self) -> Topology {
        self.inner.topology.borrow().clone()
    }

    /// Changes of the topology (only to higher epochs).
    pub fn watch(&self) -> watch::Receiver<Topology> {
        self.inner.topology.subscribe()
    }

    /// The alerts the controllers raise from now on (a slow reader that
    /// falls 256 behind loses the oldest, and is told so by the receiver).
    pub fn alerts(&self) -> broadcast::Receiver<Alert> {
        self.inner.alerts.subscribe()
    }

    /// Asks every controller again now (after `READONLY`, `NOREPLICAS` or
    /// a lost connection), instead of waiting for the next push.
    pub fn relookup(&self) {
        self.inner.relookup.notify_waiters();
    }

    /// Whether some controller was heard within three heartbeats (the
    /// proxy stops forwarding when not: the primary it knows may be stale).
    pub fn in_contact(&self) -> bool {
        let heard = Duration::from_millis(self.inner.heard_ms.load(Ordering::Acquire));
        self.inner.born.elapsed().saturating_sub(heard) < SILENCE
    }

    /// Takes `topology` if its epoch is higher than the one held.
    fn offer(&self, topology: Topology) {
        let heard = self.inner.born.elapsed().as_millis() as u64;
        self.inner.heard_ms.fetch_max(heard, Ordering::AcqRel);
        self.inner.topology.send_if_modified(|held| {
            if topology.epoch > held.epoch {
                *held = topology;
                true
            } else {
                false
            }
        });
    }
}

/// One controller's subscription, redialled until the follower is dropped.
async fn subscription(addr: String, follower: Weak<Shared>) {
    loop {
        let result = read_from(&addr, &follower).await;
        let Some(shared) = follower.upgrade() else {
            return;
        };
        if let Err(e) = result {
            tracing::debug!(controller = %addr, error = %e, "topology subscription lost");
        }
        // The wait holds the shared state; that only delays its drop by RETRY.
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = shared.relookup.notified() => {}
        }
    }
}

async fn read_from(addr: &str, follower: &Weak<Shared>) -> Result<()> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::timeout("cannot reach the controller"))??;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    loop {
        let relookup = match follower.upgrade() {
            Some(shared) => Follower { inner: shared },
            None => return Ok(()),
        };
        let notified = relookup.inner.relookup.notified();
        let update = tokio::select! {
            read = tokio::time::timeout(SILENCE, read_update(&mut reader)) => match read {
                Ok(update) => update.inspect_err(|e| {
                    tracing::warn!(controller = %addr, error = %e, "bad line from a controller; reconnecting");
                })?,
                Err(_) => return Err(Error::timeout("controller silent for three heartbeats")),
            },
            _ = notified => return Ok(()),
        };
        match update {
            None => return Ok(()),
            Some(Update::Topology(t)) => relookup.offer(t),
            Some(Update::Alert(alert)) => {
                let _ = relookup.inner.alerts.send(alert);
            }
        }
    }
}

/// Subscribes to `controllers`, moves `redis` to the committed primary, and
/// keeps it on the primary of the highest epoch from then on (every shared,
/// blocking and pub/sub connection of the handle follows its endpoint).
pub async fn follow(redis: &Redis, controllers: &[String], first: Duration) -> Result<Follower> {
    let follower = Follower::subscribe(controllers, first).await?;
    follower.drive(redis).await?;
    Ok(follower)
}

impl Follower {
    /// Moves `redis` to the held topology's primary and keeps it following.
    pub async fn drive(&self, redis: &Redis) -> Result<()> {
        let mut changes = self.watch();
        let applied = changes.borrow_and_update().clone();
        apply(redis, &applied).await?;
        let handle = redis.downgrade();
        let task = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let next = changes.borrow_and_update().clone();
                let Some(redis) = Redis::upgrade(&handle) else {
                    return;
                };
                // A new primary may not answer for a moment: retry it until it
                // does or a higher epoch replaces it.
                while let Err(e) = apply(&redis, &next).await {
                    tracing::warn!(epoch = next.epoch, error = %e, "cannot reach the new primary yet");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = changes.changed() => break,
                    }
                }
            }
        });
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        Ok(())
    }
}

/// Points `redis` at `topology`'s primary, unless it is there already.
async fn apply(redis: &Redis, topology: &Topology) -> Result<()> {
    let Some(primary) = &topology.primary else {
        return Ok(());
    };
    let url = url_for(&redis.url(), primary);
    if url == redis.url() && redis.topology_epoch() >= topology.epoch {
        return Ok(());
    }
    if url != redis.url() {
        redis.switch_to(&url).await?;
    }
    redis.set_topology_epoch(topology.epoch);
    tracing::info!(epoch = topology.epoch, primary = %redact(&url), "following the committed primary");
    Ok(())
}
