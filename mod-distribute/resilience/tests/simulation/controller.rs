//! The voters, step by step as `controller/mod.rs` and `failover.rs` run
//! them: a voter's loop is a queue of [`Op`]s, each executed at one instant
//! and then taking its time (a round trip, a 200 ms timeout, the 2 s
//! proposal timeout, the fencing window) before the next. An op that fails
//! where the real code has `?` drops the rest of the iteration.
//!
//! Loop: on the 200 ms tick (missed ticks delayed) probe every node,
//! report changed views, then step; between ticks, step only when the
//! applied state changed, the primary is failed and the last step did not
//! fail (a failed step waits for the next probe: `step_failed`). Only the
//! leader steps. The decisions are the real
//! `rules::{primary_failed, on_history, choose}` (the choice and the fence
//! are pluggable, to prove the checker fails). The failover's steps:
//! `controller_failover.rs`.

use std::collections::VecDeque;

use mod_distribute::topology::Topology;
use mod_resilience::consensus::{Command, GroupState};
use mod_resilience::probe::Replication;
use mod_resilience::rules::{self, Candidate};

use super::redis_model::Admin;
use super::world::{Ev, Party, World};
use super::Time;

/// The leader's pluggable decisions.
#[derive(Clone, Copy)]
pub struct Policy {
    pub choose: fn(Vec<Candidate>, usize, usize) -> Result<Candidate, String>,
    pub fence: bool,
}

impl Policy {
    pub fn real() -> Policy {
        Policy {
            choose: rules::choose,
            fence: true,
        }
    }
}

#[derive(Default, Clone)]
pub struct Seen {
    pub last: Option<Replication>,
    pub last_ok: Option<Time>,
    pub unreachable_since: Option<Time>,
    /// When the first failed probe of the current outage ended.
    pub silent_since: Option<Time>,
    pub refused: bool,
    pub reported_down: bool,
}

#[derive(Debug, Clone)]
pub enum Probe {
    Up(Replication),
    Refused,
    Silent,
}

#[derive(Debug, Clone)]
pub enum Op {
    ProbeAll,
    ProbeRecord(Vec<Probe>),
    Report,
    ProposeReport(usize, bool),
    Step(bool),
    /// The step returned `Ok` (an op that fails clears the script instead).
    StepDone,
    /// `(old, epoch)`.
    Intent(usize, u64),
    Fence(usize),
    Detach(usize),
    /// A silent old primary's fencing window, from its `silent_since`.
    FenceWait(usize),
    /// After the fence's re-probe: an answering old primary must pause.
    Repause(usize),
    /// Unless the fence found the old primary gone: no answering node may
    /// still follow it.
    StillFollow(usize),
    Choose {
        old: usize,
        old_replid: Option<String>,
        epoch: u64,
        retry: bool,
    },
    /// `(old, epoch)`: `still_stands`, right before `REPLICAOF NO ONE`.
    StillStands(usize, u64),
    /// `(chosen, old, epoch)`.
    Promote(usize, usize, u64),
    NoMin(usize),
    Repoint(usize, usize),
    Commit(Topology),
    /// `(epoch, chosen)`: the held topology is the one just committed.
    Held(u64, usize),
    KillClients(usize),
    Replicate(usize, usize),
    SetMin(usize, u32),
}

pub struct Voter {
    pub id: u64,
    pub state: GroupState,
    pub seen: Vec<Seen>,
    pub min_set: Option<(usize, u32)>,
    pub script: VecDeque<Op>,
    pub next_tick: Time,
    pub seen_applied: u64,
    pub wake_at: Option<Time>,
    pub busy: bool,
    pub last_epoch: u64,
    /// The last step failed: the next one waits for a probe.
    pub step_failed: bool,
    /// The current failover's fence found the old primary gone.
    pub fence_gone: bool,
    /// … or silent (not gone, and the pause did not take).
    pub fence_silent: bool,
}

pub fn replid(id: u64) -> String {
    format!("r{id}")
}

impl World {
    /// Wakes an idle voter now (the applied state changed).
    pub fn notify(&mut self, v: usize) {
        if !self.voters[v].busy && self.voters[v].wake_at != Some(self.now) {
            self.voters[v].wake_at = Some(self.now);
            self.schedule(self.now, Ev::VoterWake(v));
        }
    }

