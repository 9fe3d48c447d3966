//! The observe layer around a queue: spans, failures, metrics, unacknowledged
//! deliveries and the sampled depth.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::probe::{BoxFuture, Probe};
use super::sharded::Sharded;
use super::Registered;
use crate::error::Result;
use crate::queue::{Consumer, Delivery, MessageId, Offered, Queue};
use crate::Value;

const OPS: &[&str] = &["offer", "poll", "poll_timeout", "ack", "remove", "len"];

/// A queue observed by [`ObserveLayer`](super::ObserveLayer).
pub(super) struct ObservedQueue<M> {
    inner: Arc<dyn Queue<M>>,
    probe: Probe,
    /// Deliveries handed to this process's consumers and not acknowledged
    /// by them; the depth gauge. `None` while metrics are off.
    gauges: Option<(Arc<Sharded>, metrics::Gauge)>,
}

impl<M: Value> ObservedQueue<M> {
    /// `inner` observed; with metrics on, also listed for [`refresh_gauges`].
    pub(super) fn wrap(inner: Arc<dyn Queue<M>>) -> Arc<dyn Queue<M>> {
        let probe = Probe::new("queue", inner.name(), OPS);
        let gauges = probe.metered().then(|| {
            let name = inner.name().to_owned();
            (
                Sharded::gauge(metrics::gauge!("modkit_queue_unacked", "name" => name.clone())),
                metrics::gauge!("modkit_queue_depth", "name" => name),
            )
        });
        let metered = probe.metered();
        let queue = Arc::new(ObservedQueue {
            inner,
            probe,
            gauges,
        });
        if metered {
            let weak: Weak<dyn Sampled> = Arc::downgrade(&queue) as Weak<ObservedQueue<M>>;
            SAMPLED.add(weak);
        }
        queue
    }

    fn delivered(&self, got: &Result<Option<Delivery<M>>>) {
        if let (Ok(Some(_)), Some((unacked, _))) = (got, &self.gauges) {
            unacked.add(1);
        }
    }
}

/// Something whose gauges [`refresh_gauges`] samples.
trait Sampled: Send + Sync {
    fn sample(&self) -> BoxFuture<'_, ()>;
}

impl<M: Value> Sampled for ObservedQueue<M> {
    fn sample(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_secs(1), self.inner.len()).await {
                Ok(Ok(len)) => {
                    if let Some((_, depth)) = &self.gauges {
                        depth.set(len as f64);
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(queue = self.probe.name(), error = %e, "queue depth not sampled")
                }
                Err(_) => tracing::debug!(
                    queue = self.probe.name(),
                    "queue depth not sampled within 1 s"
                ),
            }
        })
    }
}

/// The metered queues of this process.
static SAMPLED: Registered<dyn Sampled> = Registered::new();

/// Sets `modkit_queue_depth` of every open, metered queue (one `len()`
/// each, at most 1 s).
pub(super) async fn sample_depths() {
    for queue in SAMPLED.live() {
        queue.sample().await;
    }
}

// Written out as `async_trait` expands them, so that an operation nobody
// observes returns the backend's own future (see `Probe::observe`).
impl<M: Value> Queue<M> for ObservedQueue<M> {
    fn name(&self) -> &str {
        self.probe.name()
    }

    fn offer<'a, 'f>(&'a self, message: M) -> BoxFuture<'f, Result<Offered>>
    where
        'a: 'f,
    {
        self.probe.observe(0, None, self.inner.offer(message))
    }

    fn poll<'a, 'b, 'f>(
        &'a self,
        consumer: &'b Consumer,
    ) -> BoxFuture<'f, Result<Option<Delivery<M>>>>
    where
        'a: 'f,
        'b: 'f,
    {
        let count = |got: &Result<Option<Delivery<M>>>| self.delivered(got);
        self.probe
            .observe_then(1, None, self.inner.poll(consumer), count)
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
        let count = |got: &Result<Option<Delivery<M>>>| self.delivered(got);
        let fut = self.inner.poll_timeout(consumer, timeout);
        self.probe.observe_then(2, None, fut, count)
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
        let count = |acked: &Result<bool>| {
            if let (Ok(true), Some((unacked, _))) = (acked, &self.gauges) {
                unacked.add(-1);
            }
        };
        self.probe
            .observe_then(3, Some(&id.0), self.inner.ack(group, id), count)
    }

    fn remove<'a, 'b, 'f>(&'a self, id: &'b MessageId) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'b: 'f,
    {
        self.probe.observe(4, Some(&id.0), self.inner.remove(id))
    }

    fn len<'a, 'f>(&'a self) -> BoxFuture<'f, Result<usize>>
    where
        'a: 'f,
    {
        self.probe.observe(5, None, self.inner.len())
    }
}
