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
//! is a plain async call, nothing is serialized. In the distributed package the
//! backend installs a [`Remote`], and `get` returns a client for services this
//! process does not host.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};

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
    /// A deadline for this call; `None` uses the transport's default.
    pub timeout: Option<Duration>,
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

    /// Runs `method` with the encoded arguments; returns the encoded `Result<T, E>`.
    ///
    /// An unknown method is [`ErrorKind::NotFound`]; undecodable arguments are
    /// [`ErrorKind::Codec`].
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
}

/// What the distributed backend plugs into a [`Container`].
///
/// Its methods are `async fn`s. They go through `async_trait` so that the
/// trait stays usable as `dyn` (handles are `Arc<dyn …>`), which makes rustdoc
/// show them desugared (`Pin<Box<dyn Future …>>`, `'life0`); each method's
/// doc therefore ends with its plain `async fn` signature.
#[async_trait]
pub trait Remote: Send + Sync {
    /// Whether this process hosts (serves and registers) `service`.
    fn hosts(&self, service: &str) -> bool;

    /// Whether calls to a service hosted here skip the network.
    fn colocate(&self) -> bool {
        true
    }

    /// Starts serving `service` and registers this process as one of its instances.
    ///
    /// Signature: `async fn serve(&self, service: &'static str, dispatcher: Arc<dyn Dispatch>) -> Result<()>`
    async fn serve(&self, service: &'static str, dispatcher: Arc<dyn Dispatch>) -> Result<()>;

    /// A transport that reaches instances of `service` elsewhere.
    fn transport(&self, service: &'static str) -> Result<Arc<dyn Transport>>;

    /// Checks this process's hosting configuration against the services
    /// business code `provided` (hosted or not, sorted) and logs what the
    /// process hosts and calls; see [`Container::check_hosting`].
    fn check_hosting(&self, provided: &[&'static str]) -> Result<()> {
        let _ = provided;
        Ok(())
    }
}

struct Provided {
    object: Box<dyn Any + Send + Sync>,
    dispatcher: Arc<dyn Dispatch>,
}

/// The container of services: `provide` them by trait, `get` them by trait.
///
/// ```
/// use std::sync::Arc;
/// use mod_api::{async_trait, service, Container, Error};
///
/// #[service(crate = mod_api)]
/// pub trait Greeter {
///     async fn greet(&self, name: String) -> Result<String, Error>;
/// }
///
/// struct English;
/// #[async_trait]
/// impl Greeter for English {
///     async fn greet(&self, name: String) -> Result<String, Error> {
///         Ok(format!("hello, {name}"))
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let container = Container::new();
/// container.provide::<dyn Greeter>(Arc::new(English)).await?;
/// let greeter = container.get::<dyn Greeter>()?;
/// assert_eq!(greeter.greet("ada".into()).await?, "hello, ada");
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
pub struct Container {
    provided: RwLock<HashMap<&'static str, Provided>>,
    /// Every name passed to `provide`, hosted here or not: what a host list
    /// is checked against.
    offered: RwLock<std::collections::BTreeSet<&'static str>>,
    remote: Option<Arc<dyn Remote>>,
}

impl Default for Container {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("provided", &self.provided_names())
            .field("remote", &self.remote.is_some())
            .finish()
    }
}

impl Container {
    /// A container with no remote: every service must be provided in this process.
    pub fn new() -> Self {
        Container {
            provided: RwLock::new(HashMap::new()),
            offered: RwLock::default(),
            remote: None,
        }
    }

    /// A container that reaches services it does not host through `remote`.
    pub fn with_remote(remote: Arc<dyn Remote>) -> Self {
        Container {
            provided: RwLock::new(HashMap::new()),
            offered: RwLock::default(),
            remote: Some(remote),
        }
    }

    /// Provides the implementation of service `S`.
    ///
    /// With a [`Remote`] that does not host `S`, the object is dropped and callers
    /// reach another process; business code can therefore provide every service
    /// unconditionally and let configuration decide where each one runs.
    pub async fn provide<S: Service + ?Sized>(&self, service: Arc<S>) -> Result<()> {
        self.offered
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(S::NAME);
        if let Some(remote) = &self.remote {
            if !remote.hosts(S::NAME) {
                tracing::debug!(service = S::NAME, "not hosted here; callers use a proxy");
                return Ok(());
            }
        }
        let dispatcher = S::dispatcher(service.clone());
        {
            let mut map = self.provided.write().unwrap_or_else(|e| e.into_inner());
            if map.contains_key(S::NAME) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("service {} is already provided", S::NAME),
                ));
            }
            map.insert(
                S::NAME,
                Provided {
                    object: Box::new(service),
                    dispatcher: dispatcher.clone(),
                },
            );
        }
        if let Some(remote) = &self.remote {
            if let Err(err) = remote.serve(S::NAME, dispatcher).await {
                self.provided
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(S::NAME);
                return Err(err);
            }
        }
        tracing::debug!(service = S::NAME, "service provided");
        Ok(())
    }

    /// Whether this process hosts service `S`, so that providing it serves it
    /// here: always without a [`Remote`] and in the monolith; in the
    /// distributed package, when the configured host list names it (or there
    /// is no list).
    pub fn hosts<S: Service + ?Sized>(&self) -> bool {
        self.remote.as_ref().is_none_or(|r| r.hosts(S::NAME))
    }

    /// Gets service `S`: the provided object itself when it is here, else a client.
    pub fn get<S: Service + ?Sized>(&self) -> Result<Arc<S>> {
        let colocate = self.remote.as_ref().is_none_or(|r| r.colocate());
        if colocate {
            let map = self.provided.read().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = map.get(S::NAME) {
                return p.object.downcast_ref::<Arc<S>>().cloned().ok_or_else(|| {
                    Error::new(
                        ErrorKind::TypeMismatch,
                        format!("service name {} is used by two traits", S::NAME),
                    )
                });
            }
        }
        match &self.remote {
            Some(remote) => Ok(S::client(remote.transport(S::NAME)?)),
            None => Err(Error::not_found(format!(
                "service {} is not provided in this process",
                S::NAME
            ))),
        }
    }

    /// The dispatcher of a service provided here (used by RPC servers).
    pub fn dispatcher(&self, service: &str) -> Option<Arc<dyn Dispatch>> {
        self.provided
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .map(|p| p.dispatcher.clone())
    }

    /// Checks, once every service is provided, that the hosting configuration
    /// names only services this process provides, and logs (INFO) what it
    /// hosts and what it calls.
    ///
    /// A host list (`invoke.host`, `MODKIT_HOST`) naming a service never passed
    /// to [`provide`](Self::provide) is an [`ErrorKind::Config`] error that
    /// lists the names provided: without this check such a process would
    /// silently host nothing. Without a [`Remote`] (the monolith) every
    /// provided service is here and the check passes.
    pub fn check_hosting(&self) -> Result<()> {
        let offered: Vec<&'static str> = self
            .offered
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        match &self.remote {
            Some(remote) => remote.check_hosting(&offered),
            None => {
                tracing::info!(hosts = ?offered, "all services in this process");
                Ok(())
            }
        }
    }

    /// Names of the services provided in this process, sorted.
    pub fn provided_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self
            .provided
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        names.sort_unstable();
        names
    }
}

