//! The check layer: see [`CheckLayer`].

use std::sync::Arc;
use std::time::Duration;

use super::observe::BoxFuture;
use super::Layer;
use crate::cache::{Cache, Cas, Loader};
use crate::codec::check_value_size;
use crate::error::{Error, Result};
use crate::queue::{Consumer, Delivery, MessageId, Offered, Queue};
use crate::registry::{checks, ConsumerInfo, Instance, Registry, Status, Watch};
use crate::session::{Session, SessionId, SessionStore};
use crate::Value;

/// The check layer: input checks that every backend applies the same way,
/// before the backend sees the call — names and keys of the registry, and
/// values over `max_value_bytes` (measured as the distributed backend encodes
/// them, so both packages accept the same values). A refused call is
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) or
/// [`ErrorKind::PayloadTooLarge`](crate::ErrorKind::PayloadTooLarge) and
/// never reaches the backend; the observe layer around it reports it (WARN,
/// with the kind) as any failure. Calls that pass get the backend's own
/// future (no allocation).
#[derive(Debug, Clone, Copy)]
pub struct CheckLayer {
    max_value_bytes: usize,
}

impl CheckLayer {
    /// Checks with values limited to `max_value_bytes` (`usize::MAX`: no
    /// limit; the registry has none).
    pub fn new(max_value_bytes: usize) -> Self {
        CheckLayer { max_value_bytes }
    }
}

/// A block behind a [`CheckLayer`].
struct Checked<B: ?Sized> {
    max_value_bytes: usize,
    inner: Arc<B>,
}

impl<B: ?Sized> Checked<B> {
    fn size<T: Value>(&self, block: &str, name: &str, value: &T) -> Result<()> {
        if self.max_value_bytes == usize::MAX {
            return Ok(());
        }
        check_value_size(block, name, value, self.max_value_bytes)
    }
}

/// The future of a refused call.
fn refused<'f, T: Send + 'f>(error: Error) -> BoxFuture<'f, Result<T>> {
    Box::pin(std::future::ready(Err(error)))
}

/// `checked?` for a method returning a boxed future.
macro_rules! check {
    ($checked:expr) => {
        if let Err(e) = $checked {
            return refused(e);
        }
    };
}

impl<V: Value> Layer<dyn Cache<V>> for CheckLayer {
    fn layer(&self, inner: Arc<dyn Cache<V>>) -> Arc<dyn Cache<V>> {
        Arc::new(Checked {
            max_value_bytes: self.max_value_bytes,
            inner,
        })
    }
}

impl<M: Value> Layer<dyn Queue<M>> for CheckLayer {
    fn layer(&self, inner: Arc<dyn Queue<M>>) -> Arc<dyn Queue<M>> {
        Arc::new(Checked {
            max_value_bytes: self.max_value_bytes,
            inner,
        })
    }
}

impl<D: Value> Layer<dyn SessionStore<D>> for CheckLayer {
    fn layer(&self, inner: Arc<dyn SessionStore<D>>) -> Arc<dyn SessionStore<D>> {
        Arc::new(Checked {
            max_value_bytes: self.max_value_bytes,
            inner,
        })
    }
}

impl Layer<dyn Registry> for CheckLayer {
    fn layer(&self, inner: Arc<dyn Registry>) -> Arc<dyn Registry> {
        Arc::new(Checked {
            max_value_bytes: usize::MAX,
            inner,
        })
    }
}

// The impls below are written out as `async_trait` expands them, so that a
// call that passes returns the backend's own future.

impl<V: Value> Cache<V> for Checked<dyn Cache<V>> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn get<'a, 'b, 'f>(&'a self, key: &'b str) -> BoxFuture<'f, Result<Option<V>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.inner.get(key)
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<V>>> {
        self.inner.get_now(key)
    }

    fn set<'a, 'b, 'f>(&'a self, key: &'b str, value: V) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
        'b: 'f,
    {
        check!(self.size("cache", self.inner.name(), &value));
        self.inner.set(key, value)
    }

    fn set_with_ttl<'a, 'b, 'f>(
        &'a self,
        key: &'b str,
        value: V,
        ttl: Duration,
    ) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
        'b: 'f,
    {
        check!(self.size("cache", self.inner.name(), &value));
        self.inner.set_with_ttl(key, value, ttl)
    }

    fn remove<'a, 'b, 'f>(&'a self, key: &'b str) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.inner.remove(key)
    }

    fn contains<'a, 'b, 'f>(&'a self, key: &'b str) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.inner.contains(key)
    }

    fn clear<'a, 'f>(&'a self) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
    {
        self.inner.clear()
    }

    // A loaded value over the limit is returned but not stored: the backend
    // decides that (it has the value only once the loader ran).
    fn get_or_load<'a, 'b, 'l, 'f>(
        &'a self,
        key: &'b str,
        loader: Loader<'l, V>,
    ) -> BoxFuture<'f, Result<V>>
    where
        'a: 'f,
        'b: 'f,
        'l: 'f,
    {
        self.inner.get_or_load(key, loader)
    }

    fn compare_and_set<'a, 'b, 'c, 'f>(
        &'a self,
        key: &'b str,
        expected: Option<&'c V>,
        new: V,
    ) -> BoxFuture<'f, Result<Cas<V>>>
    where
        V: PartialEq,
        'a: 'f,
        'b: 'f,
        'c: 'f,
    {
        check!(self.size("cache", self.inner.name(), &new));
        self.inner.compare_and_set(key, expected, new)
    }
}

