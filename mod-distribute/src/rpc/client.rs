//! The client side: one TCP connection carrying many concurrent calls.
//!
//! A call appends its request frame to the connection's [`Outbox`] (allocating
//! its id under the same lock, so ids leave in increasing order), which writes
//! it at once or coalesced with others, and waits on a oneshot stored in the
//! pending map. One task per connection runs the reader (routes each response
//! to its oneshot), the writer for when the socket is full, and the deadline
//! sweep; no task is spawned per call and no timer registered per call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::RpcConfig;
use mod_api::layer::Side;
use mod_api::{Call, Error, ErrorKind, Result};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::client_task::{read_hello_answer, run};
use super::counted::counted;
use super::frame::{self, Request};
use super::outbox::{Outbox, State};
use super::pending::{Pending, Waiter};
use super::reader::FrameReader;
use super::stream::{split_tcp, split_tls};
use super::tls::{self, ClientTls};
use super::{mark_not_sent, CONNECT_TIMEOUT};

/// What a client connection shares with its task.
pub(super) struct Shared {
    pub(super) addr: String,
    max_frame: usize,
    pub(super) outbox: Outbox,
    pub(super) pending: Pending,
    /// No new calls: the connection is lost, closed, or the server sent GOAWAY.
    pub(super) closed: AtomicBool,
}

impl Shared {
    /// Marks the connection dead and fails every pending call.
    pub(super) fn fail(&self, kind: ErrorKind, why: &str) {
        self.closed.store(true, Ordering::Release);
        self.outbox.close();
        // The writer is stopped: ids above the last batch it took never left.
        let taken = self.outbox.taken();
        for (id, waiter) in self.pending.drain() {
            let err = Error::new(kind, format!("rpc connection to {} lost: {why}", self.addr))
                .with_retryable(true);
            let err = if id > taken { mark_not_sent(err) } else { err };
            let _ = waiter.tx.send(Err(err));
        }
    }
}

