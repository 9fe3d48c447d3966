//! The read side of a connection: a buffer that frames are parsed from in place.
//!
//! One `read` fills the buffer with as many frames as have arrived; each is
//! decoded where it lies and only its useful part is copied out. A frame too
//! large for the buffer is read straight into a vector of its exact size, so
//! large payloads are not copied twice. Lengths are checked before anything is
//! allocated.

use std::fmt;

use super::frame::{self, FrameError, Head, HEAD_LEN, LEN_PREFIX};
use super::stream::ReadSock;

/// Read buffer per connection: many small frames per `read` syscall. It starts
/// at `FIRST_BUFFER` and doubles (up to `BUFFER`) whenever a read fills it, so
/// a busy connection soon reads 64 KiB per syscall while an idle one (a
/// thousand of them, say) holds 4 KiB each.
const BUFFER: usize = 64 * 1024;
const FIRST_BUFFER: usize = 4 * 1024;

/// A frame that is complete in the buffer: its head and the rest of its body.
pub(crate) enum Ready<'a> {
    /// Nothing complete yet: [`FrameReader::fill`] for more.
    None,
    /// A frame inside the buffer; [`FrameReader::consume`] `used` bytes after use.
    InPlace {
        /// The head.
        head: Head,
        /// The body after the head.
        rest: &'a [u8],
        /// Bytes of buffer the frame took.
        used: usize,
    },
    /// A large frame, read into its own vector (already consumed).
    Owned {
        /// The head.
        head: Head,
        /// The body after the head.
        rest: Vec<u8>,
    },
}

/// The rest of a frame's body, where it lies.
pub(crate) enum Rest<'a> {
    /// In the read buffer.
    Borrowed(&'a [u8]),
    /// In a vector of its own (a large frame).
    Owned(Vec<u8>),
}

impl Rest<'_> {
    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Rest::Borrowed(b) => b,
            Rest::Owned(v) => v,
        }
    }

    /// The bytes from `skip` on, as a vector: copied out of the buffer, or the
    /// frame's own vector shifted in place.
    pub(crate) fn into_vec(self, skip: usize) -> Vec<u8> {
        match self {
            Rest::Borrowed(b) => b.get(skip..).unwrap_or_default().to_vec(),
            Rest::Owned(mut v) => {
                v.drain(..skip.min(v.len()));
                v
            }
        }
    }
}

struct Large {
    head: Head,
    rest: Vec<u8>,
    filled: usize,
}

/// Frames from one socket.
pub(crate) struct FrameReader {
    rd: ReadSock,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    large: Option<Large>,
    max: usize,
    /// Frames returned so far (the server's watchdog compares counts).
    frames: u64,
}

