//! The two halves of a connection's socket: plain TCP, or TLS over TCP.
//!
//! Plain TCP keeps the split halves and the non-blocking `try_write` that the
//! outbox is built on (see outbox.rs); the enum costs one predictable branch.
//! A TLS stream cannot be split into independent halves (rustls keeps one
//! state for both directions), so both halves share it under a mutex held for
//! one poll at a time. Its `try_write` is a poll with a no-op waker: rustls
//! takes the bytes (encrypting them into its buffer) or is full; what it holds
//! unsent is pushed out by [`WriteSock::try_flush`], and [`WriteSock::writable`]
//! waits, with the real waker, until it all left.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

type Tls = Arc<Mutex<TlsStream<TcpStream>>>;

fn lock(tls: &Tls) -> MutexGuard<'_, TlsStream<TcpStream>> {
    // A poll that panicked leaves rustls's state as it was; the peer sees
    // garbage at worst, and that connection closes.
    tls.lock().unwrap_or_else(|e| e.into_inner())
}

/// Splits a plain TCP stream.
pub(crate) fn split_tcp(stream: TcpStream) -> (ReadSock, WriteSock) {
    let (rd, wr) = stream.into_split();
    (ReadSock::Tcp(rd), WriteSock::Tcp(wr))
}

/// Shares a TLS stream between a read half and a write half.
pub(crate) fn split_tls(stream: TlsStream<TcpStream>) -> (ReadSock, WriteSock) {
    let tls = Arc::new(Mutex::new(stream));
    (ReadSock::Tls(tls.clone()), WriteSock::Tls(tls))
}

/// The read half.
pub(crate) enum ReadSock {
    Tcp(OwnedReadHalf),
    Tls(Tls),
}

impl ReadSock {
    /// Reads some bytes; `Ok(0)` at the end of the stream. Cancel safe.
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadSock::Tcp(rd) => rd.read(buf).await,
            ReadSock::Tls(tls) => {
                let mut buf = ReadBuf::new(buf);
                let r = poll_fn(|cx| Pin::new(&mut *lock(tls)).poll_read(cx, &mut buf)).await;
                match r {
                    Ok(()) => Ok(buf.filled().len()),
                    // A close without close_notify: frames are length-prefixed,
                    // so the reader still tells a clean end from a truncated one.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// The write half.
pub(crate) enum WriteSock {
    Tcp(OwnedWriteHalf),
    Tls(Tls),
}

fn noop() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

fn ready<T>(p: Poll<io::Result<T>>) -> io::Result<T> {
    match p {
        Poll::Ready(r) => r,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl WriteSock {
    /// Writes some of `buf` without waiting (`WouldBlock`: nothing taken).
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteSock::Tcp(wr) => wr.try_write(buf),
            WriteSock::Tls(tls) => ready(Pin::new(&mut *lock(tls)).poll_write(&mut noop(), buf)),
        }
    }

    /// Pushes out what was written and is still held (TLS only) without
    /// waiting; `WouldBlock`: some is still held, [`writable`](Self::writable)
    /// waits until it left.
    pub(crate) fn try_flush(&self) -> io::Result<()> {
        match self {
            WriteSock::Tcp(_) => Ok(()),
            WriteSock::Tls(tls) => ready(Pin::new(&mut *lock(tls)).poll_flush(&mut noop())),
        }
    }

    /// Waits until the socket takes bytes again (TLS: until what rustls held
    /// has left). Cancel safe.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        match self {
            WriteSock::Tcp(wr) => wr.writable().await,
            WriteSock::Tls(tls) => poll_fn(|cx| Pin::new(&mut *lock(tls)).poll_flush(cx)).await,
        }
    }

    /// Writes all of `buf` (the handshake's frames, before the outbox exists).
    pub(crate) async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.try_write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) => return Err(e),
            }
        }
        loop {
            match self.try_flush() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }
}