/// The testing fake for services: a [`Transport`] that dispatches in this
/// process, through the codec.
///
/// It exercises exactly the bytes a remote call would carry (arguments,
/// results and errors encoded, the generated client and dispatcher), so a
/// unit test proves that a service works when distributed, without Redis or
/// sockets; a monolith that wants isolation between callers and services can
/// use it too. A panic in a method becomes an [`ErrorKind::Panicked`] error for
/// that call, and a service not served here is [`ErrorKind::NotFound`].
///
/// A test of a service through the loopback:
///
/// ```
/// use std::sync::Arc;
/// use mod_api::{async_trait, service, Error, ErrorKind, Loopback};
///
/// #[service(crate = mod_api)]
/// pub trait Stock {
///     async fn reserve(&self, sku: String, qty: u32) -> Result<u32, Error>;
/// }
///
/// struct Shelf;
///
/// #[async_trait]
/// impl Stock for Shelf {
///     async fn reserve(&self, sku: String, qty: u32) -> Result<u32, Error> {
///         match qty {
///             0 => Err(Error::invalid_input(format!("reserve 0 of {sku}"))),
///             n => Ok(n),
///         }
///     }
/// }
///
/// #[tokio::test]
/// # async fn _attribute_shown_only() {}
/// async fn reserve_survives_the_wire() {
///     let loopback = Loopback::new();
///     loopback.serve::<dyn Stock>(Arc::new(Shelf));
///     let stock = loopback.client::<dyn Stock>();
///     assert_eq!(stock.reserve("tea".into(), 2).await.unwrap(), 2);
///     let err = stock.reserve("tea".into(), 0).await.unwrap_err();
///     assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// }
/// # fn main() {
/// #     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// #     rt.block_on(reserve_survives_the_wire());
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Loopback {
    dispatchers: Arc<RwLock<HashMap<&'static str, Arc<dyn Dispatch>>>>,
}

impl Loopback {
    /// An empty loopback.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `service` on this loopback.
    pub fn serve<S: Service + ?Sized>(&self, service: Arc<S>) {
        self.dispatchers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(S::NAME, S::dispatcher(service));
    }

    /// A client of `S` over this loopback.
    pub fn client<S: Service + ?Sized>(&self) -> Arc<S> {
        S::client(Arc::new(self.clone()))
    }
}

#[async_trait]
impl Transport for Loopback {
    async fn call(&self, call: Call) -> Result<Vec<u8>> {
        let dispatcher = self
            .dispatchers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(call.service)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no service {}", call.service)))?;
        let Call {
            method, payload, ..
        } = call;
        let task = tokio::spawn(async move { dispatcher.dispatch(method, &payload).await });
        match task.await {
            Ok(reply) => reply,
            Err(join) if join.is_panic() => {
                tracing::error!(service = call.service, method, "service method panicked");
                Err(Error::new(
                    ErrorKind::Panicked,
                    format!("{}::{} panicked", call.service, method),
                ))
            }
            Err(_) => Err(Error::new(ErrorKind::Cancelled, "call cancelled")),
        }
    }
}
