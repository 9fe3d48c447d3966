//! Invocation across processes: the [`Remote`] that a distributed node plugs
//! into its [`Container`](mod_api::Container), and the per-service proxy transport.
//!
//! - `serve` starts this node's RPC server (once, on first use), adds the
//!   service's dispatcher to it and registers an instance under a lease.
//! - `transport` returns a [`ServiceProxy`]: it follows the registry watch of the
//!   service, balances calls over `Up` instances (round robin or least in flight),
//!   skips `Draining`/`Down` ones, and retries on another instance when the call
//!   is idempotent or provably never left this process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mod_api::config::{Balance, InvokeConfig, RpcConfig};
use mod_api::{
    Call, Dispatch, Error, ErrorKind, Instance, Lease, Registry, RegistryExt, Remote, Result,
    Status, Transport,
};
use tokio::sync::watch;

use crate::rpc::{not_sent, RpcConnections, RpcServer};

type Dispatchers = Arc<RwLock<HashMap<String, Arc<dyn Dispatch>>>>;

/// A distributed node's [`Remote`]: serves hosted services over RPC, reaches the
/// rest through [`ServiceProxy`]s.
pub struct DistributedRemote {
    node_id: String,
    invoke: InvokeConfig,
    rpc: RpcConfig,
    lease_ttl: Duration,
    registry: Arc<dyn Registry>,
    dispatchers: Dispatchers,
    server: tokio::sync::Mutex<Option<Arc<RpcServer>>>,
    leases: Mutex<Vec<Lease>>,
    proxies: Mutex<HashMap<&'static str, Arc<ServiceProxy>>>,
    connections: Arc<RpcConnections>,
}

