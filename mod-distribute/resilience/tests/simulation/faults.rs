//! The faults of a seed, drawn from its PRNG: 2–5 of them between 3 s and
//! the healing time (half of them 0.2–5 s after the previous one), each starting and ending on its own (overlaps are
//! allowed). At `heal_at` every partition and slowdown goes, stopped nodes
//! resume and killed ones are restarted by the node agent.
//!
//! The node agent's rule: a killed node comes back empty, only as a replica
//! of the primary of the highest committed epoch it can read from the
//! voters it reaches, and not before that primary is another node.

use super::world::{Ev, Party, World};
use super::Time;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `kill -9` of the primary (`true`: connections refused; `false`: the
    /// host is gone, silent).
    KillPrimary(bool),
    KillReplica(bool),
    KillPrimaryAndReplica(bool),
    /// SIGSTOP of the primary, SIGCONT at the end.
    PausePrimary,
    /// The primary cut off from every voter (not from replicas, clients).
    PrimaryFromVoters,
    /// The primary cut off from the voters and the other nodes, not from
    /// the clients.
    IsolatePrimary,
    /// One voter cut off from everything.
    IsolateVoter,
    /// One party's messages take 50–400 ms more.
    Slow,
    /// One random pair of parties cut.
    CutPair,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub at: Time,
    pub until: Time,
    pub kind: Kind,
    /// The nodes it killed or stopped.
    pub nodes: Vec<usize>,
    pub pairs: Vec<(Party, Party)>,
    pub slow: Option<(Party, Time)>,
}

impl World {
    pub fn draw_faults(&mut self) {
        let count = self.rng.range(2, 5);
        let heal = self.cfg.heal_at;
        for i in 0..count {
            let r = self.rng.chance(50);
            let kind = match self.rng.range(0, 11) {
                0 | 1 => Kind::KillPrimary(r),
                2 => Kind::KillReplica(r),
                3 => Kind::KillPrimaryAndReplica(r),
                4 | 5 => Kind::PausePrimary,
                6 | 7 => Kind::PrimaryFromVoters,
                8 => Kind::IsolatePrimary,
                9 => Kind::IsolateVoter,
                10 => Kind::Slow,
                _ => Kind::CutPair,
            };
            // Often close to the previous one: faults during a failover.
            let at = match self.faults.last() {
                Some(f) if self.rng.chance(50) => {
                    (f.at + self.rng.range(200, 5000)).min(heal - 2000)
                }
                _ => self.rng.range(3000, heal - 2000),
            };
            let mut until = at + self.rng.range(300, 8000);
            if matches!(kind, Kind::KillPrimary(_) | Kind::KillReplica(_)) && self.rng.chance(25) {
                until = heal; // absent until healing
            }
            let until = until.min(heal);
            self.faults.push(Fault {
                at,
                until,
                kind,
                nodes: vec![],
                pairs: vec![],
                slow: None,
            });
            self.schedule(at, Ev::Fault(2 * i as usize));
            self.schedule(until, Ev::Fault(2 * i as usize + 1));
        }
        self.schedule(heal, Ev::Heal);
    }

    fn all_parties(&self) -> Vec<Party> {
        let mut all: Vec<Party> = (0..self.voters.len()).map(Party::Voter).collect();
        all.extend((0..self.nodes.len()).map(Party::Node));
        all.extend((0..self.clients.len()).map(Party::Client));
        all
    }

    pub fn apply_fault(&mut self, i: usize) {
        let (f, start) = (i / 2, i.is_multiple_of(2));
        if !start {
            return self.end_fault(f);
        }
        let primary = self.committed().1.unwrap_or(0);
        let replicas: Vec<usize> = (0..self.nodes.len()).filter(|&n| n != primary).collect();
        let replica = replicas[self.rng.pick(replicas.len())];
        let voters: Vec<Party> = (0..self.voters.len()).map(Party::Voter).collect();
        let kind = self.faults[f].kind;
        let mut pairs = Vec::new();
        let mut nodes = Vec::new();
        match kind {
            Kind::KillPrimary(r) => nodes.push((primary, r)),
            Kind::KillReplica(r) => nodes.push((replica, r)),
            Kind::KillPrimaryAndReplica(r) => nodes.extend([(primary, r), (replica, r)]),
            Kind::PausePrimary => {
                if self.nodes[primary].alive {
                    self.nodes[primary].stopped = true;
                    self.faults[f].nodes.push(primary);
                }
            }
            Kind::PrimaryFromVoters => {
                pairs.extend(voters.iter().map(|&v| (Party::Node(primary), v)));
            }
            Kind::IsolatePrimary => {
                pairs.extend(voters.iter().map(|&v| (Party::Node(primary), v)));
                pairs.extend(
                    replicas
                        .iter()
                        .map(|&n| (Party::Node(primary), Party::Node(n))),
                );
            }
            Kind::IsolateVoter => {
                let v = Party::Voter(self.rng.pick(self.voters.len()));
                pairs.extend(self.all_parties().into_iter().map(|p| (v, p)));
            }
            Kind::Slow => {
                let all = self.all_parties();
                let p = all[self.rng.pick(all.len())];
                let extra = self.rng.range(50, 400);
                self.slow.push((p, extra));
                self.faults[f].slow = Some((p, extra));
            }
            Kind::CutPair => {
                let all = self.all_parties();
                let (a, b) = (all[self.rng.pick(all.len())], all[self.rng.pick(all.len())]);
                pairs.push((a, b));
            }
        }
        for (n, refused) in nodes {
            self.kill(n, refused);
            self.faults[f].nodes.push(n);
        }
        for &(a, b) in &pairs {
            self.cut_pair(a, b);
        }
        let now = self.now;
        self.trace.note(
            now,
            format!("fault {kind:?} on {:?} {pairs:?}", self.faults[f].nodes),
        );
        self.faults[f].pairs = pairs;
    }

    fn end_fault(&mut self, f: usize) {
        let fault = self.faults[f].clone();
        for (a, b) in fault.pairs {
            self.cut
                .retain(|&(x, y)| !((x, y) == (a, b) || (x, y) == (b, a)));
        }
        if let Some(s) = fault.slow {
            if let Some(i) = self.slow.iter().position(|x| *x == s) {
                self.slow.remove(i);
            }
        }
        for n in fault.nodes {
            match fault.kind {
                Kind::PausePrimary => self.resume(n),
                _ => self.agent_restart(n),
            }
        }
        let now = self.now;
        self.trace.note(now, format!("fault {:?} ends", fault.kind));
    }

    /// The node agent: restart `n` as a replica of the committed primary it
    /// reads, once that is another node.
    pub fn agent_restart(&mut self, n: usize) {
        if self.nodes[n].alive {
            return;
        }
        let known = (0..self.voters.len())
            .filter(|&v| self.reachable(Party::Node(n), Party::Voter(v)))
            .map(|v| &self.voters[v].state.topology)
            .max_by_key(|t| t.epoch)
            .and_then(|t| t.primary.as_deref())
            .and_then(|p| self.node_of(p));
        match known {
            Some(p) if p != n => {
                let now = self.now;
                self.trace
                    .note(now, format!("agent restarts node {n} as a replica of {p}"));
                self.restart(n, Some(p));
            }
            _ => self.schedule(self.now + 500, Ev::Restart(n)),
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.slow.clear();
        for n in 0..self.nodes.len() {
            self.resume(n);
            self.agent_restart(n);
        }
        let now = self.now;
        self.trace.note(
            now,
            "heal: partitions gone, nodes resumed, restarted".into(),
        );
    }
}
