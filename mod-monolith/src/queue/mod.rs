//! The in-process queue: [`MemoryQueue`].
//!
//! Messages are moved and cloned, never serialized, except when a
//! [`BacklogPolicy::Overflow`] queue writes overflow to its spill files (the
//! format is documented in `queue/spill.rs`). All state sits behind one mutex,
//! held for short sections and never across an `await`; two [`Notify`]s wake
//! waiting pollers (a message arrived) and blocked offerers (room was made).
//! They are notified only when somebody is about to wait (the state records
//! that under the same lock), so the common path touches no `Notify`: a waiter
//! takes its `Notified` before its last look at the state, and a change made
//! after that look wakes it.
//!
//! Spill files are written and read inside that section, so that ids, order and
//! files always agree: an offer that spills costs one small `write`, a delivery
//! that refills one small read. One process at a time may use a spill folder.

mod ids;
mod record;
mod seqs;
mod spill;
mod state;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use mod_api::{
    BacklogPolicy, Consumer, Delivery, Error, ErrorKind, MessageId, Offered, Queue, QueueConfig,
    Result, Value,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use ids::{message_id, parse_id};
use spill::Spill;
use state::{after, Limits, State};

/// A queue of `M` messages held in this process.
///
/// Implements the model of [`mod_api::queue`]: a log with consumer groups,
/// visibility timeouts, redelivery, a dead-letter queue and backlog policies.
pub struct MemoryQueue<M: Value> {
    name: String,
    config: QueueConfig,
    limits: Limits,
    state: Mutex<State<M>>,
    /// Woken when messages become available.
    arrived: Notify,
    /// Woken when the log shrinks.
    room: Notify,
    dead_letters: Option<Arc<dyn Queue<M>>>,
}

impl<M: Value> std::fmt::Debug for MemoryQueue<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("name", &self.name)
            .field("config", &self.config)
            .field(
                "dead_letters",
                &self.dead_letters.as_ref().map(|q| q.name()),
            )
            .finish_non_exhaustive()
    }
}

/// The configuration of a dead-letter queue: practically unbounded, and it
/// never dead-letters itself.
pub fn dead_letter_config() -> QueueConfig {
    QueueConfig {
        capacity: usize::MAX,
        max_deliveries: u32::MAX,
        ..QueueConfig::default()
    }
}

/// Spends one unit of tokio's cooperative budget, yielding when it is used up
/// (as tokio's own channels do on each send and receive). Without it a producer
/// and a consumer that never find the queue full or empty never yield, and the
/// task one of them wakes can wait for another worker thread to pick it up:
/// slow, as every hand-over then costs a thread wake-up.
async fn cooperate() {
    tokio::task::coop::consume_budget().await;
}

/// What one attempt to offer did.
enum Attempt<M> {
    Done(Offered),
    Full(M),
}

impl<M: Value> MemoryQueue<M> {
    /// Opens queue `name` without a spill folder (so not with
    /// [`BacklogPolicy::Overflow`]): see [`open_with_spill_dir`](Self::open_with_spill_dir).
    pub fn open(
        name: &str,
        config: QueueConfig,
        dead_letters: Option<Arc<dyn Queue<M>>>,
    ) -> Result<Self> {
        Self::open_with_spill_dir(name, config, dead_letters, None)
    }

