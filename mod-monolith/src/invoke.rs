//! Invocation in one process: every service is hosted here and called
//! directly.
//!
//! [`LocalHosting`] is the monolith's [`Hosting`]: `get` returns the provided
//! object itself, so a call is a plain async call (nothing serialized, no
//! task, no lookup). Providing a service registers an instance of it, so the
//! registry lists what runs, as in the distributed package.
//!
//! A per-call deadline (`handle.with_timeout(d)`, see
//! [`ServiceExt`](mod_api::ServiceExt)) runs the call under a timer: past it the
//! method's future is dropped and the call returns
//! [`ErrorKind::Timeout`](mod_api::ErrorKind::Timeout). Without one, a local
//! call has no deadline (`invoke.timeout` is the default of remote calls).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mod_api::{
    DispatchTable, Error, Hosting, Instance, Lease, Registry, RegistryExt, Result, Transport,
};

/// The monolith's [`Hosting`]: hosts every service; providing one registers
/// it under a lease (held as long as this lives).
pub struct LocalHosting {
    registry: Arc<dyn Registry>,
    node_id: String,
    ttl: Duration,
    leases: Mutex<Vec<Lease>>,
}

impl std::fmt::Debug for LocalHosting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHosting")
            .field("node_id", &self.node_id)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl LocalHosting {
    /// Registers provided services in `registry` as instances of node
    /// `node_id`, under leases of `ttl`.
    pub fn new(registry: Arc<dyn Registry>, node_id: String, ttl: Duration) -> Self {
        LocalHosting {
            registry,
            node_id,
            ttl,
            leases: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Hosting for LocalHosting {
    fn hosts(&self, _service: &str) -> bool {
        true
    }

    async fn serve(&self, service: &'static str, _table: &DispatchTable) -> Result<()> {
        // Nothing to serve: callers get the object itself.
        let instance = Instance::new(service, self.node_id.clone(), "in-process");
        let lease = self.registry.register_leased(instance, self.ttl).await?;
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lease);
        Ok(())
    }

    fn transport(&self, service: &'static str) -> Result<Arc<dyn Transport>> {
        Err(Error::not_found(format!(
            "service {service} is not provided in this process (the monolith hosts every service in one process: provide it at start-up)"
        )))
    }
}
