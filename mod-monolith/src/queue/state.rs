//! The state machine of one in-process queue, kept behind its mutex.
//!
//! The log is a map from sequence number to message (the in-memory part) plus
//! the spill files (the rest, always newer). A group remembers a cursor (every
//! message below it has been delivered to the group at least once) and its
//! pending deliveries; a message is done for a group when it is below the cursor
//! and not pending, and leaves the log when it is done for every group.
//!
//! Groups are a list, not a map: a queue has few, every ack already visits all
//! of them, and comparing a few names beats hashing one.

use std::collections::VecDeque;
use std::time::Duration;

use mod_api::{Delivery, Result, Value};
use tokio::time::Instant;

use super::ids::message_id;
use super::seqs::Seqs;
use super::spill::Spill;

/// Stale expiry entries allowed beyond the number of pending deliveries.
const EXPIRY_SLACK: usize = 32;

/// A message in memory.
pub(super) struct Entry<M> {
    message: M,
    /// Whether any group has received it (then it can no longer be removed).
    received: bool,
}

/// A delivery awaiting its ack.
struct Pending {
    deadline: Instant,
    count: u32,
}

/// One consumer group's progress.
#[derive(Default)]
pub(super) struct Group {
    cursor: u64,
    pending: Seqs<Pending>,
    /// `(deadline, seq)` of each delivery, in delivery order: deadlines ascend,
    /// as the visibility timeout is the same for every delivery. An entry goes
    /// stale when its delivery is acked or redelivered (`pending` then has no or
    /// another deadline for it); stale entries are dropped from the front, and
    /// all at once when they outnumber live ones. The front is always live.
    expiry: VecDeque<(Instant, u64)>,
}

impl Group {
    fn insert(&mut self, seq: u64, deadline: Instant, count: u32) {
        // Never below the last deadline, so the order holds whatever the clock does.
        let deadline = self
            .expiry
            .back()
            .map_or(deadline, |&(last, _)| deadline.max(last));
        self.pending.insert(seq, Pending { deadline, count });
        self.expiry.push_back((deadline, seq));
        self.tidy();
    }

    fn remove(&mut self, seq: u64) -> bool {
        let removed = self.pending.remove(seq).is_some();
        if removed {
            self.tidy();
        }
        removed
    }

    fn is_live(pending: &Seqs<Pending>, (deadline, seq): (Instant, u64)) -> bool {
        pending.get(seq).is_some_and(|p| p.deadline == deadline)
    }

    /// Drops stale expiry entries at the front, and all of them when too many.
    fn tidy(&mut self) {
        while let Some(&front) = self.expiry.front() {
            if Self::is_live(&self.pending, front) {
                break;
            }
            self.expiry.pop_front();
        }
        if self.expiry.len() > 2 * self.pending.len() + EXPIRY_SLACK {
            let pending = &self.pending;
            self.expiry.retain(|&e| Self::is_live(pending, e));
        }
    }

    /// Pending deliveries whose deadline is at or before `now`, by sequence number.
    fn expired(&self, now: Instant) -> Vec<u64> {
        let mut expired: Vec<u64> = self
            .expiry
            .iter()
            .take_while(|&&(at, _)| at <= now)
            .filter(|&&e| Self::is_live(&self.pending, e))
            .map(|&(_, seq)| seq)
            .collect();
        expired.sort_unstable();
        expired
    }

    /// When the next pending delivery expires.
    fn next_expiry(&self) -> Option<Instant> {
        self.expiry.front().map(|&(at, _)| at)
    }
}

/// The settings the state machine needs.
pub(super) struct Limits {
    /// The queue's name, for the state's own log events.
    pub name: String,
    pub capacity: usize,
    pub visibility_timeout: Duration,
    pub max_deliveries: u32,
    pub has_dead_letters: bool,
}

/// What a poll found.
pub(super) struct Polled<M> {
    /// The delivery, if any.
    pub delivery: Option<Delivery<M>>,
    /// Messages to hand to the dead-letter queue.
    pub dead: Vec<M>,
    /// When the group's next pending delivery expires.
    pub next_expiry: Option<Instant>,
}

/// The whole state of one queue.
pub(super) struct State<M> {
    next_seq: u64,
    log: Seqs<Entry<M>>,
    groups: Vec<(String, Group)>,
    spill: Option<Spill>,
    /// Set when the log shrank (offerers may find room).
    room: bool,
    /// Set when messages became available (pollers may find one).
    arrived: bool,
    /// Set when an offerer is about to wait for room: only then is `room` worth
    /// a wake-up (waking costs more than the rest of an offer).
    pub(super) want_room: bool,
    /// Set when a poller is about to wait for a message.
    pub(super) want_arrival: bool,
}

/// `now + d`, saturating far in the future instead of overflowing.
pub(super) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

impl<M: Value> State<M> {
    /// A state holding what `spill` recovered (`max_seq` is the highest id seen).
    pub(super) fn new(spill: Option<Spill>, max_seq: Option<u64>) -> Self {
        State {
            next_seq: max_seq.map_or(0, |s| s.saturating_add(1)),
            log: Seqs::default(),
            groups: Vec::new(),
            spill,
            room: false,
            arrived: false,
            want_room: false,
            want_arrival: false,
        }
    }

    /// Messages in the log, spilled ones included.
    pub(super) fn len(&self) -> usize {
        self.log.len() + self.spill.as_ref().map_or(0, Spill::len)
    }

    /// Damaged records and empty segments skipped when the spill files were opened.
    pub(super) fn spill_recovery_errors(&self) -> usize {
        self.spill.as_ref().map_or(0, Spill::recovery_errors)
    }

