//! The observe layer around a session store.

use std::sync::Arc;

use super::probe::{BoxFuture, Probe};
use crate::error::Result;
use crate::session::{Session, SessionId, SessionStore};
use crate::Value;

const OPS: &[&str] = &[
    "create",
    "get",
    "validate",
    "update",
    "rotate",
    "destroy",
    "destroy_principal",
];

/// A session store observed by [`ObserveLayer`](super::ObserveLayer).
pub(super) struct ObservedSessions<D> {
    inner: Arc<dyn SessionStore<D>>,
    probe: Probe,
}

impl<D: Value> ObservedSessions<D> {
    pub(super) fn new(inner: Arc<dyn SessionStore<D>>) -> Self {
        ObservedSessions {
            probe: Probe::new("sessions", inner.name(), OPS),
            inner,
        }
    }
}

/// What a span shows of a session id: its first characters only, since an
/// id is a bearer secret (as its `Debug` does).
fn shown(id: &SessionId) -> &str {
    let id = id.as_str();
    // A parsed id is ASCII, so any byte index is a character boundary.
    id.get(..6).unwrap_or(id)
}

// Written out as `async_trait` expands them, so that an operation nobody
// observes returns the backend's own future (see `Probe::observe`).
impl<D: Value> SessionStore<D> for ObservedSessions<D> {
    fn name(&self) -> &str {
        self.probe.name()
    }

    fn create<'a, 'b, 'f>(
        &'a self,
        principal: &'b str,
        data: D,
    ) -> BoxFuture<'f, Result<Session<D>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe
            .observe(0, Some(principal), self.inner.create(principal, data))
    }

    fn get<'a, 'b, 'f>(&'a self, id: &'b SessionId) -> BoxFuture<'f, Result<Option<Session<D>>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe.observe(1, Some(shown(id)), self.inner.get(id))
    }

    fn validate<'a, 'b, 'f>(
        &'a self,
        id: &'b SessionId,
    ) -> BoxFuture<'f, Result<Option<Session<D>>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe
            .observe(2, Some(shown(id)), self.inner.validate(id))
    }

    fn update<'a, 'b, 'f>(
        &'a self,
        id: &'b SessionId,
        expected_version: u64,
        data: D,
    ) -> BoxFuture<'f, Result<Session<D>>>
    where
        'a: 'f,
        'b: 'f,
    {
        let fut = self.inner.update(id, expected_version, data);
        self.probe.observe(3, Some(shown(id)), fut)
    }

    fn rotate<'a, 'b, 'f>(&'a self, id: &'b SessionId) -> BoxFuture<'f, Result<Session<D>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe
            .observe(4, Some(shown(id)), self.inner.rotate(id))
    }

    fn destroy<'a, 'b, 'f>(&'a self, id: &'b SessionId) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe
            .observe(5, Some(shown(id)), self.inner.destroy(id))
    }

    fn destroy_principal<'a, 'b, 'f>(&'a self, principal: &'b str) -> BoxFuture<'f, Result<usize>>
    where
        'a: 'f,
        'b: 'f,
    {
        let fut = self.inner.destroy_principal(principal);
        self.probe.observe(6, Some(principal), fut)
    }
}
