//! [`Conn`]: the shared connection, guarded against requests the server would
//! refuse by closing the connection.
//!
//! Redis answers a bulk string longer than its `proto-max-bulk-len` (512 MB by
//! default) with `Protocol error: invalid bulk length` and then *closes the
//! connection*: on a multiplexed connection every call in flight behind it
//! fails too, and the caller of the big one often sees only the reset
//! (a retryable-looking I/O error) instead of the reply. So the limit is read
//! from the server (`CONFIG GET proto-max-bulk-len`, 512 MB when `CONFIG` is
//! not allowed) when the endpoint is opened, and a command with a longer
//! argument is refused here, before anything is written, with
//! `PayloadTooLarge`. When a big request (over 1 MB, the least limit Redis
//! accepts) fails anyway (the limit was lowered at runtime), the limit is read
//! again, and the failure is reported as `PayloadTooLarge` if the request
//! exceeds it, so the caller does not retry it forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{
    Arg, Cmd, ErrorKind as RedisKind, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};

use super::errors::{classify, is_too_large, TOO_LARGE};
use crate::topology::Follower;
use mod_api::ErrorKind;

/// Redis's default `proto-max-bulk-len`.
pub(super) const DEFAULT_BULK_LIMIT: u64 = 512 * 1024 * 1024;
/// The least `proto-max-bulk-len` Redis accepts: smaller requests are never
/// refused for their size, so their failures need no second look.
const MIN_BULK_LIMIT: u64 = 1024 * 1024;
/// How long re-reading the limit after a failure may take.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(1);

/// The shared, multiplexed connection to the current primary (cheap to clone),
/// refusing arguments longer than the server's `proto-max-bulk-len`.
#[derive(Clone)]
pub struct Conn {
    manager: ConnectionManager,
    limit: Arc<AtomicU64>,
    /// HA: told at once when the node turned replica (`READONLY`), lost its
    /// replicas (`NOREPLICAS`) or went away, instead of at the next push.
    follower: Option<Follower>,
}

impl Conn {
    pub(super) fn new(
        manager: ConnectionManager,
        limit: Arc<AtomicU64>,
        follower: Option<Follower>,
    ) -> Self {
        Conn {
            manager,
            limit,
            follower,
        }
    }

    /// Asks the controllers again when `result` says the primary moved.
    fn notice<T>(&self, result: &RedisResult<T>, replies: impl Fn(&T) -> bool) {
        let Some(follower) = &self.follower else {
            return;
        };
        let moved = match result {
            Ok(value) => replies(value),
            Err(err) => {
                matches!(err.code(), Some("READONLY" | "NOREPLICAS"))
                    || err.is_io_error()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal()
            }
        };
        if moved {
            follower.relookup();
        }
    }

    /// The longest argument the server accepts, as last read.
    pub fn bulk_limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Re-reads the server's limit (keeps the old one when that fails).
    async fn refresh(&mut self) {
        // The first tries may meet the connection the big request broke, while
        // the manager reconnects: try again for a little while.
        let read = tokio::time::timeout(REFRESH_TIMEOUT, async {
            loop {
                match read_limit_once(&mut self.manager).await {
                    Ok(limit) => return Some(limit),
                    Err(true) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(false) => return None,
                }
            }
        });
        if let Ok(Some(limit)) = read.await {
            self.limit.store(limit, Ordering::Relaxed);
        }
    }

    /// `result` of a request whose longest argument is `longest`, re-judged
    /// when it failed and may have been too big (see the module docs). Server
    /// errors come back as replies (`Value::ServerError`), I/O errors as `Err`.
    async fn judge<T>(
        &mut self,
        longest: u64,
        result: RedisResult<T>,
        replies: impl Fn(&T) -> bool,
    ) -> RedisResult<T> {
        if longest <= MIN_BULK_LIMIT {
            return result;
        }
        let err = match result {
            Ok(value) => {
                if replies(&value) {
                    // Refused for its size: learn the limit, so the next one
                    // is refused before it breaks the connection.
                    self.refresh().await;
                }
                return Ok(value);
            }
            Err(err) => err,
        };
        if !matches!(
            classify(&err),
            ErrorKind::Unavailable | ErrorKind::PayloadTooLarge
        ) {
            return Err(err);
        }
        self.refresh().await;
        match self.refuse(longest) {
            Some(too_large) => {
                tracing::warn!(error = %err, longest, "request above proto-max-bulk-len broke the connection");
                Err(too_large)
            }
            None => Err(err),
        }
    }

