//! The leader's duties: a fenced failover, and keeping the group in shape
//! between failovers (returning nodes rejoin as replicas, chained replicas
//! are re-pointed, `min-replicas-to-write` follows the good replicas).
//!
//! The order of a failover, and why:
//! 1. Commit the intent (no node is touched without a majority decision).
//! 2. Fence the old primary. Refused connection: the process is gone.
//!    Otherwise every other node is detached from it (pointed at a closed
//!    port, so their offsets freeze and it loses their acknowledgements);
//!    answering: `CLIENT PAUSE WRITE` too; silent (frozen, cut off): the window
//!    `min_replicas_max_lag` + 2.1 s from its first failed probe is waited
//!    out, after which Redis itself refuses its writes (`NOREPLICAS`).
//! 3. Choose among the replicas on the old primary's history the highest
//!    offset, then the lower `replica-priority` (0: never), then the
//!    earlier in `nodes`; with writers that use `WAIT k`,
//!    only when at least R−k+1 of the R replicas answered (else one of the
//!    silent ones may hold an acknowledged write: alert, do not promote).
//! 4. Promote it, re-point the others at it, commit the new topology
//!    (epoch + 1, the old primary fenced), then close the old primary's
//!    client connections and make it a replica if it answers.

use std::time::{Duration, Instant};

use mod_api::{Error, Result};
use mod_distribute::topology::{Alert, Topology};

use super::Voter;
use crate::consensus::Command;
use crate::rules::{self, Candidate};

/// Where detached replicas point: a closed port, so they stop following
/// the old primary without becoming writable.
const NOWHERE: (&str, &str) = ("127.0.0.1", "1");
/// Beyond `min_replicas_max_lag`: Redis's whole-second lag and its
/// once-a-second recount (2 s), and a margin for its timer.
const FENCE_MARGIN: Duration = Duration::from_millis(2100);
/// How long a reachable old primary's writes are paused (it is demoted
/// well within it; the pause only ends if the controller dies midway).
const PAUSE_MS: &str = "30000";

/// How the old primary was fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fenced {
    /// Its process is gone (connection refused): nothing to fence.
    Gone,
    /// It answered: its writes are paused, the others detached.
    Paused,
    /// It was silent: the others detached, its window waited out.
    Silent,
}

impl Voter {
    pub(super) async fn failover(&mut self, topology: &Topology) -> Result<()> {
        let Some(old) = topology.primary.clone() else {
            return Ok(());
        };
        let epoch = topology.epoch + 1;
        let group = self.config.group.clone();
        let started = Instant::now();
        // A retry of the same failover (the last attempt found no replica to
        // promote) neither re-proposes its intent nor raises its alerts again.
        let (voters_down, retry) = {
            let state = self.consensus.state();
            let state = state.borrow();
            let retry = state
                .intent
                .as_ref()
                .is_some_and(|(e, from)| *e == epoch && *from == old);
            (state.voters_down(&old), retry)
        };
        if !retry {
            self.alerts.raise(Alert::PrimaryDown {
                group: group.clone(),
                node: old.clone(),
                voters_down,
            });
            self.propose_intent(epoch, &old).await?;
            self.alerts.raise(Alert::FailoverStarted {
                group: group.clone(),
                epoch,
                from: old.clone(),
            });
        }

        let old_replid = self
            .seen
            .get(&old)
            .and_then(|s| s.last.as_ref())
            .map(|r| r.replid.clone());
        let fenced = self.fence(&old).await?;

        // Fresh offsets of every replica (frozen now: nothing feeds them).
        self.probe_all().await;
        if fenced == Fenced::Silent && self.up(&old).is_some() && !self.pause(&old).await {
            // Silent during the fence, answering now (the link healed, or
            // it was this voter that was cut off): its replicas may still
            // follow it, so nothing is promoted until it is paused.
            return Err(Error::unavailable(format!(
                "{old} answers again but cannot be paused; not promoting"
            )));
        }
        if fenced != Fenced::Gone {
            let following: Vec<&String> = self
                .config
                .nodes
                .iter()
                .filter(|a| {
                    self.up(a)
                        .is_some_and(|r| r.following.as_deref() == Some(old.as_str()))
                })
                .collect();
            if !following.is_empty() {
                // Their detach failed (this voter was cut off from them):
                // they may acknowledge the old primary's writes (it may
                // still run). Fence again at the next probe.
                return Err(Error::unavailable(format!(
                    "{following:?} still follow {old}: not promoting"
                )));
            }
        }
        let replicas: Vec<&String> = self.config.nodes.iter().filter(|a| **a != old).collect();
        let answered: Vec<Candidate> = replicas
            .iter()
            .enumerate()
            .filter_map(|(position, addr)| {
                let r = self.up(addr)?;
                rules::on_history(old_replid.as_deref(), &r.replid, &r.replid2).then(|| Candidate {
                    addr: (*addr).clone(),
                    offset: r.offset,
                    priority: r.priority,
                    position,
                })
            })
            .collect();
        let seen = answered.len();
        let chosen =
            match rules::choose(answered, replicas.len(), self.config.wait_replicas as usize) {
                Ok(chosen) => chosen,
                Err(reason) => {
                    if !retry {
                        self.alerts.raise(Alert::NoPromotableReplica {
                            group,
                            reason: reason.clone(),
                        });
                    }
                    return Err(Error::unavailable(reason));
                }
            };
        let Candidate {
            addr: chosen,
            offset,
            ..
        } = chosen;
        tracing::info!(%chosen, offset, epoch, answered = seen, "promoting");
        // The point of no return: only if this failover still stands.
        if let Err(e) = self.still_stands(epoch, &old) {
            if self.consensus.state().borrow().topology.primary.as_deref() == Some(old.as_str()) {
                self.unpause(&old).await;
            }
            return Err(e);
        }
        self.promote(&chosen).await?;
        let others: Vec<String> = self
            .config
            .nodes
            .iter()
            .filter(|a| **a != old && **a != chosen)
            .cloned()
            .collect();
        for other in &others {
            if let Err(e) = self.replicate(other, &chosen).await {
                tracing::warn!(node = %other, error = %e, "cannot re-point a replica yet");
            }
        }
        let committed = Topology {
            group: group.clone(),
            epoch,
            primary: Some(chosen.clone()),
            replicas: others,
            fenced: vec![old.clone()],
        };
        self.consensus.propose(Command::Commit(committed)).await?;
        let held = self.consensus.state().borrow().topology.clone();
        if held.epoch != epoch || held.primary.as_deref() != Some(chosen.as_str()) {
            // Another leader committed this epoch first: the reconcile of
            // the leader demotes the node promoted here.
            return Err(Error::unavailable(format!(
                "failover to {chosen} superseded: epoch {} has {:?}",
                held.epoch, held.primary
            )));
        }
        let took_ms = started.elapsed().as_millis() as u64;
        self.alerts.raise(Alert::FailoverDone {
            group,
            epoch,
            primary: chosen.clone(),
            took_ms,
        });
        // The old primary, if it answers: its clients go, it follows.
        if self.up(&old).is_some() {
            self.kill_clients(&old).await;
        }
        Ok(())
    }

