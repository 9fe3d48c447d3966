//! One server connection: handshake, then one loop that reads requests, runs
//! each call, and writes the replies in coalesced batches.
//!
//! A call is first polled right in the loop: most methods finish without
//! waiting, and then no task is spawned and no other task woken (measured:
//! 20% more calls per second at 64 in flight). A call that waits continues in a
//! task of its own, so a slow method never holds up the others, and its
//! deadline, a CANCEL or a panic concern it alone. The price: a method that
//! computes for long *before its first wait* holds up this connection's reads
//! meanwhile, as it would hold up a runtime worker anyway — such work belongs
//! in `spawn_blocking`.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use mod_api::{Dispatch, Error, ErrorKind, Result};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::frame::{self, FrameError, Head, Kind, RequestLayout, Status};
use super::handshake::{handshake, Refusal};
use super::limits::{Expired, Seen, Watchdog};
use super::outbox::{Outbox, State};
use super::reader::{FrameReader, ReadError, Ready, Rest};
use super::server::ServerShared;
use super::stream::{ReadSock, WriteSock};
use super::{IdBuildHasher, HANDSHAKE_TIMEOUT};

/// What a connection shares with its calls.
pub(crate) struct ConnState {
    peer: SocketAddr,
    pub(crate) outbox: Outbox,
    /// Calls that went on in a task of their own. The ids come from the
    /// client, and a fast hash is fine: a client that picks colliding ids
    /// slows down its own connection only.
    calls: Mutex<HashMap<u64, AbortHandle, IdBuildHasher>>,
    /// Calls of this connection running now (inline or in a task of their own).
    running: AtomicUsize,
    /// The connection's task: a reply produced in it needs no wake-up.
    task: OnceLock<tokio::task::Id>,
}

impl ConnState {
    pub(crate) fn new(peer: SocketAddr, wr: WriteSock) -> Self {
        ConnState {
            peer,
            outbox: Outbox::new(wr),
            calls: Mutex::new(HashMap::default()),
            running: AtomicUsize::new(0),
            task: OnceLock::new(),
        }
    }

    fn calls(&self) -> MutexGuard<'_, HashMap<u64, AbortHandle, IdBuildHasher>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a limit says: read no more requests for now (backpressure).
    /// Replies of calls already accepted are still queued past the limit.
    fn over_limits(&self, server: &ServerShared) -> bool {
        self.outbox.queued() > server.limits.max_queued
            || self.running.load(Ordering::Relaxed) >= server.limits.max_calls
    }

    /// Queues the reply of call `id`; a reply over the frame limit becomes a
    /// `PayloadTooLarge` error for that call.
    fn respond(&self, id: u64, result: Result<Vec<u8>>, max: usize) {
        let (status, data) = match result {
            Ok(data) if frame::response_len(&data) <= max => (Status::Ok, data),
            Ok(data) => {
                tracing::warn!(call = id, len = data.len(), max, "rpc reply too large");
                let e = Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "reply of {} bytes exceeds max_frame_bytes {max}",
                        data.len()
                    ),
                );
                (Status::Err, encode_error(&e))
            }
            Err(e) => (Status::Err, encode_error(&e)),
        };
        let encode = |s: &mut State| frame::encode_response(&mut s.buf, id, status, &data);
        // A call that finished in the connection's loop: the loop flushes next.
        let _ = if tokio::task::try_id().is_some_and(|t| self.task.get() == Some(&t)) {
            self.outbox.push_quiet(encode)
        } else {
            self.outbox.push(encode)
        };
    }
}

fn encode_error(e: &Error) -> Vec<u8> {
    mod_api::codec::encode(e).unwrap_or_default()
}

/// Ends a connection's calls and unregisters it, however the task ends
/// (including abort).
struct ConnCleanup {
    server: Arc<ServerShared>,
    conn: Arc<ConnState>,
    id: u64,
}

impl Drop for ConnCleanup {
    fn drop(&mut self) {
        self.conn.outbox.close();
        let calls: Vec<_> = self.conn.calls().drain().map(|(_, h)| h).collect();
        for call in calls {
            call.abort();
        }
        self.server.remove_conn(self.id);
    }
}

