//! The client side: one TCP connection carrying many concurrent calls.
//!
//! A call appends its request frame to the connection's [`Outbox`] (allocating
//! its id under the same lock, so ids leave in increasing order), which writes
//! it at once or coalesced with others, and waits on a oneshot stored in the
//! pending map. One task per connection runs the reader (routes each response
//! to its oneshot) and the writer for when the socket is full; no task is
//! spawned per call.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_api::config::RpcConfig;
use mod_api::{Call, Error, ErrorKind, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::frame::{self, Frame, FrameError, Head, Request, Status};
use super::outbox::{Outbox, State};
use super::pending::{Pending, Waiter, NONE};
use super::reader::{FrameReader, ReadError, Ready, Rest};
use super::{mark_not_sent, CONNECT_TIMEOUT};

struct Shared {
    addr: String,
    max_frame: usize,
    outbox: Outbox,
    pending: Pending,
    /// No new calls: the connection is lost, closed, or the server sent GOAWAY.
    closed: AtomicBool,
}

impl Shared {
    /// Marks the connection dead and fails every pending call.
    fn fail(&self, kind: ErrorKind, why: &str) {
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
    /// Connects to the server at `addr` (TCP_NODELAY) and opens the session with
    /// a HELLO carrying `config.secret`; fails with `Unauthenticated` when the
    /// server refuses it and `Unavailable` when it cannot be reached.
    pub async fn connect(addr: &str, config: &RpcConfig) -> Result<RpcClient> {
        let span = tracing::debug_span!("rpc.connect", addr);
        async move {
            let mut hello = Vec::new();
            let secret = config.secret.as_deref().unwrap_or("");
            frame::encode_hello(&mut hello, secret.as_bytes())
                .map_err(|e| Error::config(format!("rpc secret too long: {e}")))?;
            let handshake = async {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (rd, mut wr) = stream.into_split();
                let mut reader = FrameReader::new(rd, config.max_frame_bytes as usize);
                wr.write_all(&hello).await?;
                let answer = read_hello_answer(&mut reader).await;
                Ok::<_, std::io::Error>((reader, wr, answer))
            };
            let (rd, wr, answer) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Ok(Ok(parts)) => parts,
                Ok(Err(e)) => {
                    return Err(mark_not_sent(
                        unavailable(addr, "cannot connect").with_source(e),
                    ))
                }
                Err(_) => return Err(mark_not_sent(unavailable(addr, "connect timed out"))),
            };
            if let Err(e) = answer {
                tracing::warn!(addr, error = %e, "rpc handshake failed");
                return Err(mark_not_sent(e));
            }
            let shared = Arc::new(Shared {
                addr: addr.to_string(),
                max_frame: config.max_frame_bytes as usize,
                outbox: Outbox::new(wr),
                pending: Pending::new(),
                closed: AtomicBool::new(false),
            });
            let task = tokio::spawn(run(shared.clone(), rd));
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
    /// service client's `modkit.call`) covers it.
    pub async fn call_within(
        &self,
        call: &Call,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Vec<u8>> {
        self.call_inner(call, deadline, budget).await
    }

    async fn call_inner(
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

fn decode_error(data: &[u8]) -> Error {
    mod_api::codec::decode::<Error>(data)
        .unwrap_or_else(|e| Error::codec("undecodable error from rpc server").with_source(e))
}

/// Reads the server's answer to HELLO: `Ok` when accepted.
async fn read_hello_answer(reader: &mut FrameReader) -> Result<()> {
    let fail = |what: String| Error::unavailable(format!("rpc handshake: {what}"));
    let (head, rest) = match reader.read_one().await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(fail("server closed the connection".into())),
        Err(e) => return Err(fail(e.to_string())),
    };
    match frame::decode_rest(head, &rest) {
        Ok(Frame::Response {
            call_id: 0,
            status: Status::Ok,
            ..
        }) => Ok(()),
        Ok(Frame::Response {
            call_id: 0, data, ..
        }) => Err(decode_error(data)),
        Ok(other) => Err(fail(format!("unexpected frame {other:?}"))),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Routes one response to its caller.
fn on_frame(shared: &Shared, head: Head, rest: Rest<'_>) -> Result<(), ReadError> {
    match frame::decode_rest(head, rest.bytes())? {
        Frame::Response {
            call_id,
            status,
            data,
        } => {
            // Absent: the caller gave up (timeout or cancel); drop the reply.
            let Some(Waiter { tx, .. }) = shared.pending.remove(call_id) else {
                return Ok(());
            };
            let reply = match status {
                // The status byte comes first, then the reply.
                Status::Ok => Ok(rest.into_vec(1)),
                Status::Err => Err(decode_error(data)),
                Status::Refused => Err(mark_not_sent(decode_error(data))),
            };
            let _ = tx.send(reply);
            Ok(())
        }
        Frame::GoAway => {
            tracing::debug!(addr = %shared.addr, "rpc server going away");
            shared.closed.store(true, Ordering::Release);
            Ok(())
        }
        _ => Err(ReadError::Frame(FrameError::Malformed(
            "unexpected frame from server",
        ))),
    }
}

/// The connection's loop: route every response that arrived, write the queued
/// requests in one batch, wait for more of either.
async fn serve(shared: &Shared, reader: &mut FrameReader) -> Result<(), ReadError> {
    // Armed at the earliest deadline of the waiting calls (see pending.rs).
    let mut armed = NONE;
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));
    loop {
        loop {
            match reader.next()? {
                Ready::None => break,
                Ready::InPlace { head, rest, used } => {
                    on_frame(shared, head, Rest::Borrowed(rest))?;
                    reader.consume(used);
                }
                Ready::Owned { head, rest } => on_frame(shared, head, Rest::Owned(rest))?,
            }
        }
        shared.outbox.flush().map_err(ReadError::Io)?;
        if shared.outbox.finished() {
            return Ok(());
        }
        let due = shared.pending.next_due();
        if due != armed {
            armed = due;
            if due != NONE {
                timer.as_mut().reset(shared.pending.instant(due).into());
            }
        }
        tokio::select! {
            biased;
            more = reader.fill() => if !more? {
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            },
            r = shared.outbox.wait() => {
                r.map_err(ReadError::Io)?;
                tokio::task::yield_now().await;
            }
            () = &mut timer, if armed != NONE => {
                for id in shared.pending.sweep(&shared.addr) {
                    tracing::debug!(addr = %shared.addr, call = id, "rpc call timed out");
                    let _ = shared.outbox.push(|s| frame::encode_cancel(&mut s.buf, id));
                }
                // Re-armed above, at the next deadline the sweep found.
                armed = 0;
            }
        }
    }
}

/// The connection task: runs the loop, then fails what is left.
async fn run(shared: Arc<Shared>, mut reader: FrameReader) {
    // Callers wait on this task alone (no timer of their own): should it end
    // any other way (a panic), they must still hear of it.
    struct FailOnDrop<'a>(&'a Shared);
    impl Drop for FailOnDrop<'_> {
        fn drop(&mut self) {
            self.0
                .fail(ErrorKind::Unavailable, "rpc connection task ended");
        }
    }
    let _guard = FailOnDrop(&shared);
    let why = match serve(&shared, &mut reader).await {
        Ok(()) => {
            shared.fail(ErrorKind::Closed, "client closed");
            return;
        }
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "server closed the connection".to_string()
        }
        Err(ReadError::Io(e)) => e.to_string(),
        Err(e) => {
            tracing::error!(addr = %shared.addr, error = %e, "rpc protocol error; closing");
            e.to_string()
        }
    };
    // After GOAWAY the close is the expected end of a graceful shutdown.
    if shared.closed.load(Ordering::Acquire) {
        tracing::debug!(addr = %shared.addr, why, "rpc connection closed after goaway");
    } else {
        tracing::warn!(addr = %shared.addr, why, "rpc connection lost");
    }
    shared.fail(ErrorKind::Unavailable, &why);
}
