//! The consensus model: one committed log, a leader, and the REAL
//! `GroupState::apply` on every voter.
//!
//! The leader is the lowest-id voter that reaches a majority of voters
//! (itself included). A proposal — by the leader or forwarded to it, as
//! openraft's `propose` does — commits only when its voter reaches that
//! leader, i.e. only with a majority; otherwise it fails after the 2 s
//! proposal timeout. Every voter the leader reaches applies the log up to
//! its end (a cut-off voter catches up when it reaches the leader again);
//! each voter publishes a new topology to the clients it reaches.

use mod_resilience::consensus::Command;
use mod_resilience::rules;

use super::world::{Ev, Party, World};
use super::Time;

/// `TIMING.propose` of the raft engine.
const PROPOSE_TIMEOUT: Time = 2000;

impl World {
    pub fn leader(&self) -> Option<usize> {
        let n = self.voters.len();
        let majority = rules::majority(n);
        (0..n).find(|&v| {
            (0..n)
                .filter(|&u| self.reachable(Party::Voter(v), Party::Voter(u)))
                .count()
                >= majority
        })
    }

    pub fn is_leader(&self, v: usize) -> bool {
        self.leader() == Some(v)
    }

    /// Proposes `command` for voter `v`: `Ok(time taken)` once committed
    /// and applied by `v`, `Err(time taken)` without a majority.
    pub fn propose(&mut self, v: usize, command: Command) -> Result<Time, Time> {
        let Some(l) = self.leader() else {
            return Err(PROPOSE_TIMEOUT);
        };
        let (a, b) = (Party::Voter(v), Party::Voter(l));
        if !self.reachable(a, b) {
            return Err(PROPOSE_TIMEOUT);
        }
        self.log.push(command);
        self.sync_voters();
        Ok(2 * self.delay(a, b) + 2 * self.delay(b, b))
    }

    /// Every voter that reaches the leader applies the log to its end.
    pub fn sync_voters(&mut self) {
        let Some(l) = self.leader() else { return };
        for v in 0..self.voters.len() {
            if !self.reachable(Party::Voter(v), Party::Voter(l)) {
                continue;
            }
            let mut published = None;
            let before = self.voters[v].state.applied;
            while (self.voters[v].state.applied as usize) < self.log.len() {
                let command = &self.log[self.voters[v].state.applied as usize];
                let changed = self.voters[v].state.apply(command);
                if let (true, Command::Commit(t)) = (changed, command) {
                    let primary = t.primary.as_deref().and_then(|p| self.node_of(p));
                    if let Some(p) = primary {
                        self.topos.entry(t.epoch).or_insert(p);
                    }
                    published = Some(t.epoch);
                }
            }
            if let Some(epoch) = published {
                for c in 0..self.clients.len() {
                    let (a, b) = (Party::Voter(v), Party::Client(c));
                    if self.reachable(a, b) {
                        let at = self.now + self.delay(a, b);
                        self.schedule(at, Ev::ClientLearn(c, epoch));
                    }
                }
            }
            if self.voters[v].state.applied > before {
                self.notify(v);
            }
        }
    }
}
