//! What the controller group agrees on, and the seam to the engine that
//! agrees on it.
//!
//! [`GroupState::apply`] is deterministic: every voter applies the same
//! committed [`Command`]s in the same order and holds the same state. The
//! engine behind [`Consensus`] is [`Solo`] for one voter (development) and
//! openraft for three or five; the controller only sees this trait.

use async_trait::async_trait;
use mod_api::Result;
use mod_distribute::topology::Topology;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tokio::sync::watch;

/// A voter's id in the controller group (1, 2, 3, …).
pub type VoterId = u64;

/// How many decisions the replicated state keeps (older ones are dropped).
pub const DECISION_LOG: usize = 256;

/// A change to the replicated state, committed by a majority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `voter` sees `node` as down (could not reach it for `down_after`) or
    /// up again.
    Report {
        /// The reporting voter.
        voter: VoterId,
        /// The node (`host:port`).
        node: String,
        /// Down (true) or up.
        down: bool,
    },
    /// The leader will fail over `from` (fence, choose, promote) to commit
    /// `epoch`; recorded before any node is touched.
    Intent {
        /// The epoch the failover will commit.
        epoch: u64,
        /// The failed primary.
        from: String,
        /// The proposing voter.
        by: VoterId,
    },
    /// A new topology. Applied only if its epoch is higher than the held
    /// one: the epoch never goes back, whoever proposes.
    Commit(Topology),
}

/// One applied decision, for the log and the tests' histories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Its position in the sequence of applied commands (from 1).
    pub index: u64,
    /// What was decided.
    pub command: Command,
}

/// The replicated state of one HA group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// The committed topology (epoch 0: none yet).
    pub topology: Topology,
    /// For each node, the voters that report it down.
    pub down: BTreeMap<String, BTreeSet<VoterId>>,
    /// The failover in progress, if any.
    pub intent: Option<(u64, String)>,
    /// Commands applied so far.
    pub applied: u64,
    /// The last [`DECISION_LOG`] decisions, oldest first.
    pub log: VecDeque<Decision>,
}

impl GroupState {
    /// Applies one committed command; returns whether it changed anything
    /// (a stale commit or intent is a no-op, and is still logged).
    pub fn apply(&mut self, command: &Command) -> bool {
        self.applied += 1;
        let changed = match command {
            Command::Report { voter, node, down } => {
                let voters = self.down.entry(node.clone()).or_default();
                let changed = if *down {
                    voters.insert(*voter)
                } else {
                    voters.remove(voter)
                };
                if voters.is_empty() {
                    self.down.remove(node);
                }
                changed
            }
            Command::Intent { epoch, from, .. } => {
                if *epoch > self.topology.epoch
                    && self.intent.as_ref().is_none_or(|(e, _)| e < epoch)
                {
                    self.intent = Some((*epoch, from.clone()));
                    true
                } else {
                    false
                }
            }
            Command::Commit(topology) => {
                if topology.epoch > self.topology.epoch {
                    self.topology = topology.clone();
                    if self
                        .intent
                        .as_ref()
                        .is_some_and(|(e, _)| *e <= topology.epoch)
                    {
                        self.intent = None;
                    }
                    true
                } else {
                    false
                }
            }
        };
        if self.log.len() == DECISION_LOG {
            self.log.pop_front();
        }
        self.log.push_back(Decision {
            index: self.applied,
            command: command.clone(),
        });
        changed
    }

    /// How many voters report `node` down.
    pub fn voters_down(&self, node: &str) -> usize {
        self.down.get(node).map_or(0, BTreeSet::len)
    }
}

