//! Redis plumbing shared by every building block on Redis: cache, session,
//! queue, registry (and the near-cache hub) sit side by side on it.
//!
//! - The handle ([`Redis`], here): "the Redis primary", whose endpoint can
//!   change at runtime (failover moves every client to a new primary), with
//!   the key prefix. Commands go through a [`ConnectionManager`]
//!   (multiplexed, reconnects by itself). Blocking commands (`XREADGROUP
//!   BLOCK`, `BLPOP`) must not share it — they would stall every command
//!   behind them — so they use [`Redis::dedicated`] connections without a
//!   response timeout.
//! - The shared connection is handed out as a [`Conn`], which refuses an
//!   argument above the server's `proto-max-bulk-len` before the wire (Redis
//!   would close the connection under every other call in flight, see
//!   `guarded.rs`); `endpoint.rs` opens an endpoint (TLS files, the URL
//!   without its password for logs).
//! - Errors map to modkit's kinds in [`redis_error`] (`errors.rs`: a request
//!   the server calls bad is never retryable).
//! - `script.rs`: the one Lua script runner (`EVALSHA`, loading on `NOSCRIPT`).
//! - `codec.rs`: values to and from the codec bytes cache and session store.
//! - `keys.rs`: key building (`<prefix>:<part>…`, escaped names).
//!
//! Inside this crate `redis::…` still names the redis-rs crate; this module is
//! `crate::redis`.

pub(crate) mod codec;
mod endpoint;
mod errors;
mod guarded;
pub(crate) mod keys;
pub(crate) mod script;

pub use endpoint::redact;
pub use errors::redis_error;
pub use guarded::Conn;

use crate::config::RedisConfig;
use crate::topology::{url_for, Follower};
use endpoint::TlsFiles;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use mod_api::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};

/// A handle to the Redis primary of a deployment, with the key prefix.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    /// `[redis.tls]`, for every endpoint this handle opens.
    tls: Option<TlsFiles>,
    /// `[redis] wait_replicas` / `wait_timeout`: what acknowledged writes wait for.
    wait: Option<script::Wait>,
    state: RwLock<Endpoint>,
    /// This handle in `modkit_redis_connections` (metrics on at connect).
    open: Option<metrics::Gauge>,
    /// The committed topology epoch the endpoint follows (0: not following).
    topology_epoch: AtomicU64,
    /// `[redis] controllers`: the subscription that moves this handle.
    follower: OnceLock<Follower>,
    /// Whether the endpoint is followed (set with `controllers`).
    following: bool,
}

/// A handle that does not keep the connection open (see [`Redis::downgrade`]).
#[derive(Clone)]
pub struct WeakRedis(Weak<Inner>);

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(gauge) = &self.open {
            gauge.decrement(1.0);
        }
    }
}

/// Counts a newly connected handle in `modkit_redis_connections` (shared
/// connections open in this process). The connection manager's own
/// reconnects are invisible from here (redis-rs reports them only to RESP3
/// push listeners); endpoint switches count in `modkit_redis_reconnects_total`.
fn count_open() -> Option<metrics::Gauge> {
    mod_api::layer::metrics_enabled().then(|| {
        let gauge = metrics::gauge!("modkit_redis_connections");
        gauge.increment(1.0);
        gauge
    })
}

#[derive(Clone)]
struct Endpoint {
    url: String,
    client: Client,
    manager: ConnectionManager,
    /// The server's `proto-max-bulk-len`, shared with every [`Conn`] of it.
    limit: Arc<AtomicU64>,
    epoch: u64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.endpoint();
        f.debug_struct("Redis")
            .field("url", &redact(&state.url))
            .field("prefix", &self.inner.prefix)
            .field("epoch", &state.epoch)
            .finish()
    }
}

/// How long one command may wait for its reply on the shared connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

async fn open(
    url: &str,
    tls: Option<&TlsFiles>,
    following: bool,
) -> Result<(Client, ConnectionManager, Arc<AtomicU64>)> {
    let client = endpoint::client(url, tls)?;
    // A fixed endpoint is worth waiting for (a restart); a followed one is
    // not: the controllers move the handle, and a call stuck reconnecting
    // to a dead primary would hold its caller past the failover.
    let (retries, max_delay) = match following {
        false => (3, Duration::from_secs(1)),
        true => (1, Duration::from_millis(50)),
    };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(retries)
        .set_max_delay(max_delay);
    let mut manager = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(redis_error)?;
    // A first command now: a missing or wrong password shows here, with the
    // URL, rather than at some later command.
    redis::cmd("PING")
        .query_async::<()>(&mut manager)
        .await
        .map_err(redis_error)?;
    let limit = guarded::read_limit(&mut manager)
        .await
        .unwrap_or(guarded::DEFAULT_BULK_LIMIT);
    Ok((client, manager, Arc::new(AtomicU64::new(limit))))
}

impl Redis {
    /// Connects to `url`; every key this handle makes starts with `<prefix>:`.
    /// A `rediss://` URL is verified against the system's trusted roots.
    pub async fn connect(url: &str, prefix: &str) -> Result<Redis> {
        Self::open_with(url, prefix, None, None, false).await
    }