    /// `REPLICAOF NO ONE` on `node`, writable at once: its writes must not
    /// wait for replicas that are only now re-attaching.
    pub(super) async fn promote(&mut self, addr: &str) -> Result<()> {
        let promote = redis::cmd("REPLICAOF").arg("NO").arg("ONE").clone();
        let no_min = redis::cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg("0")
            .clone();
        let node = self
            .node(addr)
            .ok_or_else(|| Error::internal("chosen node vanished"))?;
        node.query::<()>(&promote).await?;
        node.query::<()>(&no_min).await?;
        self.min_replicas_set = Some((addr.to_owned(), 0));
        Ok(())
    }

    /// Closes the normal client connections of `addr` (a demoted primary),
    /// so that its clients reconnect and follow the commit.
    pub(super) async fn kill_clients(&mut self, addr: &str) {
        let kill = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .clone();
        if let Some(node) = self.node(addr) {
            let _ = node.query::<redis::Value>(&kill).await;
        }
    }

    /// Step 2 of the failover (module docs).
    async fn fence(&mut self, old: &str) -> Result<Fenced> {
        let refused = self
            .seen
            .get(old)
            .is_some_and(|s| s.refused && s.unreachable_since.is_some());
        if refused {
            tracing::info!(node = %old, "old primary refuses connections: its process is gone");
            return Ok(Fenced::Gone);
        }
        let paused = self.pause(old).await;
        // Every other node stops following it (a fenced node that rejoined
        // may follow it without being listed as a replica yet): no replica
        // can acknowledge its writes after the offsets below are read, even
        // one that lags behind the node chosen. Where this fails, the check
        // after the fence fails the step if that node still follows it.
        let nowhere = redis::cmd("REPLICAOF")
            .arg(NOWHERE.0)
            .arg(NOWHERE.1)
            .clone();
        for replica in self.config.nodes.clone() {
            if replica == old {
                continue;
            }
            if let Some(node) = self.node(&replica) {
                if let Err(e) = node.query::<()>(&nowhere).await {
                    tracing::warn!(node = %replica, error = %e, "cannot detach a replica");
                }
            }
        }
        if paused {
            tracing::info!(node = %old, "old primary answers: its writes are paused");
            return Ok(Fenced::Paused);
        }
        // Redis counts a replica good while (now − its last ack, in whole
        // seconds) ≤ max lag, and recounts once a second: a primary cut off
        // from its replicas (whose links it cannot see close) takes writes
        // for up to max lag + 2 s after their last ack — which came before
        // our first failed probe of it ended.
        let silent_since = self.seen.get(old).and_then(|s| s.silent_since);
        let until = silent_since.unwrap_or_else(Instant::now)
            + self.config.min_replicas_max_lag
            + FENCE_MARGIN;
        tracing::warn!(node = %old, wait = ?until.saturating_duration_since(Instant::now()), "old primary silent: waiting out its fencing window");
        tokio::time::sleep_until(until.into()).await;
        Ok(Fenced::Silent)
    }