/// A connection to one RPC server; cheap to clone, every clone shares it.
///
/// Dropping the last clone closes the connection.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    task: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.fail(ErrorKind::Closed, "client dropped");
        self.task.abort();
    }
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("addr", &self.inner.shared.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn unavailable(addr: &str, what: impl std::fmt::Display) -> Error {
    Error::unavailable(format!("rpc {addr}: {what}"))
}

impl RpcClient {
    /// Connects to the server at `addr` (TCP_NODELAY; TLS when `config.tls`
    /// names a CA) and opens the session with a HELLO carrying
    /// `config.secret`; fails with `Unauthenticated` when the server refuses it
    /// or a TLS handshake fails, `Unavailable` when it cannot be reached, and
    /// `Config` when the TLS files cannot be read.
    ///
    /// Reads the TLS files on every call: [`RpcConnections`](super::RpcConnections)
    /// reads them once.
    pub async fn connect(addr: &str, config: &RpcConfig) -> Result<RpcClient> {
        let tls = tls::connector(config)?;
        Self::connect_with(addr, config, tls.as_ref()).await
    }

    /// [`connect`](Self::connect) with TLS already configured.
    pub(crate) async fn connect_with(
        addr: &str,
        config: &RpcConfig,
        tls: Option<&ClientTls>,
    ) -> Result<RpcClient> {
        let span = tracing::debug_span!("rpc.connect", addr, tls = tls.is_some());
        async move {
            let mut hello = Vec::new();
            let secret = config.secret.as_deref().unwrap_or("");
            frame::encode_hello(&mut hello, secret.as_bytes())
                .map_err(|e| Error::config(format!("rpc secret too long: {e}")))?;
            let cannot = |e: std::io::Error| unavailable(addr, "cannot connect").with_source(e);
            let handshake = async {
                let stream = TcpStream::connect(addr).await.map_err(cannot)?;
                stream.set_nodelay(true).map_err(cannot)?;
                let opened = async {
                    let (rd, wr) = match tls {
                        None => split_tcp(stream),
                        Some(tls) => split_tls(tls.connect(addr, stream).await?),
                    };
                    let mut reader = FrameReader::new(rd, config.max_frame_bytes as usize);
                    wr.write_all(&hello).await.map_err(|e| match tls {
                        Some(_) => tls::handshake_error(addr, e),
                        None => cannot(e),
                    })?;
                    let idle = read_hello_answer(&mut reader).await?;
                    Ok::<_, Error>((reader, wr, idle))
                }
                .await;
                if let Err(e) = &opened {
                    tracing::warn!(addr, error = %e, "rpc handshake failed");
                }
                opened
            };
            let (rd, wr, idle) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Ok(Ok(parts)) => parts,
                Ok(Err(e)) => return Err(mark_not_sent(e)),
                Err(_) => return Err(mark_not_sent(unavailable(addr, "connect timed out"))),
            };
            let shared = Arc::new(Shared {
                addr: addr.to_string(),
                max_frame: config.max_frame_bytes as usize,
                outbox: Outbox::new(wr),
                pending: Pending::new(),
                closed: AtomicBool::new(false),
            });
            let task = tokio::spawn(counted(Side::Client, run(shared.clone(), rd, idle)));
            tracing::debug!(addr, "rpc connected");
            Ok(RpcClient {
                inner: Arc::new(Inner {
                    shared,
                    task: task.abort_handle(),
                }),
            })
        }
        .instrument(span)
        .await
    }

    /// The address this client is connected to.
    pub fn addr(&self) -> &str {
        &self.inner.shared.addr
    }

    /// Whether this connection takes no new calls (lost, closed, or the server
    /// is going away); a pool replaces it.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.load(Ordering::Acquire)
    }

    /// Sends `call` and waits for its reply, at most `timeout` (which also
    /// travels to the server, which drops the call past it).
    ///
    /// Errors: `Timeout`; `Unavailable` when the connection is or gets lost
    /// (check [`not_sent`](super::not_sent) before retrying a non-idempotent
    /// call); `PayloadTooLarge` when the request exceeds `max_frame_bytes` (the
    /// connection stays usable); any error the server reports. Dropping the
    /// future before the reply sends a CANCEL.
    pub async fn call(&self, call: Call, timeout: Duration) -> Result<Vec<u8>> {
        let span = tracing::debug_span!("rpc.call", service = call.service, method = call.method);
        self.call_within(&call, Instant::now() + timeout, timeout)
            .instrument(span)
            .await
    }

    /// Like [`call`](Self::call), borrowing the call (a caller that may retry
    /// keeps it) and ending at `deadline`; `budget` is the time left until it,
    /// which travels to the server. No span of its own: the caller's (the
    /// client-side call layer's `modkit.call`) covers it.
    pub async fn call_within(
        &self,
        call: &Call,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Vec<u8>> {
        let shared = &self.inner.shared;
        if self.is_closed() {
            return Err(mark_not_sent(unavailable(
                &shared.addr,
                "connection closed",
            )));
        }
        let len = frame::request_len(call.service, call.method, &call.payload);
        if len > shared.max_frame {
            tracing::warn!(len, max = shared.max_frame, "rpc request too large");
            return Err(mark_not_sent(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "request of {len} bytes to {}::{} exceeds max_frame_bytes {}",
                    call.service, call.method, shared.max_frame
                ),
            )));
        }
        // 0 means "no deadline" on the wire; a call always has one.
        let deadline_ms = budget.as_millis().clamp(1, u32::MAX as u128) as u32;
        let (tx, rx) = oneshot::channel();
        // A lone call has nothing to coalesce with: write it from here, sparing
        // a wake-up of the connection's task. Otherwise let the task batch them.
        let alone = shared.pending.is_empty();
        let waiter = Waiter {
            tx,
            due: shared.pending.due(deadline),
            service: call.service,
            method: call.method,
            budget,
        };
        let encode = |s: &mut State| {
            let id = s.mark + 1;
            let req = Request {
                call_id: id,
                deadline_ms,
                service: call.service,
                method: call.method,
                payload: &call.payload,
            };
            frame::encode_request(&mut s.buf, &req, shared.max_frame)?;
            s.mark = id;
            // Inserted before the writer can take the frame, so the reply finds it.
            let rearm = shared.pending.insert(id, waiter);
            Ok::<_, frame::FrameError>((id, rearm))
        };
        let pushed = if alone {
            shared.outbox.push_now(encode)
        } else {
            shared.outbox.push(encode)
        };
        let id = match pushed {
            Ok(Ok((id, rearm))) => {
                if rearm {
                    // Earlier than the connection's timer: have its task re-arm.
                    shared.outbox.nudge();
                }
                id
            }
            Ok(Err(e)) => return Err(mark_not_sent(e.into())),
            Err(_) => {
                return Err(mark_not_sent(unavailable(
                    &shared.addr,
                    "connection closed",
                )))
            }
        };
        let mut guard = CancelOnDrop {
            shared,
            id,
            armed: true,
        };
        // The reply, the connection's failure, or the timeout from its sweep.
        let outcome = rx.await;
        guard.armed = false;
        match outcome {
            Ok(reply) => reply,
            Err(_) => Err(unavailable(&shared.addr, "connection closed")),
        }
    }
}

/// Forgets a call and sends CANCEL when its future is dropped before the reply.
struct CancelOnDrop<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.shared.pending.remove(self.id).is_some() {
            let id = self.id;
            let _ = self
                .shared
                .outbox
                .push(|s| frame::encode_cancel(&mut s.buf, id));
        }
    }
}
