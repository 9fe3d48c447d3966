//! The simulated world: a clock, one event queue, the parties (voters,
//! nodes, clients) and the network between them.
//!
//! Network: every message takes `delay(a, b)` one way (a base of 1–3 ms
//! per seed, more on a slowed party); a cut pair (partition) loses what is
//! sent between them; a message to a stopped node waits in its inbox; to a
//! dead one it is lost (a refused connection or a silent host).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use mod_resilience::consensus::Command;

use super::controller::{Policy, Voter};
use super::history::{History, Trace};
use super::redis_model::Node;
use super::rng::Rng;
use super::Time;

/// A party of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Party {
    Voter(usize),
    Node(usize),
    Client(usize),
}

/// A reply to `SET` + `WAIT 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reply {
    /// `OK`, and `WAIT` counted this many replicas.
    Ok(u32),
    ReadOnly,
    NoReplicas,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ev {
    VoterWake(usize),
    ClientWake(usize),
    ClientPoll(usize),
    ClientTimeout(usize, u64),
    ClientReply(usize, u64, Reply),
    ClientLearn(usize, u64),
    /// A client's `SET key` reaching a node.
    Write(usize, usize, u64),
    Pump(usize),
    /// `(primary, replica, offset)`.
    Ack(usize, usize, u64),
    Handshake(usize),
    /// `(replica, sync id, snapshot offset, primary's replid)`.
    FullSyncDone(usize, u64, u64, u64),
    WaitDeadline(usize, u64),
    NodeCron(usize),
    /// Fault `i / 2` starts (even) or ends (odd).
    Fault(usize),
    /// The node agent (re)starts a killed node.
    Restart(usize),
    Heal,
}

/// The fixed parameters of one run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub voters: usize,
    pub nodes: usize,
    pub clients: usize,
    pub down_after: Time,
    pub probe_every: Time,
    pub min_replicas_to_write: u32,
    pub max_lag_s: u64,
    pub wait_replicas: usize,
    pub wait_timeout: Time,
    pub client_timeout: Time,
    pub heal_at: Time,
    pub stop_writes_at: Time,
    pub end_at: Time,
}

pub struct World {
    pub seed: u64,
    pub now: Time,
    queue: BinaryHeap<Reverse<(Time, u64, Ev)>>,
    seq: u64,
    pub rng: Rng,
    pub cfg: SimConfig,
    pub addrs: Vec<String>,
    pub nodes: Vec<Node>,
    pub voters: Vec<Voter>,
    pub clients: Vec<super::clients::Client>,
    /// The committed log, in order (the consensus model: one log).
    pub log: Vec<Command>,
    /// The primary of every committed epoch.
    pub topos: BTreeMap<u64, usize>,
    pub cut: Vec<(Party, Party)>,
    /// `(party, extra one-way delay)`.
    pub slow: Vec<(Party, Time)>,
    pub base_delay: Time,
    pub next_replid: u64,
    pub next_sync: u64,
    pub faults: Vec<super::faults::Fault>,
    pub policy: Policy,
    pub hist: History,
    pub trace: Trace,
    pub failure: Option<String>,
    pub stats_failovers: u64,
    pub stats_no_promotable: u64,
    pub dual_writable_ms: Time,
    pub last_check: Time,
    /// The most nodes dead at once.
    pub max_dead: usize,
}

impl World {
    pub fn new(seed: u64, policy: Policy) -> World {
        let mut rng = Rng::new(seed);
        let voters = match rng.range(0, 9) {
            0 => 1,
            1 => 5,
            _ => 3,
        };
        let nodes = if rng.chance(25) { 4 } else { 3 };
        let heal_at = rng.range(30, 50) * 1000;
        let cfg = SimConfig {
            voters,
            nodes,
            clients: 2,
            down_after: 1000,
            probe_every: 200,
            min_replicas_to_write: 1,
            max_lag_s: 1,
            wait_replicas: 1,
            wait_timeout: 500,
            client_timeout: 1000,
            heal_at,
            stop_writes_at: heal_at + 12_000,
            end_at: heal_at + 15_000,
        };
        let base_delay = rng.range(1, 3);
        let addrs = (0..nodes)
            .map(|i| format!("10.0.0.{}:6379", i + 1))
            .collect();
        let mut world = World {
            seed,
            now: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            rng,
            cfg,
            addrs,
            nodes: Vec::new(),
            voters: Vec::new(),
            clients: Vec::new(),
            log: Vec::new(),
            topos: BTreeMap::new(),
            cut: Vec::new(),
            slow: Vec::new(),
            base_delay,
            next_replid: 1,
            next_sync: 1,
            faults: Vec::new(),
            policy,
            hist: History::default(),
            trace: Trace::default(),
            failure: None,
            stats_failovers: 0,
            stats_no_promotable: 0,
            dual_writable_ms: 0,
            last_check: 0,
            max_dead: 0,
        };
        world.setup();
        world
    }

