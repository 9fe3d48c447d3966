//! The backend trait: one implementation per deployment package, and the
//! skeleton every backend shares ([`Node`]: its id, configuration, registry,
//! container and open blocks, each block wrapped in the standard layers).

mod blocks;
mod node;

pub use blocks::OpenBlocks;
pub use node::Node;

use std::sync::Arc;

use crate::cache::{Cache, CachePolicy};
use crate::capabilities::Capabilities;
use crate::error::Result;
use crate::invoke::Container;
use crate::invoke::Service;
pub use crate::name::check_name;
use crate::queue::{Queue, QueueConfig};
use crate::registry::Registry;
use crate::session::{SessionConfig, SessionStore};
use crate::state::{StateConfig, StateHandle, Stateful};
use crate::Value;
use std::future::Future;

/// A deployment package's implementation of the five building blocks.
///
/// Names are checked with [`check_name`] (an invalid one is
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)). Opening a cache,
/// session store or queue by a name already open returns a handle to the same data (the first open's policy wins); opening it with a
/// different value type is [`ErrorKind::TypeMismatch`](crate::ErrorKind::TypeMismatch).
/// Handles are cheap to clone (`Arc`).
pub trait Backend: Send + Sync + 'static {
    /// The package's name, as the configuration's `mode` spells it
    /// (`"monolith"`, …): for logs and status pages.
    fn name(&self) -> &'static str;

    /// What this backend supports beyond the common contract. The default
    /// claims nothing; the conformance suite then checks that the backend
    /// refuses what it does not claim, so a claim left out fails a test
    /// rather than passing silently.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// This node's id.
    fn node_id(&self) -> &str;

    /// The registry.
    fn registry(&self) -> Arc<dyn Registry>;

    /// The service container.
    fn container(&self) -> &Container;

    /// Opens the cache `name` of `V` values.
    fn cache<V: Value>(&self, name: &str, policy: CachePolicy) -> Result<Arc<dyn Cache<V>>>;

    /// Opens the session store `name` with data `D`.
    fn sessions<D: Value>(
        &self,
        name: &str,
        config: SessionConfig,
    ) -> Result<Arc<dyn SessionStore<D>>>;

    /// Opens the queue `name` of `M` messages.
    fn queue<M: Value>(&self, name: &str, config: QueueConfig) -> Result<Arc<dyn Queue<M>>>;

    /// Provides service `S` whose implementation `state` owns in-memory
    /// state ([`crate::state`]): `service` and `state` are the same object,
    /// once as the service trait and once as [`Stateful`].
    ///
    /// The monolith restores the last checkpoint from `data_dir` and then
    /// checkpoints every [`StateConfig::period`]; the distributed package
    /// makes this process the service's owner or a standby, and moves the
    /// state between them (see its `state` module).
    fn provide_stateful<S: Service + ?Sized, T: Stateful>(
        &self,
        service: Arc<S>,
        state: Arc<T>,
        config: StateConfig,
    ) -> impl Future<Output = Result<StateHandle>> + Send;
}
