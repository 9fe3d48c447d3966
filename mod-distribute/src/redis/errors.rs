//! How a redis-rs error becomes a modkit [`Error`]: which kind, and whether a
//! retry can help.
//!
//! - Connection trouble (I/O, dropped, refused) is `Unavailable`, a reply that
//!   did not come in time `Timeout`: both retryable.
//! - A server that cannot answer *now* (`LOADING` after a restart, `READONLY`
//!   during a failover, `MASTERDOWN`, `TRYAGAIN`, `CLUSTERDOWN`, `BUSY` script,
//!   `NOREPLICAS` from a primary short of replicas) is `Unavailable`,
//!   retryable.
//! - A reply saying the request itself is bad never becomes retryable: the same
//!   request fails the same way. Too big (`Protocol error: invalid bulk length`,
//!   `string exceeds maximum allowed size`, a value above the server's
//!   `proto-max-bulk-len` refused before the wire by [`super::Conn`]) is
//!   `PayloadTooLarge`; malformed (other protocol errors, syntax, arity, a
//!   number out of range, an invalid expire time) is `InvalidInput`.
//! - A script that found a stored record it cannot parse (`corrupt session
//!   record`) is `Codec`, as a value that fails to decode client-side is.
//! - A refused login (`NOAUTH`, `WRONGPASS`) is `Unauthenticated`.
//! - Anything else the server says is `Internal`, with its text.

use mod_api::{Error, ErrorKind};
use redis::{ErrorKind as RedisKind, RedisError, ServerErrorKind};

/// The description of the client-side refusal of an oversized argument.
pub(super) const TOO_LARGE: &str = "argument above the server's proto-max-bulk-len";

/// Maps a redis-rs error to modkit's: connection trouble and a server that
/// cannot answer now (`LOADING`, `READONLY`, …) are retryable `Unavailable`
/// (or `Timeout`); a request the server calls bad is `PayloadTooLarge` (too
/// big) or `InvalidInput`, never retryable; a corrupt stored record found by a
/// script is `Codec`; a refused login `Unauthenticated`; any other server
/// error `Internal`.
pub fn redis_error(err: RedisError) -> Error {
    let kind = classify(&err);
    // Debug, not warn: callers decide how loud a failure is (a sweeper retries
    // quietly). A bad request is the caller's news, so it is louder.
    match kind {
        ErrorKind::PayloadTooLarge | ErrorKind::InvalidInput => {
            tracing::warn!(error = %err, kind = %kind, "redis refused the request")
        }
        _ => tracing::debug!(error = %err, kind = %kind, "redis command failed"),
    }
    let message = match kind {
        ErrorKind::PayloadTooLarge => "redis: request too large",
        ErrorKind::InvalidInput => "redis: invalid request",
        ErrorKind::Codec => "redis: a stored record is corrupt",
        _ => "redis",
    };
    Error::new(kind, message).with_source(err)
}

/// The modkit kind of `err` (its retryable flag is the kind's default).
pub(super) fn classify(err: &RedisError) -> ErrorKind {
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    if err.kind() == RedisKind::Client && err.to_string().contains(TOO_LARGE) {
        return ErrorKind::PayloadTooLarge;
    }
    if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        return ErrorKind::Unavailable;
    }
    if err.kind() == RedisKind::AuthenticationFailed
        || matches!(err.code(), Some("NOAUTH" | "WRONGPASS"))
    {
        return ErrorKind::Unauthenticated;
    }
    match err.kind() {
        RedisKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::MasterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown,
        ) => return ErrorKind::Unavailable,
        // BUSY: a script runs too long; NOREPLICAS: a primary short of good
        // replicas (`min-replicas-to-write`, kept by the resilience layer)
        // refuses writes until they return or a failover moves it.
        RedisKind::Extension if matches!(err.code(), Some("BUSY" | "NOREPLICAS")) => {
            return ErrorKind::Unavailable
        }
        _ => {}
    }
    // Client-side trouble (a reply that does not parse, a wrong reply type)
    // is ours, whatever its text says.
    if !matches!(err.kind(), RedisKind::Server(_) | RedisKind::Extension) {
        return ErrorKind::Internal;
    }
    // The rest by the server's text (a script's error carries the inner one).
    // A script's `error_reply` text may be split into code and detail.
    let text = format!(
        "{} {} {err}",
        err.code().unwrap_or_default(),
        err.detail().unwrap_or_default()
    )
    .to_ascii_lowercase();
    if text.contains("corrupt session record") {
        ErrorKind::Codec
    } else if is_too_large(&text) {
        ErrorKind::PayloadTooLarge
    } else if is_bad_request(&text) {
        ErrorKind::InvalidInput
    } else {
        ErrorKind::Internal
    }
}

