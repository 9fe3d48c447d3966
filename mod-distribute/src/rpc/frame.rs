//! The wire format of the RPC transport (version 1).
//!
//! Every frame is a big-endian `u32` length followed by that many bytes of body.
//! The length counts the body only and must lie in `10..=max_frame_bytes`
//! (`RpcConfig::max_frame_bytes`); a reader checks it before allocating.
//!
//! ```text
//! frame    = len:u32be body
//! body     = version:u8 (=1) kind:u8 call_id:u64be rest
//!
//! kind 1 HELLO     client → server, first frame, call_id 0
//!                  rest = secret bytes (empty without a secret); body ≤ 4 KiB
//! kind 2 REQUEST   rest = deadline_ms:u32be (0 = none)
//!                         service_len:u16be service:utf8
//!                         method_len:u16be  method:utf8
//!                         payload (the rest: arguments, DefaultCodec tuple)
//! kind 3 RESPONSE  rest = status:u8 data
//!                  status 0 OK      data = the reply bytes (encoded `Result<T, E>`)
//!                  status 1 ERROR   data = an encoded `mod_api::Error` (transport
//!                                   failure, deadline, panic, unknown service)
//!                  status 2 REFUSED data = an encoded `mod_api::Error`; the server
//!                                   did not run the call (shutting down)
//! kind 4 CANCEL    client → server, rest empty: drop the call `call_id`
//! kind 5 GOAWAY    server → client, call_id 0, rest empty: no new calls on this
//!                  connection; calls in flight are still answered
//! kind 6 PING      client → server, call_id 0, rest empty: keepalive of an idle
//!                  connection; not answered
//! ```
//!
//! The server answers HELLO with a RESPONSE for call id 0: status 0 when the
//! connection is accepted, status 1 with an `Unauthenticated` error before it
//! closes. The data of the accepting answer is `idle_timeout_ms:u32be` (0 =
//! the server never closes idle connections), after which the server closes a
//! connection with no call running and no frame received; the client sends
//! PING well within it. Compatibility: servers before PING answered with empty
//! data, which a client reads as "no idle timeout" and never pings; clients
//! before PING ignore the data and never ping (such a server then closes their
//! idle connections, which they replace on the next call). Kinds start at 1 so that zeroed garbage is rejected at once; a frame of
//! another version, an unknown kind, or a malformed rest closes the connection.
//!
//! Nothing here panics on any input: every read is bounds-checked and lengths
//! are validated before use (see the property test at the bottom).

use std::fmt;
use std::ops::Range;

use mod_api::{Error, ErrorKind};

/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes of the fixed head of every body: version, kind, call id.
pub const HEAD_LEN: usize = 10;
/// Largest HELLO body accepted: an unauthenticated peer cannot make the server
/// allocate more than this.
pub const HELLO_MAX_BODY: usize = 4096;
/// Bytes of a request's fixed fields after the head: deadline and two lengths.
const REQUEST_FIXED: usize = 4 + 2 + 2;

/// The kind of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Opens a connection, carrying the shared secret.
    Hello = 1,
    /// A call.
    Request = 2,
    /// The outcome of a call.
    Response = 3,
    /// The client gave up on a call.
    Cancel = 4,
    /// The server is going away.
    GoAway = 5,
    /// A client's keepalive.
    Ping = 6,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Response,
            4 => Kind::Cancel,
            5 => Kind::GoAway,
            6 => Kind::Ping,
            _ => return None,
        })
    }
}

/// The status byte of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The reply bytes follow.
    Ok = 0,
    /// An encoded `mod_api::Error` follows.
    Err = 1,
    /// An encoded `mod_api::Error` follows; the call was not run.
    Refused = 2,
}

impl Status {
    /// Parses a status byte.
    pub fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::Err,
            2 => Status::Refused,
            _ => return None,
        })
    }
}

/// The fixed head of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// What the frame is.
    pub kind: Kind,
    /// The call it belongs to (0 for connection-level frames).
    pub call_id: u64,
}

/// A decoded frame, borrowing from the bytes it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Opening frame with the secret.
    Hello {
        /// The shared secret (empty when none).
        secret: &'a [u8],
    },
    /// A call.
    Request(Request<'a>),
    /// A call's outcome.
    Response {
        /// The call.
        call_id: u64,
        /// Ok, error or refused.
        status: Status,
        /// Reply bytes or an encoded error.
        data: &'a [u8],
    },
    /// Drop a call.
    Cancel {
        /// The call.
        call_id: u64,
    },
    /// No new calls on this connection.
    GoAway,
    /// Keepalive.
    Ping,
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The call's id, unique among the connection's calls in flight.
    pub call_id: u64,
    /// Time left for the call when it was sent, in ms (0 = no deadline).
    pub deadline_ms: u32,
    /// The service's name.
    pub service: &'a str,
    /// The method's name.
    pub method: &'a str,
    /// The encoded arguments.
    pub payload: &'a [u8],
}

