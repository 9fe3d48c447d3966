//! Operator commands to a running voter, one JSON line each way on the
//! `[ha] admin` address: the planned switchover, and a voter's status.
//!
//! ```text
//! → {"switchover":{"to":null}}
//! ← {"ok":{"group":"main","epoch":4,"primary":"10.0.0.2:6379",...}}
//! ← {"error":{"kind":"unavailable","message":"this voter does not lead ..."}}
//! → "status"
//! ← {"status":{"voter":2,"leading":true,"topology":{...}}}
//! ```
//!
//! `modkit-ha switchover --admin a,b,c [--to host:port]` asks each voter in
//! turn until the leader answers.

use std::sync::Arc;
use std::time::Duration;

use mod_api::{Error, ErrorKind, Result};
use mod_distribute::topology::Topology;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::consensus::{Consensus, VoterId};
use crate::controller::Commands;

/// The longest request line taken.
const MAX_REQUEST: u64 = 4096;
/// How long a command may take (a switchover's catch-up is at most 2 s).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A command to a voter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// [`Controller::switchover`](crate::Controller::switchover).
    Switchover {
        /// The replica to hand over to (`None`: the best in sync).
        to: Option<String>,
    },
    /// This voter's view: whether it leads, and the topology it holds.
    Status,
}

/// A voter's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Done: the committed topology.
    Ok(Topology),
    /// The answer to [`Request::Status`].
    Status {
        /// The voter's id.
        voter: VoterId,
        /// Whether it leads the controller group now.
        leading: bool,
        /// The topology it holds.
        topology: Topology,
    },
    /// Refused or failed.
    Error {
        /// The error's kind.
        kind: ErrorKind,
        /// What happened.
        message: String,
    },
}

/// Serves `listener` for the voter behind `commands` until aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    commands: Commands,
    consensus: Arc<dyn Consensus>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (commands, consensus) = (commands.clone(), consensus.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &commands, &*consensus).await {
                tracing::warn!(%peer, error = %e, "admin command failed");
            }
        });
    }
}

async fn answer(stream: TcpStream, commands: &Commands, consensus: &dyn Consensus) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => error(&Error::invalid_input(format!("not an admin request: {e}"))),
        Ok(Request::Status) => Response::Status {
            voter: consensus.id(),
            leading: consensus.is_leader(),
            topology: consensus.state().borrow().topology.clone(),
        },
        Ok(Request::Switchover { to }) => {
            tracing::info!(?to, "admin: switchover requested");
            match commands.switchover(to).await {
                Ok(topology) => Response::Ok(topology),
                Err(e) => error(&e),
            }
        }
    };
    let mut out = serde_json::to_vec(&response)
        .map_err(|e| Error::internal("cannot encode an admin response").with_source(e))?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

fn error(e: &Error) -> Response {
    Response::Error {
        kind: e.kind(),
        message: e.to_string(),
    }
}

/// The [`Request::Status`] answer of the voter at `admin`:
/// `(voter, leading, topology)`.
pub async fn status(admin: &str) -> Result<(VoterId, bool, Topology)> {
    let answer = tokio::time::timeout(COMMAND_TIMEOUT, exchange(admin, &Request::Status)).await;
    match answer.map_err(|_| Error::timeout(format!("{admin} did not answer")))?? {
        Response::Status {
            voter,
            leading,
            topology,
        } => Ok((voter, leading, topology)),
        Response::Error { kind, message } => Err(Error::new(kind, message)),
        Response::Ok(_) => Err(Error::invalid_input(format!("{admin}: not a status"))),
    }
}

/// Sends `request` to each of `admins` in turn until one that leads
/// answers; returns the committed topology.
pub async fn send(admins: &[String], request: &Request) -> Result<Topology> {
    let mut last = Error::unavailable("no admin address given");
    for addr in admins {
        match tokio::time::timeout(COMMAND_TIMEOUT, exchange(addr, request)).await {
            Err(_) => last = Error::timeout(format!("{addr} did not answer")),
            Ok(Err(e)) => last = e,
            Ok(Ok(Response::Ok(topology) | Response::Status { topology, .. })) => {
                return Ok(topology)
            }
            Ok(Ok(Response::Error { kind, message })) => {
                let e = Error::new(kind, format!("{addr}: {message}"));
                if kind != ErrorKind::Unavailable {
                    return Err(e);
                }
                last = e;
            }
        }
    }
    Err(last)
}

async fn exchange(addr: &str, request: &Request) -> Result<Response> {
    let stream = TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)
        .map_err(|e| Error::internal("cannot encode an admin request").with_source(e))?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reply = String::new();
    BufReader::new(read.take(1 << 20))
        .read_line(&mut reply)
        .await?;
    serde_json::from_str(&reply)
        .map_err(|e| Error::invalid_input(format!("{addr}: not an admin response")).with_source(e))
}