impl FrameReader {
    /// Reads frames whose body is at most `max` bytes.
    pub(crate) fn new(rd: ReadSock, max: usize) -> Self {
        FrameReader {
            rd,
            buf: vec![0u8; FIRST_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            large: None,
            max,
            frames: 0,
        }
    }

    /// Changes the largest body accepted from now on.
    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// The next frame that has fully arrived, without waiting.
    pub(crate) fn next(&mut self) -> Result<Ready<'_>, ReadError> {
        if let Some(large) = &self.large {
            if large.filled < large.rest.len() {
                return Ok(Ready::None);
            }
            let Some(Large { head, rest, .. }) = self.large.take() else {
                return Ok(Ready::None);
            };
            self.frames += 1;
            return Ok(Ready::Owned { head, rest });
        }
        let avail = &self.buf[self.start..self.end];
        let Some(prefix) = avail.get(..LEN_PREFIX) else {
            return Ok(Ready::None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let len = frame::check_len(u64::from(len), self.max)?;
        let Some(head) = avail.get(LEN_PREFIX..LEN_PREFIX + HEAD_LEN) else {
            return Ok(Ready::None);
        };
        let head = frame::parse_head(
            head.try_into()
                .map_err(|_| FrameError::TooShort(head.len()))?,
        )?;
        if let Some(rest) = avail.get(LEN_PREFIX + HEAD_LEN..LEN_PREFIX + len) {
            self.frames += 1;
            return Ok(Ready::InPlace {
                head,
                rest,
                used: LEN_PREFIX + len,
            });
        }
        if LEN_PREFIX + len > self.buf.len() {
            // Will not fit: give it a vector of its own and read into that.
            let have = &avail[LEN_PREFIX + HEAD_LEN..];
            let mut rest = vec![0u8; len - HEAD_LEN];
            rest[..have.len()].copy_from_slice(have);
            self.large = Some(Large {
                head,
                filled: have.len(),
                rest,
            });
            self.start = 0;
            self.end = 0;
        }
        Ok(Ready::None)
    }

    /// Frames returned by [`next`](Self::next) so far.
    pub(crate) fn frames(&self) -> u64 {
        self.frames
    }

    /// Whether bytes of a frame not yet returned are held (a frame begun).
    pub(crate) fn partial(&self) -> bool {
        self.large.is_some() || self.start != self.end
    }

    /// Marks `used` bytes of the buffer as handled.
    pub(crate) fn consume(&mut self, used: usize) {
        self.start = (self.start + used).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Waits for more bytes. `Ok(false)`: the peer closed cleanly between frames.
    /// Cancel safe: bytes read are never lost.
    pub(crate) async fn fill(&mut self) -> Result<bool, ReadError> {
        let partial = self.large.is_some() || self.start != self.end;
        let n = if let Some(large) = &mut self.large {
            let n = self
                .rd
                .read(&mut large.rest[large.filled..])
                .await
                .map_err(ReadError::Io)?;
            large.filled += n;
            n
        } else {
            if self.end == self.buf.len() {
                // A partial frame at the end: move it to the front to make room.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let room = self.buf.len() - self.end;
            let n = self
                .rd
                .read(&mut self.buf[self.end..])
                .await
                .map_err(ReadError::Io)?;
            self.end += n;
            if n == room && self.buf.len() < BUFFER {
                // The read was cut short by the buffer: more is coming.
                self.grow();
            }
            n
        };
        match (n, partial) {
            (0, false) => Ok(false),
            (0, true) => Err(ReadError::Truncated),
            _ => Ok(true),
        }
    }

    /// Doubles the buffer (at most [`BUFFER`]), keeping the unread bytes.
    fn grow(&mut self) {
        let mut bigger = vec![0u8; (self.buf.len() * 2).min(BUFFER)].into_boxed_slice();
        let unread = self.end - self.start;
        bigger[..unread].copy_from_slice(&self.buf[self.start..self.end]);
        self.buf = bigger;
        self.start = 0;
        self.end = unread;
    }

    /// Waits for the next complete frame and returns its head and rest (used for
    /// the handshake, before the connection's loop starts). `None`: clean EOF.
    pub(crate) async fn read_one(&mut self) -> Result<Option<(Head, Vec<u8>)>, ReadError> {
        loop {
            match self.next()? {
                Ready::InPlace { head, rest, used } => {
                    let rest = rest.to_vec();
                    self.consume(used);
                    return Ok(Some((head, rest)));
                }
                Ready::Owned { head, rest } => return Ok(Some((head, rest))),
                Ready::None => {}
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }
}

/// Why reading a frame from a stream failed.
#[derive(Debug)]
pub enum ReadError {
    /// The socket failed.
    Io(std::io::Error),
    /// The stream ended inside a frame.
    Truncated,
    /// The bytes are not a frame.
    Frame(FrameError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "read failed: {e}"),
            ReadError::Truncated => {
                f.write_str("connection closed inside a frame (truncated frame)")
            }
            ReadError::Frame(e) => e.fmt(f),
        }
    }
}

impl From<FrameError> for ReadError {
    fn from(e: FrameError) -> Self {
        ReadError::Frame(e)
    }
}
