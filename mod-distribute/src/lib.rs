//! # mod-distribute: modkit's distributed package
//!
//! The five building blocks across many processes: registry, cache, session and
//! queue on Redis (queues on Redis Streams), invocation over a multiplexed TCP
//! RPC transport. Business code does not name this crate: it uses the `modkit`
//! facade with the `distribute` feature.
#![doc = include_str!("../docs.md")]
#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod deploy;
pub mod invoke;
pub mod near;
pub mod queue;
pub mod redis;
pub mod redis_server;
pub mod registry;
pub mod rpc;
pub mod session;
pub mod state;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use mod_api::backend::Node;
use mod_api::state::{
    Gate, GateLayer, StateConfig, StateControl, StateHandle, Stateful, TypedCell,
};
use mod_api::{
    Backend, Cache, CachePolicy, Capabilities, Config, Container, Queue, QueueConfig, Registry,
    Result, Service, SessionConfig, SessionStore, Value,
};

pub use self::redis::Redis;
pub use cache::RedisCache;
pub use config::{RedisConfig, RedisTlsConfig, RpcConfig, RpcTlsConfig};
pub use invoke::RpcHosting;
pub use near::NearHub;
pub use queue::RedisQueue;
pub use redis_server::RedisServer;
pub use registry::RedisRegistry;
pub use session::RedisSessions;

/// Logged (WARN) by a node started without a host list: such a node hosts
/// every service it provides, which a caller rarely means.
pub const UNSET_HOST_WARNING: &str = "invoke.host (MODKIT_HOST) is unset, so this node hosts \
    every service it provides and registers itself as their instance; set \
    MODKIT_HOST=svc1,svc2 to host some, MODKIT_HOST= (empty) to host none and call \
    them all remotely, or MODKIT_HOST=* to host all without this warning";

/// The distributed backend: one node of a deployment that shares Redis and
/// calls other nodes over RPC.
///
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Distributed {
    inner: Arc<Inner>,
}

struct Inner {
    node: Node,
    redis_config: RedisConfig,
    redis: Redis,
    near: Arc<NearHub>,
    remote: Arc<RpcHosting>,
    stewards: state::Stewards,
}

impl std::fmt::Debug for Distributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributed")
            .field("node", &self.inner.node)
            .field("redis", &self.inner.redis)
            .finish()
    }
}

