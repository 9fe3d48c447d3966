//! The connection layer: one handle to "the Redis primary", whose endpoint can
//! change at runtime (failover moves every client to a new primary).
//!
//! Commands go through a [`ConnectionManager`] (multiplexed, reconnects by
//! itself). Blocking commands (`XREADGROUP BLOCK`, `BLPOP`) must not share it —
//! they would stall every command behind them — so they use [`Redis::dedicated`]
//! connections without a response timeout.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use mod_api::{Error, ErrorKind, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError};

/// A handle to the Redis primary of a deployment, with the key prefix.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    state: RwLock<Endpoint>,
}

#[derive(Clone)]
struct Endpoint {
    url: String,
    client: Client,
    manager: ConnectionManager,
    epoch: u64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.endpoint();
        f.debug_struct("Redis")
            .field("url", &state.url)
            .field("prefix", &self.inner.prefix)
            .field("epoch", &state.epoch)
            .finish()
    }
}

/// How long one command may wait for its reply on the shared connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

async fn open(url: &str) -> Result<(Client, ConnectionManager)> {
    let client = Client::open(url)
        .map_err(|e| Error::config(format!("invalid redis url {url:?}")).with_source(e))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1));
    let manager = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(redis_error)?;
    Ok((client, manager))
}

impl Redis {
    /// Connects to `url`; every key this handle makes starts with `<prefix>:`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Redis> {
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            return Err(Error::config(format!(
                "invalid redis key prefix {prefix:?}"
            )));
        }
        let (client, manager) = open(url).await?;
        tracing::info!(%url, %prefix, "connected to redis");
        Ok(Redis {
            inner: Arc::new(Inner {
                prefix: prefix.to_owned(),
                state: RwLock::new(Endpoint {
                    url: url.to_owned(),
                    client,
                    manager,
                    epoch: 0,
                }),
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

    /// The shared, multiplexed connection to the current primary (cheap to clone).
    pub fn conn(&self) -> ConnectionManager {
        // Clone only the manager: this is on every command's path.
        self.inner
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .manager
            .clone()
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

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// `<prefix>:<part>:<part>…`.
    pub fn key(&self, parts: &[&str]) -> String {
        let len = self.inner.prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut key = String::with_capacity(len);
        key.push_str(&self.inner.prefix);
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
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
        let (client, manager) = open(url).await?;
        let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        state.epoch += 1;
        tracing::warn!(from = %state.url, to = %url, epoch = state.epoch, "redis endpoint switched");
        *state = Endpoint {
            url: url.to_owned(),
            client,
            manager,
            epoch: state.epoch,
        };
        Ok(state.epoch)
    }
}

/// Maps a redis-rs error to modkit's: connection trouble is `Unavailable` (or
/// `Timeout`) and retryable; a server error is `Internal` with its text.
pub fn redis_error(err: RedisError) -> Error {
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Internal
    };
    // Debug, not warn: callers decide how loud a failure is (a sweeper retries quietly).
    tracing::debug!(error = %err, kind = %kind, "redis command failed");
    Error::new(kind, "redis").with_source(err)
}