/// The engine that makes a majority of voters agree on [`Command`]s.
#[async_trait]
pub trait Consensus: Send + Sync + 'static {
    /// This voter's id.
    fn id(&self) -> VoterId;

    /// How many voters the group has.
    fn voters(&self) -> usize;

    /// Whether this voter leads now (only the leader acts on nodes).
    fn is_leader(&self) -> bool;

    /// Whether this voter is part of a majority now (it leads one, or
    /// follows a leader). A voter outside one stops serving subscriptions:
    /// its topology may be stale, and a client or proxy that hears only it
    /// must see the controllers as lost.
    fn in_quorum(&self) -> bool {
        true
    }

    /// The state as this voter has applied it (changes on every apply).
    fn state(&self) -> watch::Receiver<GroupState>;

    /// Proposes `command`; returns once a majority committed it and this
    /// voter applied it. Not the leader, or no majority within the
    /// engine's timeout: a retryable `Unavailable` error.
    async fn propose(&self, command: Command) -> Result<()>;
}

/// A group of one voter: every proposal commits at once. For development
/// and tests; it survives no failure of its own process.
pub struct Solo {
    id: VoterId,
    state: watch::Sender<GroupState>,
}

impl Solo {
    /// A single-voter group starting from `initial`.
    pub fn new(id: VoterId, initial: GroupState) -> Solo {
        Solo {
            id,
            state: watch::channel(initial).0,
        }
    }
}

#[async_trait]
impl Consensus for Solo {
    fn id(&self) -> VoterId {
        self.id
    }

    fn voters(&self) -> usize {
        1
    }

    fn is_leader(&self) -> bool {
        true
    }

    fn state(&self) -> watch::Receiver<GroupState> {
        self.state.subscribe()
    }

    async fn propose(&self, command: Command) -> Result<()> {
        self.state.send_modify(|state| {
            state.apply(&command);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(epoch: u64, primary: &str) -> Topology {
        Topology {
            group: "g".into(),
            epoch,
            primary: Some(primary.into()),
            ..Topology::default()
        }
    }

    #[test]
    fn commits_only_move_the_epoch_forward() {
        let mut state = GroupState::default();
        assert!(state.apply(&Command::Commit(topology(2, "a:1"))));
        assert!(
            !state.apply(&Command::Commit(topology(1, "b:1"))),
            "a stale commit is refused"
        );
        assert!(
            !state.apply(&Command::Commit(topology(2, "b:1"))),
            "an equal epoch is refused"
        );
        assert_eq!(state.topology.primary.as_deref(), Some("a:1"));
        assert_eq!(state.applied, 3);
        assert_eq!(state.log.len(), 3);
    }

    #[test]
    fn reports_count_distinct_voters_and_intent_clears_on_commit() {
        let mut state = GroupState::default();
        let report = |voter, down| Command::Report {
            voter,
            node: "a:1".into(),
            down,
        };
        state.apply(&report(1, true));
        state.apply(&report(1, true));
        state.apply(&report(2, true));
        assert_eq!(state.voters_down("a:1"), 2);
        state.apply(&report(1, false));
        assert_eq!(state.voters_down("a:1"), 1);
        assert!(state.apply(&Command::Intent {
            epoch: 1,
            from: "a:1".into(),
            by: 1
        }));
        assert!(!state.apply(&Command::Intent {
            epoch: 1,
            from: "a:1".into(),
            by: 2
        }));
        state.apply(&Command::Commit(topology(1, "b:1")));
        assert_eq!(state.intent, None);
    }

    #[test]
    fn the_decision_log_is_bounded() {
        let mut state = GroupState::default();
        for epoch in 1..=(DECISION_LOG as u64 + 10) {
            state.apply(&Command::Commit(topology(epoch, "a:1")));
        }
        assert_eq!(state.log.len(), DECISION_LOG);
        assert_eq!(state.log.front().map(|d| d.index), Some(11));
    }

    #[tokio::test]
    async fn solo_commits_at_once() {
        let solo = Solo::new(1, GroupState::default());
        let mut seen = solo.state();
        solo.propose(Command::Commit(topology(1, "a:1")))
            .await
            .unwrap();
        assert!(seen.has_changed().unwrap());
        assert_eq!(seen.borrow_and_update().topology.epoch, 1);
    }
}
