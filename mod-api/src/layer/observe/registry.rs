//! The observe layer around a registry.

use std::sync::Arc;
use std::time::Duration;

use super::probe::{BoxFuture, Probe};
use crate::error::Result;
use crate::registry::{ConsumerInfo, Instance, Registry, Status, Watch};

const OPS: &[&str] = &[
    "register",
    "heartbeat",
    "deregister",
    "set_status",
    "lookup",
    "services",
    "watch",
    "register_consumer",
    "deregister_consumer",
    "consumers",
];

/// A registry observed by [`ObserveLayer`](super::ObserveLayer); its
/// metrics are named `registry`.
pub(super) struct ObservedRegistry {
    inner: Arc<dyn Registry>,
    probe: Probe,
}

impl ObservedRegistry {
    pub(super) fn new(inner: Arc<dyn Registry>) -> Self {
        ObservedRegistry {
            inner,
            probe: Probe::new("registry", "registry", OPS),
        }
    }
}

// Written out as `async_trait` expands them, so that an operation nobody
// observes returns the backend's own future (see `Probe::observe`). The
// span's key is the service.
impl Registry for ObservedRegistry {
    fn register<'a, 'f>(&'a self, instance: Instance, ttl: Duration) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
    {
        if !self.probe.active() {
            return self.inner.register(instance, ttl);
        }
        Box::pin(async move {
            let service = instance.service.clone();
            let fut = self.inner.register(instance, ttl);
            self.probe.observe(0, Some(&service), fut).await
        })
    }

    fn heartbeat<'a, 'b, 'c, 'f>(
        &'a self,
        service: &'b str,
        id: &'c str,
    ) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
    {
        self.probe
            .observe(1, Some(service), self.inner.heartbeat(service, id))
    }

    fn deregister<'a, 'b, 'c, 'f>(
        &'a self,
        service: &'b str,
        id: &'c str,
    ) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
    {
        self.probe
            .observe(2, Some(service), self.inner.deregister(service, id))
    }

    fn set_status<'a, 'b, 'c, 'f>(
        &'a self,
        service: &'b str,
        id: &'c str,
        status: Status,
    ) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
    {
        let fut = self.inner.set_status(service, id, status);
        self.probe.observe(3, Some(service), fut)
    }

    fn lookup<'a, 'b, 'f>(&'a self, service: &'b str) -> BoxFuture<'f, Result<Vec<Instance>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe
            .observe(4, Some(service), self.inner.lookup(service))
    }

    fn services<'a, 'f>(&'a self) -> BoxFuture<'f, Result<Vec<String>>>
    where
        'a: 'f,
    {
        self.probe.observe(5, None, self.inner.services())
    }

    fn watch<'a, 'b, 'f>(&'a self, service: &'b str) -> BoxFuture<'f, Result<Watch>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe
            .observe(6, Some(service), self.inner.watch(service))
    }

    fn register_consumer<'a, 'f>(&'a self, consumer: ConsumerInfo) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
    {
        if !self.probe.active() {
            return self.inner.register_consumer(consumer);
        }
        Box::pin(async move {
            let service = consumer.service.clone();
            let fut = self.inner.register_consumer(consumer);
            self.probe.observe(7, Some(&service), fut).await
        })
    }

    fn deregister_consumer<'a, 'b, 'f>(
        &'a self,
        consumer: &'b ConsumerInfo,
    ) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
    {
        let fut = self.inner.deregister_consumer(consumer);
        self.probe.observe(8, Some(&consumer.service), fut)
    }

    fn consumers<'a, 'b, 'f>(&'a self, service: &'b str) -> BoxFuture<'f, Result<Vec<ConsumerInfo>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe
            .observe(9, Some(service), self.inner.consumers(service))
    }
}
