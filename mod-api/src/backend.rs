//! The backend trait: one implementation per deployment package.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, CachePolicy};
use crate::error::{Error, Result};
use crate::invoke::Container;
use crate::layer::{CheckLayer, Layer, ObserveLayer};
use crate::queue::{Queue, QueueConfig};
use crate::registry::Registry;
use crate::session::{SessionConfig, SessionStore};
use crate::Value;

/// Which deployment package runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Everything in one process, in memory.
    #[default]
    Monolith,
    /// Services in many processes over RPC, sharing Redis.
    Distribute,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "monolith" => Ok(BackendKind::Monolith),
            "distribute" | "distributed" => Ok(BackendKind::Distribute),
            other => Err(Error::config(format!(
                "unknown mode {other:?}: expected \"monolith\" or \"distribute\""
            ))),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Monolith => "monolith",
            BackendKind::Distribute => "distribute",
        })
    }
}

/// A deployment package's implementation of the five building blocks.
///
/// Names are checked with [`check_name`] (an invalid one is
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)). Opening a cache,
/// session store or queue by a name already open returns a handle to the same data (the first open's policy wins); opening it with a
/// different value type is [`ErrorKind::TypeMismatch`](crate::ErrorKind::TypeMismatch).
/// Handles are cheap to clone (`Arc`).
pub trait Backend: Send + Sync + 'static {
    /// Which package this is.
    fn kind(&self) -> BackendKind;

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

/// Checks a building block's name: non-empty, at most 200 bytes, no whitespace,
/// control characters or `{}` (which would break Redis key layouts).
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 200
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}');
    if bad {
        return Err(Error::invalid_input(format!(
            "invalid {what} name {name:?}: 1-200 bytes, no whitespace, control characters or braces"
        )));
    }
    Ok(())
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
