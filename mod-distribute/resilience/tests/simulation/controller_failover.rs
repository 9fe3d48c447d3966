//! The leader's failover, op by op as `Voter::failover` in
//! `controller/failover.rs` runs it (every `?` there is an [`World::abort`]
//! here: the rest of the step is dropped and `step_failed` set):
//!
//! 1. A retry (the intent `(epoch, old)` is already committed) neither
//!    proposes its intent again nor raises its alerts; otherwise propose
//!    the intent (`?`).
//! 2. Fence: a refused connection needs nothing (`gone`); else `CLIENT
//!    PAUSE WRITE`, then detach every configured node but the old primary
//!    (errors ignored), whether the pause took or not; if it did not, wait
//!    out the window `silent_since` + `min_replicas_max_lag` + 2.1 s.
//! 3. Probe every node again; an old primary that answers now must take
//!    the pause, or the failover fails (`?`).
//! 4. Unless `gone`: an answering node that still follows the old primary
//!    fails the failover (`?`).
//! 5. Choose among the answering nodes on the old history (`?`).
//! 6. `still_stands` (leads; committed epoch − 1 with `old` as primary;
//!    intent `(epoch, old)`; a majority reports `old` down), else unpause
//!    `old` if it is still the committed primary, and fail.
//! 7. `REPLICAOF NO ONE` and `min-replicas-to-write 0` (`?`), re-point the
//!    others (errors ignored), propose the commit (`?`), check the held
//!    topology is that epoch with the chosen primary (`?`), close the old
//!    primary's clients if it answers.

use mod_distribute::topology::Topology;
use mod_resilience::consensus::Command;
use mod_resilience::rules::{self, Candidate};

use super::controller::Op;
use super::redis_model::Admin;
use super::world::World;
use super::Time;

/// `FENCE_MARGIN` of `failover.rs`: beyond `min_replicas_max_lag`, Redis's
/// whole-second lag and once-a-second recount, and a margin for its timer.
const FENCE_MARGIN: Time = 2100;

impl World {
    /// `Voter::failover` of the committed primary `old` of `topology`.
    pub fn failover(&mut self, v: usize, topology: &Topology, old: usize) {
        let epoch = topology.epoch + 1;
        let from = self.addr(old);
        let retry = self.voters[v]
            .state
            .intent
            .as_ref()
            .is_some_and(|(e, f)| *e == epoch && *f == from);
        let old_replid = self.voters[v].seen[old]
            .last
            .as_ref()
            .map(|r| r.replid.clone());
        let mut ops = Vec::new();
        if !retry {
            ops.push(Op::Intent(old, epoch));
        } else {
            self.note(v, format!("failover of node {old}: retry of epoch {epoch}"));
        }
        ops.extend([
            Op::Fence(old),
            Op::ProbeAll,
            Op::Repause(old),
            Op::StillFollow(old),
            Op::Choose {
                old,
                old_replid,
                epoch,
                retry,
            },
        ]);
        self.voters[v].script.extend(ops);
    }

    pub fn run_failover_op(&mut self, v: usize, op: Op) -> Time {
        match op {
            Op::Intent(old, epoch) => {
                let by = self.voters[v].id;
                let from = self.addr(old);
                self.note(v, format!("failover of node {old}: intent epoch {epoch}"));
                match self.propose(v, Command::Intent { epoch, from, by }) {
                    Ok(cost) => cost,
                    Err(cost) => {
                        self.abort(v);
                        cost
                    }
                }
            }
            Op::Fence(old) => self.fence(v, old),
            Op::Detach(r) => self.query(v, r, Admin::ReplicaOf(None)).0,
            Op::FenceWait(old) => {
                // `silent_since` as it stands after the detaches (no probe
                // runs within the step); `now` if there is none.
                let since = self.voters[v].seen[old].silent_since.unwrap_or(self.now);
                let until = since + self.cfg.max_lag_s * 1000 + FENCE_MARGIN;
                let wait = until.saturating_sub(self.now);
                self.note(v, format!("node {old} silent: waiting {wait} ms"));
                wait
            }
            Op::Repause(old) => {
                if !self.voters[v].fence_silent || self.up(v, old).is_none() {
                    return 0;
                }
                let (cost, ok) = self.query(v, old, Admin::Pause);
                if ok {
                    self.note(v, format!("node {old} answers again: paused"));
                } else {
                    self.note(v, format!("node {old} answers again, cannot pause it"));
                    self.abort(v);
                }
                cost
            }
            Op::StillFollow(old) => {
                if self.voters[v].fence_gone {
                    return 0;
                }
                let from = self.addr(old);
                let following: Vec<usize> = (0..self.nodes.len())
                    .filter(|&n| {
                        self.up(v, n)
                            .is_some_and(|r| r.following.as_deref() == Some(from.as_str()))
                    })
                    .collect();
                if !following.is_empty() {
                    self.note(
                        v,
                        format!("nodes {following:?} still follow node {old}: not promoting"),
                    );
                    self.abort(v);
                }
                0
            }
            Op::Choose {
                old,
                old_replid,
                epoch,
                retry,
            } => self.choose(v, old, old_replid, epoch, retry),
            Op::StillStands(old, epoch) => self.still_stands(v, old, epoch),
            Op::Promote(chosen, old, epoch) => {
                let from = self.addr(old);
                let intent = self.log.iter().any(
                    |c| matches!(c, Command::Intent { epoch: e, from: f, .. } if *e == epoch && *f == from),
                );
                if !intent {
                    self.fail(format!(
                        "node {chosen} promoted without a committed intent (epoch {epoch})"
                    ));
                }
                self.note(
                    v,
                    format!("REPLICAOF NO ONE on node {chosen} (epoch {epoch})"),
                );
                let (cost, ok) = self.query(v, chosen, Admin::NoOne);
                if !ok {
                    self.abort(v);
                }
                cost
            }
            Op::NoMin(chosen) => {
                let (cost, ok) = self.query(v, chosen, Admin::MinReplicas(0));
                if ok {
                    self.voters[v].min_set = Some((chosen, 0));
                } else {
                    self.abort(v);
                }
                cost
            }
            Op::Repoint(other, chosen) => self.query(v, other, Admin::ReplicaOf(Some(chosen))).0,
            Op::Held(epoch, chosen) => {
                let held = &self.voters[v].state.topology;
                if held.epoch == epoch && held.primary.as_deref() == Some(&self.addrs[chosen]) {
                    self.stats_failovers += 1;
                } else {
                    let what = format!(
                        "failover to node {chosen} superseded: epoch {} has {:?}",
                        held.epoch, held.primary
                    );
                    self.note(v, what);
                    self.abort(v);
                }
                0
            }
            Op::KillClients(old) => match self.up(v, old) {
                Some(_) => self.query(v, old, Admin::KillClients).0,
                None => 0,
            },
            op => unreachable!("not a failover op: {op:?}"),
        }
    }

