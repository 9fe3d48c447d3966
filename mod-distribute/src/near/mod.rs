//! Near cache: a small in-process copy of hot entries of a Redis cache,
//! invalidated across the deployment through one pub/sub channel.
//!
//! # Keys
//!
//! | key | type | what |
//! |-----|------|------|
//! | `<prefix>:near` | pub/sub channel | invalidations of near caches: `[kind u8][name length u16 BE][name][key]`, kind 1 = one key, 2 = the whole cache |
//!
//! # How it stays coherent
//!
//! - One [`NearHub`] per node holds one subscription to `<prefix>:near`. Every
//!   near-enabled [`RedisCache`](crate::cache::RedisCache) registers its
//!   in-process cache with the hub. Every `set`/`remove`/`clear` (and every
//!   eviction of the maintenance script) publishes an invalidation in the same
//!   round trip as its write, after it, so a subscriber never sees the
//!   invalidation before the write it announces.
//! - The writer evicts its own copy as soon as its write returns (it does not
//!   wait for its own message), so a process always reads its own writes.
//! - A fill (a Redis read copied into the near cache) races with invalidations:
//!   the reader takes a ticket (the invalidation counters of the key's stripe,
//!   of the whole cache, and the hub's connection epoch) *before* reading Redis,
//!   inserts, then re-checks the ticket; if anything moved it evicts what it
//!   inserted. Invalidations bump the counter *before* evicting, so either the
//!   filler sees the bump or the eviction comes after the insert.
//! - When the subscription drops (or a 5 s ping fails, or the Redis endpoint
//!   moved) the hub stops serving near hits, clears every near cache (it may
//!   have missed invalidations), and resubscribes with backoff; it clears again
//!   once resubscribed, then serves near hits again.
//! - Each near entry also lives at most the near policy's TTL, the entry's
//!   remaining Redis TTL, and for TTI caches half the TTI (so an entry read only
//!   through the near cache still has its Redis idle timer refreshed in time).

mod local;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use mod_api::{async_trait, Error, Result};

use crate::redis::{redis_error, Redis};

pub(crate) use local::NearCache;

/// Message kind: one key of one cache.
const KIND_KEY: u8 = 1;
/// Message kind: every key of one cache.
const KIND_CLEAR: u8 = 2;
/// How often the hub pings its subscription to detect a dead connection.
const PING_EVERY: Duration = Duration::from_secs(5);
/// How long a ping or a subscribe may take before the connection counts as dead.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The header of a one-key invalidation of cache `name`; append the key.
pub(crate) fn key_message_prefix(name: &str) -> Vec<u8> {
    message_prefix(KIND_KEY, name)
}

/// The invalidation of every key of cache `name`.
pub(crate) fn clear_message(name: &str) -> Vec<u8> {
    message_prefix(KIND_CLEAR, name)
}

fn message_prefix(kind: u8, name: &str) -> Vec<u8> {
    // Names are at most 200 bytes (`check_name`), so the length fits a u16.
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(3 + name.len());
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// A decoded invalidation message.
#[derive(Debug, PartialEq, Eq)]
enum Message<'a> {
    Key { name: &'a str, key: &'a str },
    Clear { name: &'a str },
}

fn parse_message(bytes: &[u8]) -> Option<Message<'_>> {
    let (&kind, rest) = bytes.split_first()?;
    let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let name = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
    let tail = rest.get(2 + len..)?;
    match kind {
        KIND_KEY => Some(Message::Key {
            name,
            key: std::str::from_utf8(tail).ok()?,
        }),
        KIND_CLEAR if tail.is_empty() => Some(Message::Clear { name }),
        _ => None,
    }
}

/// What a registered near cache must do when told.
#[async_trait]
pub(crate) trait NearTarget: Send + Sync {
    /// Evicts one key.
    async fn invalidate_key(&self, key: &str);
    /// Evicts everything.
    fn invalidate_everything(&self);
}

type Targets = HashMap<String, Vec<Weak<dyn NearTarget>>>;

struct HubState {
    redis: Redis,
    channel: String,
    targets: Mutex<Targets>,
    /// Near hits are served only while subscribed.
    connected: AtomicBool,
    /// Bumped at every connect and disconnect: fills started in another epoch are void.
    epoch: AtomicU64,
}

/// One pub/sub subscription per node that keeps the node's near caches coherent
/// (see the [module docs](self)).
pub struct NearHub {
    state: Arc<HubState>,
    task: tokio::task::AbortHandle,
}

