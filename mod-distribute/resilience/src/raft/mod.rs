//! openraft behind [`Consensus`]: a group of three or five voters that agree
//! on [`Command`]s over plain TCP.
//!
//! Each voter keeps the raft log and the [`GroupState`] in memory (modules
//! `store` and `state_machine`); voters talk through frames of a `u32`
//! big-endian length and a JSON body, at most 16 MiB (`wire`, `network`,
//! `server`). Any voter can [`propose`](Consensus::propose): a follower
//! forwards the proposal to the leader and returns once it has applied the
//! committed entry itself.
//!
//! The log is not persisted: a restarted voter comes back empty, which
//! openraft 0.9 only accepts with its `loosen-follower-log-revert` feature.

mod network;
mod propose;
mod server;
mod state_machine;
mod store;
mod wire;

#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use mod_api::{Error, ErrorKind, Result};
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::consensus::{Command, Consensus, GroupState, VoterId};
use network::{Network, Transport};
use propose::{fatal, Inner};

openraft::declare_raft_types!(
    /// openraft's types for the controller group: [`Command`]s in the log,
    /// voters named by [`VoterId`] at their raft listener's address.
    pub(crate) TypeConfig:
        D = Command,
        R = (),
        NodeId = VoterId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The timing of a raft group and its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often the leader heartbeats its followers.
    pub heartbeat: Duration,
    /// The shortest a follower waits without a heartbeat before it stands
    /// for election.
    pub election_min: Duration,
    /// The longest a follower waits (each voter picks a random timeout in
    /// `election_min..election_max`, so that one of them usually wins).
    pub election_max: Duration,
    /// The longest a connection to a peer may take.
    pub connect: Duration,
    /// The longest one raft RPC to a peer may take (openraft may ask less).
    pub rpc: Duration,
    /// The longest [`Consensus::propose`] waits for a commit.
    pub propose: Duration,
    /// How long an idle peer connection is kept open by the serving side.
    pub idle: Duration,
}

/// The timing of every [`RaftVoter`]: tuned for fast failover, a dead leader
/// is replaced in well under a second (heartbeat 50 ms, election timeout
/// 150–300 ms).
pub const TIMING: Timing = Timing {
    heartbeat: Duration::from_millis(50),
    election_min: Duration::from_millis(150),
    election_max: Duration::from_millis(300),
    connect: Duration::from_millis(500),
    rpc: Duration::from_millis(500),
    propose: Duration::from_secs(2),
    idle: Duration::from_secs(30),
};

/// One voter of a raft group, implementing [`Consensus`].
pub struct RaftVoter {
    inner: Arc<Inner>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl RaftVoter {
    /// Starts voter `id`, listening for peer RPCs on `listen` ("host:port"),
    /// with the full voter set `voters` (id -> "host:port" of each voter's
    /// raft listener, including itself).
    ///
    /// The voter with the smallest id initializes the cluster (idempotently:
    /// if already initialized, the error is ignored); others wait to be
    /// contacted.
    pub async fn start(
        id: VoterId,
        listen: &str,
        voters: BTreeMap<VoterId, String>,
    ) -> Result<RaftVoter> {
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            Error::new(ErrorKind::Io, "raft: cannot listen for peers")
                .with_context("listen", listen)
                .with_source(e)
        })?;
        RaftVoter::start_on(id, listener, voters).await
    }

    /// [`RaftVoter::start`] on a bound listener.
    pub(crate) async fn start_on(
        id: VoterId,
        listener: TcpListener,
        voters: BTreeMap<VoterId, String>,
    ) -> Result<RaftVoter> {
        if !voters.contains_key(&id) {
            return Err(
                Error::invalid_input("raft: this voter is not in the voter set")
                    .with_context("voter", id),
            );
        }
        let config = Config {
            cluster_name: "modkit-ha".into(),
            heartbeat_interval: TIMING.heartbeat.as_millis() as u64,
            election_timeout_min: TIMING.election_min.as_millis() as u64,
            election_timeout_max: TIMING.election_max.as_millis() as u64,
            // Snapshot chunks (JSON arrays of bytes, ~4 bytes a byte) stay
            // far below the frame limit and within one RPC timeout.
            snapshot_max_chunk_size: 256 * 1024,
            install_snapshot_timeout: TIMING.rpc.as_millis() as u64,
            ..Config::default()
        }
        .validate()
        .map_err(|e| Error::internal(format!("raft: invalid config: {e}")))?;

        let state = Arc::new(watch::channel(GroupState::default()).0);
        let transport = Transport::default();
        let network = Network {
            me: id,
            transport: transport.clone(),
        };
        let raft = Raft::new(
            id,
            Arc::new(config),
            network,
            store::LogStore::default(),
            state_machine::StateMachine::new(state.clone()),
        )
        .await
        .map_err(fatal)?;
        let inner = Arc::new(Inner {
            id,
            voters,
            raft,
            state,
            transport,
        });
        let server = tokio::spawn(server::serve(listener, inner.clone()));
        let voter = RaftVoter {
            inner,
            server: Mutex::new(Some(server)),
        };
        if voter.inner.voters.keys().next() == Some(&id) {
            voter.initialize().await?;
        }
        Ok(voter)
    }

    async fn initialize(&self) -> Result<()> {
        let members: BTreeMap<VoterId, BasicNode> = self
            .inner
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                tracing::debug!(error = %e, "raft: the group is already initialized");
                Ok(())
            }
            Err(RaftError::APIError(e)) => Err(Error::invalid_input(format!("raft: {e}"))),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    /// Stops the raft node and its listener (also done on drop).
    pub async fn shutdown(&self) {
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, voter = self.inner.id, "raft: shutdown failed");
        }
        self.inner.transport.close();
    }
}

impl Drop for RaftVoter {
    fn drop(&mut self) {
        let server = self
            .server
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            server.abort();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let raft = self.inner.raft.clone();
            runtime.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

#[async_trait]
impl Consensus for RaftVoter {
    fn id(&self) -> VoterId {
        self.inner.id
    }

    fn voters(&self) -> usize {
        self.inner.voters.len()
    }

    /// The leader by openraft's metrics, and still acknowledged by a
    /// majority within the election timeout: a leader cut off from the
    /// others stops acting about when they may elect another.
    fn is_leader(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics.current_leader == Some(self.inner.id)
            && metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| u128::from(ms) < TIMING.election_max.as_millis())
    }

    /// A leader acknowledged by a majority within the election timeout, or a
    /// follower that knows a leader (a follower cut off from the others
    /// starts elections and knows none until it rejoins a majority).
    fn in_quorum(&self) -> bool {
        let leads = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            match metrics.current_leader {
                None => return false,
                Some(leader) => leader == self.inner.id,
            }
        };
        !leads || self.is_leader()
    }

    fn state(&self) -> watch::Receiver<GroupState> {
        self.inner.state.subscribe()
    }

    async fn propose(&self, command: Command) -> Result<()> {
        let deadline = Instant::now() + TIMING.propose;
        match tokio::time::timeout_at(deadline, self.inner.propose(command, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout("raft: the proposal did not commit in time")
                .with_context("voter", self.inner.id)),
        }
    }
}