    /// The refusal of a request whose longest argument is `longest`, if too long.
    fn refuse(&self, longest: u64) -> Option<RedisError> {
        let limit = self.bulk_limit();
        (longest > limit).then(|| {
            RedisError::from((
                RedisKind::Client,
                TOO_LARGE,
                format!("an argument of {longest} bytes, the server accepts at most {limit}"),
            ))
        })
    }
}

/// `request`, given up when a newer topology is committed while it is
/// in flight: a frozen or cut-off old primary would otherwise hold its
/// caller for the whole response timeout after everyone else moved on.
/// The outcome is unknown then (the old primary may have taken it), so
/// the error is a retryable `Unavailable`, as a lost connection's is.
async fn until_moved<T>(
    follower: Option<&Follower>,
    request: RedisFuture<'_, T>,
) -> RedisResult<T> {
    let Some(follower) = follower else {
        return request.await;
    };
    let mut topology = follower.watch();
    let epoch = topology.borrow_and_update().epoch;
    tokio::select! {
        result = request => result,
        Ok(moved) = topology.wait_for(|t| t.epoch > epoch) => {
            let now = moved.epoch;
            tracing::debug!(from = epoch, to = now, "request abandoned: the primary moved");
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                format!("the primary moved (epoch {epoch} → {now}) while the request was in flight; its outcome is unknown"),
            )))
        }
    }
}

/// Whether `reply` is the server's refusal of a too large request.
fn refused_for_size(reply: &Value) -> bool {
    match reply {
        Value::ServerError(e) => {
            let text = format!("{} {}", e.code(), e.details().unwrap_or_default());
            is_too_large(&text.to_ascii_lowercase())
        }
        _ => false,
    }
}

/// The length of the longest argument of `cmd`.
fn longest(cmd: &Cmd) -> u64 {
    cmd.args_iter()
        .map(|a| match a {
            Arg::Simple(bytes) => bytes.len() as u64,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// The server's `proto-max-bulk-len`, `None` when it cannot be read.
pub(super) async fn read_limit(conn: &mut impl ConnectionLike) -> Option<u64> {
    read_limit_once(conn).await.ok()
}

/// One `CONFIG GET proto-max-bulk-len`: `Err(true)` when the connection
/// failed (worth another try), `Err(false)` when the server will not tell
/// (`CONFIG` renamed away or not permitted) or told something unreadable.
async fn read_limit_once(conn: &mut impl ConnectionLike) -> Result<u64, bool> {
    let reply: Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("proto-max-bulk-len")
        .query_async(conn)
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "cannot read proto-max-bulk-len");
            e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
        })?;
    let value = match reply {
        Value::Array(mut items) if items.len() == 2 => items.pop(),
        Value::Map(mut pairs) if pairs.len() == 1 => pairs.pop().map(|(_, v)| v),
        _ => None,
    };
    value
        .and_then(|v| redis::from_redis_value::<u64>(v).ok())
        .ok_or(false)
}

/// Whether `reply` says this node is no writable primary any more.
fn primary_moved(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(e) if matches!(e.code(), "READONLY" | "NOREPLICAS"))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let longest = longest(cmd);
        if longest <= MIN_BULK_LIMIT && self.follower.is_none() {
            // Never too big for any server: straight through, no second future.
            return self.manager.req_packed_command(cmd);
        }
        Box::pin(async move {
            if let Some(err) = self.refuse(longest) {
                return Err(err);
            }
            let request = self.manager.req_packed_command(cmd);
            let result = until_moved(self.follower.as_ref(), request).await;
            self.notice(&result, primary_moved);
            self.judge(longest, result, refused_for_size).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let longest = pipeline.cmd_iter().map(longest).max().unwrap_or(0);
        if longest <= MIN_BULK_LIMIT && self.follower.is_none() {
            return self.manager.req_packed_commands(pipeline, offset, count);
        }
        Box::pin(async move {
            if let Some(err) = self.refuse(longest) {
                return Err(err);
            }
            let request = self.manager.req_packed_commands(pipeline, offset, count);
            let result = until_moved(self.follower.as_ref(), request).await;
            self.notice(&result, |vs| vs.iter().any(primary_moved));
            self.judge(longest, result, |vs| vs.iter().any(refused_for_size))
                .await
        })
    }

    fn get_db(&self) -> i64 {
        self.manager.get_db()
    }
}