impl Distributed {
    /// Connects to Redis and starts this node's registry and near-cache listeners.
    ///
    /// Reads the sections `[redis]` and `[rpc]` of `config` ([`config`]); an
    /// invalid one is a [`Config`](mod_api::ErrorKind::Config) error naming it.
    pub async fn start(config: Config) -> Result<Distributed> {
        let redis_config: RedisConfig = config.section()?;
        let rpc_config: RpcConfig = config.section()?;
        rpc::check_config(&rpc_config)?;
        let redis = Redis::connect_with(&redis_config).await?;
        let registry = RedisRegistry::start(redis.clone(), config.registry.sweep).await?;
        let near = NearHub::start(redis.clone()).await?;
        let (invoke, ttl) = (config.invoke.clone(), config.registry.ttl);
        let (node, remote) = Node::new(config, registry, |registry, node_id| {
            Arc::new(RpcHosting::new(node_id, invoke, rpc_config, ttl, registry))
        });
        let (node_id, config) = (node.node_id(), node.config());
        tracing::info!(node_id = %node_id, redis = %self::redis::redact(&redis_config.url), host = ?config.invoke.host, "distributed node started");
        if config.invoke.host.is_none() {
            tracing::warn!(node_id = %node_id, "{UNSET_HOST_WARNING}");
        }
        Ok(Distributed {
            inner: Arc::new(Inner {
                node,
                redis_config,
                redis,
                near,
                remote,
                stewards: Default::default(),
            }),
        })
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &Config {
        self.inner.node.config()
    }

    /// The `[redis]` section this node runs with (environment overrides applied).
    pub fn redis_config(&self) -> &RedisConfig {
        &self.inner.redis_config
    }

    /// The Redis handle (for operators' tools and failover).
    pub fn redis(&self) -> &Redis {
        &self.inner.redis
    }

    /// The address of this node's RPC server, once it serves a service.
    pub async fn rpc_address(&self) -> Option<String> {
        self.inner.remote.rpc_address().await
    }

    /// Graceful shutdown: deregister hosted services, let in-flight calls finish
    /// (up to `grace`), close the RPC server.
    pub async fn shutdown(&self, grace: Duration) {
        // Owners hand their stateful services over first (their RPC server
        // still answers `Moved` meanwhile).
        let stewards = std::mem::take(
            &mut *self
                .inner
                .stewards
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for steward in stewards {
            if let Err(e) = steward.stop().await {
                tracing::warn!(service = steward.service(), error = %e, "stateful service not handed over at shutdown");
            }
        }
        self.inner.remote.shutdown(grace).await;
    }

    /// Moves stateful service `service` to node `to`, or to the least loaded
    /// healthy standby ([`state::request_takeover`]); returns the target.
    pub async fn request_takeover(&self, service: &str, to: Option<&str>) -> Result<String> {
        state::request_takeover(&self.inner.redis, &*self.registry(), service, to).await
    }
}

impl Backend for Distributed {
    fn name(&self) -> &'static str {
        "distribute"
    }

    fn capabilities(&self) -> Capabilities {
        let mut claims = Capabilities::default();
        // `NearHub`; max_entries is approximate (cache upkeep), and a stream
        // has no overflow: Redis persists it already.
        claims.near_cache = true;
        claims
    }

    fn node_id(&self) -> &str {
        self.inner.node.node_id()
    }

    fn registry(&self) -> Arc<dyn Registry> {
        self.inner.node.registry()
    }

    fn container(&self) -> &Container {
        self.inner.node.container()
    }

    fn cache<V: Value>(&self, name: &str, policy: CachePolicy) -> Result<Arc<dyn Cache<V>>> {
        let Inner {
            node, redis, near, ..
        } = &*self.inner;
        node.cache(name, &policy, || {
            let near = policy.near.as_ref().map(|_| near.clone());
            RedisCache::<V>::new(redis.clone(), near, name, &policy)
        })
    }

    fn sessions<D: Value>(
        &self,
        name: &str,
        config: SessionConfig,
    ) -> Result<Arc<dyn SessionStore<D>>> {
        let Inner { node, redis, .. } = &*self.inner;
        node.sessions(name, config, |config| {
            Ok(RedisSessions::<D>::new(redis.clone(), name, config))
        })
    }

    fn queue<M: Value>(&self, name: &str, config: QueueConfig) -> Result<Arc<dyn Queue<M>>> {
        let Inner { node, redis, .. } = &*self.inner;
        node.queue(name, config, |config| {
            RedisQueue::<M>::open(redis.clone(), name, config)
        })
    }

    async fn provide_stateful<S: Service + ?Sized, T: Stateful>(
        &self,
        service: Arc<S>,
        state: Arc<T>,
        config: StateConfig,
    ) -> Result<StateHandle> {
        let gate = Gate::new(S::NAME);
        let container = self.container();
        if !container.provide_layered(service, &GateLayer(gate.clone()))? {
            return Ok(StateHandle::new(Arc::new(state::Elsewhere(S::NAME))));
        }
        let Inner { redis, remote, .. } = &*self.inner;
        // Listening from now on: a standby answers `Moved` until it owns the service.
        remote.server(container.dispatch_table()).await?;
        let steward = state::Steward::start(
            S::NAME,
            Arc::new(TypedCell(state)),
            state::StateStore::new(redis.clone(), S::NAME),
            gate,
            config,
            remote.clone(),
            container.dispatch_table().clone(),
        );
        self.inner
            .stewards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(steward.clone());
        Ok(StateHandle::new(steward))
    }
}