impl DistributedRemote {
    /// A remote for node `node_id`.
    pub fn new(
        node_id: String,
        invoke: InvokeConfig,
        rpc: RpcConfig,
        lease_ttl: Duration,
        registry: Arc<dyn Registry>,
    ) -> Self {
        let connections = Arc::new(RpcConnections::new(rpc.clone()));
        DistributedRemote {
            node_id,
            invoke,
            rpc,
            lease_ttl,
            registry,
            dispatchers: Arc::default(),
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

    async fn server(&self) -> Result<Arc<RpcServer>> {
        let mut slot = self.server.lock().await;
        if let Some(server) = slot.as_ref() {
            return Ok(server.clone());
        }
        let dispatchers = self.dispatchers.clone();
        let lookup = Arc::new(move |service: &str| {
            dispatchers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(service)
                .cloned()
        });
        let server = Arc::new(RpcServer::bind(&self.rpc, lookup).await?);
        tracing::info!(node = %self.node_id, addr = %server.local_addr(), "rpc server listening");
        *slot = Some(server.clone());
        Ok(server)
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
impl Remote for DistributedRemote {
    fn hosts(&self, service: &str) -> bool {
        self.invoke.hosts(service)
    }

    fn colocate(&self) -> bool {
        self.invoke.colocate
    }

    async fn serve(&self, service: &'static str, dispatcher: Arc<dyn Dispatch>) -> Result<()> {
        let server = self.server().await?;
        self.dispatchers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.to_owned(), dispatcher);
        let mut instance = Instance::new(service, self.node_id.clone(), self.advertised(&server));
        instance
            .metadata
            .insert("node".into(), self.node_id.clone());
        instance.version = env!("CARGO_PKG_VERSION").into();
        let lease = self
            .registry
            .register_leased(instance, self.lease_ttl)
            .await?;
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lease);
        tracing::info!(service, node = %self.node_id, "serving");
        Ok(())
    }

    fn transport(&self, service: &'static str) -> Result<Arc<dyn Transport>> {
        let mut proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        let proxy = proxies
            .entry(service)
            .or_insert_with(|| {
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

/// The client side of one service: follows its instances, balances, retries.
pub struct ServiceProxy {
    service: &'static str,
    config: InvokeConfig,
    instances: watch::Receiver<Option<Arc<Vec<Instance>>>>,
    connections: Arc<RpcConnections>,
    next: AtomicUsize,
    in_flight: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    failed: Mutex<HashMap<String, Instant>>,
}

/// How long an instance whose connection failed is skipped.
const FAILED_BACKOFF: Duration = Duration::from_secs(2);

impl ServiceProxy {
    /// A proxy that follows `registry`'s watch of `service` in the background.
    pub fn start(
        service: &'static str,
        registry: Arc<dyn Registry>,
        connections: Arc<RpcConnections>,
        config: InvokeConfig,
    ) -> Arc<ServiceProxy> {
        let (tx, rx) = watch::channel(None);
        let proxy = Arc::new(ServiceProxy {
            service,
            config,
            instances: rx,
            connections,
            next: AtomicUsize::new(0),
            in_flight: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        });
        tokio::spawn(follow(service, registry, tx));
        proxy
    }

    /// The `Up` instances not recently failed (all `Up` ones if every one failed).
    fn candidates(&self, list: &[Instance]) -> Vec<Instance> {
        let up: Vec<Instance> = list
            .iter()
            .filter(|i| i.status == Status::Up)
            .cloned()
            .collect();
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let healthy: Vec<Instance> = up
            .iter()
            .filter(|i| {
                failed
                    .get(&i.address)
                    .is_none_or(|t| t.elapsed() > FAILED_BACKOFF)
            })
            .cloned()
            .collect();
        if healthy.is_empty() {
            up
        } else {
            healthy
        }
    }

    fn counter(&self, address: &str) -> Arc<AtomicUsize> {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(address.to_owned())
            .or_default()
            .clone()
    }

    fn pick<'a>(&self, candidates: &'a [Instance], tried: &[String]) -> Option<&'a Instance> {
        let fresh: Vec<&Instance> = candidates
            .iter()
            .filter(|i| !tried.contains(&i.address))
            .collect();
        if fresh.is_empty() {
            return None;
        }
        match self.config.balance {
            Balance::RoundRobin => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                Some(fresh[n % fresh.len()])
            }
            Balance::LeastInFlight => fresh
                .into_iter()
                .min_by_key(|i| self.counter(&i.address).load(Ordering::Relaxed)),
        }
    }

    async fn instances(&self, deadline: Instant) -> Result<Arc<Vec<Instance>>> {
        if let Some(list) = self.instances.borrow().as_ref() {
            return Ok(list.clone());
        }
        let mut rx = self.instances.clone();
        let wait = async move { rx.wait_for(Option::is_some).await.map(|list| list.clone()) };
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(list)) => Ok(list.unwrap_or_default()),
            Ok(Err(_)) => Err(Error::closed("the registry watch ended")),
            Err(_) => Err(Error::unavailable(format!(
                "no snapshot of service {} from the registry before the deadline",
                self.service
            ))),
        }
    }
}

#[async_trait]
impl Transport for ServiceProxy {
    async fn call(&self, call: Call) -> Result<Vec<u8>> {
        let timeout = call.timeout.unwrap_or(self.config.timeout);
        let deadline = Instant::now() + timeout;
        let list = self.instances(deadline).await?;
        let candidates = self.candidates(&list);
        let mut tried: Vec<String> = Vec::new();
        let mut last_error = None;
        let attempts = 1 + self.config.retries as usize;
        while tried.len() < attempts {
            let Some(instance) = self.pick(&candidates, &tried) else {
                break;
            };
            let address = instance.address.clone();
            tried.push(address.clone());
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::timeout(format!(
                    "{}::{} deadline passed",
                    call.service, call.method
                )));
            }
            let counter = self.counter(&address);
            counter.fetch_add(1, Ordering::Relaxed);
            let result = match self.connections.get(&address).await {
                Ok(client) => client.call(call.clone(), remaining).await,
                Err(e) => Err(e),
            };
            counter.fetch_sub(1, Ordering::Relaxed);
            match result {
                Ok(reply) => return Ok(reply),
                Err(e) => {
                    let transport_failure =
                        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Closed);
                    if transport_failure {
                        self.failed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(address.clone(), Instant::now());
                    }
                    let may_retry = transport_failure && (call.idempotent || not_sent(&e));
                    tracing::warn!(service = call.service, method = call.method, %address, error = %e, may_retry, "remote call failed");
                    if !may_retry {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            Error::unavailable(format!("no Up instance of service {}", call.service))
        }))
    }
}

/// Feeds the proxy's instance list from the registry watch until the proxy
/// (the only receiver) is dropped.
async fn follow(
    service: &'static str,
    registry: Arc<dyn Registry>,
    tx: watch::Sender<Option<Arc<Vec<Instance>>>>,
) {
    loop {
        match registry.watch(service).await {
            Ok(mut watch) => loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    next = watch.next() => match next {
                        Some(snapshot) => {
                            tracing::debug!(service, version = snapshot.version, n = snapshot.instances.len(), "instances changed");
                            tx.send_replace(Some(Arc::new(snapshot.instances)));
                        }
                        None => break,
                    },
                }
            },
            Err(e) => tracing::warn!(service, error = %e, "registry watch failed; retrying"),
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
