//! The write side of a connection: one buffer that every sender appends whole
//! frames to, written with one `write` per batch.
//!
//! Write coalescing without a per-frame queue node: frames appended while a
//! write is under way, or before the connection's task gets to run, pile up in
//! the buffer and leave together in the next write. Buffers are swapped, never
//! freed, so a steady state allocates nothing.
//!
//! Who writes: the connection's task ([`Outbox::flush`] in its loop, woken by
//! [`Outbox::push`]), so that every frame produced in one scheduler tick (64
//! calls started by one `join_all`, the replies of calls that finished
//! together) leaves in one syscall. One exception: [`Outbox::push_now`] writes
//! at once from the sender when nobody else is writing — the client uses it for
//! a call with no other call in flight, where there is nothing to coalesce with
//! and waking the connection's task would only add latency. Every write is a
//! non-blocking `try_write`; when the socket is full the rest waits in the
//! buffer until [`Outbox::wait`] sees it writable, so no sender ever blocks.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use super::stream::WriteSock;

/// A buffer grown past this by one large frame is not kept for reuse.
const KEEP_CAPACITY: usize = 1 << 20;
const INITIAL_CAPACITY: usize = 16 * 1024;
/// Batches one writer sends before leaving the rest to the connection's task.
const ROUNDS: usize = 4;

/// The buffer shared by the senders of one connection and its writer.
pub(crate) struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    /// The `mark` of the last batch handed to the socket (see [`State::mark`]).
    taken: AtomicU64,
    /// Bytes appended and not yet taken by a writer (for backpressure; a
    /// relaxed copy of `buf.len()`, stored under the lock).
    queued: AtomicUsize,
    sock: WriteSock,
}

/// What senders see under the lock.
pub(crate) struct State {
    /// Frames not yet taken by a writer.
    pub buf: Vec<u8>,
    /// A sender-defined watermark (the client: the highest call id appended),
    /// published to [`Outbox::taken`] when a writer takes the batch.
    pub mark: u64,
    spare: Vec<u8>,
    /// Batches taken by writers so far: progress, for the server's watchdog.
    batches: u64,
    /// A writer is between taking a batch and putting its buffer back.
    busy: bool,
    /// The socket was full: nobody writes until it is writable again.
    blocked: bool,
    closed: bool,
    failed: Option<io::Error>,
}

/// The outbox is closed: the connection is gone or going.
#[derive(Debug)]
pub(crate) struct Closed;

fn recycle(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    if buf.capacity() > KEEP_CAPACITY {
        buf = Vec::with_capacity(INITIAL_CAPACITY);
    }
    buf
}