impl std::fmt::Debug for NearHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearHub")
            .field("channel", &self.state.channel)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Drop for NearHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NearHub {
    /// Subscribes to the invalidation channel of `redis`'s prefix, then keeps
    /// the subscription alive in a background task until the hub is dropped.
    ///
    /// Fails when the first subscription cannot be made.
    #[tracing::instrument(level = "debug", skip_all, fields(prefix = %redis.prefix()))]
    pub async fn start(redis: Redis) -> Result<Arc<NearHub>> {
        let channel = redis.key(&["near"]);
        let state = Arc::new(HubState {
            redis,
            channel,
            targets: Mutex::new(HashMap::new()),
            connected: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        });
        let first = subscribe(&state).await?;
        state.go_online();
        let task = tokio::spawn(run(state.clone(), first)).abort_handle();
        tracing::debug!(channel = %state.channel, "near-cache hub subscribed");
        Ok(Arc::new(NearHub { state, task }))
    }

    /// The pub/sub channel of invalidations.
    pub fn channel(&self) -> &str {
        &self.state.channel
    }

    /// Whether the subscription is up (near hits are served only then).
    pub fn is_connected(&self) -> bool {
        self.state.connected.load(Ordering::SeqCst)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.state.epoch.load(Ordering::SeqCst)
    }

    /// Registers a near cache of cache `name`; the hub keeps a weak reference.
    pub(crate) fn register(&self, name: &str, target: Weak<dyn NearTarget>) {
        let mut targets = self.state.lock_targets();
        let list = targets.entry(name.to_owned()).or_default();
        list.retain(|t| t.strong_count() > 0);
        list.push(target);
    }
}

impl HubState {
    fn lock_targets(&self) -> std::sync::MutexGuard<'_, Targets> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live_targets(&self, name: Option<&str>) -> Vec<Arc<dyn NearTarget>> {
        let targets = self.lock_targets();
        let lists: Box<dyn Iterator<Item = &Vec<Weak<dyn NearTarget>>>> = match name {
            Some(name) => Box::new(targets.get(name).into_iter()),
            None => Box::new(targets.values()),
        };
        lists.flatten().filter_map(Weak::upgrade).collect()
    }

    fn clear_all(&self) {
        for target in self.live_targets(None) {
            target.invalidate_everything();
        }
    }

    /// Subscribed: forget anything cached before (invalidations may have been
    /// missed), then serve near hits again.
    fn go_online(&self) {
        self.clear_all();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.connected.store(true, Ordering::SeqCst);
    }

    fn go_offline(&self) {
        self.connected.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.clear_all();
    }

    async fn handle(&self, payload: &[u8]) {
        match parse_message(payload) {
            Some(Message::Key { name, key }) => {
                for target in self.live_targets(Some(name)) {
                    target.invalidate_key(key).await;
                }
            }
            Some(Message::Clear { name }) => {
                for target in self.live_targets(Some(name)) {
                    target.invalidate_everything();
                }
            }
            None => {
                tracing::warn!(channel = %self.channel, len = payload.len(), "malformed near-cache invalidation ignored")
            }
        }
    }
}

type Subscription = (redis::aio::PubSubSink, redis::aio::PubSubStream, u64);

async fn subscribe(state: &HubState) -> Result<Subscription> {
    let endpoint_epoch = state.redis.epoch();
    let attempt = async {
        let (mut sink, stream) = state.redis.pubsub().await?.split();
        sink.subscribe(&state.channel).await.map_err(redis_error)?;
        Ok::<_, Error>((sink, stream, endpoint_epoch))
    };
    tokio::time::timeout(PING_TIMEOUT, attempt)
        .await
        .map_err(|_| Error::timeout("near-cache subscribe timed out"))?
}

/// The hub's life: serve one subscription until it dies, then resubscribe.
async fn run(state: Arc<HubState>, first: Subscription) {
    let mut current = Some(first);
    let mut backoff = BACKOFF_MIN;
    loop {
        let sub = match current.take() {
            Some(sub) => sub,
            None => match subscribe(&state).await {
                Ok(sub) => {
                    state.go_online();
                    tracing::info!(channel = %state.channel, "near-cache hub resubscribed");
                    backoff = BACKOFF_MIN;
                    sub
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?backoff, "near-cache resubscribe failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        serve(&state, sub).await;
        state.go_offline();
        tracing::warn!(channel = %state.channel, "near-cache subscription lost: near caches cleared");
    }
}

async fn serve(state: &HubState, (mut sink, mut stream, endpoint_epoch): Subscription) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => state.handle(msg.get_payload_bytes()).await,
                None => return,
            },
            _ = ping.tick() => {
                if state.redis.epoch() != endpoint_epoch {
                    tracing::info!("redis endpoint moved: near-cache hub resubscribes");
                    return;
                }
                let alive = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(alive, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
