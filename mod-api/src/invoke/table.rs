//! [`DispatchTable`]: the one registry of the dispatchers served in a process.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{Dispatch, Service};
use crate::layer::{Layer, ServerCalls};

/// The dispatchers of the services served here, by name: the one table that
/// the [`Container`](super::Container) fills when a service is provided and
/// that servers (the distributed package's RPC server, the
/// [`Loopback`](super::Loopback)) read per call.
///
/// Every dispatcher is wrapped in the server-side call layer
/// ([`ServerCalls`]: span, WARN on failure, metrics) as it goes in.
///
/// Cheap to clone; clones share the table, so a server reading it sees
/// services provided after it started.
#[derive(Clone, Default)]
pub struct DispatchTable {
    inner: Arc<RwLock<HashMap<&'static str, Arc<dyn Dispatch>>>>,
}

impl std::fmt::Debug for DispatchTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

impl DispatchTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `service` through its generated dispatcher (replacing one of
    /// the same name).
    pub fn serve<S: Service + ?Sized>(&self, service: Arc<S>) {
        self.insert(S::dispatcher(service));
    }

    /// Adds `dispatcher` under its [`Dispatch::service`] name; returns the
    /// one it replaces.
    pub fn insert(&self, dispatcher: Arc<dyn Dispatch>) -> Option<Arc<dyn Dispatch>> {
        let dispatcher = ServerCalls.layer(dispatcher);
        self.write().insert(dispatcher.service(), dispatcher)
    }

    /// Adds `dispatcher` unless its name is taken; `false` then (the table is unchanged).
    pub(crate) fn insert_new(&self, dispatcher: Arc<dyn Dispatch>) -> bool {
        let mut map = self.write();
        if map.contains_key(dispatcher.service()) {
            return false;
        }
        map.insert(dispatcher.service(), ServerCalls.layer(dispatcher));
        true
    }

    /// Removes the dispatcher of `service`.
    pub fn remove(&self, service: &str) -> Option<Arc<dyn Dispatch>> {
        self.write().remove(service)
    }

    /// The dispatcher of `service` (`None`: not served here).
    pub fn get(&self, service: &str) -> Option<Arc<dyn Dispatch>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    /// The names served, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self
            .inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        names.sort_unstable();
        names
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<&'static str, Arc<dyn Dispatch>>> {
        // A panic elsewhere cannot leave the map half-updated: inserts are single calls.
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}
