//! The serving side of the TCP transport: one task per peer connection,
//! answering one request at a time.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::propose::Inner;
use super::wire::{encode, read_frame, FrameError, Request, Response};
use super::TIMING;

/// Accepts peers on `listener` and serves each connection until it closes;
/// aborting this future's task closes the listener and every connection.
pub(crate) async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, peer.to_string(), inner.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "raft: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(mut stream: TcpStream, peer: String, inner: Arc<Inner>) {
    loop {
        let request = match tokio::time::timeout(TIMING.idle, read_frame(&mut stream)).await {
            Ok(Ok(request)) => request,
            Ok(Err(FrameError::Io(e))) if e.kind() == io::ErrorKind::UnexpectedEof => return,
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "raft: bad request, closing the connection");
                return;
            }
            Err(_) => return, // idle: the peer reconnects when it needs to
        };
        let response = match request {
            Request::AppendEntries(rpc) => {
                Response::AppendEntries(inner.raft.append_entries(rpc).await)
            }
            Request::Vote(rpc) => Response::Vote(inner.raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => {
                Response::InstallSnapshot(inner.raft.install_snapshot(rpc).await)
            }
            Request::Propose(command) => Response::Propose(inner.propose_as_leader(command).await),
        };
        let frame = match encode(&response) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "raft: cannot send the response");
                return;
            }
        };
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}
