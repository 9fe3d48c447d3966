//! [`Loopback`]: the in-process transport for tests of services.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Call, DispatchTable, Service, Transport};
use crate::error::{Error, ErrorKind, Result};
use crate::generated::within;
use crate::layer::{ClientCalls, Layer};

/// The testing fake for services: a [`Transport`] that dispatches in this
/// process, through the codec.
///
/// It exercises exactly the bytes a remote call would carry (arguments,
/// results and errors encoded, the generated client and dispatcher), so a
/// unit test proves that a service works when distributed, without a shared
/// store or sockets; a monolith that wants isolation between callers and services can
/// use it too. A panic in a method becomes an [`ErrorKind::Panicked`] error for
/// that call, a service not served here is [`ErrorKind::NotFound`], and a
/// call past its own deadline (`client.with_timeout(d)`) is
/// [`ErrorKind::Timeout`], its method's task aborted, as over RPC. (Without a
/// deadline of its own a loopback call has none.)
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
    table: DispatchTable,
}

impl Loopback {
    /// An empty loopback.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `service` on this loopback.
    pub fn serve<S: Service + ?Sized>(&self, service: Arc<S>) {
        self.table.serve(service);
    }

    /// A client of `S` over this loopback, in the client-side call layer
    /// (as [`Container::get`](super::Container::get) gives one).
    pub fn client<S: Service + ?Sized>(&self) -> Arc<S> {
        S::client(ClientCalls::of::<S>().layer(Arc::new(self.clone())))
    }
}

#[async_trait]
impl Transport for Loopback {
    async fn call(&self, call: Call) -> Result<Vec<u8>> {
        let Call {
            service,
            method,
            payload,
            context,
            ..
        } = call;
        let dispatcher = self
            .table
            .get(service)
            .ok_or_else(|| Error::not_found(format!("no service {service}")))?;
        let task = tokio::spawn(async move { dispatcher.dispatch(method, &payload).await });
        // The call's deadline holds here as over RPC: past it the method's
        // future is dropped (aborting its task).
        let abort = task.abort_handle();
        match within(context.timeout(), service, method, task).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(join)) if join.is_panic() => {
                tracing::error!(service, method, "service method panicked");
                Err(Error::new(
                    ErrorKind::Panicked,
                    format!("{service}::{method} panicked"),
                ))
            }
            Ok(Err(_)) => Err(Error::new(ErrorKind::Cancelled, "call cancelled")),
            Err(timeout) => {
                abort.abort();
                Err(timeout)
            }
        }
    }
}