    pub fn voter_wake(&mut self, v: usize) {
        if self.voters[v].wake_at != Some(self.now) {
            return;
        }
        self.voters[v].busy = false;
        self.sync_voters();
        loop {
            if let Some(op) = self.voters[v].script.pop_front() {
                let cost = self.run_op(v, op);
                if cost > 0 {
                    self.voters[v].busy = true;
                    self.voters[v].wake_at = Some(self.now + cost);
                    return self.schedule(self.now + cost, Ev::VoterWake(v));
                }
                continue;
            }
            let voter = &mut self.voters[v];
            if self.now >= voter.next_tick {
                voter.next_tick = self.now + self.cfg.probe_every;
                voter
                    .script
                    .extend([Op::ProbeAll, Op::Report, Op::Step(true)]);
            } else if voter.state.applied > voter.seen_applied {
                voter.seen_applied = voter.state.applied;
                voter.script.push_back(Op::Step(false));
            } else {
                voter.wake_at = Some(voter.next_tick);
                let at = voter.next_tick;
                return self.schedule(at, Ev::VoterWake(v));
            }
        }
    }

    pub fn probe(&self, v: usize, n: usize) -> (Probe, Time) {
        let node = &self.nodes[n];
        let (a, b) = (Party::Voter(v), Party::Node(n));
        let rtt = 2 * self.delay(a, b);
        if !self.reachable(a, b) || !node.host_up || node.stopped {
            return (Probe::Silent, self.cfg.probe_every);
        }
        if !node.alive {
            return (Probe::Refused, rtt);
        }
        let unix = self.now / 1000;
        let r = Replication {
            master: node.primary,
            replid: replid(node.replid),
            replid2: replid(node.replid2),
            offset: node.offset(),
            second_offset: node.second_offset,
            following: (!node.primary)
                .then(|| node.master.map_or("127.0.0.1:1".into(), |m| self.addr(m))),
            link_up: node.link_up,
            priority: mod_resilience::probe::DEFAULT_PRIORITY,
            online_replicas: node
                .slaves
                .iter()
                .map(|s| (self.addr(s.node), unix.saturating_sub(s.ack_time / 1000)))
                .collect(),
        };
        (Probe::Up(r), rtt)
    }

    /// A command from voter `v` to node `n`: `(time taken, answered OK)`.
    pub fn query(&mut self, v: usize, n: usize, cmd: Admin) -> (Time, bool) {
        let (a, b) = (Party::Voter(v), Party::Node(n));
        let node = &self.nodes[n];
        if !self.reachable(a, b) || !node.host_up {
            return (self.cfg.probe_every, false);
        }
        if !node.alive {
            return (2 * self.delay(a, b), false);
        }
        if node.stopped {
            self.nodes[n]
                .inbox
                .push(super::redis_model::Msg::Admin(cmd));
            return (self.cfg.probe_every, false);
        }
        self.admin(n, cmd);
        (2 * self.delay(a, b), true)
    }

    pub fn up(&self, v: usize, n: usize) -> Option<&Replication> {
        let seen = &self.voters[v].seen[n];
        seen.unreachable_since
            .is_none()
            .then_some(seen.last.as_ref())
            .flatten()
    }

    /// The step returns an error (`?`): the rest of it is dropped.
    pub fn abort(&mut self, v: usize) {
        self.voters[v].script.clear();
        self.voters[v].step_failed = true;
    }

    pub fn push_front(&mut self, v: usize, ops: Vec<Op>) {
        for op in ops.into_iter().rev() {
            self.voters[v].script.push_front(op);
        }
    }

    pub fn note(&mut self, v: usize, what: String) {
        let now = self.now;
        self.trace.note(now, format!("voter {}: {what}", v + 1));
    }

