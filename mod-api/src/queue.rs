//! Queue: typed, named, FIFO message queues with consumer groups.
//!
//! The model, the same in every backend:
//! - A queue is an ordered log. [`Queue::offer`] appends; [`Queue::len`] counts
//!   messages still in the log; `capacity` bounds it and the [`BacklogPolicy`]
//!   decides what happens when it is full.
//! - Every consumer group sees every message; within a group each message is
//!   delivered to one consumer at a time, oldest first. A group is created by its
//!   first poll and sees every message still in the log.
//! - A delivery must be acknowledged with [`Queue::ack`]. One not acknowledged
//!   within `visibility_timeout` is delivered again (to any consumer of the group),
//!   ahead of newer messages. After `max_deliveries` deliveries without an ack it
//!   moves to the dead-letter queue, a queue of the same message type named
//!   `"<name>.dlq"` (see [`QueueConfig::dead_letter_name`]).
//! - A message leaves the log once at least one group exists and every existing
//!   group has acknowledged or dead-lettered it (so a message offered before any
//!   consumer polled waits for the first group). A message no group has received
//!   yet can be withdrawn with [`Queue::remove`].

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::Value;

/// Identifies a message within its queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub String);

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `offer` does when the queue holds `capacity` messages.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BacklogPolicy {
    /// Fail with [`ErrorKind::QueueFull`](crate::ErrorKind::QueueFull) (retryable).
    #[default]
    Reject,
    /// Drop the oldest message in the log to make room.
    DropOldest,
    /// Discard the offered message; `offer` returns [`Offered::Discarded`].
    DropNewest,
    /// Wait for room up to `timeout`, then fail with `Timeout`.
    Block {
        /// How long `offer` may wait.
        #[serde(with = "crate::config::duration")]
        timeout: Duration,
    },
    /// Keep what does not fit in the backend's durable overflow: `offer`
    /// returns [`Offered::Overflowed`], and overflowed messages are delivered
    /// in offer order after those already in the log, surviving a restart of
    /// the process. Supported where
    /// [`Capabilities::durable_overflow`](crate::Capabilities::durable_overflow)
    /// is true (where the overflow goes is the backend's configuration); other
    /// backends refuse to open such a queue with `InvalidInput`.
    Overflow,
}

/// Configuration of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Most messages in the log.
    pub capacity: usize,
    /// What happens at capacity.
    pub backlog: BacklogPolicy,
    /// How long a delivery may stay unacknowledged before it is delivered again.
    #[serde(with = "crate::config::duration")]
    pub visibility_timeout: Duration,
    /// Deliveries without ack before a message is dead-lettered (at least 1).
    pub max_deliveries: u32,
    /// Largest encoded message `offer` accepts (default
    /// [`DEFAULT_MAX_VALUE_BYTES`](crate::codec::DEFAULT_MAX_VALUE_BYTES), 16 MiB);
    /// a larger one fails with `PayloadTooLarge` and is not enqueued.
    pub max_value_bytes: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 10_000,
            backlog: BacklogPolicy::Reject,
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            max_value_bytes: crate::codec::DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

impl QueueConfig {
    /// Checks what every backend requires of queue `name` with this config: a
    /// valid name, `capacity` and `max_deliveries` at least 1. A backend adds its
    /// own checks ([`BacklogPolicy::Overflow`] support). Fails with
    /// `InvalidInput` and a `warn`.
    pub fn validate(&self, name: &str) -> Result<()> {
        crate::name::check_name("queue", name)?;
        let problem = if self.capacity == 0 {
            "capacity must be at least 1"
        } else if self.max_deliveries == 0 {
            "max_deliveries must be at least 1"
        } else {
            return Ok(());
        };
        tracing::warn!(queue = name, "{problem}");
        Err(crate::Error::invalid_input(format!(
            "queue {name:?}: {problem}"
        )))
    }

    /// The name of the dead-letter queue of queue `name`.
    pub fn dead_letter_name(name: &str) -> String {
        format!("{name}.dlq")
    }
}

/// Which consumer is asking: a group and a member of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Consumer {
    /// The consumer group.
    pub group: String,
    /// This consumer's name within the group.
    pub name: String,
}

impl Consumer {
    /// Consumer `name` of `group`.
    pub fn new(group: impl Into<String>, name: impl Into<String>) -> Self {
        Consumer {
            group: group.into(),
            name: name.into(),
        }
    }
}

impl Default for Consumer {
    /// Consumer `default` of group `default`: a plain point-to-point queue.
    fn default() -> Self {
        Consumer::new("default", "default")
    }
}

