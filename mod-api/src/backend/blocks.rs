//! [`OpenBlocks`]: the open blocks of a backend, by kind and name.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use super::check_name;
use crate::error::{Error, Result};
use crate::layer::{CheckLayer, Layer, ObserveLayer};

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
