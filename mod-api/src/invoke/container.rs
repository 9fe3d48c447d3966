//! The [`Container`] of services and the [`Hosting`] seam a backend plugs into it.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::{DispatchTable, Service, Transport};
use crate::error::{Error, ErrorKind, Result};
use crate::layer::{ClientCalls, Layer};

/// Where services run: what a backend plugs into a [`Container`] to decide
/// which services this process hosts, to serve and register those, and to
/// reach the others.
///
/// The monolith's hosts every service and registers it (nothing to serve:
/// calls are direct); the distributed package's serves hosted services over
/// RPC and reaches the rest through a proxy per service.
///
/// Its methods are `async fn`s. They go through `async_trait` so that the
/// trait stays usable as `dyn` (handles are `Arc<dyn …>`), which makes rustdoc
/// show them desugared (`Pin<Box<dyn Future …>>`, `'life0`); each method's
/// doc therefore ends with its plain `async fn` signature.
#[async_trait]
pub trait Hosting: Send + Sync {
    /// Whether this process hosts (serves and registers) `service`.
    fn hosts(&self, service: &str) -> bool;

    /// Whether calls to a service hosted here skip the network.
    fn colocate(&self) -> bool {
        true
    }

    /// Starts serving `service`, whose dispatcher `table` holds, and
    /// registers this process as one of its instances. `table` is the
    /// container's (the same one on every call): a server reads it per call.
    ///
    /// Signature: `async fn serve(&self, service: &'static str, table: &DispatchTable) -> Result<()>`
    async fn serve(&self, service: &'static str, table: &DispatchTable) -> Result<()>;

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
    /// The provided objects (`Arc<S>` each), handed out by `get`.
    objects: RwLock<HashMap<&'static str, Box<dyn Any + Send + Sync>>>,
    /// Their dispatchers: the one table servers read.
    table: DispatchTable,
    /// Every name passed to `provide`, hosted here or not: what a host list
    /// is checked against.
    offered: RwLock<BTreeSet<&'static str>>,
    hosting: Option<Arc<dyn Hosting>>,
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
            .field("hosting", &self.hosting.is_some())
            .finish()
    }
}

impl Container {
    /// A container with no [`Hosting`]: every service must be provided in
    /// this process, and none is registered.
    pub fn new() -> Self {
        Container {
            objects: RwLock::default(),
            table: DispatchTable::new(),
            offered: RwLock::default(),
            hosting: None,
        }
    }

    /// A container whose services run where `hosting` decides.
    pub fn with_hosting(hosting: Arc<dyn Hosting>) -> Self {
        Container {
            hosting: Some(hosting),
            ..Self::new()
        }
    }

