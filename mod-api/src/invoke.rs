//! Invocation: a container of services, and the seam between a service trait and a
//! transport.
//!
//! A trait marked with [`#[service]`](crate::service) implements [`Service`] for its
//! `dyn` type. That gives the container three things: the service's name, a client
//! ([`Service::client`]) that implements the trait by sending [`Call`]s over any
//! [`Transport`], and a dispatcher ([`Service::dispatcher`]) that turns a call's
//! bytes back into a method call on the real object.
//!
//! In the monolith, [`Container::get`] returns the provided object itself: a call
//! is a plain async call, nothing is serialized. A backend plugs a [`Hosting`]
//! into the container: the distributed package's serves the hosted services
//! over RPC, and `get` returns a client for the services this process does
//! not host.
//!
//! One [`DispatchTable`] per container holds the dispatchers of the services
//! provided there; servers read it per call. A handle from `get` takes
//! per-call options through [`ServiceExt`] (`handle.with_timeout(d).method(..)`,
//! a [`CallContext`]), which a client sends with each [`Call`] and which holds
//! for a local object too.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;

mod container;
mod context;
mod loopback;
mod table;

pub use container::{Container, Hosting};
pub use context::{CallContext, ServiceExt};
pub use loopback::Loopback;
pub use table::DispatchTable;

/// One remote call: which method of which service, and its encoded arguments.
#[derive(Debug, Clone)]
pub struct Call {
    /// The service's name ([`Service::NAME`]).
    pub service: &'static str,
    /// The method's name.
    pub method: &'static str,
    /// Whether the method is marked `#[idempotent]`: safe to retry on another instance.
    pub idempotent: bool,
    /// The arguments, encoded as a tuple with [`DefaultCodec`](crate::codec::DefaultCodec).
    pub payload: Vec<u8>,
    /// The caller's options for this call: its deadline (none set: the
    /// transport's default applies).
    pub context: CallContext,
}

/// Carries [`Call`]s to an instance of a service and brings back the encoded reply.
///
/// The reply is the method's `Result<T, E>` encoded with the default codec; a
/// transport error (no instance, deadline, broken connection) is an `Err` here and
/// becomes the method's own error type through `E: From<Error>`.
///
/// Its methods are `async fn`s. They go through `async_trait` so that the
/// trait stays usable as `dyn` (handles are `Arc<dyn …>`), which makes rustdoc
/// show them desugared (`Pin<Box<dyn Future …>>`, `'life0`); each method's
/// doc therefore ends with its plain `async fn` signature.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends `call` and waits for the encoded reply.
    ///
    /// Signature: `async fn call(&self, call: Call) -> Result<Vec<u8>>`
    async fn call(&self, call: Call) -> Result<Vec<u8>>;
}

/// The server side of a service: decodes a call, runs the method, encodes the reply.
///
/// Its methods are `async fn`s. They go through `async_trait` so that the
/// trait stays usable as `dyn` (handles are `Arc<dyn …>`), which makes rustdoc
/// show them desugared (`Pin<Box<dyn Future …>>`, `'life0`); each method's
/// doc therefore ends with its plain `async fn` signature.
#[async_trait]
pub trait Dispatch: Send + Sync {
    /// The service's name.
    fn service(&self) -> &'static str;

    /// The service's methods, in declaration order: what the server-side call
    /// metrics register their handles for. Generated dispatchers list them;
    /// the default lists none (calls are then measured as method `unknown`).
    fn methods(&self) -> &'static [MethodInfo] {
        &[]
    }

    /// Runs `method` with the encoded arguments; returns the encoded `Result<T, E>`.
    ///
    /// An unknown method is [`ErrorKind::NotFound`](crate::ErrorKind::NotFound);
    /// undecodable arguments are [`ErrorKind::Codec`](crate::ErrorKind::Codec).
    ///
    /// Signature: `async fn dispatch(&self, method: &str, payload: &[u8]) -> Result<Vec<u8>>`
    async fn dispatch(&self, method: &str, payload: &[u8]) -> Result<Vec<u8>>;
}

/// Describes one method of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// The method's name.
    pub name: &'static str,
    /// Marked `#[idempotent]`.
    pub idempotent: bool,
}

/// Implemented by `#[service]` for `dyn YourTrait`; ties a trait to its client and dispatcher.
pub trait Service: Send + Sync + 'static {
    /// The service's name, unique in a deployment (the trait's name unless given).
    const NAME: &'static str;
    /// The methods, in declaration order.
    const METHODS: &'static [MethodInfo];

    /// A client that implements the trait by sending calls over `transport`.
    fn client(transport: Arc<dyn Transport>) -> Arc<Self>;

    /// A dispatcher that serves calls with `service`.
    fn dispatcher(service: Arc<Self>) -> Arc<dyn Dispatch>;

    /// `service` with every call made under `context`, replacing the context
    /// it had: a client of the same transport, or, for a local object, a
    /// wrapper that runs each call under the context's deadline. Called
    /// through [`ServiceExt::with_context`].
    fn with_context(service: &Arc<Self>, context: CallContext) -> Arc<Self>;
}