    /// Opens queue `name`. Messages delivered `max_deliveries` times without an
    /// ack go to `dead_letters` (when `None`, they are logged and delivered
    /// again; if the dead-letter queue refuses one, that is logged as an error
    /// and the message is gone, so give it room: see [`dead_letter_config`]). With
    /// [`BacklogPolicy::Overflow`], overflow goes to spill files in the folder
    /// `<spill_dir>/<name>/`, and messages spilled there by an earlier process
    /// are recovered.
    ///
    /// Fails with `InvalidInput` for a bad name, a zero `capacity` or
    /// `max_deliveries`, or `Overflow` without `spill_dir`; with `Io` when the
    /// spill folder cannot be read.
    #[tracing::instrument(level = "debug", skip_all, fields(queue = %name))]
    pub fn open_with_spill_dir(
        name: &str,
        config: QueueConfig,
        dead_letters: Option<Arc<dyn Queue<M>>>,
        spill_dir: Option<&Path>,
    ) -> Result<Self> {
        config.validate(name)?;
        let invalid = |what: &str| {
            tracing::warn!(queue = name, "{what}");
            Err(Error::invalid_input(format!("queue {name:?}: {what}")))
        };
        let (spill, max_seq) = match (&config.backlog, spill_dir) {
            (BacklogPolicy::Overflow, Some(dir)) => {
                let (spill, max_seq) = Spill::open(dir, name, spill::SEGMENT_BYTES)?;
                (Some(spill), max_seq)
            }
            (BacklogPolicy::Overflow, None) => {
                return invalid(
                    "the Overflow backlog needs a spill folder: set data_dir (MODKIT_DATA_DIR)",
                )
            }
            _ => (None, None),
        };
        let mut state = State::new(spill, max_seq);
        state.refill(config.capacity);
        state.signals();
        Ok(MemoryQueue {
            name: name.to_owned(),
            limits: Limits {
                name: name.to_owned(),
                capacity: config.capacity,
                visibility_timeout: config.visibility_timeout,
                max_deliveries: config.max_deliveries,
                has_dead_letters: dead_letters.is_some(),
            },
            config,
            state: Mutex::new(state),
            arrived: Notify::new(),
            room: Notify::new(),
            dead_letters,
        })
    }

    /// The configuration this queue was opened with.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// How many damaged records and empty segment files the recovery of this
    /// queue's spill files skipped (each also logged at ERROR); 0 without spill.
    pub fn spill_recovery_errors(&self) -> usize {
        self.lock().spill_recovery_errors()
    }