/// Counts a running call and forgets it when its task ends or is dropped.
pub(crate) struct CallGuard {
    server: Arc<ServerShared>,
    conn: Arc<ConnState>,
    id: u64,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.conn.calls().remove(&self.id);
        let was = self.conn.running.fetch_sub(1, Ordering::AcqRel);
        if was == self.server.limits.max_calls {
            // The connection's task may be paused on this limit: wake it.
            self.conn.outbox.nudge();
        }
        if self.server.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.server.calls_idle.notify_waiters();
        }
    }
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve(server: Arc<ServerShared>, conn: Arc<ConnState>, id: u64, rd: ReadSock) {
    let _ = conn.task.set(tokio::task::id());
    let _cleanup = ConnCleanup {
        server: server.clone(),
        conn: conn.clone(),
        id,
    };
    let peer = conn.peer;
    // Bounded to a small size until the peer is trusted.
    let mut reader = FrameReader::new(
        rd,
        frame::HELLO_MAX_BODY.min(server.max_frame.max(frame::HEAD_LEN)),
    );
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&server, &mut reader)).await {
        Ok(Ok(())) => {}
        Ok(Err(Refusal::Protocol(e))) => {
            tracing::warn!(%peer, error = %e, "rpc handshake failed; closing connection");
            return;
        }
        Ok(Err(Refusal::Auth)) => {
            tracing::warn!(%peer, "rpc client failed authentication; closing connection");
            let e = Error::new(ErrorKind::Unauthenticated, "rpc authentication failed");
            conn.respond(0, Err(e), server.max_frame);
            conn.outbox.close();
            let drain = async {
                while conn.outbox.flush().is_ok() && !conn.outbox.finished() {
                    if conn.outbox.wait().await.is_err() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, drain).await;
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "rpc handshake timed out; closing connection");
            return;
        }
    }
    reader.set_max(server.max_frame);
    let _ = conn.outbox.push(|s| {
        frame::encode_hello_ok(&mut s.buf, server.limits.idle_ms());
        if server.shutting_down.load(Ordering::Acquire) {
            frame::encode_goaway(&mut s.buf);
        }
    });
    tracing::debug!(%peer, "rpc connection open");
    match run(&server, &conn, &mut reader).await {
        Ok(End::Peer) => tracing::debug!(%peer, "rpc client closed the connection"),
        Ok(End::Us) => tracing::debug!(%peer, "rpc connection closed by the server"),
        Ok(End::Expired(Expired::Idle(after))) => {
            tracing::debug!(%peer, ?after, "rpc connection idle; closed");
        }
        Ok(End::Expired(Expired::SlowFrame(limit))) => tracing::warn!(
            %peer,
            ?limit,
            "rpc peer did not finish a frame within frame_timeout; closing connection"
        ),
        Ok(End::Expired(Expired::Stalled(limit))) => tracing::warn!(
            %peer,
            ?limit,
            "rpc peer read none of its replies within idle_timeout; closing connection"
        ),
        Err(ReadError::Io(e)) => tracing::warn!(%peer, error = %e, "rpc connection failed"),
        Err(e) => tracing::error!(%peer, error = %e, "rpc protocol error; closing connection"),
    }
}

enum End {
    Peer,
    Us,
    Expired(Expired),
}

/// The connection's loop: handle every frame that arrived, write the queued
/// replies in one batch, wait for more of either. One task does both, so a
/// reply produced here never wakes another task. While a limit is reached
/// the loop reads no requests (backpressure) until calls finish or the peer
/// reads its replies; a watchdog ticks for the idle and frame timeouts.
async fn run(
    server: &Arc<ServerShared>,
    conn: &Arc<ConnState>,
    reader: &mut FrameReader,
) -> Result<End, ReadError> {
    let mut dog = Watchdog::new(server.limits);
    let mut tick = pin!(tokio::time::sleep_until(
        dog.next_tick().unwrap_or_else(Instant::now)
    ));
    let watching = dog.next_tick().is_some();
    loop {
        let stopped = poll_fn(|cx| Poll::Ready(handle_ready(server, conn, reader, cx))).await?;
        conn.outbox.flush().map_err(ReadError::Io)?;
        if conn.outbox.finished() {
            return Ok(End::Us);
        }
        let paused = conn.over_limits(server);
        if stopped && !paused {
            // Complete frames may wait in the buffer: handle them first.
            continue;
        }
        tokio::select! {
            biased;
            more = reader.fill(), if !paused => if !more? {
                return Ok(End::Peer);
            },
            r = conn.outbox.wait() => r.map_err(ReadError::Io)?,
            () = &mut tick, if watching => {
                let queued = conn.outbox.queued() > 0;
                let seen = Seen {
                    frames: reader.frames(),
                    partial: reader.partial(),
                    paused,
                    busy: conn.running.load(Ordering::Relaxed) > 0 || queued,
                    queued,
                    batches: conn.outbox.batches(),
                };
                if let Err(why) = dog.check(seen) {
                    if matches!(why, Expired::Idle(_)) {
                        // Tell the client first, so it takes no new calls here.
                        let _ = conn.outbox.push_quiet(|s| frame::encode_goaway(&mut s.buf));
                        let _ = conn.outbox.flush();
                    }
                    return Ok(End::Expired(why));
                }
                if let Some(at) = dog.next_tick() {
                    tick.as_mut().reset(at);
                }
            }
        }
    }
}

