//! The task of a client connection: routes replies to their callers, writes
//! the queued requests, sweeps deadlines; and the handshake's answer.

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mod_api::{Error, ErrorKind, Result};

use super::client::Shared;
use super::frame::{self, Frame, FrameError, Head, Status};
use super::mark_not_sent;
use super::pending::{Waiter, NONE};
use super::reader::{FrameReader, ReadError, Ready, Rest};
use super::tls;

/// Decodes an error the server sent.
fn decode_error(data: &[u8]) -> Error {
    mod_api::codec::decode::<Error>(data)
        .unwrap_or_else(|e| Error::codec("undecodable error from rpc server").with_source(e))
}

/// Reads the server's answer to HELLO: when accepted, the server's idle
/// timeout (`None`: it never closes idle connections).
pub(super) async fn read_hello_answer(reader: &mut FrameReader) -> Result<Option<Duration>> {
    let fail = |what: String| Error::unavailable(format!("rpc handshake: {what}"));
    let (head, rest) = match reader.read_one().await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(fail("server closed the connection".into())),
        // TLS 1.3: a server that refuses the client's certificate says so
        // after the client finished its handshake, on this first read.
        Err(ReadError::Io(e)) if tls::rustls_error(&e).is_some() => {
            return Err(Error::new(
                ErrorKind::Unauthenticated,
                format!("rpc handshake: TLS: {e}"),
            ))
        }
        Err(ReadError::Frame(e @ FrameError::TooLarge { .. })) => {
            return Err(fail(format!(
                "{e} (is the server speaking TLS? then set [rpc.tls] ca)"
            )))
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    match frame::decode_rest(head, &rest) {
        Ok(Frame::Response {
            call_id: 0,
            status: Status::Ok,
            data,
        }) => Ok(match frame::hello_idle_ms(data) {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        }),
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
        Frame::Ping => Ok(()),
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

/// The keepalive interval for a server that closes connections idle for
/// `idle`: a third of it, so a ping always lands within it even when the
/// check that skips it (a request went out since the last tick) was just late.
fn keepalive_every(idle: Duration) -> Duration {
    (idle / 3).max(Duration::from_millis(5))
}

/// The connection's loop: route every response that arrived, write the queued
/// requests in one batch, wait for more of either; ping a server that closes
/// idle connections when no request went out for a keepalive interval.
async fn serve(
    shared: &Shared,
    reader: &mut FrameReader,
    idle: Option<Duration>,
) -> Result<(), ReadError> {
    // Armed at the earliest deadline of the waiting calls (see pending.rs).
    let mut armed = NONE;
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));
    let every = idle.map(keepalive_every);
    let mut ping = pin!(tokio::time::sleep(every.unwrap_or_default()));
    let mut last_sent = shared.outbox.taken();
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
            () = &mut ping, if every.is_some() => {
                // Requests count as keepalive: ping only when none went out.
                let sent = shared.outbox.taken();
                if sent == last_sent {
                    let _ = shared.outbox.push(|s| frame::encode_ping(&mut s.buf));
                }
                last_sent = sent;
                ping.as_mut().reset(tokio::time::Instant::now() + every.unwrap_or_default());
            }
        }
    }
}

/// The connection task: runs the loop, then fails what is left.
pub(super) async fn run(shared: Arc<Shared>, mut reader: FrameReader, idle: Option<Duration>) {
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
    let why = match serve(&shared, &mut reader, idle).await {
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
