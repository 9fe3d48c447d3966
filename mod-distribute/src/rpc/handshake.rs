//! The handshake of a server connection: the HELLO and its secret.

use super::frame::{FrameError, Kind};
use super::reader::{FrameReader, ReadError};
use super::server::ServerShared;

/// Why a connection was refused at its handshake.
pub(crate) enum Refusal {
    /// Not a valid HELLO.
    Protocol(ReadError),
    /// The wrong secret.
    Auth,
}

/// Reads the HELLO and checks its secret.
pub(crate) async fn handshake(
    server: &ServerShared,
    reader: &mut FrameReader,
) -> Result<(), Refusal> {
    let (head, secret) = match reader.read_one().await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(Refusal::Protocol(ReadError::Truncated)),
        Err(e) => return Err(Refusal::Protocol(e)),
    };
    if head.kind != Kind::Hello || head.call_id != 0 {
        return Err(Refusal::Protocol(ReadError::Frame(FrameError::Malformed(
            "the first frame must be HELLO",
        ))));
    }
    match &server.secret {
        Some(expected) if !constant_time_eq(expected, &secret) => Err(Refusal::Auth),
        _ => Ok(()),
    }
}

/// Compares in time that depends on the length of `given` only, never on where
/// the bytes differ.
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let mut diff = u8::from(expected.len() != given.len());
    for (i, &g) in given.iter().enumerate() {
        let e = if expected.is_empty() {
            0
        } else {
            expected[i % expected.len()]
        };
        diff |= e ^ g;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secret_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"abc", b"abcabc"));
        assert!(!constant_time_eq(b"abc", b""));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
