//! Registry: who provides which service, who consumes it, and notice of change.
//!
//! A provider [`Instance`] is registered under a lease with a TTL. The backend
//! removes an instance whose lease is not renewed within TTL plus one sweep, and
//! tells watchers. [`RegistryExt::register_leased`] returns a [`Lease`] that renews
//! itself in the background and deregisters when dropped.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{ErrorKind, Result};

/// Whether an instance takes new calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Status {
    /// Serving: takes new calls.
    #[default]
    Up,
    /// Finishing what it has; takes no new calls (cordoned, shutting down).
    Draining,
    /// Not serving.
    Down,
}

/// One provider instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The service's name.
    pub service: String,
    /// Unique id of this instance among the service's instances.
    pub id: String,
    /// Where it is reached (`host:port` for RPC; free-form in the monolith).
    pub address: String,
    /// Free-form labels (zone, host, …).
    pub metadata: BTreeMap<String, String>,
    /// Relative weight for load balancing.
    pub weight: u32,
    /// Whether it takes new calls.
    pub status: Status,
    /// The version of the code it runs.
    pub version: String,
}

impl Instance {
    /// An `Up` instance with weight 1, no metadata and version `0`.
    pub fn new(
        service: impl Into<String>,
        id: impl Into<String>,
        address: impl Into<String>,
    ) -> Self {
        Instance {
            service: service.into(),
            id: id.into(),
            address: address.into(),
            metadata: BTreeMap::new(),
            weight: 1,
            status: Status::Up,
            version: "0".into(),
        }
    }
}

/// A consumer of a service: who calls it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConsumerInfo {
    /// The consumed service.
    pub service: String,
    /// Who consumes it (a node or service id).
    pub consumer: String,
}

/// The instances of one service at one version of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The service's name.
    pub service: String,
    /// Increases with every change of this service's instances.
    pub version: u64,
    /// The instances, sorted by id.
    pub instances: Vec<Instance>,
}

/// The registry of one deployment.
///
/// Instances are visible on every node as soon as `register` returns.
///
/// Its methods are `async fn`s. They go through `async_trait` so that the
/// trait stays usable as `dyn` (handles are `Arc<dyn …>`), which makes rustdoc
/// show them desugared (`Pin<Box<dyn Future …>>`, `'life0`); each method's
/// doc therefore ends with its plain `async fn` signature.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Registers (or replaces) `instance` under a lease of `ttl`.
    ///
    /// Signature: `async fn register(&self, instance: Instance, ttl: Duration) -> Result<()>`
    async fn register(&self, instance: Instance, ttl: Duration) -> Result<()>;

    /// Renews the lease of an instance; [`ErrorKind::NotFound`] when it expired or was removed.
    ///
    /// Signature: `async fn heartbeat(&self, service: &str, id: &str) -> Result<()>`
    async fn heartbeat(&self, service: &str, id: &str) -> Result<()>;

    /// Removes an instance; `false` when it was not there.
    ///
    /// Signature: `async fn deregister(&self, service: &str, id: &str) -> Result<bool>`
    async fn deregister(&self, service: &str, id: &str) -> Result<bool>;

    /// Changes an instance's status (e.g. `Draining` to cordon it).
    ///
    /// Signature: `async fn set_status(&self, service: &str, id: &str, status: Status) -> Result<()>`
    async fn set_status(&self, service: &str, id: &str, status: Status) -> Result<()>;

    /// The live instances of `service`, sorted by id.
    ///
    /// Signature: `async fn lookup(&self, service: &str) -> Result<Vec<Instance>>`
    async fn lookup(&self, service: &str) -> Result<Vec<Instance>>;

    /// Names of all services with at least one live instance, sorted.
    ///
    /// Signature: `async fn services(&self) -> Result<Vec<String>>`
    async fn services(&self) -> Result<Vec<String>>;

    /// A stream of snapshots of `service`: the current one first, then a new one
    /// after every change. Versions strictly increase; changes close together
    /// (or missed while the backend was unreachable and then resynced) may arrive
    /// merged into one snapshot, so a watcher always converges on the current state.
    ///
    /// Signature: `async fn watch(&self, service: &str) -> Result<Watch>`
    async fn watch(&self, service: &str) -> Result<Watch>;

    /// Registers a consumer of a service (idempotent).
    ///
    /// Signature: `async fn register_consumer(&self, consumer: ConsumerInfo) -> Result<()>`
    async fn register_consumer(&self, consumer: ConsumerInfo) -> Result<()>;

    /// Removes a consumer; `false` when it was not there.
    ///
    /// Signature: `async fn deregister_consumer(&self, consumer: &ConsumerInfo) -> Result<bool>`
    async fn deregister_consumer(&self, consumer: &ConsumerInfo) -> Result<bool>;

    /// The consumers of `service`, sorted by consumer.
    ///
    /// Signature: `async fn consumers(&self, service: &str) -> Result<Vec<ConsumerInfo>>`
    async fn consumers(&self, service: &str) -> Result<Vec<ConsumerInfo>>;
}