/// A message handed to a consumer; acknowledge it with [`Queue::ack`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery<M> {
    /// The message's id.
    pub id: MessageId,
    /// The group it was delivered in.
    pub group: String,
    /// The message.
    pub message: M,
    /// 1 on first delivery, more on redelivery.
    pub delivery_count: u32,
}

/// What became of an offered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Offered {
    /// Appended to the log.
    Enqueued(MessageId),
    /// Appended after dropping the oldest message ([`BacklogPolicy::DropOldest`]).
    DisplacedOldest {
        /// The new message.
        id: MessageId,
        /// The message that was dropped.
        dropped: MessageId,
    },
    /// Kept in the durable overflow, behind the log ([`BacklogPolicy::Overflow`]).
    Overflowed(MessageId),
    /// Discarded because the queue was full ([`BacklogPolicy::DropNewest`]).
    Discarded,
}

impl Offered {
    /// The id of the offered message, unless it was discarded.
    pub fn id(&self) -> Option<&MessageId> {
        match self {
            Offered::Enqueued(id)
            | Offered::Overflowed(id)
            | Offered::DisplacedOldest { id, .. } => Some(id),
            Offered::Discarded => None,
        }
    }
}

/// A typed queue of `M` messages.
// `is_empty` is in `QueueExt`: required methods stay minimal.
#[allow(clippy::len_without_is_empty)]
///
/// Its methods are `async fn`s. They go through `async_trait` so that the
/// trait stays usable as `dyn` (handles are `Arc<dyn …>`), which makes rustdoc
/// show them desugared (`Pin<Box<dyn Future …>>`, `'life0`); each method's
/// doc therefore ends with its plain `async fn` signature.
#[async_trait]
pub trait Queue<M: Value>: Send + Sync {
    /// The queue's name.
    fn name(&self) -> &str;

    /// Appends `message`, applying the backlog policy when full.
    ///
    /// Signature: `async fn offer(&self, message: M) -> Result<Offered>`
    async fn offer(&self, message: M) -> Result<Offered>;

    /// The next message for `consumer`, without waiting.
    ///
    /// Signature: `async fn poll(&self, consumer: &Consumer) -> Result<Option<Delivery<M>>>`
    async fn poll(&self, consumer: &Consumer) -> Result<Option<Delivery<M>>>;

    /// The next message for `consumer`, waiting up to `timeout`.
    ///
    /// Signature: `async fn poll_timeout(&self, consumer: &Consumer, timeout: Duration) -> Result<Option<Delivery<M>>>`
    async fn poll_timeout(
        &self,
        consumer: &Consumer,
        timeout: Duration,
    ) -> Result<Option<Delivery<M>>>;

    /// Acknowledges delivery `id` in `group`; `false` when it was not pending there.
    ///
    /// Signature: `async fn ack(&self, group: &str, id: &MessageId) -> Result<bool>`
    async fn ack(&self, group: &str, id: &MessageId) -> Result<bool>;

    /// Withdraws a message that no group has received yet; `false` otherwise.
    ///
    /// Signature: `async fn remove(&self, id: &MessageId) -> Result<bool>`
    async fn remove(&self, id: &MessageId) -> Result<bool>;

    /// Messages in the log, overflowed ones included.
    ///
    /// Signature: `async fn len(&self) -> Result<usize>`
    async fn len(&self) -> Result<usize>;
}

/// Conveniences for every queue.
///
/// Its methods are `async fn`s. They go through `async_trait` so that the
/// trait stays usable as `dyn` (handles are `Arc<dyn …>`), which makes rustdoc
/// show them desugared (`Pin<Box<dyn Future …>>`, `'life0`); each method's
/// doc therefore ends with its plain `async fn` signature.
#[async_trait]
pub trait QueueExt<M: Value>: Queue<M> {
    /// Waits until a message is there for `consumer`.
    ///
    /// Signature: `async fn take(&self, consumer: &Consumer) -> Result<Delivery<M>>`
    async fn take(&self, consumer: &Consumer) -> Result<Delivery<M>> {
        loop {
            if let Some(d) = self.poll_timeout(consumer, Duration::from_secs(5)).await? {
                return Ok(d);
            }
        }
    }

    /// Acknowledges `delivery`.
    ///
    /// Signature: `async fn ack_delivery(&self, delivery: &Delivery<M>) -> Result<bool>`
    async fn ack_delivery(&self, delivery: &Delivery<M>) -> Result<bool> {
        self.ack(&delivery.group, &delivery.id).await
    }

    /// Whether the log is empty.
    ///
    /// Signature: `async fn is_empty(&self) -> Result<bool>`
    async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }
}

impl<M: Value, Q: Queue<M> + ?Sized> QueueExt<M> for Q {}
