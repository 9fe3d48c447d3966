//! The calling side of the TCP transport between voters: a pool of
//! connections per peer, one RPC at a time on each, and openraft's
//! [`RaftNetwork`] on top (the serving side is in [`super::server`]).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, RPCTypes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::{encode, read_frame, FrameError, Request, Response};
use super::{TypeConfig, TIMING};
use crate::consensus::VoterId;

/// How many idle connections are kept per peer.
const IDLE_PER_PEER: usize = 8;

/// Why an RPC got no answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No connection could be made (refused, or the connect timed out).
    Connect(io::Error),
    /// The connection failed, or a frame was refused.
    Frame(FrameError),
    /// No answer within the RPC's timeout.
    Timeout(Duration),
}

impl CallError {
    /// As a retryable `mod_api` error, for forwarded proposals.
    pub(crate) fn into_api(self, leader: VoterId) -> mod_api::Error {
        let err = match self {
            CallError::Connect(e) => {
                mod_api::Error::unavailable("cannot reach the raft leader").with_source(e)
            }
            CallError::Frame(e) => {
                mod_api::Error::unavailable(format!("forwarding to the raft leader failed: {e}"))
            }
            CallError::Timeout(d) => {
                mod_api::Error::timeout(format!("the raft leader did not answer within {d:?}"))
            }
        };
        err.with_context("leader", leader)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Connections to peers, pooled by address; clones share the pools.
#[derive(Clone, Default)]
pub(crate) struct Transport {
    pools: Arc<Mutex<HashMap<String, Arc<Pool>>>>,
}

#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<TcpStream>>,
}

impl Transport {
    /// Sends `request` to `addr` and waits for its response, for at most
    /// `timeout` (connecting included).
    pub(crate) async fn call(
        &self,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let frame = encode(request).map_err(CallError::Frame)?;
        let pool = lock(&self.pools)
            .entry(addr.to_owned())
            .or_default()
            .clone();
        tokio::time::timeout(timeout, pool.call(addr, &frame))
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)))
    }

    /// Closes every idle connection (in-flight calls finish on theirs).
    pub(crate) fn close(&self) {
        for pool in lock(&self.pools).drain() {
            lock(&pool.1.idle).clear();
        }
    }
}

impl Pool {
    async fn call(&self, addr: &str, frame: &[u8]) -> Result<Response, CallError> {
        let pooled = lock(&self.idle).pop();
        if let Some(mut stream) = pooled {
            match exchange(&mut stream, frame).await {
                Ok(response) => {
                    self.put_back(stream);
                    return Ok(response);
                }
                // The peer closed it (restarted, idle timeout): the others
                // are likely stale too; retry once on a fresh connection.
                // (Should the request have been served before the failure,
                // it is served twice: raft RPCs are idempotent, and a
                // forwarded `Command` is applied twice, as after any retry.)
                Err(FrameError::Io(_)) => lock(&self.idle).clear(),
                Err(e) => return Err(CallError::Frame(e)),
            }
        }
        let mut stream = tokio::time::timeout(TIMING.connect, TcpStream::connect(addr))
            .await
            .map_err(|_| CallError::Connect(io::ErrorKind::TimedOut.into()))?
            .map_err(CallError::Connect)?;
        stream.set_nodelay(true).map_err(CallError::Connect)?;
        let response = exchange(&mut stream, frame)
            .await
            .map_err(CallError::Frame)?;
        self.put_back(stream);
        Ok(response)
    }

    fn put_back(&self, stream: TcpStream) {
        let mut idle = lock(&self.idle);
        if idle.len() < IDLE_PER_PEER {
            idle.push(stream);
        }
    }
}

async fn exchange(stream: &mut TcpStream, frame: &[u8]) -> Result<Response, FrameError> {
    stream.write_all(frame).await.map_err(FrameError::Io)?;
    read_frame(stream).await
}

/// openraft's factory of [`PeerClient`]s; cheap, as openraft asks for a
/// client for every heartbeat and vote.
pub(crate) struct Network {
    pub(crate) me: VoterId,
    pub(crate) transport: Transport,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: VoterId, node: &BasicNode) -> PeerClient {
        PeerClient {
            me: self.me,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// The raft RPCs to one peer.
pub(crate) struct PeerClient {
    me: VoterId,
    target: VoterId,
    addr: String,
    transport: Transport,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<VoterId, BasicNode, RaftError<VoterId, E>>>;

impl PeerClient {
    async fn call(&self, request: Request, option: &RPCOption) -> Result<Response, CallError> {
        let timeout = option.hard_ttl().min(TIMING.rpc);
        self.transport.call(&self.addr, &request, timeout).await
    }

    /// As openraft's error: unreachable (openraft backs off), timeout, or a
    /// network error (openraft retries).
    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        e: CallError,
    ) -> RPCError<VoterId, BasicNode, E> {
        match e {
            CallError::Connect(e) => Unreachable::new(&e).into(),
            CallError::Timeout(timeout) => Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout,
            }
            .into(),
            CallError::Frame(e) => NetworkError::new(&e).into(),
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<VoterId, BasicNode, E> {
        RemoteError::new(self.target, e).into()
    }
}

fn unexpected<E: std::error::Error>(response: &Response) -> RPCError<VoterId, BasicNode, E> {
    let e = AnyError::error(format!("unexpected raft response: {response:?}"));
    NetworkError::new(&e).into()
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<VoterId>> {
        let entries = rpc.entries.len() as u64;
        match self.call(Request::AppendEntries(rpc), &option).await {
            Ok(Response::AppendEntries(result)) => result.map_err(|e| self.remote(e)),
            Ok(other) => Err(unexpected(&other)),
            // Over the frame limit: let openraft send fewer entries at a time.
            Err(CallError::Frame(FrameError::TooLarge(_))) if entries > 1 => {
                Err(PayloadTooLarge::new_entries_hint(entries / 2).into())
            }
            Err(e) => Err(self.rpc_error(RPCTypes::AppendEntries, e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<VoterId>, InstallSnapshotError> {
        match self.call(Request::InstallSnapshot(rpc), &option).await {
            Ok(Response::InstallSnapshot(result)) => result.map_err(|e| self.remote(e)),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(self.rpc_error(RPCTypes::InstallSnapshot, e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<VoterId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<VoterId>> {
        match self.call(Request::Vote(rpc), &option).await {
            Ok(Response::Vote(result)) => result.map_err(|e| self.remote(e)),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(self.rpc_error(RPCTypes::Vote, e)),
        }
    }
}