/// Conveniences for every registry.
pub trait RegistryExt {
    /// Registers `instance` and keeps it alive: renews every `ttl / 3`, re-registers
    /// if the lease was lost, deregisters when the [`Lease`] is dropped.
    fn register_leased(
        &self,
        instance: Instance,
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<Lease>> + Send;
}

impl RegistryExt for Arc<dyn Registry> {
    async fn register_leased(&self, instance: Instance, ttl: Duration) -> Result<Lease> {
        self.register(instance.clone(), ttl).await?;
        let registry = self.clone();
        let (service, id) = (instance.service.clone(), instance.id.clone());
        let period = (ttl / 3).max(Duration::from_millis(10));
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                match registry.heartbeat(&instance.service, &instance.id).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        tracing::warn!(service = %instance.service, id = %instance.id, "lease lost; registering again");
                        if let Err(e) = registry.register(instance.clone(), ttl).await {
                            tracing::warn!(error = %e, "re-register failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, service = %instance.service, "heartbeat failed")
                    }
                }
            }
        });
        Ok(Lease {
            registry: self.clone(),
            service,
            id,
            heartbeat: Some(heartbeat),
        })
    }
}

/// A registered instance kept alive in the background; dropping it deregisters.
pub struct Lease {
    registry: Arc<dyn Registry>,
    service: String,
    id: String,
    heartbeat: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("service", &self.service)
            .field("id", &self.id)
            .finish()
    }
}

impl Lease {
    /// The service this lease is for.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The instance id this lease is for.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops renewing without deregistering: the instance expires after its TTL.
    /// (What a crashed process looks like to the registry.)
    pub fn abandon(mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    /// Stops renewing and deregisters now.
    pub async fn deregister(mut self) -> Result<bool> {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        self.registry.deregister(&self.service, &self.id).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(h) = self.heartbeat.take() else {
            return;
        };
        h.abort();
        let (registry, service, id) =
            (self.registry.clone(), self.service.clone(), self.id.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = registry.deregister(&service, &id).await {
                    tracing::warn!(error = %e, %service, %id, "deregister on drop failed; the lease will expire");
                }
            });
        }
    }
}

/// A stream of [`Snapshot`]s of one service. Ends when the backend shuts down.
///
/// Backends build it from a channel they feed (unbounded, so a slow watcher never
/// stalls the registry and no change is skipped; a backend drops the sender when
/// it sees the receiver closed). A backend never sends an empty snapshot because
/// of a transient error: it keeps the last good one.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::UnboundedReceiver<Snapshot>,
}

impl Watch {
    /// A watch fed by `rx`.
    pub fn new(rx: mpsc::UnboundedReceiver<Snapshot>) -> Self {
        Watch { rx }
    }

    /// The next snapshot, or `None` when the backend is gone.
    pub async fn next(&mut self) -> Option<Snapshot> {
        self.rx.recv().await
    }

    /// The next snapshot if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<Snapshot> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for Watch {
    type Item = Snapshot;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Snapshot>> {
        self.rx.poll_recv(cx)
    }
}

/// The registry's input checks, applied by the
/// [`CheckLayer`](crate::layer::CheckLayer) in front of every backend:
/// [`ErrorKind::InvalidInput`] (reported by the observe layer).
pub mod checks {
    use std::time::Duration;

    use crate::error::{Error, Result};
    use crate::name::check_name;

    use super::{ConsumerInfo, Instance};

    /// A service name.
    pub fn service(service: &str) -> Result<()> {
        check_name("service", service)
    }

    /// A service name and an instance id.
    pub fn instance_key(service: &str, id: &str) -> Result<()> {
        check_name("service", service)?;
        check_name("instance id", id)
    }

    /// What `register` receives.
    pub fn registration(instance: &Instance, ttl: Duration) -> Result<()> {
        instance_key(&instance.service, &instance.id)?;
        if ttl.is_zero() {
            return Err(Error::invalid_input(
                "a lease ttl must be greater than zero",
            ));
        }
        Ok(())
    }

    /// A consumer registration.
    pub fn consumer(consumer: &ConsumerInfo) -> Result<()> {
        check_name("service", &consumer.service)?;
        check_name("consumer", &consumer.consumer)
    }

    /// The error for an instance that is not (or no longer) registered.
    pub fn not_found(service: &str, id: &str) -> Error {
        Error::not_found(format!("no live instance {id} of service {service}"))
    }
}
