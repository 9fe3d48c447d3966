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
    /// The backend (its store, a remote instance, the network) cannot be reached now.
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
    /// The call reached a process that does not own the service's state now
    /// (it moved or is moving, see [`state`](crate::state)). The call did not
    /// run: retry it on the current owner (the distributed proxy does).
    Moved,
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
                | ErrorKind::Moved
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
            ErrorKind::Moved => "moved",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// modkit's error: a kind, a message, a retryable flag, structured context
/// (`key: value` pairs such as a store's URL or the service and method of a
/// call) and an optional source.
///
/// `Display` prints all of it on one line: the kind, the message, the context
/// and the source chain, e.g.
/// `unavailable: cannot connect to the store (url: store://127.0.0.1:7000/): Connection refused (os error 111)`.
///
/// ```
/// use mod_api::{Error, ErrorKind};
///
/// let err = Error::unavailable("call failed")
///     .with_context("service", "shop.Catalog")
///     .with_context("method", "price")
///     .with_source(std::io::Error::other("connection reset"));
/// assert_eq!(err.kind(), ErrorKind::Unavailable);
/// assert_eq!(err.context_value("method"), Some("price"));
/// assert_eq!(
///     err.to_string(),
///     "unavailable: call failed (service: shop.Catalog, method: price): connection reset"
/// );
/// ```
pub struct Error {
    kind: ErrorKind,
    retryable: bool,
    message: Cow<'static, str>,
    // Context and source share one box, allocated only when either is
    // attached: a plain error stays 40 bytes and costs no allocation beyond
    // its message.
    extra: Option<Box<Extra>>,
}

#[derive(Default)]
struct Extra {
    context: Vec<(&'static str, String)>,
    source: Option<Source>,
}

impl Error {
    /// An error of `kind` with `message`; retryable as [`ErrorKind::default_retryable`] says.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            retryable: kind.default_retryable(),
            message: message.into(),
            extra: None,
        }
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.extra_mut().source = Some(source.into());
        self
    }

    /// Adds a `key: value` pair of context (a store's URL, the service, the
    /// method, the instance address…), shown by `Display` after the message.
    ///
    /// Call it where the error is made or passes an edge (`map_err`), so the
    /// cost is paid only when an error happens. A key given twice keeps both.
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.extra_mut().context.push((key, value.to_string()));
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

    /// The message, without context and source chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The context pairs, in the order they were added.
    pub fn context(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.extra
            .iter()
            .flat_map(|e| e.context.iter().map(|(k, v)| (*k, v.as_str())))
    }

    /// The value of the first context pair named `key`.
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.context().find(|(k, _)| *k == key).map(|(_, v)| v)
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

    /// A copy with the same kind, flag, message and context; the source chain
    /// becomes part of the message.
    ///
    /// Used where an error must be shared (single-flight loaders).
    pub fn to_detached(&self) -> Error {
        let mut copy =
            Error::new(self.kind, self.message_with_sources()).with_retryable(self.retryable);
        if let Some(extra) = &self.extra {
            if !extra.context.is_empty() {
                copy.extra_mut().context = extra.context.clone();
            }
        }
        copy
    }

    fn source_ref(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.extra
            .as_ref()
            .and_then(|e| e.source.as_deref())
            .map(|s| s as &(dyn std::error::Error + 'static))
    }

    /// The message, then the source chain, `": "`-separated.
    fn message_with_sources(&self) -> String {
        let mut text = self.message.to_string();
        self.write_sources(&mut text).ok();
        text
    }

    fn write_context(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for (i, (key, value)) in self.context().enumerate() {
            out.write_str(if i == 0 { " (" } else { ", " })?;
            write!(out, "{key}: {value}")?;
        }
        if self.context().next().is_some() {
            out.write_str(")")?;
        }
        Ok(())
    }

    fn write_sources(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let mut next = self.source_ref();
        let mut previous = String::new();
        while let Some(cause) = next {
            let text = match cause.downcast_ref::<Error>() {
                // A wrapped modkit error: its message and context only, since
                // its own Display would repeat the rest of the chain.
                Some(inner) => {
                    let mut text = inner.message.to_string();
                    inner.write_context(&mut text)?;
                    text
                }
                None => cause.to_string(),
            };
            // Many errors print their source inside their own text (some
            // client libraries do): such a cause would only repeat what is
            // already shown.
            if !previous.contains(&text) {
                write!(out, ": {text}")?;
            }
            previous = text;
            next = cause.source();
        }
        Ok(())
    }

    /// Message, context and source chain: what crosses the wire as the message.
    fn full_message(&self) -> String {
        let mut text = self.message.to_string();
        self.write_context(&mut text).ok();
        self.write_sources(&mut text).ok();
        text
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("message", &self.message)
            .field("retryable", &self.retryable);
        if let Some(extra) = &self.extra {
            if !extra.context.is_empty() {
                d.field("context", &extra.context);
            }
            if let Some(source) = &extra.source {
                d.field("source", source);
            }
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        self.write_context(f)?;
        self.write_sources(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source_ref()
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
        Ok(Error::new(wire.kind, wire.message).with_retryable(wire.retryable))
    }
}

#[cfg(test)]
mod tests;
