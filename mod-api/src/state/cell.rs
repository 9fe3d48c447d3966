//! [`StateCell`]: a service's [`Stateful`] state behind bytes, for backends.

use std::sync::Arc;

use super::Stateful;
use crate::codec::{decode, encode};
use crate::error::{Error, Result};
use crate::BoxFuture;

/// A [`Stateful`] service seen as bytes: what backends store and move.
pub trait StateCell: Send + Sync {
    /// The state's format version ([`Stateful::VERSION`]).
    fn version(&self) -> u32;

    /// The current state, encoded with the default codec.
    fn checkpoint(&self) -> BoxFuture<'_, Result<Vec<u8>>>;

    /// Restores from `bytes`, a checkpoint of format `version`. Another
    /// version than [`version`](Self::version), or bytes that do not decode,
    /// is a [`Codec`](crate::ErrorKind::Codec) error and leaves the state as
    /// it was.
    fn restore<'a>(&'a self, version: u32, bytes: &'a [u8]) -> BoxFuture<'a, Result<()>>;
}

/// The [`StateCell`] of a [`Stateful`] `T`.
pub struct TypedCell<T>(pub Arc<T>);

impl<T: Stateful> StateCell for TypedCell<T> {
    fn version(&self) -> u32 {
        T::VERSION
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<Vec<u8>>> {
        Box::pin(async move { encode(&self.0.checkpoint().await?) })
    }

    fn restore<'a>(&'a self, version: u32, bytes: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if version != T::VERSION {
                return Err(Error::codec(format!(
                    "checkpoint of state version {version}, but the service reads version {}",
                    T::VERSION
                )));
            }
            let state: T::State = decode(bytes)?;
            self.0.restore(state).await
        })
    }
}
