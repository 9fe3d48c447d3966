//! Blocking reads (`XREADGROUP … BLOCK`) on pooled dedicated connections.
//!
//! A blocking read must not hold the shared connection (it would stall every
//! command behind it), so it borrows a dedicated connection from the handle's
//! pool and gives it back after the read. Pooled connections die with the
//! server they were opened to: after a Redis restart every idle one fails at
//! its next use. So the first connection-level failure of a pooled connection
//! empties the pool (its siblings are as dead), and the read is tried once more
//! on a new connection; only when that fails too — Redis really is down — does
//! the caller get the (retryable) error. Without this, each dead connection
//! left in the pool handed one stray error to some later caller, seconds after
//! Redis was back.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use mod_api::{Consumer, Result};
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value as Reply};

use super::ops::{Core, Raw};
use super::poll::parse_entries;
use crate::redis::redis_error;

/// Idle dedicated connections kept for blocking reads, per queue handle.
const POOL_MAX: usize = 64;
/// How much longer than its `BLOCK` a blocking read may take before it is abandoned.
const BLOCK_GRACE: Duration = Duration::from_secs(2);

/// A pooled connection: the endpoint epoch and pool generation it belongs to.
struct Pooled {
    epoch: u64,
    generation: u64,
    conn: MultiplexedConnection,
}

#[derive(Default)]
struct State {
    idle: Vec<Pooled>,
    /// Bumped whenever the pool is emptied: connections lent out before are
    /// not taken back.
    generation: u64,
}

/// The pool of dedicated connections of one queue handle.
#[derive(Default)]
pub(super) struct BlockingReads {
    state: Mutex<State>,
}

/// What one read on one connection came to.
enum Outcome {
    /// A reply (or none within the wait); the connection is fine.
    Done(Option<Raw>),
    /// The connection failed (it is dropped): `RedisError` says how.
    Broken(RedisError),
}

impl BlockingReads {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `wait` for a new entry of `core`'s stream for `consumer`.
    pub(super) async fn read(
        &self,
        core: &Core,
        consumer: &Consumer,
        wait: Duration,
    ) -> Result<Option<Raw>> {
        let epoch = core.redis.epoch();
        let pooled = {
            let mut state = self.state();
            state.idle.retain(|p| p.epoch == epoch);
            state.idle.pop()
        };
        if let Some(p) = pooled {
            match self
                .read_on(core, consumer, wait, p.conn, epoch, p.generation)
                .await?
            {
                Outcome::Done(raw) => return Ok(raw),
                Outcome::Broken(e) => {
                    let dropped = {
                        let mut state = self.state();
                        state.generation += 1;
                        std::mem::take(&mut state.idle).len()
                    };
                    tracing::debug!(
                        queue = %core.name, error = %e, dropped,
                        "pooled blocking connection failed: pool emptied, reading on a new one"
                    );
                }
            }
        }
        let conn = core.redis.dedicated().await?;
        let generation = self.state().generation;
        match self
            .read_on(core, consumer, wait, conn, epoch, generation)
            .await?
        {
            Outcome::Done(raw) => Ok(raw),
            Outcome::Broken(e) => Err(redis_error(e)),
        }
    }

    /// One `XREADGROUP BLOCK` on `conn`, which goes back to the pool after a
    /// reply (when it still belongs: same generation, room left).
    async fn read_on(
        &self,
        core: &Core,
        consumer: &Consumer,
        wait: Duration,
        mut conn: MultiplexedConnection,
        epoch: u64,
        generation: u64,
    ) -> Result<Outcome> {
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&consumer.group)
            .arg(&consumer.name)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(millis)
            .arg("STREAMS")
            .arg(&core.key)
            .arg(">");
        let reply = tokio::time::timeout(wait + BLOCK_GRACE, cmd.query_async::<Reply>(&mut conn));
        let reply = match reply.await {
            Ok(reply) => reply,
            Err(_) => {
                // The connection may be stuck: drop it rather than pool it.
                tracing::warn!(queue = %core.name, "blocking read got no reply in time");
                return Ok(Outcome::Done(None));
            }
        };
        let reply = match reply {
            Ok(reply) => reply,
            // The group vanished (deleted by hand): the next poll makes it again.
            Err(e) if e.code() == Some("NOGROUP") => Reply::Nil,
            // A delivery whose reply was lost stays pending: it comes back
            // after the visibility timeout, so reading again loses nothing.
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                return Ok(Outcome::Broken(e))
            }
            Err(e) => return Err(redis_error(e)),
        };
        {
            let mut state = self.state();
            if state.generation == generation && state.idle.len() < POOL_MAX {
                state.idle.push(Pooled {
                    epoch,
                    generation,
                    conn,
                });
            }
        }
        Ok(Outcome::Done(parse_entries(reply)?.into_iter().next()))
    }
}