    pub fn schedule(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at.max(self.now), self.seq, ev)));
    }

    pub fn new_replid(&mut self) -> u64 {
        self.next_replid += 1;
        self.next_replid
    }

    pub fn addr(&self, node: usize) -> String {
        self.addrs[node].clone()
    }

    pub fn node_of(&self, addr: &str) -> Option<usize> {
        self.addrs.iter().position(|a| a == addr)
    }

    fn key(a: Party, b: Party) -> (Party, Party) {
        if a <= b {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// No partition between `a` and `b`.
    pub fn reachable(&self, a: Party, b: Party) -> bool {
        a == b || !self.cut.contains(&World::key(a, b))
    }

    pub fn cut_pair(&mut self, a: Party, b: Party) {
        let k = World::key(a, b);
        if a != b && !self.cut.contains(&k) {
            self.cut.push(k);
        }
    }

    /// One-way delay between `a` and `b` now.
    pub fn delay(&self, a: Party, b: Party) -> Time {
        let extra: Time = self
            .slow
            .iter()
            .filter(|(p, _)| *p == a || *p == b)
            .map(|(_, d)| *d)
            .sum();
        self.base_delay + extra
    }

    /// The node accepts bytes from `from` now (reachable, host up, alive).
    pub fn node_gets(&self, from: Party, node: usize) -> bool {
        let n = &self.nodes[node];
        n.alive && n.host_up && self.reachable(from, Party::Node(node))
    }

    /// The latest committed epoch and its primary.
    pub fn committed(&self) -> (u64, Option<usize>) {
        self.topos
            .iter()
            .next_back()
            .map_or((0, None), |(e, p)| (*e, Some(*p)))
    }

    /// Runs until `end_at`, checking the invariants after every event.
    pub fn run(&mut self) -> Result<(), String> {
        while let Some(Reverse((at, _, ev))) = self.queue.pop() {
            if at > self.cfg.end_at {
                break;
            }
            self.now = at;
            self.trace.event(at, &ev);
            self.dispatch(ev);
            self.check_step();
            if let Some(f) = self.failure.take() {
                return Err(self.report(&f));
            }
        }
        self.now = self.cfg.end_at;
        self.check_end();
        match self.failure.take() {
            Some(f) => Err(self.report(&f)),
            None => Ok(()),
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::VoterWake(v) => self.voter_wake(v),
            Ev::ClientWake(c) => self.client_wake(c),
            Ev::ClientPoll(c) => self.client_poll(c),
            Ev::ClientTimeout(c, key) => self.client_done(c, key, None),
            Ev::ClientReply(c, key, r) => self.client_done(c, key, Some(r)),
            Ev::ClientLearn(c, epoch) => self.client_learn(c, epoch),
            Ev::Write(n, c, key) => {
                self.deliver(n, super::redis_model::Msg::Write { client: c, key })
            }
            Ev::Pump(r) => self.pump(r),
            Ev::Ack(p, r, off) => self.deliver(
                p,
                super::redis_model::Msg::Ack {
                    replica: r,
                    offset: off,
                },
            ),
            Ev::Handshake(r) => self.handshake(r),
            Ev::FullSyncDone(r, id, off, replid) => self.full_sync_done(r, id, off, replid),
            Ev::WaitDeadline(n, key) => self.wait_deadline(n, key),
            Ev::NodeCron(n) => self.cron(n),
            Ev::Fault(i) => self.apply_fault(i),
            Ev::Restart(n) => self.agent_restart(n),
            Ev::Heal => self.heal(),
        }
    }

    /// Records the first failed invariant (the run stops after this event).
    pub fn fail(&mut self, what: String) {
        if self.failure.is_none() {
            self.failure = Some(what);
        }
    }

    pub fn describe(&self, what: &str) -> String {
        self.report(what)
    }

    fn report(&self, what: &str) -> String {
        format!(
            "seed {} (voters={} nodes={} heal_at={}ms): {what}\nfaults:\n{}{}",
            self.seed,
            self.cfg.voters,
            self.cfg.nodes,
            self.cfg.heal_at,
            self.faults
                .iter()
                .map(|f| format!(
                    "  {}..{} ms {:?} nodes {:?} cut {:?} slow {:?}\n",
                    f.at, f.until, f.kind, f.nodes, f.pairs, f.slow
                ))
                .collect::<String>(),
            self.trace.render(self)
        )
    }
}