    /// Whether memory holds `capacity` messages.
    pub(super) fn full(&self, capacity: usize) -> bool {
        self.log.len() >= capacity
    }

    /// Whether spill files hold messages.
    pub(super) fn spilling(&self) -> bool {
        self.spill.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// Takes the (room, arrived) signals raised since the last call that
    /// somebody waits for (see `want_room`, `want_arrival`).
    pub(super) fn signals(&mut self) -> (bool, bool) {
        let room = std::mem::take(&mut self.room) && std::mem::take(&mut self.want_room);
        let arrived = std::mem::take(&mut self.arrived) && std::mem::take(&mut self.want_arrival);
        (room, arrived)
    }

    /// Appends `message` to memory; its sequence number.
    pub(super) fn push(&mut self, message: M) -> u64 {
        let seq = self.take_seq();
        self.log.insert(
            seq,
            Entry {
                message,
                received: false,
            },
        );
        self.arrived = true;
        seq
    }

    /// Appends `message` to the spill files; its sequence number.
    pub(super) fn push_spilled(&mut self, message: &M) -> Result<u64> {
        let seq = self.next_seq;
        let Some(spill) = self.spill.as_mut() else {
            return Err(mod_api::Error::internal("queue has no spill files"));
        };
        spill.append(seq, message)?;
        self.next_seq += 1;
        Ok(seq)
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Drops the oldest message in memory; its sequence number.
    pub(super) fn drop_oldest(&mut self) -> Option<u64> {
        let (seq, _) = self.log.pop_first()?;
        for (_, group) in &mut self.groups {
            group.remove(seq);
        }
        self.left(seq);
        Some(seq)
    }

    /// Moves spilled messages back to memory while there is room.
    pub(super) fn refill(&mut self, capacity: usize) {
        let room = capacity.saturating_sub(self.log.len());
        let Some(spill) = self.spill.as_mut() else {
            return;
        };
        if room == 0 || spill.is_empty() {
            return;
        }
        for (seq, message) in spill.take::<M>(room) {
            self.log.insert(
                seq,
                Entry {
                    message,
                    received: false,
                },
            );
            self.arrived = true;
        }
    }

    /// The next delivery for `group` at `now`.
    pub(super) fn poll(&mut self, group: &str, now: Instant, limits: &Limits) -> Polled<M> {
        let index = match self.groups.iter().position(|(name, _)| name == group) {
            Some(index) => index,
            None => {
                self.groups.push((group.to_owned(), Group::default()));
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[index].1;
        let mut dead_seqs = Vec::new();
        let mut chosen = None;
        for seq in g.expired(now) {
            let count = g.pending.get(seq).map_or(0, |p| p.count);
            if count >= limits.max_deliveries {
                if limits.has_dead_letters {
                    g.remove(seq);
                    dead_seqs.push(seq);
                    continue;
                }
                tracing::warn!(queue = %limits.name, group, id = %message_id(seq), count, "message exceeded max_deliveries and there is no dead-letter queue; delivering it again");
            }
            if chosen.is_none() {
                chosen = Some((seq, count.saturating_add(1)));
            }
        }
        let deadline = after(now, limits.visibility_timeout);
        let delivery = match chosen {
            Some((seq, count)) => {
                g.insert(seq, deadline, count);
                Some((seq, count))
            }
            None => match self.log.first_from(g.cursor) {
                Some((seq, entry)) => {
                    entry.received = true;
                    g.cursor = seq + 1;
                    g.insert(seq, deadline, 1);
                    Some((seq, 1))
                }
                None => None,
            },
        };
        let next_expiry = g.next_expiry();
        let delivery = delivery.and_then(|(seq, delivery_count)| {
            let message = self.log.get(seq)?.message.clone();
            Some(Delivery {
                id: message_id(seq),
                group: group.to_owned(),
                message,
                delivery_count,
            })
        });
        let mut dead = Vec::with_capacity(dead_seqs.len());
        for seq in dead_seqs {
            if let Some(entry) = self.log.get(seq) {
                dead.push(entry.message.clone());
            }
            self.settle(seq);
        }
        if !dead.is_empty() {
            self.refill(limits.capacity);
        }
        Polled {
            delivery,
            dead,
            next_expiry,
        }
    }

    /// Acknowledges `seq` in `group`; whether it was pending there.
    pub(super) fn ack(&mut self, group: &str, seq: u64, capacity: usize) -> bool {
        let acked = self
            .groups
            .iter_mut()
            .find(|(name, _)| name == group)
            .is_some_and(|(_, g)| g.remove(seq));
        if acked {
            self.settle(seq);
            self.refill(capacity);
        }
        acked
    }

    /// Withdraws `seq` if no group has received it.
    pub(super) fn remove(&mut self, seq: u64, capacity: usize) -> Result<bool> {
        if let Some(entry) = self.log.get(seq) {
            if entry.received {
                return Ok(false);
            }
            self.log.remove(seq);
            self.left(seq);
            self.refill(capacity);
            return Ok(true);
        }
        match self.spill.as_mut() {
            Some(spill) => {
                let removed = spill.remove(seq)?;
                self.room |= removed;
                Ok(removed)
            }
            None => Ok(false),
        }
    }

    /// Drops `seq` from the log if every group is done with it.
    fn settle(&mut self, seq: u64) {
        let done = !self.groups.is_empty()
            && self
                .groups
                .iter()
                .all(|(_, g)| seq < g.cursor && !g.pending.contains(seq));
        if done && self.log.remove(seq).is_some() {
            self.left(seq);
        }
    }

    /// Bookkeeping for message `seq`, which just left the in-memory log.
    fn left(&mut self, seq: u64) {
        self.room = true;
        if let Some(spill) = self.spill.as_mut() {
            spill.done(seq);
        }
    }
}