/// Where the parts of a request lie in its rest (validated by [`request_layout`]).
#[derive(Debug, Clone)]
pub struct RequestLayout {
    /// Time left for the call, in ms (0 = none).
    pub deadline_ms: u32,
    /// Byte range of the service name (valid UTF-8).
    pub service: Range<usize>,
    /// Byte range of the method name (valid UTF-8).
    pub method: Range<usize>,
    /// Offset of the payload (it runs to the end).
    pub payload: usize,
}

impl RequestLayout {
    /// The method name inside `rest` (the bytes the layout was computed from).
    pub fn method<'a>(&self, rest: &'a [u8]) -> &'a str {
        rest.get(self.method.clone())
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// The service name inside `rest`.
    pub fn service<'a>(&self, rest: &'a [u8]) -> &'a str {
        rest.get(self.service.clone())
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// The payload inside `rest`.
    pub fn payload<'a>(&self, rest: &'a [u8]) -> &'a [u8] {
        rest.get(self.payload..).unwrap_or(&[])
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix exceeds the maximum.
    TooLarge {
        /// Announced body length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The body is shorter than the fixed head.
    TooShort(usize),
    /// Another protocol version.
    Version(u8),
    /// An unknown kind byte.
    Kind(u8),
    /// The rest of the body does not match its kind.
    Malformed(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            FrameError::TooShort(n) => {
                write!(f, "frame body of {n} bytes is shorter than its head")
            }
            FrameError::Version(v) => {
                write!(f, "unsupported protocol version {v} (speaking {VERSION})")
            }
            FrameError::Kind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::Malformed(what) => write!(f, "malformed frame: {what}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Error {
        let kind = match e {
            FrameError::TooLarge { .. } => ErrorKind::PayloadTooLarge,
            _ => ErrorKind::Codec,
        };
        Error::new(kind, e.to_string())
    }
}

/// Checks a body length against the limits; `max` is the largest body allowed.
pub fn check_len(len: u64, max: usize) -> Result<usize, FrameError> {
    if len > max as u64 {
        return Err(FrameError::TooLarge {
            len,
            max: max as u64,
        });
    }
    if len < HEAD_LEN as u64 {
        return Err(FrameError::TooShort(len as usize));
    }
    Ok(len as usize)
}

/// Parses the fixed head of a body.
pub fn parse_head(b: &[u8; HEAD_LEN]) -> Result<Head, FrameError> {
    if b[0] != VERSION {
        return Err(FrameError::Version(b[0]));
    }
    let kind = Kind::from_u8(b[1]).ok_or(FrameError::Kind(b[1]))?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&b[2..10]);
    Ok(Head {
        kind,
        call_id: u64::from_be_bytes(id),
    })
}

fn take<'a>(rest: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
    if rest.len() < n {
        return Err(FrameError::Malformed(what));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn take_u16(rest: &mut &[u8], what: &'static str) -> Result<usize, FrameError> {
    let b = take(rest, 2, what)?;
    Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
}

/// Validates a request's rest and says where its parts lie.
pub fn request_layout(rest: &[u8]) -> Result<RequestLayout, FrameError> {
    let mut cur = rest;
    let d = take(&mut cur, 4, "request deadline")?;
    let deadline_ms = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let svc_len = take_u16(&mut cur, "service length")?;
    let service_start = rest.len() - cur.len();
    let service = take(&mut cur, svc_len, "service name")?;
    std::str::from_utf8(service).map_err(|_| FrameError::Malformed("service name is not UTF-8"))?;
    let method_len = take_u16(&mut cur, "method length")?;
    let method_start = rest.len() - cur.len();
    let method = take(&mut cur, method_len, "method name")?;
    std::str::from_utf8(method).map_err(|_| FrameError::Malformed("method name is not UTF-8"))?;
    Ok(RequestLayout {
        deadline_ms,
        service: service_start..service_start + svc_len,
        method: method_start..method_start + method_len,
        payload: rest.len() - cur.len(),
    })
}

/// Decodes the rest of a body whose head is `head`.
pub fn decode_rest(head: Head, rest: &[u8]) -> Result<Frame<'_>, FrameError> {
    let empty = |frame| {
        if rest.is_empty() {
            Ok(frame)
        } else {
            Err(FrameError::Malformed(
                "trailing bytes after a control frame",
            ))
        }
    };
    match head.kind {
        Kind::Hello => Ok(Frame::Hello { secret: rest }),
        Kind::Request => {
            let l = request_layout(rest)?;
            Ok(Frame::Request(Request {
                call_id: head.call_id,
                deadline_ms: l.deadline_ms,
                service: l.service(rest),
                method: l.method(rest),
                payload: l.payload(rest),
            }))
        }
        Kind::Response => {
            let (&s, data) = rest
                .split_first()
                .ok_or(FrameError::Malformed("response without status"))?;
            let status =
                Status::from_u8(s).ok_or(FrameError::Malformed("unknown response status"))?;
            Ok(Frame::Response {
                call_id: head.call_id,
                status,
                data,
            })
        }
        Kind::Cancel => empty(Frame::Cancel {
            call_id: head.call_id,
        }),
        Kind::GoAway => empty(Frame::GoAway),
        Kind::Ping => empty(Frame::Ping),
    }
}

