//! The one error type of modkit.
//!
//! Every operation of every building block returns [`Result<T>`]. An [`Error`]
//! carries an [`ErrorKind`] (what went wrong, for matching), a retryable flag
//! (whether the same call may succeed if tried again), a message, and an
//! optional source. Errors cross the RPC boundary: they serialize as kind,
//! message and retryable flag (the source chain is folded into the message).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `Result` with modkit's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong. New kinds may be added in minor releases.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The named thing (service, instance, session, message, method) does not exist.
    NotFound,
    /// The thing already exists (a service provided twice).
    AlreadyExists,
    /// A concurrent change won: re-read and try again (session version check).
    Conflict,
    /// The operation did not finish before its deadline or timeout.
    Timeout,
    /// The backend (Redis, a remote instance, the network) cannot be reached now.
    Unavailable,
    /// A queue is at capacity and its backlog policy rejected the message.
    QueueFull,
    /// The caller passed something invalid (empty name, zero capacity, …).
    InvalidInput,
    /// A value could not be encoded or decoded.
    Codec,
    /// A frame or value is larger than the configured maximum.
    PayloadTooLarge,
    /// A name is already in use with a different value type.
    TypeMismatch,
    /// Configuration could not be read or is invalid.
    Config,
    /// An I/O error (files, sockets).
    Io,
    /// A service method panicked; the call failed, the server lives on.
    Panicked,
    /// The call was cancelled by its caller.
    Cancelled,
    /// Authentication failed or is missing.
    Unauthenticated,
    /// The component was shut down.
    Closed,
    /// A bug or an unexpected state inside modkit.
    Internal,
}

impl ErrorKind {
    /// Whether errors of this kind are, by default, worth retrying.
    pub const fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Conflict
                | ErrorKind::Timeout
                | ErrorKind::Unavailable
                | ErrorKind::QueueFull
        )
    }

    /// A short lower-case name, stable for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Codec => "codec",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::TypeMismatch => "type_mismatch",
            ErrorKind::Config => "config",
            ErrorKind::Io => "io",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Closed => "closed",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// modkit's error: a kind, a message, a retryable flag and an optional source.
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    retryable: bool,
    source: Option<Source>,
}

impl Error {
    /// An error of `kind` with `message`; retryable as [`ErrorKind::default_retryable`] says.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            message: message.into(),
            retryable: kind.default_retryable(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Overrides the retryable flag.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the same call may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The message, without the source chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Shorthand for [`ErrorKind::Timeout`].
    pub fn timeout(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// Shorthand for [`ErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Shorthand for [`ErrorKind::Codec`].
    pub fn codec(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Codec, message)
    }

    /// Shorthand for [`ErrorKind::Closed`].
    pub fn closed(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Closed, message)
    }

    /// Shorthand for [`ErrorKind::Config`].
    pub fn config(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// A copy with the same kind, flag and message; the source becomes part of the message.
    ///
    /// Used where an error must be shared (single-flight loaders) or sent over the wire.
    pub fn to_detached(&self) -> Error {
        Error {
            kind: self.kind,
            message: Cow::Owned(self.full_message()),
            retryable: self.retryable,
            source: None,
        }
    }

    fn full_message(&self) -> String {
        let mut text = self.message.to_string();
        let mut next = self.source.as_deref().map(|s| s as &dyn std::error::Error);
        while let Some(cause) = next {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            next = cause.source();
        }
        text
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("message", &self.message)
            .field("retryable", &self.retryable);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => ErrorKind::Unavailable,
            _ => ErrorKind::Io,
        };
        Error::new(kind, "i/o error").with_source(err)
    }
}

#[derive(Serialize, Deserialize)]
struct WireError {
    kind: ErrorKind,
    message: String,
    retryable: bool,
}

impl Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireError {
            kind: self.kind,
            message: self.full_message(),
            retryable: self.retryable,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireError::deserialize(deserializer)?;
        Ok(Error {
            kind: wire.kind,
            message: Cow::Owned(wire.message),
            retryable: wire.retryable,
            source: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_follows_kind_unless_overridden() {
        assert!(Error::timeout("slow").is_retryable());
        assert!(!Error::not_found("gone").is_retryable());
        assert!(Error::not_found("gone").with_retryable(true).is_retryable());
    }

    #[test]
    fn serialization_keeps_kind_flag_and_source_text() {
        let io = std::io::Error::other("disk on fire");
        let err = Error::new(ErrorKind::Io, "spill failed").with_source(io);
        let bytes = crate::codec::encode(&err).unwrap();
        let back: Error = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back.kind(), ErrorKind::Io);
        assert!(!back.is_retryable());
        assert_eq!(back.message(), "spill failed: disk on fire");
    }
}