impl<M: Value> Queue<M> for Checked<dyn Queue<M>> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn offer<'a, 'f>(&'a self, message: M) -> BoxFuture<'f, Result<Offered>>
    where
        'a: 'f,
    {
        check!(self.size("queue", self.inner.name(), &message));
        self.inner.offer(message)
    }

    fn poll<'a, 'b, 'f>(
        &'a self,
        consumer: &'b Consumer,
    ) -> BoxFuture<'f, Result<Option<Delivery<M>>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.inner.poll(consumer)
    }

    fn poll_timeout<'a, 'b, 'f>(
        &'a self,
        consumer: &'b Consumer,
        timeout: Duration,
    ) -> BoxFuture<'f, Result<Option<Delivery<M>>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.inner.poll_timeout(consumer, timeout)
    }

    fn ack<'a, 'b, 'c, 'f>(
        &'a self,
        group: &'b str,
        id: &'c MessageId,
    ) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
    {
        self.inner.ack(group, id)
    }

    fn remove<'a, 'b, 'f>(&'a self, id: &'b MessageId) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.inner.remove(id)
    }

    fn len<'a, 'f>(&'a self) -> BoxFuture<'f, Result<usize>>
    where
        'a: 'f,
    {
        self.inner.len()
    }
}

impl<D: Value> SessionStore<D> for Checked<dyn SessionStore<D>> {
    fn name(&self) -> &str {
        self.inner.name()
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
        check!(self.size("sessions", self.inner.name(), &data));
        self.inner.create(principal, data)
    }

    fn get<'a, 'b, 'f>(&'a self, id: &'b SessionId) -> BoxFuture<'f, Result<Option<Session<D>>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.inner.get(id)
    }

    fn validate<'a, 'b, 'f>(
        &'a self,
        id: &'b SessionId,
    ) -> BoxFuture<'f, Result<Option<Session<D>>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.inner.validate(id)
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
        check!(self.size("sessions", self.inner.name(), &data));
        self.inner.update(id, expected_version, data)
    }

    fn rotate<'a, 'b, 'f>(&'a self, id: &'b SessionId) -> BoxFuture<'f, Result<Session<D>>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.inner.rotate(id)
    }

    fn destroy<'a, 'b, 'f>(&'a self, id: &'b SessionId) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.inner.destroy(id)
    }

    fn destroy_principal<'a, 'b, 'f>(&'a self, principal: &'b str) -> BoxFuture<'f, Result<usize>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.inner.destroy_principal(principal)
    }
}

impl Registry for Checked<dyn Registry> {
    fn register<'a, 'f>(&'a self, instance: Instance, ttl: Duration) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
    {
        check!(checks::registration(&instance, ttl));
        self.inner.register(instance, ttl)
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
        check!(checks::instance_key(service, id));
        self.inner.heartbeat(service, id)
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
        check!(checks::instance_key(service, id));
        self.inner.deregister(service, id)
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
        check!(checks::instance_key(service, id));
        self.inner.set_status(service, id, status)
    }

    fn lookup<'a, 'b, 'f>(&'a self, service: &'b str) -> BoxFuture<'f, Result<Vec<Instance>>>
    where
        'a: 'f,
        'b: 'f,
    {
        check!(checks::service(service));
        self.inner.lookup(service)
    }

    fn services<'a, 'f>(&'a self) -> BoxFuture<'f, Result<Vec<String>>>
    where
        'a: 'f,
    {
        self.inner.services()
    }

    fn watch<'a, 'b, 'f>(&'a self, service: &'b str) -> BoxFuture<'f, Result<Watch>>
    where
        'a: 'f,
        'b: 'f,
    {
        check!(checks::service(service));
        self.inner.watch(service)
    }

    fn register_consumer<'a, 'f>(&'a self, consumer: ConsumerInfo) -> BoxFuture<'f, Result<()>>
    where
        'a: 'f,
    {
        check!(checks::consumer(&consumer));
        self.inner.register_consumer(consumer)
    }

    fn deregister_consumer<'a, 'b, 'f>(
        &'a self,
        consumer: &'b ConsumerInfo,
    ) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
    {
        check!(checks::consumer(consumer));
        self.inner.deregister_consumer(consumer)
    }

    fn consumers<'a, 'b, 'f>(&'a self, service: &'b str) -> BoxFuture<'f, Result<Vec<ConsumerInfo>>>
    where
        'a: 'f,
        'b: 'f,
    {
        check!(checks::service(service));
        self.inner.consumers(service)
    }
}