/// Whether a server error text says the request was too big.
pub(super) fn is_too_large(text: &str) -> bool {
    const SIGNS: [&str; 4] = [
        "invalid bulk length",
        "exceeds maximum allowed size",
        "too big",
        "too large",
    ];
    SIGNS.iter().any(|s| text.contains(s))
}

/// Whether a server error text says the request itself is malformed.
fn is_bad_request(text: &str) -> bool {
    const SIGNS: [&str; 6] = [
        "protocol error",
        "syntax error",
        "wrong number of arguments",
        "value is not an integer or out of range",
        "invalid expire time",
        "value is out of range",
    ];
    SIGNS.iter().any(|s| text.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, detail: &str) -> RedisError {
        let reply = format!("-{code} {detail}\r\n");
        let value = redis::parse_redis_value(reply.as_bytes()).expect("an error reply");
        match value {
            redis::Value::ServerError(e) => e.into(),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn bad_requests_are_not_retryable_and_outages_are() {
        let cases = [
            (
                server("ERR", "Protocol error: invalid bulk length"),
                ErrorKind::PayloadTooLarge,
            ),
            (
                server(
                    "ERR",
                    "string exceeds maximum allowed size (proto-max-bulk-len)",
                ),
                ErrorKind::PayloadTooLarge,
            ),
            (
                server("ERR", "Protocol error: invalid multibulk length"),
                ErrorKind::InvalidInput,
            ),
            (
                server("ERR", "invalid expire time in 'set' command"),
                ErrorKind::InvalidInput,
            ),
            (server("ERR", "syntax error"), ErrorKind::InvalidInput),
            (
                server(
                    "ERR",
                    "corrupt session record script: 1a2b, on @user_script:8.",
                ),
                ErrorKind::Codec,
            ),
            (
                server("LOADING", "Redis is loading the dataset in memory"),
                ErrorKind::Unavailable,
            ),
            (
                server("READONLY", "You can't write against a read only replica."),
                ErrorKind::Unavailable,
            ),
            (
                server("BUSY", "Redis is busy running a script."),
                ErrorKind::Unavailable,
            ),
            (
                server("NOREPLICAS", "Not enough good replicas to write."),
                ErrorKind::Unavailable,
            ),
            (
                server(
                    "WRONGTYPE",
                    "Operation against a key holding the wrong kind of value",
                ),
                ErrorKind::Internal,
            ),
            (
                RedisError::from((RedisKind::Client, TOO_LARGE, "2097152 bytes".into())),
                ErrorKind::PayloadTooLarge,
            ),
            (
                RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
                ErrorKind::Unavailable,
            ),
            (
                RedisError::from((RedisKind::Parse, "Protocol error", "bad reply".into())),
                ErrorKind::Internal,
            ),
        ];
        for (err, kind) in cases {
            let text = err.to_string();
            let mapped = redis_error(err);
            assert_eq!(mapped.kind(), kind, "{text}");
            assert_eq!(
                mapped.is_retryable(),
                kind == ErrorKind::Unavailable,
                "{text}"
            );
        }
    }
}
