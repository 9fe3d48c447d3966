//! The registry's background tasks: the pub/sub listener and the sweeper.
//!
//! Both hold a [`Weak`] to the registry and a shutdown receiver whose sender
//! the registry owns, so they end as soon as it is dropped.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use mod_api::Result;
use redis::aio::PubSub;
use redis::Value;
use tokio::sync::watch;

use super::RedisRegistry;
use crate::redis::{redis_error, Redis};

/// Expired leases removed per sweep script call (bounds the script's run time).
const SWEEP_LIMIT: usize = 1000;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a pub/sub health ping may take before the connection is redone.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A pub/sub connection subscribed to `channel`.
pub(super) async fn subscribe(redis: &Redis, channel: &str) -> Result<PubSub> {
    let mut pubsub = redis.pubsub().await?;
    pubsub.subscribe(channel).await.map_err(redis_error)?;
    Ok(pubsub)
}

/// Why a pub/sub connection stopped being used.
enum Ended {
    Shutdown,
    Lost(&'static str),
}

/// Feeds notifications to the registry; re-connects (with backoff) and
/// re-subscribes when the connection drops, then resyncs what it may have missed.
pub(super) async fn listener(
    registry: Weak<RedisRegistry>,
    first: PubSub,
    mut epoch: u64,
    mut shutdown: watch::Receiver<()>,
    sweep: Duration,
) {
    // Health checks (endpoint switch, half-open connection) are rarer than sweeps.
    let check_every = (sweep * 10).clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut next = Some(first);
    let mut backoff = MIN_BACKOFF;
    loop {
        let pubsub = match next.take() {
            Some(pubsub) => pubsub,
            None => {
                let Some((redis, channel)) = registry
                    .upgrade()
                    .map(|r| (r.redis.clone(), r.channel.clone()))
                else {
                    return;
                };
                epoch = redis.epoch();
                let attempt = tokio::select! {
                    attempt = subscribe(&redis, &channel) => attempt,
                    _ = shutdown.changed() => return,
                };
                match attempt {
                    Ok(pubsub) => {
                        tracing::info!("registry pub/sub re-subscribed");
                        backoff = MIN_BACKOFF;
                        if let Some(registry) = registry.upgrade() {
                            // Notifications sent while disconnected are lost.
                            if let Err(e) = registry.resync().await {
                                tracing::warn!(error = %e, "registry resync after reconnect failed");
                            }
                        }
                        pubsub
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, ?backoff, "registry pub/sub reconnect failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        match pump(&registry, pubsub, epoch, &mut shutdown, check_every).await {
            Ended::Shutdown => {
                tracing::debug!("registry dropped; pub/sub listener ends");
                return;
            }
            Ended::Lost(why) => {
                tracing::warn!(why, "registry pub/sub connection lost; reconnecting")
            }
        }
    }
}

/// Reads notifications from one connection until it fails or the registry goes.
async fn pump(
    registry: &Weak<RedisRegistry>,
    pubsub: PubSub,
    epoch: u64,
    shutdown: &mut watch::Receiver<()>,
    check_every: Duration,
) -> Ended {
    let (mut sink, mut stream) = pubsub.split();
    let mut health = tokio::time::interval(check_every);
    health.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Ended::Lost("stream ended");
                };
                let Some(registry) = registry.upgrade() else {
                    return Ended::Shutdown;
                };
                notified(&registry, msg.get_payload_bytes());
            }
            _ = shutdown.changed() => return Ended::Shutdown,
            _ = health.tick() => {
                let Some(switched) = registry.upgrade().map(|r| r.redis.epoch() != epoch) else {
                    return Ended::Shutdown;
                };
                if switched {
                    return Ended::Lost("redis endpoint switched");
                }
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    _ => return Ended::Lost("ping failed"),
                }
            }
        }
    }
}

/// Handles `"<service> <version>"`.
fn notified(registry: &RedisRegistry, payload: &[u8]) {
    let parsed = std::str::from_utf8(payload).ok().and_then(|text| {
        let (service, version) = text.rsplit_once(' ')?;
        Some((service, version.parse::<u64>().ok()?))
    });
    match parsed {
        Some((service, version)) => registry.request_refresh(service, Some(version)),
        None => tracing::warn!(
            len = payload.len(),
            "malformed registry notification ignored"
        ),
    }
}

/// Every `every`: expires run-out leases (telling every node) and resyncs
/// this node's watches. Logs a failure once, not every tick.
pub(super) async fn sweeper(
    registry: Weak<RedisRegistry>,
    every: Duration,
    mut shutdown: watch::Receiver<()>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                tracing::debug!("registry dropped; sweeper ends");
                return;
            }
        }
        let Some(registry) = registry.upgrade() else {
            return;
        };
        // Independent steps: a failing sweep must not stop the resync that
        // covers lost notifications (after a Redis restart, say).
        let swept = registry.sweep_once().await;
        let result = swept.and(registry.resync().await);
        match result {
            Ok(()) if failing => {
                tracing::info!("registry sweeper recovered");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "registry sweep failed; retrying every sweep");
                failing = true;
            }
            Err(e) => tracing::debug!(error = %e, "registry sweep failed again"),
        }
    }
}

impl RedisRegistry {
    /// Removes instances whose lease ran out; the script bumps and publishes.
    async fn sweep_once(&self) -> Result<()> {
        let limit = SWEEP_LIMIT.to_string();
        let expired: Vec<String> = self
            .run(false, &self.scripts.sweep, &[limit.as_bytes()])
            .await?;
        if !expired.is_empty() {
            tracing::info!(services = ?expired, "expired registry leases removed");
        }
        Ok(())
    }
}
