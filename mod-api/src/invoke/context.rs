//! The per-call context: what a caller sets for the calls of one handle.

use std::sync::Arc;
use std::time::Duration;

use super::Service;

/// What a caller attaches to the calls made through one service handle: a
/// deadline now; room for metadata (a trace id, …) later, hence
/// `#[non_exhaustive]` and builder methods.
///
/// Empty by default: a call then has the deadline of its transport's
/// configuration (`invoke.timeout` over RPC) or, called in process, none.
/// Building, cloning and carrying an empty context allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallContext {
    timeout: Option<Duration>,
}

impl CallContext {
    /// An empty context: every default applies.
    pub const fn new() -> Self {
        CallContext { timeout: None }
    }

    /// This context with a deadline of `timeout` for each call, counted from
    /// the moment the call starts.
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The deadline of each call, if one is set.
    pub const fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// Per-call options on a service handle (`Arc<dyn YourService>`, from
/// [`Container::get`](super::Container::get), a [`Loopback`](super::Loopback)
/// or a generated client): `greeter.with_timeout(d).greet(..)`.
///
/// The returned handle makes every call under the given context; the handle
/// it came from is unchanged. Setting a context replaces the previous one
/// (the last `with_timeout` wins), whatever the handle is:
///
/// - a client (another process): the deadline travels with the request, the
///   client gives up at it with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout),
///   and the server drops the method's future past it;
/// - the provided object itself (the monolith, or a colocated service): the
///   call runs under a timer; at the deadline its future is dropped (the
///   method stops at its next `.await`; work it spawned elsewhere goes on)
///   and the call returns a `Timeout` error in the method's error type.
///
/// Cost: making the handle allocates one `Arc`, so keep it for the calls that
/// share the options rather than making one per call. Calls through a client
/// cost what they did (the context is copied into each [`Call`](super::Call));
/// through a local object, one boxed future and a timer more per call.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use mod_api::{async_trait, service, Container, Error, ErrorKind, ServiceExt};
///
/// #[service(crate = mod_api)]
/// pub trait Slow {
///     async fn wait(&self, ms: u64) -> Result<u64, Error>;
/// }
///
/// struct Sleeper;
/// #[async_trait]
/// impl Slow for Sleeper {
///     async fn wait(&self, ms: u64) -> Result<u64, Error> {
///         tokio::time::sleep(Duration::from_millis(ms)).await;
///         Ok(ms)
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let container = Container::new();
/// container.provide::<dyn Slow>(Arc::new(Sleeper)).await?;
/// let slow = container.get::<dyn Slow>()?;
/// let err = slow.with_timeout(Duration::from_millis(10)).wait(1_000).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Timeout);
/// assert_eq!(slow.wait(1).await?, 1); // the handle it came from has no deadline
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
pub trait ServiceExt: Sized {
    /// This handle with every call made under `context`.
    fn with_context(&self, context: CallContext) -> Self;

    /// This handle with a deadline of `timeout` on each call.
    fn with_timeout(&self, timeout: Duration) -> Self {
        self.with_context(CallContext::new().with_timeout(timeout))
    }
}

impl<S: Service + ?Sized> ServiceExt for Arc<S> {
    fn with_context(&self, context: CallContext) -> Self {
        S::with_context(self, context)
    }
}
