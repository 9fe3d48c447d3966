//! One Redis 7.0 node as the simulation sees it: the rules measured on real
//! Redis that a failover depends on, and nothing else.
//!
//! - Data is the replication stream itself: `data[i]` is the write at
//!   offset `i + 1` (one key per write), so `offset == data.len()`.
//! - `REPLICAOF NO ONE` keeps the data, moves `replid` to `replid2`
//!   (`second_offset` = offset + 1) and draws a new `replid`; it drops the
//!   node's own replicas (they re-`PSYNC`, partially thanks to `replid2`).
//! - `PSYNC` is partial when the replica's `replid` is the primary's and its
//!   offset is not ahead, or it is the primary's `replid2` and its offset + 1
//!   ≤ `second_offset`; otherwise a full resync replaces the replica's data
//!   by a snapshot of the primary's (its divergent tail is discarded).
//! - `min-replicas-to-write`: a primary refuses writes (`NOREPLICAS`) when
//!   its *cached* count of good replicas is below the setting. A replica is
//!   good when `unixtime − last ack` (whole seconds) ≤ `min-replicas-max-lag`;
//!   the count is refreshed by the once-a-second replication cron, when a
//!   replica comes online or its connection closes, and on `CONFIG SET`.
//!   Replicas ack every second and on each `WAIT` (`GETACK`; a primary
//!   paused by `CLIENT PAUSE` sends none, so its `WAIT`s wait for the
//!   once-a-second acks).
//! - `CLIENT PAUSE WRITE` blocks writes; a SIGSTOPped node keeps its state
//!   and the bytes sent to it, and executes them in order when it wakes.
//! - A killed node loses its data (restarted empty, with a new `replid`).

use super::Time;

/// The replication id "none" (Redis prints forty zeros).
pub const NO_REPLID: u64 = 0;

/// A primary's view of one of its online replicas.
#[derive(Debug, Clone)]
pub struct Slave {
    pub node: usize,
    pub ack_time: Time,
    pub ack_off: u64,
}

/// A client waiting in `WAIT 1` for `offset`.
#[derive(Debug, Clone)]
pub struct Waiter {
    pub client: usize,
    pub key: u64,
    pub offset: u64,
}

/// Bytes that reached a node while it was stopped (executed on wake).
#[derive(Debug, Clone)]
pub enum Msg {
    Write { client: usize, key: u64 },
    Ack { replica: usize, offset: u64 },
    SlaveGone { replica: usize },
    Admin(Admin),
}

/// The commands the controller sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    /// `REPLICAOF host port`; `None`: the closed port (detach).
    ReplicaOf(Option<usize>),
    /// `REPLICAOF NO ONE`.
    NoOne,
    /// `CONFIG SET min-replicas-to-write n`.
    MinReplicas(u32),
    /// `CLIENT PAUSE 30000 WRITE`.
    Pause,
    /// `CLIENT UNPAUSE`.
    Unpause,
    /// `CLIENT KILL TYPE normal`.
    KillClients,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// The process runs (false: killed, data gone).
    pub alive: bool,
    /// Its host answers (false with `!alive`: connections time out
    /// instead of being refused).
    pub host_up: bool,
    /// SIGSTOPped.
    pub stopped: bool,
    pub primary: bool,
    /// A replica's primary (`None`: the closed port, or no primary).
    pub master: Option<usize>,
    /// The replication link is established (`master_link_status:up`).
    pub link_up: bool,
    /// The primary's replid when the link was established.
    pub link_replid: u64,
    /// A full resync in flight (its id).
    pub syncing: Option<u64>,
    pub replid: u64,
    pub replid2: u64,
    pub second_offset: Option<u64>,
    /// `(key, time it reached this node)`; the offset is the length.
    pub data: Vec<(u64, Time)>,
    pub min_replicas: u32,
    pub max_lag_s: u64,
    /// The cached good-replica count.
    pub good: u32,
    pub slaves: Vec<Slave>,
    pub paused_until: Time,
    pub waiters: Vec<Waiter>,
    pub inbox: Vec<Msg>,
    /// Bumped every time the node becomes a primary.
    pub stint: u64,
    /// When a pump (stream pull) is scheduled.
    pub pump_at: Option<Time>,
}

impl Node {
    pub fn new(replid: u64, primary: bool, master: Option<usize>) -> Node {
        Node {
            alive: true,
            host_up: true,
            stopped: false,
            primary,
            master,
            link_up: false,
            link_replid: NO_REPLID,
            syncing: None,
            replid,
            replid2: NO_REPLID,
            second_offset: None,
            data: Vec::new(),
            min_replicas: 1,
            max_lag_s: 1,
            good: 0,
            slaves: Vec::new(),
            paused_until: 0,
            waiters: Vec::new(),
            inbox: Vec::new(),
            stint: 0,
            pump_at: None,
        }
    }

    pub fn offset(&self) -> u64 {
        self.data.len() as u64
    }

    /// Runs now: alive and not stopped.
    pub fn running(&self) -> bool {
        self.alive && !self.stopped
    }

    pub fn paused(&self, now: Time) -> bool {
        now < self.paused_until
    }

    /// Redis's `refreshGoodSlavesCount`.
    pub fn refresh_good(&mut self, now: Time) {
        let unix = now / 1000;
        let max = self.max_lag_s;
        self.good = self
            .slaves
            .iter()
            .filter(|s| unix.saturating_sub(s.ack_time / 1000) <= max)
            .count() as u32;
    }

    /// Whether a write would be refused with `NOREPLICAS`.
    pub fn noreplicas(&self) -> bool {
        self.min_replicas > 0 && self.good < self.min_replicas
    }

    /// Accepts a plain write now (primary, running, not paused, enough
    /// good replicas by its own cached count).
    pub fn writable(&self, now: Time) -> bool {
        self.running() && self.primary && !self.paused(now) && !self.noreplicas()
    }

    /// Whether `PSYNC` from a replica at `(replid, offset)` is partial here.
    pub fn partial_ok(&self, replid: u64, offset: u64) -> bool {
        (replid == self.replid && offset <= self.offset())
            || (replid != NO_REPLID
                && replid == self.replid2
                && self.second_offset.is_some_and(|s| offset < s))
    }

    /// `REPLICAOF NO ONE` on a replica: keeps the data, shifts the history.
    pub fn promote(&mut self, new_replid: u64) {
        self.primary = true;
        self.master = None;
        self.link_up = false;
        self.syncing = None;
        self.replid2 = self.replid;
        self.second_offset = Some(self.offset() + 1);
        self.replid = new_replid;
        self.stint += 1;
    }

    /// The slave entry for `replica`, if online here.
    pub fn slave(&mut self, replica: usize) -> Option<&mut Slave> {
        self.slaves.iter_mut().find(|s| s.node == replica)
    }

    /// Whether the key is in the data set.
    pub fn holds(&self, key: u64) -> bool {
        self.data.iter().any(|(k, _)| *k == key)
    }
}