    /// `Voter::fence`; sets `fence_gone` / `fence_silent` (its result:
    /// the old primary's process is gone, nothing to fence / it was silent). The broken policy without a
    /// fence counts every old primary as gone.
    fn fence(&mut self, v: usize, old: usize) -> Time {
        let seen = &self.voters[v].seen[old];
        let gone = !self.policy.fence || seen.refused && seen.unreachable_since.is_some();
        self.voters[v].fence_gone = gone;
        self.voters[v].fence_silent = false;
        if gone {
            return 0;
        }
        let (cost, paused) = self.query(v, old, Admin::Pause);
        self.voters[v].fence_silent = !paused;
        // Every configured node but the old primary, paused or not.
        let detach: Vec<usize> = (0..self.nodes.len()).filter(|&n| n != old).collect();
        let what = if paused { "answers: paused" } else { "silent" };
        self.note(v, format!("node {old} {what}; detaching {detach:?}"));
        let mut ops: Vec<Op> = detach.into_iter().map(Op::Detach).collect();
        if !paused {
            ops.push(Op::FenceWait(old));
        }
        self.push_front(v, ops);
        cost
    }

    fn choose(
        &mut self,
        v: usize,
        old: usize,
        old_replid: Option<String>,
        epoch: u64,
        retry: bool,
    ) -> Time {
        let replicas: Vec<usize> = (0..self.nodes.len()).filter(|&n| n != old).collect();
        let answered: Vec<Candidate> = (replicas.iter().enumerate())
            .filter_map(|(position, &n)| {
                let r = self.up(v, n)?;
                rules::on_history(old_replid.as_deref(), &r.replid, &r.replid2).then(|| Candidate {
                    addr: self.addr(n),
                    offset: r.offset,
                    priority: r.priority,
                    position,
                })
            })
            .collect();
        let choice = (self.policy.choose)(answered, replicas.len(), self.cfg.wait_replicas);
        let chosen = match choice {
            Ok(c) => self.node_of(&c.addr).expect("a configured node"),
            Err(reason) => {
                // The alert `NoPromotableReplica`, raised once per failover.
                self.stats_no_promotable += u64::from(!retry);
                self.note(v, format!("no promotion: {reason}"));
                self.abort(v);
                return 0;
            }
        };
        let others: Vec<usize> = replicas.into_iter().filter(|&n| n != chosen).collect();
        let group = self.voters[v].state.topology.group.clone();
        let committed = Topology {
            group,
            epoch,
            primary: Some(self.addr(chosen)),
            replicas: others.iter().map(|&n| self.addr(n)).collect(),
            fenced: vec![self.addr(old)],
        };
        let mut ops = vec![
            Op::StillStands(old, epoch),
            Op::Promote(chosen, old, epoch),
            Op::NoMin(chosen),
        ];
        ops.extend(others.iter().map(|&o| Op::Repoint(o, chosen)));
        ops.extend([
            Op::Commit(committed),
            Op::Held(epoch, chosen),
            Op::KillClients(old),
            Op::StepDone,
        ]);
        self.push_front(v, ops);
        0
    }

    /// `Voter::still_stands`, and the unpause when it does not.
    fn still_stands(&mut self, v: usize, old: usize, epoch: u64) -> Time {
        let from = &self.addrs[old];
        let state = &self.voters[v].state;
        let is_old = state.topology.primary.as_deref() == Some(from.as_str());
        let stands = self.is_leader(v)
            && state.topology.epoch + 1 == epoch
            && is_old
            && state
                .intent
                .as_ref()
                .is_some_and(|(e, f)| *e == epoch && f == from)
            && rules::primary_failed(state.voters_down(from), self.voters.len());
        if stands {
            return 0;
        }
        let what = format!(
            "failover from node {old} to epoch {epoch} superseded (now epoch {}, primary {:?})",
            state.topology.epoch, state.topology.primary
        );
        self.note(v, what);
        self.abort(v);
        if is_old {
            self.query(v, old, Admin::Unpause).0
        } else {
            0
        }
    }
}