    fn run_op(&mut self, v: usize, op: Op) -> Time {
        let now = self.now;
        match op {
            Op::ProbeAll => {
                let probes: Vec<(Probe, Time)> =
                    (0..self.nodes.len()).map(|n| self.probe(v, n)).collect();
                let cost = probes.iter().map(|p| p.1).max().unwrap_or(0);
                let probes = probes.into_iter().map(|p| p.0).collect();
                self.voters[v].script.push_front(Op::ProbeRecord(probes));
                cost
            }
            Op::ProbeRecord(probes) => {
                for (n, probe) in probes.into_iter().enumerate() {
                    let seen = &mut self.voters[v].seen[n];
                    match probe {
                        Probe::Up(r) => {
                            seen.last = Some(r);
                            seen.last_ok = Some(now);
                            seen.unreachable_since = None;
                            seen.silent_since = None;
                            seen.refused = false;
                        }
                        p => {
                            seen.unreachable_since
                                .get_or_insert(seen.last_ok.unwrap_or(now));
                            seen.silent_since.get_or_insert(now);
                            seen.refused = matches!(p, Probe::Refused);
                        }
                    }
                }
                0
            }
            Op::Report => {
                let down_after = self.cfg.down_after;
                let changes: Vec<Op> = (self.voters[v].seen.iter().enumerate())
                    .filter_map(|(n, s)| {
                        let down = s.unreachable_since.is_some_and(|t| now - t >= down_after);
                        (down != s.reported_down).then_some(Op::ProposeReport(n, down))
                    })
                    .collect();
                self.push_front(v, changes);
                0
            }
            Op::ProposeReport(n, down) => {
                let voter = self.voters[v].id;
                let command = Command::Report {
                    voter,
                    node: self.addr(n),
                    down,
                };
                match self.propose(v, command) {
                    Ok(cost) => {
                        self.voters[v].seen[n].reported_down = down;
                        cost
                    }
                    Err(cost) => {
                        let script = &mut self.voters[v].script;
                        while matches!(script.front(), Some(Op::ProposeReport(..))) {
                            script.pop_front();
                        }
                        cost
                    }
                }
            }
            Op::Step(probed) => self.step(v, probed),
            Op::StepDone => {
                self.voters[v].step_failed = false;
                0
            }
            Op::Commit(t) => {
                let what = format!(
                    "commit epoch {} primary {:?} fenced {:?}",
                    t.epoch, t.primary, t.fenced
                );
                match self.propose(v, Command::Commit(t)) {
                    Ok(cost) => {
                        self.note(v, what);
                        cost
                    }
                    Err(cost) => {
                        self.abort(v);
                        cost
                    }
                }
            }
            Op::Replicate(n, primary) => {
                self.note(
                    v,
                    format!("reconcile: REPLICAOF node {primary} on node {n}"),
                );
                let (cost, ok) = self.query(v, n, Admin::ReplicaOf(Some(primary)));
                if !ok {
                    self.abort(v);
                }
                cost
            }
            Op::SetMin(primary, want) => {
                let (cost, ok) = self.query(v, primary, Admin::MinReplicas(want));
                if ok {
                    self.voters[v].min_set = Some((primary, want));
                } else {
                    self.abort(v);
                }
                cost
            }
            op => self.run_failover_op(v, op),
        }
    }

    /// One turn of the loop after the probes (`Voter::run`).
    fn step(&mut self, v: usize, probed: bool) -> Time {
        if !self.is_leader(v) {
            return 0;
        }
        let voter = &mut self.voters[v];
        voter.seen_applied = voter.state.applied;
        let topology = voter.state.topology.clone();
        let Some(primary) = topology.primary.as_deref().and_then(|p| self.node_of(p)) else {
            return 0; // no bootstrap: epoch 1 is committed by the setup
        };
        let failed = rules::primary_failed(
            self.voters[v].state.voters_down(&self.addrs[primary]),
            self.voters.len(),
        );
        if !probed && (self.voters[v].step_failed || !failed) {
            return 0;
        }
        if failed {
            self.failover(v, &topology, primary);
        } else {
            self.reconcile(v, &topology, primary);
        }
        0
    }

    /// `reconcile` of `failover.rs`, decided on this voter's last probes.
    fn reconcile(&mut self, v: usize, topology: &Topology, primary: usize) {
        let Some(p) = self.up(v, primary).cloned() else {
            return self.voters[v].script.push_back(Op::StepDone);
        };
        let paddr = self.addr(primary);
        let mut ops = Vec::new();
        let mut rejoined = Vec::new();
        for n in (0..self.nodes.len()).filter(|&n| n != primary) {
            let Some(r) = self.up(v, n) else { continue };
            if r.master || r.following.as_deref() != Some(&paddr) {
                ops.push(Op::Replicate(n, primary));
            } else if r.link_up && topology.fenced.contains(&self.addrs[n]) {
                rejoined.push(self.addr(n));
            }
        }
        if !rejoined.is_empty() {
            let mut next = topology.clone();
            next.epoch += 1;
            next.fenced.retain(|a| !rejoined.contains(a));
            next.replicas.extend(rejoined);
            ops.push(Op::Commit(next));
        }
        let max_lag = self.cfg.max_lag_s;
        let good = p
            .online_replicas
            .iter()
            .filter(|(_, lag)| *lag <= max_lag)
            .count() as u32;
        let want = good.min(self.cfg.min_replicas_to_write);
        if self.voters[v].min_set != Some((primary, want)) {
            ops.push(Op::SetMin(primary, want));
        }
        ops.push(Op::StepDone);
        self.voters[v].script.extend(ops);
    }
}
