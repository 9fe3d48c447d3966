//! The backend trait: one implementation per deployment package.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::{Cache, CachePolicy};
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::invoke::Container;
use crate::layer::{CheckLayer, Layer, ObserveLayer};
pub use crate::name::check_name;
use crate::queue::{Queue, QueueConfig};
use crate::registry::Registry;
use crate::session::{SessionConfig, SessionStore};
use crate::Value;

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
}

/// The open building blocks of a backend, by kind and name: what makes a second
/// open of a name return the same data. For backend authors.
#[derive(Default)]
pub struct OpenBlocks {
    blocks: std::sync::Mutex<HashMap<BlockKey, Box<dyn Any + Send + Sync>>>,
}

/// A block's kind (`"cache"`, `"queue"`, …) and name.
type BlockKey = (&'static str, String);

impl std::fmt::Debug for OpenBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_list().entries(blocks.keys()).finish()
    }
}

impl OpenBlocks {
    /// Returns the open block `(kind, name)`, or opens it with `make` and
    /// wraps it in the [standard layers](crate::layer::standard) (values
    /// limited to `max_value_bytes`): the one place where a backend's blocks
    /// get tracing, metrics and input checks.
    ///
    /// The name is checked with [`check_name`]; a block open with another type is
    /// [`ErrorKind::TypeMismatch`](crate::ErrorKind::TypeMismatch). `make` runs
    /// under the map's lock, so it must not open another block.
    pub fn open<B>(
        &self,
        kind: &'static str,
        name: &str,
        max_value_bytes: usize,
        make: impl FnOnce() -> Result<Arc<B>>,
    ) -> Result<Arc<B>>
    where
        B: ?Sized + Send + Sync + 'static,
        CheckLayer: Layer<B>,
        ObserveLayer: Layer<B>,
    {
        check_name(kind, name)?;
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = blocks.get(&(kind, name.to_owned())) {
            return open.downcast_ref::<Arc<B>>().cloned().ok_or_else(|| {
                tracing::warn!(kind, name, "opened with another value type");
                Error::new(
                    crate::ErrorKind::TypeMismatch,
                    format!(
                        "{kind} {name:?} is already open with another value type (not {})",
                        std::any::type_name::<B>()
                    ),
                )
            });
        }
        let block = crate::layer::standard(make()?, max_value_bytes);
        blocks.insert((kind, name.to_owned()), Box::new(block.clone()));
        Ok(block)
    }
}
