//! A planned switchover: the primary hands over to a replica that holds
//! every write it took, so nothing is lost and writes pause only briefly.
//!
//! 1. Commit the intent (as a failover does).
//! 2. `CLIENT PAUSE WRITE` on the primary: its replication offset stops.
//! 3. Wait until the target's offset reaches it (or give up, unpause, and
//!    change nothing: the target is not taken if it is behind).
//! 4. Promote the target, point the old primary and the other replicas at
//!    it (the old primary resyncs partially: same history), commit the new
//!    topology (epoch + 1, nothing fenced), then close the old primary's
//!    client connections and end its pause — its paused writers get
//!    `READONLY` and follow the commit.

use std::time::{Duration, Instant};

use mod_api::{Error, Result};
use mod_distribute::topology::{Alert, Topology};

use super::Voter;
use crate::consensus::Command;
use crate::probe::Probe;
use crate::rules::{self, Candidate};

/// How long the target may take to catch up with the paused primary.
const CATCH_UP: Duration = Duration::from_secs(2);

impl Voter {
    pub(super) async fn switchover(&mut self, to: Option<String>) -> Result<Topology> {
        if !self.consensus.is_leader() {
            return Err(Error::unavailable(
                "this voter does not lead the controller group: ask the leader",
            ));
        }
        let topology = self.consensus.state().borrow().topology.clone();
        let Some(old) = topology.primary.clone() else {
            return Err(Error::unavailable("no topology is committed yet"));
        };
        self.probe_all().await;
        if self.up(&old).is_none() {
            return Err(Error::unavailable(format!(
                "the primary {old} does not answer: that is a failover, not a switchover"
            )));
        }
        let target = self.switchover_target(&topology, &old, to)?;
        let epoch = topology.epoch + 1;
        self.propose_intent(epoch, &old).await?;
        let paused_at = Instant::now();
        let result = self.hand_over(&topology, &old, &target, epoch).await;
        // Whatever happened, the old primary does not stay paused.
        self.unpause(&old).await;
        let committed = result?;
        let paused_ms = paused_at.elapsed().as_millis() as u64;
        tracing::info!(from = %old, to = %target, epoch, paused_ms, "switchover committed");
        self.alerts.raise(Alert::SwitchoverDone {
            group: self.config.group.clone(),
            epoch,
            from: old,
            to: target,
            paused_ms,
        });
        Ok(committed)
    }

    /// The replicas of `topology` that answer and follow `old` with their
    /// link up.
    pub(super) fn in_sync(&self, topology: &Topology, old: &str) -> Vec<Candidate> {
        topology
            .replicas
            .iter()
            .enumerate()
            .filter_map(|(position, addr)| {
                let r = self.up(addr)?;
                (r.following.as_deref() == Some(old) && r.link_up).then(|| Candidate {
                    addr: addr.clone(),
                    offset: r.offset,
                    priority: r.priority,
                    position,
                })
            })
            .collect()
    }

    /// `to` if it is a replica in sync with `old`, else the best such one.
    fn switchover_target(
        &self,
        topology: &Topology,
        old: &str,
        to: Option<String>,
    ) -> Result<String> {
        let in_sync = self.in_sync(topology, old);
        match to {
            Some(to) if in_sync.iter().any(|c| c.addr == to) => Ok(to),
            Some(to) => Err(Error::invalid_input(format!(
                "{to} is not a replica of {old} in sync (replicas in sync: {:?})",
                in_sync.iter().map(|c| &c.addr).collect::<Vec<_>>()
            ))),
            None => rules::choose(in_sync, topology.replicas.len(), 0)
                .map(|c| c.addr)
                .map_err(|reason| Error::unavailable(format!("no replica to switch to: {reason}"))),
        }
    }

    /// Steps 2–4 of the module docs.
    async fn hand_over(
        &mut self,
        topology: &Topology,
        old: &str,
        target: &str,
        epoch: u64,
    ) -> Result<Topology> {
        if !self.pause(old).await {
            return Err(Error::unavailable(format!("cannot pause {old}'s writes")));
        }
        let node = self
            .node(old)
            .ok_or_else(|| Error::internal("no such node"))?;
        let Probe::Up(paused) = node.probe().await else {
            return Err(Error::unavailable(format!("{old} stopped answering")));
        };
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let node = self
                .node(target)
                .ok_or_else(|| Error::internal("no such node"))?;
            if let Probe::Up(r) = node.probe().await {
                if r.offset >= paused.offset {
                    break;
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "{target} did not reach {old}'s offset {} within {CATCH_UP:?}; nothing changed",
                    paused.offset
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.promote(target).await?;
        let others: Vec<String> = self
            .config
            .nodes
            .iter()
            .filter(|a| a.as_str() != target)
            .cloned()
            .collect();
        for other in &others {
            if let Err(e) = self.replicate(other, target).await {
                tracing::warn!(node = %other, error = %e, "cannot re-point a replica yet");
            }
        }
        let committed = Topology {
            group: topology.group.clone(),
            epoch,
            primary: Some(target.to_owned()),
            replicas: others,
            fenced: Vec::new(),
        };
        if let Err(e) = self
            .consensus
            .propose(Command::Commit(committed.clone()))
            .await
        {
            // Not committed: the old primary stays the primary.
            tracing::warn!(error = %e, "switchover not committed; handing back");
            let _ = self.promote(old).await;
            for other in self.config.nodes.clone() {
                if other != old {
                    let _ = self.replicate(&other, old).await;
                }
            }
            return Err(e);
        }
        self.kill_clients(old).await;
        Ok(committed)
    }
}