/// Decodes one whole body (without its length prefix).
pub fn decode_body(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    let head: &[u8; HEAD_LEN] = body
        .get(..HEAD_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::TooShort(body.len()))?;
    decode_rest(parse_head(head)?, &body[HEAD_LEN..])
}

/// Decodes the first frame of `buf` (length prefix included).
///
/// `Ok(None)`: more bytes are needed. `Ok(Some((frame, used)))`: a frame and how
/// many bytes of `buf` it took.
pub fn decode(buf: &[u8], max: usize) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let len = check_len(len as u64, max)?;
    match buf.get(LEN_PREFIX..LEN_PREFIX + len) {
        Some(body) => Ok(Some((decode_body(body)?, LEN_PREFIX + len))),
        None => Ok(None),
    }
}

fn put_head(buf: &mut Vec<u8>, body_len: usize, kind: Kind, call_id: u64) {
    // Callers check `body_len` against the maximum (≤ u32::MAX) before this.
    buf.extend_from_slice(&(body_len as u32).to_be_bytes());
    buf.push(VERSION);
    buf.push(kind as u8);
    buf.extend_from_slice(&call_id.to_be_bytes());
}

/// The body length of a request.
pub fn request_len(service: &str, method: &str, payload: &[u8]) -> usize {
    HEAD_LEN + REQUEST_FIXED + service.len() + method.len() + payload.len()
}

/// Appends a request; fails (appending nothing) when it would exceed `max`.
pub fn encode_request(buf: &mut Vec<u8>, req: &Request<'_>, max: usize) -> Result<(), FrameError> {
    let len = request_len(req.service, req.method, req.payload);
    if len > max || len > u32::MAX as usize {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: max as u64,
        });
    }
    if req.service.len() > u16::MAX as usize || req.method.len() > u16::MAX as usize {
        return Err(FrameError::Malformed(
            "service or method name longer than 65535 bytes",
        ));
    }
    buf.reserve(LEN_PREFIX + len);
    put_head(buf, len, Kind::Request, req.call_id);
    buf.extend_from_slice(&req.deadline_ms.to_be_bytes());
    buf.extend_from_slice(&(req.service.len() as u16).to_be_bytes());
    buf.extend_from_slice(req.service.as_bytes());
    buf.extend_from_slice(&(req.method.len() as u16).to_be_bytes());
    buf.extend_from_slice(req.method.as_bytes());
    buf.extend_from_slice(req.payload);
    Ok(())
}

/// The body length of a response carrying `data`.
pub fn response_len(data: &[u8]) -> usize {
    HEAD_LEN + 1 + data.len()
}

/// Appends a response (the caller checks [`response_len`] against the maximum).
pub fn encode_response(buf: &mut Vec<u8>, call_id: u64, status: Status, data: &[u8]) {
    let len = response_len(data);
    buf.reserve(LEN_PREFIX + len);
    put_head(buf, len, Kind::Response, call_id);
    buf.push(status as u8);
    buf.extend_from_slice(data);
}

/// Appends a HELLO carrying `secret` (at most [`HELLO_MAX_BODY`] - 10 bytes).
pub fn encode_hello(buf: &mut Vec<u8>, secret: &[u8]) -> Result<(), FrameError> {
    let len = HEAD_LEN + secret.len();
    if len > HELLO_MAX_BODY {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: HELLO_MAX_BODY as u64,
        });
    }
    put_head(buf, len, Kind::Hello, 0);
    buf.extend_from_slice(secret);
    Ok(())
}

/// Appends a CANCEL of `call_id`.
pub fn encode_cancel(buf: &mut Vec<u8>, call_id: u64) {
    put_head(buf, HEAD_LEN, Kind::Cancel, call_id);
}

/// Appends a PING.
pub fn encode_ping(buf: &mut Vec<u8>) {
    put_head(buf, HEAD_LEN, Kind::Ping, 0);
}

/// Appends the server's acceptance of a HELLO, telling its idle timeout.
pub fn encode_hello_ok(buf: &mut Vec<u8>, idle_timeout_ms: u32) {
    encode_response(buf, 0, Status::Ok, &idle_timeout_ms.to_be_bytes());
}

/// The idle timeout in an accepting HELLO answer's data, in ms (0: none, as
/// from a server that sends empty data).
pub fn hello_idle_ms(data: &[u8]) -> u32 {
    match data {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

/// Appends a GOAWAY.
pub fn encode_goaway(buf: &mut Vec<u8>) {
    put_head(buf, HEAD_LEN, Kind::GoAway, 0);
}

#[cfg(test)]
mod tests;