impl Outbox {
    pub(crate) fn new(sock: WriteSock) -> Self {
        Outbox {
            state: Mutex::new(State {
                buf: Vec::with_capacity(INITIAL_CAPACITY),
                mark: 0,
                spare: Vec::with_capacity(INITIAL_CAPACITY),
                batches: 0,
                busy: false,
                blocked: false,
                closed: false,
                failed: None,
            }),
            wake: Notify::new(),
            taken: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            sock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics under this lock; a poisoned lock still holds whole frames.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the buffer unless closed; the connection's task writes what
    /// it appended. `f` must append whole frames only.
    pub(crate) fn push<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R, Closed> {
        let mut s = self.lock();
        if s.closed {
            return Err(Closed);
        }
        let was_empty = s.buf.is_empty();
        let r = f(&mut s);
        self.queued.store(s.buf.len(), Ordering::Relaxed);
        // Otherwise the task is already woken, or a writer will see the frames.
        let wake = was_empty && !s.buf.is_empty() && !s.busy && !s.blocked;
        drop(s);
        if wake {
            self.wake.notify_one();
        }
        Ok(r)
    }

    /// Like [`push`](Self::push) without waking anyone: for the connection's
    /// task itself, which flushes before it waits.
    pub(crate) fn push_quiet<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R, Closed> {
        let mut s = self.lock();
        if s.closed {
            return Err(Closed);
        }
        let r = f(&mut s);
        self.queued.store(s.buf.len(), Ordering::Relaxed);
        Ok(r)
    }

    /// Like [`push`](Self::push), but writes at once from this thread when no
    /// one else is writing.
    pub(crate) fn push_now<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R, Closed> {
        let mut s = self.lock();
        if s.closed {
            return Err(Closed);
        }
        let was_empty = s.buf.is_empty();
        let r = f(&mut s);
        self.queued.store(s.buf.len(), Ordering::Relaxed);
        if s.buf.is_empty() {
            return Ok(r);
        }
        if s.busy || s.blocked {
            return Ok(r);
        }
        if !was_empty {
            // Frames were waiting for the task already: let it send them all.
            drop(s);
            self.wake.notify_one();
            return Ok(r);
        }
        s.busy = true;
        let batch = self.take(&mut s);
        drop(s);
        self.write(batch);
        Ok(r)
    }

    /// Takes the queued frames for writing (the caller has set `busy`).
    fn take(&self, s: &mut State) -> Vec<u8> {
        let mut batch = std::mem::take(&mut s.spare);
        std::mem::swap(&mut s.buf, &mut batch);
        s.batches += 1;
        self.taken.store(s.mark, Ordering::Release);
        self.queued.store(0, Ordering::Relaxed);
        batch
    }

    /// Writes `batch`, then what was queued meanwhile (a few rounds at most),
    /// without waiting; a full socket leaves the rest queued and `blocked`.
    fn write(&self, mut batch: Vec<u8>) {
        for round in 1.. {
            let mut off = 0;
            loop {
                let step = if off < batch.len() {
                    self.sock.try_write(&batch[off..])
                } else {
                    // Plain TCP: always Ok. TLS: what rustls still holds.
                    self.sock.try_flush().map(|()| 0)
                };
                match step {
                    Ok(0) if off == batch.len() => break,
                    Ok(0) => return self.fail(io::ErrorKind::WriteZero.into()),
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let mut s = self.lock();
                        // The unwritten part goes first: it precedes what was queued since.
                        batch.drain(..off);
                        batch.extend_from_slice(&s.buf);
                        std::mem::swap(&mut s.buf, &mut batch);
                        self.queued.store(s.buf.len(), Ordering::Relaxed);
                        s.spare = recycle(batch);
                        s.busy = false;
                        s.blocked = true;
                        drop(s);
                        self.wake.notify_one();
                        return;
                    }
                    Err(e) => return self.fail(e),
                }
            }
            let mut s = self.lock();
            s.spare = recycle(std::mem::take(&mut batch));
            if s.buf.is_empty() || round == ROUNDS {
                s.busy = false;
                let wake = s.closed || !s.buf.is_empty();
                drop(s);
                if wake {
                    self.wake.notify_one();
                }
                return;
            }
            batch = self.take(&mut s);
        }
    }

    fn fail(&self, e: io::Error) {
        let mut s = self.lock();
        s.closed = true;
        s.busy = false;
        s.failed = Some(e);
        drop(s);
        self.wake.notify_one();
    }

    /// Writes what is queued unless another writer is at it or the socket is
    /// full; never waits. Returns the socket's error once it failed.
    pub(crate) fn flush(&self) -> io::Result<()> {
        let mut s = self.lock();
        if let Some(e) = s.failed.take() {
            return Err(e);
        }
        if s.busy || s.blocked || s.buf.is_empty() {
            return Ok(());
        }
        s.busy = true;
        let batch = self.take(&mut s);
        drop(s);
        self.write(batch);
        match self.lock().failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits until there may be something to [`flush`](Self::flush): new
    /// frames, or a full socket that became writable. Cancel safe.
    pub(crate) async fn wait(&self) -> io::Result<()> {
        if self.lock().blocked {
            // A nudge still gets through while the socket is full.
            tokio::select! {
                r = self.sock.writable() => {
                    r?;
                    self.lock().blocked = false;
                }
                () = self.wake.notified() => {}
            }
        } else {
            self.wake.notified().await;
        }
        Ok(())
    }

    /// Wakes the connection's task (waiting in [`wait`](Self::wait)) for a
    /// reason of the sender's own, e.g. an earlier deadline to arm.
    pub(crate) fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Whether the outbox is closed and everything queued was written.
    pub(crate) fn finished(&self) -> bool {
        let s = self.lock();
        // `blocked` with an empty buffer: TLS bytes rustls has yet to send.
        s.closed && s.buf.is_empty() && !s.busy && !s.blocked
    }

    /// Closes the outbox: later pushes fail; what is queued is still written.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Bytes queued and not yet handed to the socket (those of a batch being
    /// written are not counted: at most one batch).
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Batches handed to the socket so far (it takes the lock: for a timer,
    /// not for every frame).
    pub(crate) fn batches(&self) -> u64 {
        self.lock().batches
    }

    /// The `mark` of the last batch handed to the socket.
    pub(crate) fn taken(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }
}
