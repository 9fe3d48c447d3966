//! # mod-monolith: modkit's monolith package
//!
//! Every building block in one process, in memory: the registry on maps with
//! leases, caches on moka, sessions on dashmap, queues on in-memory logs with an
//! optional spill to disk. Nothing is serialized on a hot path: values are moved
//! or cloned (the one exception is a queue's spill file).
//!
//! Business code does not name this crate: it uses the `modkit` facade, which
//! builds a [`Monolith`] from configuration. See `docs.md` in this crate for the
//! behaviour of each block.

#![warn(missing_docs)]
#![doc = include_str!("../docs.md")]

pub mod cache;
pub mod invoke;
pub mod queue;
pub mod registry;
pub mod session;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;

use mod_api::backend::Node;
use mod_api::state::{StateConfig, StateControl, StateHandle, Stateful, TypedCell};
use mod_api::{
    Backend, Cache, CachePolicy, Capabilities, Config, Container, Error, ErrorKind, Queue,
    QueueConfig, Registry, Result, Service, SessionConfig, SessionStore, Value,
};

pub use cache::MokaCache;
pub use invoke::LocalHosting;
pub use queue::MemoryQueue;
pub use registry::MemoryRegistry;
pub use session::MemorySessions;
pub use state::StateKeeper;

/// The monolith backend: one process, everything in memory.
///
/// Cheap to clone; clones share everything. Build it inside a tokio runtime (the
/// registry sweeps expired leases in a background task).
#[derive(Clone)]
pub struct Monolith {
    node: Arc<Node>,
    /// The stateful services' keepers: their final checkpoints at shutdown.
    keepers: Arc<std::sync::Mutex<Vec<Arc<state::StateKeeper>>>>,
}

impl std::fmt::Debug for Monolith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Monolith").field(&self.node).finish()
    }
}

impl Monolith {
    /// A monolith configured by `config`; must be called inside a tokio runtime.
    pub fn new(config: Config) -> Result<Monolith> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::new(
                ErrorKind::Config,
                "Monolith::new must be called inside a tokio runtime",
            ));
        }
        let registry = MemoryRegistry::new(config.registry.sweep);
        let ttl = config.registry.ttl;
        let (node, _) = Node::new(config, registry, |registry, node_id| {
            Arc::new(LocalHosting::new(registry, node_id, ttl))
        });
        tracing::info!(node_id = %node.node_id(), "monolith started");
        Ok(Monolith {
            node: Arc::new(node),
            keepers: Arc::default(),
        })
    }

    /// The configuration this monolith runs with.
    pub fn config(&self) -> &Config {
        self.node.config()
    }

    /// Where queues with [`BacklogPolicy::Overflow`](mod_api::BacklogPolicy)
    /// keep their spill files, one folder per queue: `<data_dir>/spill`, or
    /// none without a `data_dir` (such a queue then fails to open).
    pub fn spill_dir(&self) -> Option<PathBuf> {
        self.config().data_dir.as_ref().map(|d| d.join("spill"))
    }

    /// Where stateful services keep their checkpoints: `<data_dir>/state`.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.config().data_dir.as_ref().map(|d| d.join("state"))
    }

    /// Stops the stateful services: each writes its final checkpoint (a
    /// failure is logged at WARN and the others still write theirs).
    pub async fn shutdown(&self) {
        let keepers = std::mem::take(&mut *self.keepers.lock().unwrap_or_else(|e| e.into_inner()));
        for keeper in keepers {
            if let Err(e) = keeper.stop().await {
                tracing::warn!(service = keeper.service(), error = %e, "final checkpoint failed");
            }
        }
    }
}

impl Backend for Monolith {
    fn name(&self) -> &'static str {
        "monolith"
    }

    fn capabilities(&self) -> Capabilities {
        let mut claims = Capabilities::default();
        // Queue overflow goes to spill files under `data_dir`.
        claims.durable_overflow = self.config().data_dir.is_some();
        // moka's `max_capacity` with LRU eviction.
        claims.exact_max_entries = true;
        claims
    }

    fn node_id(&self) -> &str {
        self.node.node_id()
    }

    fn registry(&self) -> Arc<dyn Registry> {
        self.node.registry()
    }

    fn container(&self) -> &Container {
        self.node.container()
    }

    fn cache<V: Value>(&self, name: &str, policy: CachePolicy) -> Result<Arc<dyn Cache<V>>> {
        let node = &self.node;
        node.cache(name, &policy, || Ok(MokaCache::<V>::new(name, &policy)))
    }

    fn sessions<D: Value>(
        &self,
        name: &str,
        config: SessionConfig,
    ) -> Result<Arc<dyn SessionStore<D>>> {
        let node = &self.node;
        node.sessions(name, config, |config| {
            Ok(MemorySessions::<D>::new(name, config))
        })
    }

    fn queue<M: Value>(&self, name: &str, config: QueueConfig) -> Result<Arc<dyn Queue<M>>> {
        let dlq_name = QueueConfig::dead_letter_name(name);
        let dlq_config = QueueConfig {
            capacity: usize::MAX,
            max_deliveries: u32::MAX,
            // Whatever the queue accepted, its dead letters are accepted too.
            max_value_bytes: usize::MAX,
            ..QueueConfig::default()
        };
        // Open the dead-letter queue first: `open` holds the block map's lock.
        let node = &self.node;
        let dlq = node.queue(&dlq_name, dlq_config, |config| {
            MemoryQueue::<M>::open(&dlq_name, config, None)
        })?;
        let spill_dir = self.spill_dir();
        node.queue(name, config, |config| {
            MemoryQueue::<M>::open_with_spill_dir(name, config, Some(dlq), spill_dir.as_deref())
        })
    }

    async fn provide_stateful<S: Service + ?Sized, T: Stateful>(
        &self,
        service: Arc<S>,
        state: Arc<T>,
        config: StateConfig,
    ) -> Result<StateHandle> {
        let Some(dir) = self.state_dir() else {
            return Err(Error::config(format!(
                "stateful service {} needs data_dir (MODKIT_DATA_DIR) in the monolith: its checkpoints are kept there",
                S::NAME
            )));
        };
        // Restored before the service takes its first call.
        let keeper = StateKeeper::start(S::NAME, Arc::new(TypedCell(state)), &dir, &config).await?;
        self.container().provide(service).await?;
        self.keepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(keeper.clone());
        Ok(StateHandle::new(keeper))
    }
}