    /// Provides the implementation of service `S`.
    ///
    /// With a [`Hosting`] that does not host `S`, the object is dropped and
    /// callers reach another process; business code can therefore provide
    /// every service unconditionally and let configuration decide where each
    /// one runs.
    pub async fn provide<S: Service + ?Sized>(&self, service: Arc<S>) -> Result<()> {
        self.offered
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(S::NAME);
        if let Some(hosting) = &self.hosting {
            if !hosting.hosts(S::NAME) {
                tracing::debug!(service = S::NAME, "not hosted here; callers use a proxy");
                return Ok(());
            }
        }
        let dispatcher = S::dispatcher(service.clone());
        {
            // Under the objects' lock: `get` never sees one without the other.
            let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
            if objects.contains_key(S::NAME) || !self.table.insert_new(dispatcher) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("service {} is already provided", S::NAME),
                ));
            }
            objects.insert(S::NAME, Box::new(service));
        }
        if let Some(hosting) = &self.hosting {
            if let Err(err) = hosting.serve(S::NAME, &self.table).await {
                let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
                objects.remove(S::NAME);
                self.table.remove(S::NAME);
                return Err(err);
            }
        }
        tracing::debug!(service = S::NAME, "service provided");
        Ok(())
    }

    /// Provides a service whose calls go through `layer` and that the
    /// backend registers itself (a stateful service: only its current owner
    /// registers). Unlike [`provide`](Self::provide), the object is not
    /// handed out by [`get`](Self::get) in this process: callers here go
    /// through the transport too, so they reach the owner wherever it is.
    ///
    /// `Ok(false)` when the [`Hosting`] does not host `S` here (nothing is
    /// served; callers reach another process).
    pub fn provide_layered<S: Service + ?Sized>(
        &self,
        service: Arc<S>,
        layer: &dyn Layer<dyn super::Dispatch>,
    ) -> Result<bool> {
        self.offered
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(S::NAME);
        if !self.hosts::<S>() {
            return Ok(false);
        }
        if !self.table.insert_new(layer.layer(S::dispatcher(service))) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("service {} is already provided", S::NAME),
            ));
        }
        Ok(true)
    }

    /// Whether this process hosts service `S`, so that providing it serves it
    /// here: always without a [`Hosting`] and in the monolith; in the
    /// distributed package, when the configured host list names it (or there
    /// is no list).
    pub fn hosts<S: Service + ?Sized>(&self) -> bool {
        self.hosting.as_ref().is_none_or(|h| h.hosts(S::NAME))
    }

    /// Gets service `S`: the provided object itself when it is here, else a
    /// client. Per-call options (a deadline) are set on the handle with
    /// [`ServiceExt`](super::ServiceExt): `get::<dyn S>()?.with_timeout(d)`.
    ///
    /// A client's transport is wrapped in the client-side call layer
    /// ([`ClientCalls`]: span, WARN on failure, metrics). The object itself
    /// is called directly, so calls of a service in this process (the
    /// monolith's, colocated ones) are not measured.
    pub fn get<S: Service + ?Sized>(&self) -> Result<Arc<S>> {
        let colocate = self.hosting.as_ref().is_none_or(|h| h.colocate());
        if colocate {
            let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
            if let Some(object) = objects.get(S::NAME) {
                return object.downcast_ref::<Arc<S>>().cloned().ok_or_else(|| {
                    Error::new(
                        ErrorKind::TypeMismatch,
                        format!("service name {} is used by two traits", S::NAME),
                    )
                });
            }
        }
        match &self.hosting {
            Some(hosting) => {
                let transport = ClientCalls::of::<S>().layer(hosting.transport(S::NAME)?);
                Ok(S::client(transport))
            }
            None => Err(Error::not_found(format!(
                "service {} is not provided in this process",
                S::NAME
            ))),
        }
    }

    /// The dispatcher of a service provided here.
    pub fn dispatcher(&self, service: &str) -> Option<Arc<dyn super::Dispatch>> {
        self.table.get(service)
    }

    /// The table of the dispatchers provided here (what servers read).
    pub fn dispatch_table(&self) -> &DispatchTable {
        &self.table
    }

    /// Checks, once every service is provided, that the hosting configuration
    /// names only services this process provides, and logs (INFO) what it
    /// hosts and what it calls.
    ///
    /// A host list (`invoke.host`, `MODKIT_HOST`) naming a service never passed
    /// to [`provide`](Self::provide) is an [`ErrorKind::Config`] error that
    /// lists the names provided: without this check such a process would
    /// silently host nothing. Without a [`Hosting`], and in the monolith, every
    /// provided service is here and the check passes.
    pub fn check_hosting(&self) -> Result<()> {
        let offered: Vec<&'static str> = self
            .offered
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        match &self.hosting {
            Some(hosting) => hosting.check_hosting(&offered),
            None => {
                tracing::info!(hosts = ?offered, "all services in this process");
                Ok(())
            }
        }
    }

    /// Names of the services provided in this process, sorted.
    pub fn provided_names(&self) -> Vec<&'static str> {
        self.table.names()
    }
}
