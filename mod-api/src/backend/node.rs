//! [`Node`]: the part of a backend that every backend has the same way.

use std::sync::Arc;

use super::OpenBlocks;
use crate::cache::{Cache, CachePolicy};
use crate::config::Config;
use crate::error::Result;
use crate::invoke::{Container, Hosting};
use crate::queue::{Queue, QueueConfig};
use crate::registry::Registry;
use crate::session::{SessionConfig, SessionStore};
use crate::Value;

/// The skeleton of a backend: this node's id and configuration, the registry
/// (in the standard layers), the container (on the backend's [`Hosting`])
/// and the open blocks. A backend builds one with its own registry and
/// hosting, delegates the matching [`Backend`](super::Backend) methods to it
/// and opens its blocks through it, so each block gets the standard layers.
pub struct Node {
    node_id: String,
    config: Config,
    registry: Arc<dyn Registry>,
    container: Container,
    blocks: OpenBlocks,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.node_id)
            .field("services", &self.container.provided_names())
            .field("blocks", &self.blocks)
            .finish()
    }
}

impl Node {
    /// The node configured by `config`, on the backend's `registry` (wrapped
    /// here in the standard layers) and the hosting that `hosting` builds
    /// from that layered registry and the node id; returns the hosting too,
    /// for the backend's own use.
    pub fn new<H: Hosting + 'static>(
        config: Config,
        registry: Arc<dyn Registry>,
        hosting: impl FnOnce(Arc<dyn Registry>, String) -> Arc<H>,
    ) -> (Node, Arc<H>) {
        let node_id = config.node_id();
        let registry = crate::layer::standard(registry, usize::MAX);
        let hosting = hosting(registry.clone(), node_id.clone());
        let node = Node {
            node_id,
            config,
            registry,
            container: Container::with_hosting(hosting.clone()),
            blocks: OpenBlocks::default(),
        };
        (node, hosting)
    }

    /// This node's id ([`Config::node_id`]).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The registry, in the standard layers.
    pub fn registry(&self) -> Arc<dyn Registry> {
        self.registry.clone()
    }

    /// The service container.
    pub fn container(&self) -> &Container {
        &self.container
    }

    /// The cache `name`: the open one, or `make`'s in the standard layers.
    pub fn cache<V: Value, C: Cache<V> + 'static>(
        &self,
        name: &str,
        policy: &CachePolicy,
        make: impl FnOnce() -> Result<C>,
    ) -> Result<Arc<dyn Cache<V>>> {
        self.blocks.open("cache", name, policy.max_value_bytes, || {
            Ok(Arc::new(make()?) as Arc<dyn Cache<V>>)
        })
    }

    /// The session store `name`: the open one, or what `make` builds from
    /// `config`, in the standard layers.
    pub fn sessions<D: Value, S: SessionStore<D> + 'static>(
        &self,
        name: &str,
        config: SessionConfig,
        make: impl FnOnce(SessionConfig) -> Result<S>,
    ) -> Result<Arc<dyn SessionStore<D>>> {
        self.blocks
            .open("sessions", name, config.max_value_bytes, || {
                Ok(Arc::new(make(config)?) as Arc<dyn SessionStore<D>>)
            })
    }

    /// The queue `name`: the open one, or what `make` builds from `config`,
    /// in the standard layers.
    pub fn queue<M: Value, Q: Queue<M> + 'static>(
        &self,
        name: &str,
        config: QueueConfig,
        make: impl FnOnce(QueueConfig) -> Result<Q>,
    ) -> Result<Arc<dyn Queue<M>>> {
        self.blocks.open("queue", name, config.max_value_bytes, || {
            Ok(Arc::new(make(config)?) as Arc<dyn Queue<M>>)
        })
    }
}
