//! The proposal path: commit on the leader, or forward to it over the
//! transport and wait until this voter applied the entry too.

use std::collections::BTreeMap;
use std::sync::Arc;

use mod_api::{Error, Result};
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::metrics::WaitError;
use openraft::Raft;
use tokio::sync::watch;
use tokio::time::Instant;

use super::network::Transport;
use super::wire::{Request, Response};
use super::{TypeConfig, TIMING};
use crate::consensus::{Command, GroupState, VoterId};

/// What a voter shares with the tasks that serve its peers.
pub(crate) struct Inner {
    pub(super) id: VoterId,
    pub(super) voters: BTreeMap<VoterId, String>,
    pub(super) raft: Raft<TypeConfig>,
    pub(super) state: Arc<watch::Sender<GroupState>>,
    pub(super) transport: Transport,
}

/// How a local `client_write` ended, when it did not fail.
enum Written {
    /// Committed and applied here, at this log index.
    Committed(u64),
    /// This voter is not the leader; the leader it knows of, if any.
    NotLeader(Option<VoterId>),
}

impl Inner {
    fn no_leader(&self) -> Error {
        Error::unavailable("raft: no leader now (election in progress, or no majority)")
            .with_context("voter", self.id)
    }

    async fn write(&self, command: Command, deadline: Instant) -> Result<Written> {
        let written = tokio::time::timeout_at(deadline, self.raft.client_write(command)).await;
        match written {
            Err(_) => Err(Error::timeout(
                "raft: the proposal was not committed in time (no majority?)",
            )
            .with_context("voter", self.id)),
            Ok(Ok(response)) => Ok(Written::Committed(response.log_id.index)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to)))) => {
                Ok(Written::NotLeader(to.leader_id))
            }
            Ok(Err(RaftError::APIError(e))) => Err(Error::internal(format!("raft: {e}"))),
            Ok(Err(RaftError::Fatal(e))) => Err(fatal(e)),
        }
    }

    /// Serves a proposal forwarded by a follower: committed here, or a
    /// retryable error if this voter is not the leader (never forwarded on).
    pub(crate) async fn propose_as_leader(&self, command: Command) -> Result<u64> {
        match self.write(command, Instant::now() + TIMING.propose).await? {
            Written::Committed(index) => Ok(index),
            Written::NotLeader(leader) => Err(Error::unavailable(format!(
                "raft: voter {} is not the leader (leader: {leader:?})",
                self.id
            ))),
        }
    }

    pub(super) async fn propose(&self, command: Command, deadline: Instant) -> Result<()> {
        let (leader, running) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.current_leader, metrics.running_state.clone())
        };
        running.map_err(fatal)?;
        let leader = match leader {
            None => return Err(self.no_leader()),
            Some(leader) if leader != self.id => leader,
            Some(_) => match self.write(command.clone(), deadline).await? {
                Written::Committed(_) => return Ok(()),
                Written::NotLeader(Some(leader)) if leader != self.id => leader,
                Written::NotLeader(_) => return Err(self.no_leader()),
            },
        };
        self.forward(leader, command, deadline).await
    }

    /// Has `leader` commit `command`, then waits until this voter applied it.
    async fn forward(&self, leader: VoterId, command: Command, deadline: Instant) -> Result<()> {
        let addr = self.voters.get(&leader).ok_or_else(|| {
            Error::internal("raft: the leader is not a known voter").with_context("leader", leader)
        })?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let index = match self
            .transport
            .call(addr, &Request::Propose(command), remaining)
            .await
        {
            Ok(Response::Propose(result)) => result?,
            Ok(other) => {
                return Err(Error::internal(format!(
                    "raft: unexpected answer to a proposal: {other:?}"
                )))
            }
            Err(e) => return Err(e.into_api(leader)),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "a forwarded proposal applied")
            .await
        {
            Ok(_) => Ok(()),
            Err(WaitError::Timeout(..)) => Err(Error::timeout(
                "raft: the proposal was committed but not yet applied by this voter",
            )
            .with_context("voter", self.id)
            .with_context("index", index)),
            Err(WaitError::ShuttingDown) => Err(fatal(Fatal::Stopped)),
        }
    }
}

/// openraft's fatal error as ours: `Closed` once shut down.
pub(super) fn fatal(e: Fatal<VoterId>) -> Error {
    match e {
        Fatal::Stopped => Error::closed("raft: this voter is shut down"),
        other => Error::internal(format!("raft: {other}")),
    }
}