    /// Connects as `config` says: URL (with AUTH user and password, if any),
    /// prefix, and the TLS files of `[redis.tls]` for a `rediss://` URL.
    /// With `wait_replicas` set, the writes modkit acknowledges wait for that
    /// many replicas (see [`RedisConfig::wait_replicas`]).
    pub async fn connect_with(config: &RedisConfig) -> Result<Redis> {
        config.validate()?;
        let tls = config.tls.as_ref().map(TlsFiles::read).transpose()?;
        let wait = script::Wait::new(config.wait_replicas, config.wait_timeout);
        if config.controllers.is_empty() {
            return Self::open_with(&config.url, &config.prefix, tls, wait, false).await;
        }
        // HA: the controllers say which node is the primary; the URL gives
        // scheme, credentials and database.
        let follower = Follower::subscribe(&config.controllers, CONNECT_TIMEOUT * 5).await?;
        let primary = follower.topology().primary.unwrap_or_default();
        let redis = Self::open_with(
            &url_for(&config.url, &primary),
            &config.prefix,
            tls,
            wait,
            true,
        )
        .await?;
        follower.drive(&redis).await?;
        let _ = redis.inner.follower.set(follower);
        Ok(redis)
    }

    /// The topology subscription of a handle connected with `[redis]
    /// controllers` (its alerts, its epoch); `None` for a fixed endpoint.
    pub fn follower(&self) -> Option<&Follower> {
        self.inner.follower.get()
    }

    /// A handle that does not keep this one alive (for background tasks).
    pub fn downgrade(&self) -> WeakRedis {
        WeakRedis(Arc::downgrade(&self.inner))
    }

    /// The handle again, if it is still open somewhere.
    pub fn upgrade(weak: &WeakRedis) -> Option<Redis> {
        weak.0.upgrade().map(|inner| Redis { inner })
    }

    /// The committed topology epoch this handle follows (0: a fixed endpoint).
    pub fn topology_epoch(&self) -> u64 {
        self.inner.topology_epoch.load(Ordering::Acquire)
    }

    pub(crate) fn set_topology_epoch(&self, epoch: u64) {
        self.inner.topology_epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    async fn open_with(
        url: &str,
        prefix: &str,
        tls: Option<TlsFiles>,
        wait: Option<script::Wait>,
        following: bool,
    ) -> Result<Redis> {
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            return Err(Error::config(format!(
                "invalid redis key prefix {prefix:?}"
            )));
        }
        let (client, manager, limit) = open(url, tls.as_ref(), following).await.map_err(|e| {
            Error::new(e.kind(), "cannot connect to redis")
                .with_context("url", redact(url))
                .with_retryable(e.is_retryable())
                .with_source(e)
        })?;
        let wait_replicas = wait.as_ref().map_or(0, |w| w.replicas);
        tracing::info!(url = %redact(url), %prefix, wait_replicas, "connected to redis");
        Ok(Redis {
            inner: Arc::new(Inner {
                prefix: prefix.to_owned(),
                tls,
                wait,
                state: RwLock::new(Endpoint {
                    url: url.to_owned(),
                    client,
                    manager,
                    limit,
                    epoch: 0,
                }),
                open: count_open(),
                topology_epoch: AtomicU64::new(0),
                follower: OnceLock::new(),
                following,
            }),
        })
    }

    fn endpoint(&self) -> Endpoint {
        self.inner
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The shared, multiplexed connection to the current primary (cheap to
    /// clone), guarded against oversized arguments (see [`Conn`]).
    pub fn conn(&self) -> Conn {
        // Clone only the manager and limit: this is on every command's path.
        let state = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        Conn::new(
            state.manager.clone(),
            state.limit.clone(),
            self.inner.follower.get().cloned(),
        )
    }

    /// A connection of its own, without response timeout, for blocking commands.
    pub async fn dedicated(&self) -> Result<MultiplexedConnection> {
        let client = self.endpoint().client;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(redis_error)
    }

    /// A pub/sub connection to the current primary.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        self.endpoint()
            .client
            .get_async_pubsub()
            .await
            .map_err(redis_error)
    }

    /// What acknowledged writes wait for (`None`: asynchronous replication).
    pub(crate) fn wait(&self) -> Option<&script::Wait> {
        self.inner.wait.as_ref()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// `<prefix>:<part>:<part>…`.
    pub fn key(&self, parts: &[&str]) -> String {
        keys::join(&self.inner.prefix, parts)
    }

    /// The URL of the current primary.
    pub fn url(&self) -> String {
        self.endpoint().url
    }

    /// How many times the endpoint changed.
    pub fn epoch(&self) -> u64 {
        self.inner
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .epoch
    }

    /// Moves to a new primary at `url` (failover); later commands go there.
    ///
    /// Connections already handed out keep their old endpoint until dropped.
    pub async fn switch_to(&self, url: &str) -> Result<u64> {
        let (client, manager, limit) =
            open(url, self.inner.tls.as_ref(), self.inner.following).await?;
        let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        state.epoch += 1;
        tracing::warn!(from = %redact(&state.url), to = %redact(url), epoch = state.epoch, "redis endpoint switched");
        if mod_api::layer::metrics_enabled() {
            metrics::counter!("modkit_redis_reconnects_total").increment(1);
        }
        *state = Endpoint {
            url: url.to_owned(),
            client,
            manager,
            limit,
            epoch: state.epoch,
        };
        Ok(state.epoch)
    }
}