/// Handles every frame that has arrived, unless a limit stops it: `true`
/// when frames may be left unhandled in the buffer.
fn handle_ready(
    server: &Arc<ServerShared>,
    conn: &Arc<ConnState>,
    reader: &mut FrameReader,
    cx: &mut Context<'_>,
) -> Result<bool, ReadError> {
    loop {
        if conn.over_limits(server) {
            return Ok(true);
        }
        match reader.next()? {
            Ready::None => return Ok(false),
            Ready::InPlace { head, rest, used } => {
                on_frame(server, conn, head, Rest::Borrowed(rest), cx)?;
                reader.consume(used);
            }
            Ready::Owned { head, rest } => on_frame(server, conn, head, Rest::Owned(rest), cx)?,
        }
    }
}

fn on_frame(
    server: &Arc<ServerShared>,
    conn: &Arc<ConnState>,
    head: Head,
    rest: Rest<'_>,
    cx: &mut Context<'_>,
) -> Result<(), ReadError> {
    match head.kind {
        Kind::Request => {
            let layout = frame::request_layout(rest.bytes())?;
            let owned = rest.into_vec(0);
            start_call(server, conn, head.call_id, owned, layout, cx);
            Ok(())
        }
        Kind::Cancel if rest.bytes().is_empty() => {
            let call = conn.calls().remove(&head.call_id);
            if let Some(call) = call {
                tracing::debug!(call = head.call_id, "rpc call cancelled by the client");
                call.abort();
            }
            Ok(())
        }
        // Counted by the reader as a frame: that is all a keepalive is for.
        Kind::Ping if rest.bytes().is_empty() => Ok(()),
        _ => Err(ReadError::Frame(FrameError::Malformed(
            "unexpected frame from a client",
        ))),
    }
}

fn start_call(
    server: &Arc<ServerShared>,
    conn: &Arc<ConnState>,
    id: u64,
    rest: Vec<u8>,
    layout: RequestLayout,
    cx: &mut Context<'_>,
) {
    let service = layout.service(&rest);
    if server.shutting_down.load(Ordering::Acquire) {
        let e = Error::unavailable(format!(
            "rpc server is shutting down; {service} call not run"
        ));
        let _ = conn
            .outbox
            .push(|s| frame::encode_response(&mut s.buf, id, Status::Refused, &encode_error(&e)));
        return;
    }
    let Some(dispatcher) = server.dispatcher(service) else {
        tracing::warn!(service, "rpc call of a service not served here");
        let e = Error::not_found(format!("service {service} is not served at this address"));
        conn.respond(id, Err(e), server.max_frame);
        return;
    };
    if conn.calls().contains_key(&id) {
        let e = Error::invalid_input(format!("call id {id} is already in flight"));
        conn.respond(id, Err(e), server.max_frame);
        return;
    }
    server.inflight.fetch_add(1, Ordering::AcqRel);
    conn.running.fetch_add(1, Ordering::AcqRel);
    let guard = CallGuard {
        server: server.clone(),
        conn: conn.clone(),
        id,
    };
    // Most methods finish without waiting: run them here and spare a task.
    // One that waits goes on in a task of its own, where its deadline, a
    // CANCEL or a panic concern it alone.
    // The dispatcher's call layer (the table's) has the call's span.
    let mut call = Box::pin(run_call(guard, dispatcher, rest, layout));
    if call.as_mut().poll(cx).is_ready() {
        return;
    }
    let mut calls = conn.calls();
    // Spawned under the lock, so the guard's removal always follows the insert.
    let task = tokio::spawn(call);
    calls.insert(id, task.abort_handle());
}

/// Runs one call: deadline and panics are handled here, at the task boundary.
///
/// The deadline's clock starts when the method first waits: a method that
/// finishes at once cannot pass it, and is spared reading the clock.
async fn run_call(
    guard: CallGuard,
    dispatcher: Arc<dyn Dispatch>,
    rest: Vec<u8>,
    layout: RequestLayout,
) {
    let (method, payload) = (layout.method(&rest), layout.payload(&rest));
    let service = dispatcher.service();
    let mut work = pin!(AssertUnwindSafe(dispatcher.dispatch(method, payload)).catch_unwind());
    let first = poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    let outcome = match (first, layout.deadline_ms) {
        (Poll::Ready(outcome), _) => outcome,
        (Poll::Pending, 0) => work.await,
        (Poll::Pending, ms) => {
            let at = Instant::now() + Duration::from_millis(u64::from(ms));
            match tokio::time::timeout_at(at, work).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::debug!(service, method, "rpc call passed its deadline; dropped");
                    Ok(Err(Error::timeout(format!(
                        "{service}::{method} passed its deadline of {ms} ms on the server"
                    ))))
                }
            }
        }
    };
    let result = outcome.unwrap_or_else(|_| {
        tracing::error!(
            service,
            method,
            "service method panicked; the server lives on"
        );
        Err(Error::new(
            ErrorKind::Panicked,
            format!("{service}::{method} panicked"),
        ))
    });
    guard.conn.respond(guard.id, result, guard.server.max_frame);
}
