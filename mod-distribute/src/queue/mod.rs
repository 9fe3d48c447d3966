//! The Redis Streams queue: [`RedisQueue`].
//!
//! One stream per queue is the log of the [`mod_api::queue`] model. Its Redis
//! consumer groups are the queue's groups, the pending entries list (PEL) holds
//! unacknowledged deliveries with their delivery counts, and a message's
//! [`MessageId`] is its stream entry id (`<ms>-<seq>`). Every change spanning
//! several commands is one Lua script (see `scripts.rs`), so it is atomic and
//! costs one round trip: `offer`, `poll`, `ack` and `remove` are one `EVALSHA`
//! each (a poll often a plain `XREADGROUP`, see below). Concurrent offers, polls and acks on one handle share their `EVALSHA`
//! (group commit, `batch.rs`): a request goes out at once when none is in
//! flight, else with everything that queued behind the one in flight.
//!
//! # Keys
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<prefix>:queue:<name>` | stream | the log of queue `<name>`: one entry per message, field `m` = the message encoded with `mod_api::codec`; consumer groups = the queue's groups (created at id `0` by their first poll), consumers = `Consumer::name`s |
//! | `<prefix>:queue:<name>.dlq` | stream | the dead-letter queue: the log of queue `<name>.dlq`, same layout; entries are copied there with their fields, plus `reason` (why) and `source_id` (the id they had) |
//!
//! # Behaviour
//!
//! - `offer`: one script checks `XLEN` against `capacity` and applies the backlog
//!   policy (`DropOldest` acks the dropped entry in every group and deletes it);
//!   `Block` retries with short sleeps until its timeout. `Overflow` is
//!   rejected by [`RedisQueue::open`] (Redis persists the stream already).
//! - `poll`: one script creates the group on first use, redelivers the oldest
//!   delivery idle for at least `visibility_timeout` (`XPENDING … IDLE` then
//!   `XCLAIM`, which bumps the delivery count), dead-letters deliveries that
//!   already had `max_deliveries`, and otherwise reads a new entry
//!   (`XREADGROUP … >`). The redelivery scan walks the group's PEL: O(unacknowledged deliveries).
//!   When that scan finds no delivery of the group idle for half the visibility
//!   timeout, nothing can expire for that half: until then the handle's polls of
//!   the group are a plain `XREADGROUP` (`poll.rs`), far cheaper for Redis.
//!   Concurrent polls of one group batched together read their new entries with
//!   one `XREADGROUP COUNT n` under the first poller's consumer name, so the PEL
//!   (`XPENDING`, `XINFO CONSUMERS`) may name another consumer of the group than
//!   the one that received a delivery; nothing in the API depends on it.
//! - `poll_timeout`: `poll`, then `XREADGROUP BLOCK` on a pooled dedicated
//!   connection (never the shared one), in slices of at most half the visibility
//!   timeout (10 ms – 1 s) so expired deliveries are noticed while waiting. A wait
//!   cancelled mid-read may leave a delivery pending; it comes back after the
//!   visibility timeout. A pooled connection that fails (Redis restarted) empties
//!   the pool and the read is retried once on a new connection (`blocking.rs`):
//!   once Redis is back, no caller sees an error from a connection that died.
//! - `ack`: `XACK`, then the entry is deleted when every existing group has
//!   received and acknowledged (or dead-lettered) it.
//! - `remove`: deletes the entry only when no group's last-delivered id reaches it.
//! - A message whose bytes do not decode as `M` (a poison message) is logged
//!   once (`warn`, with its id and the error) and moved at once — not after
//!   `max_deliveries`: decoding it again can never succeed — to the
//!   dead-letter stream with its raw fields plus `reason` = `undecodable: …`
//!   and `source_id`, and acked, so no consumer sees it again; the poll goes
//!   on with the next message (`poison.rs`). A redelivered poison entry (left
//!   pending by a crashed consumer) takes the same path. In a dead-letter
//!   queue the same happens one level down (`<name>.dlq.dlq`): nothing is
//!   dropped. Dead letters after `max_deliveries` carry
//!   `reason` = `max deliveries: …` too.

mod batch;
mod blocking;
mod ops;
mod poison;
mod poll;
mod scripts;
#[cfg(test)]
mod tests;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mod_api::codec::{decode, encode};
use mod_api::{
    BacklogPolicy, Consumer, Delivery, Error, ErrorKind, MessageId, Offered, Queue, QueueConfig,
    Result, Value,
};
use redis::Value as Reply;
use tokio::time::Instant;

use crate::redis::script::{evalsha, run};
use crate::redis::{redis_error, Redis};
use batch::Batcher;
use blocking::BlockingReads;
use ops::{canonical_id, Acks, Core, Offers, Raw};
use poll::Polls;
use scripts::REMOVE_SCRIPT;

/// A queue of `M` messages on a Redis stream.
///
/// Implements the model of [`mod_api::queue`]; handles on the same name (in any
/// process sharing the Redis and prefix) are the same queue.
pub struct RedisQueue<M> {
    core: Arc<Core>,
    config: QueueConfig,
    offers: Batcher<Offers>,
    polls: Batcher<Polls>,
    acks: Batcher<Acks>,
    /// Longest slice of a blocking read, so expired deliveries are not missed.
    recheck: Duration,
    /// Dedicated connections for `XREADGROUP BLOCK` (`blocking.rs`).
    blocking: BlockingReads,
    _messages: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for RedisQueue<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("name", &self.core.name)
            .field("key", &self.core.key)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<M: Value> RedisQueue<M> {
    /// Opens queue `name` on `redis`; dead letters go to the queue
    /// [`QueueConfig::dead_letter_name`]`(name)` on the same Redis.
    ///
    /// Fails with `InvalidInput` for a bad name, a zero `capacity` or
    /// `max_deliveries`, or [`BacklogPolicy::Overflow`] (not a capability of
    /// this backend: the stream is Redis's own persistence, and `capacity`
    /// bounds it).
    #[tracing::instrument(level = "debug", skip_all, fields(queue = %name))]
    pub fn open(redis: Redis, name: &str, config: QueueConfig) -> Result<Self> {
        config.validate(name)?;
        let invalid = |what: &str| {
            tracing::warn!(queue = name, "{what}");
            Err(Error::invalid_input(format!("queue {name:?}: {what}")))
        };
        let policy = match config.backlog {
            BacklogPolicy::Reject => "reject",
            BacklogPolicy::DropOldest => "drop_oldest",
            BacklogPolicy::DropNewest => "drop_newest",
            BacklogPolicy::Block { .. } => "block",
            BacklogPolicy::Overflow => {
                return invalid(
                    "the Overflow backlog is not supported by the distributed package \
                     (Redis persists the stream already; use Block or Reject)",
                )
            }
        };
        let core = Arc::new(Core {
            name: name.to_owned(),
            key: redis.key(&["queue", name]),
            dead_letter_key: redis.key(&["queue", &QueueConfig::dead_letter_name(name)]),
            redis,
            capacity: config.capacity,
            policy,
            visibility_ms: u64::try_from(config.visibility_timeout.as_millis())
                .unwrap_or(u64::MAX)
                .min(i64::MAX as u64),
            max_deliveries: config.max_deliveries,
        });
        Ok(RedisQueue {
            offers: Batcher::new(Offers(core.clone())),
            polls: Batcher::new(Polls::new(core.clone())),
            acks: Batcher::new(Acks(core.clone())),
            core,
            recheck: (config.visibility_timeout / 2)
                .clamp(Duration::from_millis(10), Duration::from_secs(1)),
            config,
            blocking: BlockingReads::default(),
            _messages: PhantomData,
        })
    }

    /// The configuration this handle was opened with.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The Redis key of the stream.
    pub fn key(&self) -> &str {
        &self.core.key
    }

    /// One poll script run: the next entry for `consumer`, if any.
    async fn poll_raw(&self, consumer: &Consumer) -> Result<Option<Raw>> {
        let (dead, raw) = self.polls.call(consumer.clone()).await?;
        for id in dead {
            tracing::warn!(
                queue = %self.core.name, group = %consumer.group, %id,
                "message dead-lettered after max_deliveries"
            );
            mod_api::layer::dead_lettered(&self.core.name, "max_deliveries");
        }
        Ok(raw)
    }

    /// Decodes `raw`; a message that does not decode is moved to the dead-letter
    /// stream at once (`poison.rs`, and `None` returned) so the consumer goes on
    /// with the next one.
    async fn deliver(&self, raw: Raw, group: &str) -> Result<Option<Delivery<M>>> {
        let decoded = match &raw.bytes {
            Some(bytes) => decode::<M>(bytes),
            None => Err(Error::codec("stream entry has no field `m`")),
        };
        match decoded {
            Ok(message) => Ok(Some(Delivery {
                id: MessageId(raw.id),
                group: group.to_owned(),
                message,
                delivery_count: raw.count,
            })),
            Err(e) => {
                poison::dead_letter_undecodable(&self.core, group, &raw, &e).await?;
                Ok(None)
            }
        }
    }

    /// One non-blocking poll, skipping (dead-lettering) undecodable messages.
    async fn poll_once(&self, consumer: &Consumer) -> Result<Option<Delivery<M>>> {
        while let Some(raw) = self.poll_raw(consumer).await? {
            if let Some(delivery) = self.deliver(raw, &consumer.group).await? {
                return Ok(Some(delivery));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl<M: Value> Queue<M> for RedisQueue<M> {
    fn name(&self) -> &str {
        &self.core.name
    }

    async fn offer(&self, message: M) -> Result<Offered> {
        let bytes = encode(&message)?;
        let BacklogPolicy::Block { timeout } = self.config.backlog else {
            return match self.offers.call(bytes).await?? {
                Some(offered) => Ok(offered),
                None => {
                    tracing::debug!("queue full, message rejected");
                    Err(Error::new(
                        ErrorKind::QueueFull,
                        format!(
                            "queue {:?} is full ({} messages)",
                            self.core.name, self.config.capacity
                        ),
                    ))
                }
            };
        };
        let deadline = Instant::now().checked_add(timeout);
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(offered) = self.offers.call(bytes.clone()).await?? {
                return Ok(offered);
            }
            let left = deadline.map_or(pause, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                tracing::debug!(?timeout, "queue still full, offer timed out");
                return Err(Error::timeout(format!(
                    "queue {:?} stayed full for {timeout:?}",
                    self.core.name
                )));
            }
            // Room appears when consumers ack: check again soon, backing off a little.
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn poll(&self, consumer: &Consumer) -> Result<Option<Delivery<M>>> {
        self.poll_once(consumer).await
    }

    async fn poll_timeout(
        &self,
        consumer: &Consumer,
        timeout: Duration,
    ) -> Result<Option<Delivery<M>>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // Also makes the group, and redelivers what expired while we waited.
            if let Some(delivery) = self.poll_once(consumer).await? {
                return Ok(Some(delivery));
            }
            let left = deadline.map_or(self.recheck, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Ok(None);
            }
            if let Some(raw) = self
                .blocking
                .read(&self.core, consumer, left.min(self.recheck))
                .await?
            {
                if let Some(delivery) = self.deliver(raw, &consumer.group).await? {
                    return Ok(Some(delivery));
                }
            }
        }
    }

    async fn ack(&self, group: &str, id: &MessageId) -> Result<bool> {
        let Some(id) = canonical_id(id) else {
            return Ok(false);
        };
        self.acks.call((group.to_owned(), id)).await
    }

    async fn remove(&self, id: &MessageId) -> Result<bool> {
        let Some(id) = canonical_id(id) else {
            return Ok(false);
        };
        let mut cmd = evalsha(&REMOVE_SCRIPT, 1, 2, self.core.key.len() + id.len());
        cmd.arg(&self.core.key).arg(id);
        let removed: Reply = run(&mut self.core.redis.conn(), &REMOVE_SCRIPT, &cmd).await?;
        Ok(removed == Reply::Int(1))
    }

    async fn len(&self) -> Result<usize> {
        redis::cmd("XLEN")
            .arg(&self.core.key)
            .query_async(&mut self.core.redis.conn())
            .await
            .map_err(redis_error)
    }
}