    /// Commits that the leader will move the primary away from `old` to
    /// commit `epoch` (before any node is touched).
    pub(super) async fn propose_intent(&self, epoch: u64, old: &str) -> Result<()> {
        let intent = Command::Intent {
            epoch,
            from: old.to_owned(),
            by: self.consensus.id(),
        };
        self.consensus.propose(intent).await
    }

    /// `CLIENT PAUSE WRITE` on `addr`; whether it took.
    pub(super) async fn pause(&mut self, addr: &str) -> bool {
        let pause = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(PAUSE_MS)
            .arg("WRITE")
            .clone();
        match self.node(addr) {
            Some(node) => node.query::<()>(&pause).await.is_ok(),
            None => false,
        }
    }

    /// Ends a pause of `addr` (best effort).
    pub(super) async fn unpause(&mut self, addr: &str) {
        if let Some(node) = self.node(addr) {
            let _ = node
                .query::<()>(&redis::cmd("CLIENT").arg("UNPAUSE").clone())
                .await;
        }
    }

    /// Whether the failover to `epoch` from `old` still stands: this voter
    /// leads, nothing was committed since its intent, and a majority still
    /// reports `old` down.
    fn still_stands(&self, epoch: u64, old: &str) -> Result<()> {
        let state = self.consensus.state().borrow().clone();
        let stands = self.consensus.is_leader()
            && state.topology.epoch + 1 == epoch
            && state.topology.primary.as_deref() == Some(old)
            && state
                .intent
                .as_ref()
                .is_some_and(|(e, f)| *e == epoch && f == old)
            && self.primary_failed(&state, old);
        if stands {
            Ok(())
        } else {
            Err(Error::unavailable(format!(
                "failover from {old} to epoch {epoch} superseded (now epoch {}, primary {:?})",
                state.topology.epoch, state.topology.primary
            )))
        }
    }

    /// Between failovers: returning nodes rejoin, replicas follow the
    /// primary, fenced nodes that caught up are unfenced, and the primary's
    /// `min-replicas-to-write` matches its good replicas.
    pub(super) async fn reconcile(&mut self, topology: &Topology) -> Result<()> {
        let Some(primary) = topology.primary.clone() else {
            return Ok(());
        };
        let Some(p) = self.up(&primary).cloned() else {
            return Ok(());
        };
        let mut rejoined = Vec::new();
        for addr in self.config.nodes.clone() {
            if addr == primary {
                continue;
            }
            let Some(r) = self.up(&addr).cloned() else {
                continue;
            };
            if r.master {
                // An old primary back, or a node restarted empty.
                let promoted_at = p.second_offset.map(|o| o.saturating_sub(1));
                let bytes = match promoted_at {
                    Some(at) if r.replid == p.replid2 => r.offset.saturating_sub(at),
                    _ => 0,
                };
                tracing::warn!(node = %addr, bytes, "a primary that is not the committed one: demoting it");
                if bytes > 0 {
                    self.alerts.raise(Alert::Divergence {
                        group: self.config.group.clone(),
                        node: addr.clone(),
                        bytes,
                    });
                }
                self.replicate(&addr, &primary).await?;
            } else if r.following.as_deref() != Some(&primary) {
                self.replicate(&addr, &primary).await?;
            } else if r.link_up && topology.fenced.contains(&addr) {
                rejoined.push(addr);
            }
        }
        if !rejoined.is_empty() {
            let mut next = topology.clone();
            next.epoch += 1;
            next.fenced.retain(|a| !rejoined.contains(a));
            next.replicas.extend(rejoined.iter().cloned());
            self.consensus.propose(Command::Commit(next)).await?;
            tracing::info!(?rejoined, "fenced nodes rejoined as replicas");
        }
        let max_lag = self.config.min_replicas_max_lag.as_secs();
        let good = p
            .online_replicas
            .iter()
            .filter(|(_, lag)| *lag <= max_lag)
            .count() as u32;
        let want = good.min(self.config.min_replicas_to_write);
        if self.min_replicas_set.as_ref() != Some(&(primary.clone(), want)) {
            let set = redis::cmd("CONFIG")
                .arg("SET")
                .arg("min-replicas-to-write")
                .arg(want)
                .arg("min-replicas-max-lag")
                .arg(max_lag)
                .clone();
            if let Some(node) = self.node(&primary) {
                node.query::<()>(&set).await?;
                self.min_replicas_set = Some((primary, want));
            }
        }
        Ok(())
    }
}
