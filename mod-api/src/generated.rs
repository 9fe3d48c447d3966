//! Helpers of the code `#[service]` generates (re-exported in `__private`).
//!
//! The macro checks every argument, result and error type with one static
//! assertion spanned at the user's type (`assert_wire`, `assert_service_error`).
//! The generated client and dispatcher then encode, decode and convert errors
//! through [`Tag`] with autoref dispatch: when a type has the trait, method
//! lookup picks the real impl (on `Tag<T>`); when it does not, it picks the
//! fallback (on `&Tag<T>`), which has no bound, so the generated code adds no
//! error of its own to the assertion's (one error per mistake). A fallback can
//! never run: a crate whose assertion fails does not compile.

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Selects an implementation by what `T` implements (see the module docs).
pub struct Tag<T>(PhantomData<fn() -> T>);

impl<T> Tag<T> {
    /// A tag for `T`.
    pub const fn new() -> Self {
        Tag(PhantomData)
    }
}

impl<T> Default for Tag<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The message of a fallback; unreachable, as the crate cannot compile.
const UNCHECKED: &str = "a modkit #[service] type failed its compile-time check";

/// Encodes a `T: Serialize`.
pub trait EncodeWire<T> {
    /// The codec bytes of `value`.
    fn encode_wire(&self, value: &T) -> Result<Vec<u8>>;
}

impl<T: Serialize> EncodeWire<T> for Tag<T> {
    fn encode_wire(&self, value: &T) -> Result<Vec<u8>> {
        crate::codec::encode(value)
    }
}

/// The fallback of [`EncodeWire`] (never runs).
pub trait EncodeUnchecked<T> {
    /// Fails.
    fn encode_wire(&self, value: &T) -> Result<Vec<u8>>;
}

impl<T> EncodeUnchecked<T> for &Tag<T> {
    fn encode_wire(&self, _: &T) -> Result<Vec<u8>> {
        Err(Error::internal(UNCHECKED))
    }
}

/// Decodes a `T: DeserializeOwned`.
pub trait DecodeWire<T> {
    /// `T` from its codec bytes.
    fn decode_wire(&self, bytes: &[u8]) -> Result<T>;
}

impl<T: DeserializeOwned> DecodeWire<T> for Tag<T> {
    fn decode_wire(&self, bytes: &[u8]) -> Result<T> {
        crate::codec::decode(bytes)
    }
}

/// The fallback of [`DecodeWire`] (never runs).
pub trait DecodeUnchecked<T> {
    /// Fails.
    fn decode_wire(&self, bytes: &[u8]) -> Result<T>;
}

impl<T> DecodeUnchecked<T> for &Tag<T> {
    fn decode_wire(&self, _: &[u8]) -> Result<T> {
        Err(Error::internal(UNCHECKED))
    }
}

/// Turns a transport failure into a method's error type `E: From<Error>`.
pub trait FromPlatform<E> {
    /// `E::from(err)`.
    fn wrap_platform(&self, err: Error) -> E;
}

impl<E: From<Error>> FromPlatform<E> for Tag<E> {
    fn wrap_platform(&self, err: Error) -> E {
        E::from(err)
    }
}

/// The fallback of [`FromPlatform`] (never runs).
pub trait FromPlatformUnchecked<E> {
    /// Unreachable: without `E: From<Error>` the crate does not compile.
    fn wrap_platform(&self, err: Error) -> E;
}

impl<E> FromPlatformUnchecked<E> for &Tag<E> {
    fn wrap_platform(&self, _: Error) -> E {
        // No value of `E` can be made here; the failed assertion keeps every
        // binary that contains this call from being built.
        unreachable!("{UNCHECKED}")
    }
}

/// What an argument or result type needs besides `Serialize` (checked only
/// once `Serialize` holds, so a type without serde derives gets one error).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross a modkit service boundary",
    label = "must implement serde's `Deserialize` (`DeserializeOwned`), and be `Send + 'static`",
    note = "add `#[derive(serde::Deserialize)]` to the type"
)]
pub trait WireIn: DeserializeOwned + Send + 'static {}
#[diagnostic::do_not_recommend]
impl<T: DeserializeOwned + Send + 'static> WireIn for T {}

/// An argument or result type must be `Serialize`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross a modkit service boundary",
    label = "must implement serde's `Serialize`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type (whichever is missing)"
)]
pub trait WireOut: Serialize {}
#[diagnostic::do_not_recommend]
impl<T: Serialize> WireOut for T {}

/// Checks a type that crosses the wire, for a `T: Serialize`: the rest of
/// [`Wire`](crate::Wire) is the method's bound, reported at the call.
pub trait CheckWire<T> {
    /// Compiles when `T` is [`Wire`](crate::Wire).
    fn check_wire(&self)
    where
        T: WireIn;
}

impl<T: Serialize> CheckWire<T> for Tag<T> {
    fn check_wire(&self)
    where
        T: WireIn,
    {
    }
}

/// [`CheckWire`] for a `T` without `Serialize`: that is the one error.
pub trait CheckWireUnserializable<T> {
    /// Does not compile: `T` is not `Serialize`.
    fn check_wire(&self)
    where
        T: WireOut;
}

impl<T> CheckWireUnserializable<T> for &Tag<T> {
    fn check_wire(&self)
    where
        T: WireOut,
    {
    }
}

/// A method's error type must absorb transport failures.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error type of a modkit service method",
    label = "must implement `From<modkit::Error>`: transport failures surface in the method's own error type",
    note = "use `modkit::AppError<{Self}>` as the error type (variants `App({Self})` and `Platform(modkit::Error)`)",
    note = "or, if `{Self}` is a type of your crate, add `impl From<modkit::Error> for {Self}`"
)]
pub trait FromPlatformError: From<Error> {}
#[diagnostic::do_not_recommend]
impl<T: From<Error>> FromPlatformError for T {}

/// Compile-time check of a method's error type (its wire bounds are checked
/// like any other type's).
pub const fn assert_from_platform<E: FromPlatformError>() {}

/// Runs `call` under `timeout` (none: as is). Past it the future is dropped
/// and the result is a [`Timeout`](crate::ErrorKind::Timeout) error naming the
/// call; nothing is allocated unless it passes. The local side of a
/// [`CallContext`](crate::invoke::CallContext)'s deadline.
pub async fn within<F: Future>(
    timeout: Option<Duration>,
    service: &'static str,
    method: &'static str,
    call: F,
) -> Result<F::Output> {
    let Some(timeout) = timeout else {
        return Ok(call.await);
    };
    tokio::time::timeout(timeout, call).await.map_err(|_| {
        Error::timeout(format!(
            "{service}::{method} did not finish within its deadline of {timeout:?}; dropped"
        ))
        .with_context("service", service)
        .with_context("method", method)
    })
}
