//! Invocation across processes: the [`Hosting`] that a distributed node plugs
//! into its [`Container`](mod_api::Container), and the per-service proxy transport.
//!
//! - `serve` starts this node's RPC server (once, on first use) on the
//!   container's [`DispatchTable`] (the one registry of dispatchers, read per
//!   call) and registers an instance of the service under a lease.
//! - `transport` returns a [`ServiceProxy`]: it follows the registry watch of the
//!   service, balances calls over `Up` instances (round robin or least in flight),
//!   skips `Draining`/`Down` ones, ejects outliers (an instance whose calls
//!   keep failing is left out for a growing while, `[invoke.outlier]`), and
//!   retries on another instance when the call is idempotent or provably
//!   never left this process. A call's deadline is
//!   the caller's (`handle.with_timeout(d)`) or `invoke.timeout`; it travels in
//!   the request frame and the server drops the call past it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::RpcConfig;
use async_trait::async_trait;
use mod_api::config::InvokeConfig;
use mod_api::{DispatchTable, Hosting, Instance, Lease, Registry, RegistryExt, Result, Transport};

use crate::rpc::{RpcConnections, RpcServer};

mod outlier;
mod proxy;

pub use proxy::ServiceProxy;

/// A distributed node's [`Hosting`]: serves hosted services over RPC, reaches the
/// rest through [`ServiceProxy`]s.
pub struct RpcHosting {
    node_id: String,
    invoke: InvokeConfig,
    rpc: RpcConfig,
    lease_ttl: Duration,
    registry: Arc<dyn Registry>,
    server: tokio::sync::Mutex<Option<Arc<RpcServer>>>,
    leases: Mutex<Vec<Lease>>,
    proxies: Mutex<HashMap<&'static str, Arc<ServiceProxy>>>,
    connections: Arc<RpcConnections>,
}

impl RpcHosting {
    /// The hosting of node `node_id`.
    pub fn new(
        node_id: String,
        invoke: InvokeConfig,
        rpc: RpcConfig,
        lease_ttl: Duration,
        registry: Arc<dyn Registry>,
    ) -> Self {
        let connections = Arc::new(RpcConnections::new(rpc.clone()));
        RpcHosting {
            node_id,
            invoke,
            rpc,
            lease_ttl,
            registry,
            server: tokio::sync::Mutex::new(None),
            leases: Mutex::new(Vec::new()),
            proxies: Mutex::new(HashMap::new()),
            connections,
        }
    }

    /// The address other nodes reach this node's RPC server at, once it serves.
    pub async fn rpc_address(&self) -> Option<String> {
        let server = self.server.lock().await;
        server.as_ref().map(|s| self.advertised(s))
    }

    fn advertised(&self, server: &RpcServer) -> String {
        self.rpc
            .advertise
            .clone()
            .unwrap_or_else(|| server.local_addr().to_string())
    }

    /// The RPC server, bound on first use to serve `table`.
    pub(crate) async fn server(&self, table: &DispatchTable) -> Result<Arc<RpcServer>> {
        let mut slot = self.server.lock().await;
        if let Some(server) = slot.as_ref() {
            return Ok(server.clone());
        }
        let server = Arc::new(RpcServer::bind(&self.rpc, table.clone()).await?);
        tracing::info!(node = %self.node_id, addr = %server.local_addr(), "rpc server listening");
        *slot = Some(server.clone());
        Ok(server)
    }

    /// Serves `table` (the server starts on first use) and registers this
    /// node as an `Up` instance of `service`, with `metadata` besides the
    /// node and listen address; the caller keeps the lease.
    pub(crate) async fn register(
        &self,
        service: &'static str,
        table: &DispatchTable,
        metadata: &[(&str, String)],
    ) -> Result<Lease> {
        let server = self.server(table).await?;
        let mut instance = Instance::new(service, self.node_id.clone(), self.advertised(&server));
        instance
            .metadata
            .insert("node".into(), self.node_id.clone());
        // Where it listens, for observers on its own host (a host agent's
        // probe) when the advertised address is another one (a proxy, NAT).
        instance
            .metadata
            .insert("listen".into(), server.local_addr().to_string());
        if let Some(site) = &self.invoke.site {
            instance.metadata.insert("site".into(), site.clone());
        }
        for (key, value) in metadata {
            instance.metadata.insert((*key).into(), value.clone());
        }
        instance.version = env!("CARGO_PKG_VERSION").into();
        self.registry
            .register_leased(instance, self.lease_ttl)
            .await
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The registry instances are registered in.
    pub(crate) fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// Deregisters every hosted instance, then drains and closes the RPC server.
    pub async fn shutdown(&self, grace: Duration) {
        let leases: Vec<Lease> =
            std::mem::take(&mut *self.leases.lock().unwrap_or_else(|e| e.into_inner()));
        for lease in leases {
            if let Err(e) = lease.deregister().await {
                tracing::warn!(error = %e, "deregister at shutdown failed; the lease will expire");
            }
        }
        let server = self.server.lock().await.take();
        if let Some(server) = server {
            server.shutdown(grace).await;
        }
    }
}

#[async_trait]
impl Hosting for RpcHosting {
    fn hosts(&self, service: &str) -> bool {
        self.invoke.hosts(service)
    }

    fn colocate(&self) -> bool {
        self.invoke.colocate
    }

    async fn serve(&self, service: &'static str, table: &DispatchTable) -> Result<()> {
        let lease = self.register(service, table, &[]).await?;
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lease);
        tracing::info!(service, node = %self.node_id, "serving");
        Ok(())
    }

    fn check_hosting(&self, provided: &[&'static str]) -> Result<()> {
        self.invoke.check_hosts(provided)?;
        let (hosts, calls): (Vec<&str>, Vec<&str>) =
            provided.iter().partition(|name| self.invoke.hosts(name));
        tracing::info!(node = %self.node_id, ?hosts, ?calls, "hosting checked: serving these services, calling the others through the registry");
        Ok(())
    }

    fn transport(&self, service: &'static str) -> Result<Arc<dyn Transport>> {
        let mut proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        let proxy = proxies
            .entry(service)
            .or_insert_with(|| {
                tracing::info!(service, node = %self.node_id, "calling service through the registry (not hosted here)");
                ServiceProxy::start(
                    service,
                    self.registry.clone(),
                    self.connections.clone(),
                    self.invoke.clone(),
                )
            })
            .clone();
        Ok(proxy)
    }
}