    /// Runs `f` on the locked state, then wakes whoever its changes concern.
    fn with_state<T>(&self, f: impl FnOnce(&mut State<M>) -> T) -> T {
        let (out, (room, arrived)) = {
            let mut state = self.lock();
            let out = f(&mut state);
            (out, state.signals())
        };
        if room {
            self.room.notify_waiters();
        }
        if arrived {
            self.arrived.notify_waiters();
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, State<M>> {
        // A panic elsewhere while locked cannot leave the state half-changed in
        // a way that matters more than stopping the queue would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers once, without waiting; `waiting`: the caller waits for room if
    /// the queue is full.
    fn attempt(&self, message: M, waiting: bool) -> Result<Attempt<M>> {
        let capacity = self.limits.capacity;
        self.with_state(|state| {
            if self.config.backlog == BacklogPolicy::Overflow {
                state.refill(capacity);
                if state.spilling() || state.full(capacity) {
                    let seq = state.push_spilled(&message)?;
                    tracing::debug!(queue = %self.name, id = %message_id(seq), "message spilled");
                    return Ok(Attempt::Done(Offered::Overflowed(message_id(seq))));
                }
            }
            if !state.full(capacity) {
                return Ok(Attempt::Done(Offered::Enqueued(message_id(
                    state.push(message),
                ))));
            }
            match self.config.backlog {
                BacklogPolicy::Reject | BacklogPolicy::Overflow => {
                    tracing::debug!(queue = %self.name, "queue full, message rejected");
                    Err(Error::new(
                        ErrorKind::QueueFull,
                        format!("queue {:?} is full ({capacity} messages)", self.name),
                    ))
                }
                BacklogPolicy::DropOldest => {
                    let dropped = state.drop_oldest().map(message_id);
                    let id = message_id(state.push(message));
                    match dropped {
                        Some(dropped) => {
                            tracing::debug!(queue = %self.name, %dropped, "oldest message dropped");
                            Ok(Attempt::Done(Offered::DisplacedOldest { id, dropped }))
                        }
                        None => Ok(Attempt::Done(Offered::Enqueued(id))),
                    }
                }
                BacklogPolicy::DropNewest => {
                    tracing::debug!(queue = %self.name, "queue full, message discarded");
                    Ok(Attempt::Done(Offered::Discarded))
                }
                BacklogPolicy::Block { .. } => {
                    state.want_room |= waiting;
                    Ok(Attempt::Full(message))
                }
            }
        })
    }

    /// Polls once: the delivery, and when the group's next delivery expires;
    /// `waiting`: the caller waits for a message if there is none.
    async fn poll_once(
        &self,
        consumer: &Consumer,
        waiting: bool,
    ) -> (Option<Delivery<M>>, Option<Instant>) {
        cooperate().await;
        let polled = self.with_state(|state| {
            let polled = state.poll(&consumer.group, Instant::now(), &self.limits);
            state.want_arrival |= waiting && polled.delivery.is_none();
            polled
        });
        if !polled.dead.is_empty() {
            // Boxed: keeps this rare path out of every poll's future.
            Box::pin(self.dead_letter(polled.dead)).await;
        }
        (polled.delivery, polled.next_expiry)
    }

    /// Hands `dead` messages to the dead-letter queue.
    async fn dead_letter(&self, dead: Vec<M>) {
        let Some(dlq) = &self.dead_letters else {
            return;
        };
        for message in dead {
            tracing::warn!(
                queue = %self.name,
                dlq = dlq.name(),
                "message dead-lettered after max_deliveries"
            );
            match dlq.offer(message).await {
                Ok(_) => mod_api::layer::dead_lettered(&self.name, "max_deliveries"),
                Err(e) => {
                    tracing::error!(queue = %self.name, dlq = dlq.name(), error = %e, "dead letter lost: the dead-letter queue refused it")
                }
            }
        }
    }

    /// The rest of an offer that found a `Block` queue full: waits for room.
    async fn offer_waiting(&self, message: M, timeout: Duration) -> Result<Offered> {
        let deadline = after(Instant::now(), timeout);
        let mut message = message;
        loop {
            // Taken before the attempt: room made after it wakes this offer.
            let room = pin!(self.room.notified());
            match self.attempt(message, true)? {
                Attempt::Done(offered) => return Ok(offered),
                Attempt::Full(back) => message = back,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                tracing::debug!(queue = %self.name, ?timeout, "queue still full, offer timed out");
                return Err(Error::timeout(format!(
                    "queue {:?} stayed full for {timeout:?}",
                    self.name
                )));
            }
        }
    }

    /// The rest of a `poll_timeout` that found nothing: waits for a message.
    async fn poll_waiting(&self, consumer: &Consumer, timeout: Duration) -> Option<Delivery<M>> {
        let deadline = after(Instant::now(), timeout);
        loop {
            // Taken before the poll: a message offered after it wakes this call.
            let arrived = pin!(self.arrived.notified());
            let (delivery, next_expiry) = self.poll_once(consumer, true).await;
            if delivery.is_some() {
                return delivery;
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Wake for a new message, or when a pending delivery may be redelivered.
            let wake = next_expiry.map_or(deadline, |at| at.min(deadline));
            let _ = tokio::time::timeout_at(wake, arrived).await;
        }
    }
}

#[async_trait]
impl<M: Value> Queue<M> for MemoryQueue<M> {
    fn name(&self) -> &str {
        &self.name
    }

    // Spans and failures are the observe layer's (mod_api::layer); the rarer
    // events here name the queue themselves.
    async fn offer(&self, message: M) -> Result<Offered> {
        cooperate().await;
        match self.attempt(message, false)? {
            Attempt::Done(offered) => Ok(offered),
            // Only `Block` comes here. Boxed, like `poll_waiting` below, so the
            // waiting state (`Notified`, timer) is not part of every call's future.
            Attempt::Full(message) => {
                let timeout = match self.config.backlog {
                    BacklogPolicy::Block { timeout } => timeout,
                    _ => Duration::ZERO,
                };
                Box::pin(self.offer_waiting(message, timeout)).await
            }
        }
    }

    async fn poll(&self, consumer: &Consumer) -> Result<Option<Delivery<M>>> {
        Ok(self.poll_once(consumer, false).await.0)
    }

    async fn poll_timeout(
        &self,
        consumer: &Consumer,
        timeout: Duration,
    ) -> Result<Option<Delivery<M>>> {
        let (delivery, _) = self.poll_once(consumer, false).await;
        if delivery.is_some() || timeout.is_zero() {
            return Ok(delivery);
        }
        Ok(Box::pin(self.poll_waiting(consumer, timeout)).await)
    }

    async fn ack(&self, group: &str, id: &MessageId) -> Result<bool> {
        let Some(seq) = parse_id(id) else {
            return Ok(false);
        };
        let capacity = self.limits.capacity;
        Ok(self.with_state(|state| state.ack(group, seq, capacity)))
    }

    async fn remove(&self, id: &MessageId) -> Result<bool> {
        let Some(seq) = parse_id(id) else {
            return Ok(false);
        };
        let capacity = self.limits.capacity;
        self.with_state(|state| state.remove(seq, capacity))
    }

    async fn len(&self) -> Result<usize> {
        Ok(self.lock().len())
    }
}
