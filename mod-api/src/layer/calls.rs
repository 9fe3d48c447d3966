//! The call layers: a DEBUG span per service call, a WARN event when one
//! fails, and its metrics, on the client side ([`ClientCalls`], around a
//! [`Transport`]) and on the server side ([`ServerCalls`], around a
//! [`Dispatch`]).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `modkit_calls_total` | counter | `service`, `method`, `side` (`client`/`server`) |
//! | `modkit_call_errors_total` | counter | the same and `kind` |
//! | `modkit_call_seconds` | histogram | `service`, `method`, `side` |
//! | `modkit_call_bytes_total` | counter | the same and `direction` (`sent`/`received`) |
//!
//! `kind` is the [`ErrorKind`](crate::ErrorKind) name of a platform failure
//! (`timeout`, `unavailable`, ...), `application` when the method returned
//! its own error, `cancelled` when the caller dropped the call (or the server
//! passed its deadline), `panicked` when the method panicked.
//!
//! The handles are registered once per (service, method) when the layer is
//! applied, and only when [`metrics_enabled`](super::metrics_enabled) was true
//! then: a call reads no clock and touches no metric otherwise. Failed calls
//! look their error counter up by kind (the error path only). Counts and
//! latencies gather per thread and reach the recorder in batches (see
//! [`flush_counts`](super::flush_counts)): every worker recording every call
//! into one shared counter and histogram cost `invoke.remote.c64` a tenth
//! of its rate.

use std::sync::{Arc, Once, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument;

use super::observe::{Sharded, ShardedHistogram};
use super::{metrics_enabled, Layer};
use crate::codec::reply_is_err;
use crate::error::Result;
use crate::invoke::{Call, Dispatch, MethodInfo, Service, Transport};

/// Which end of a call a layer measures: the label `side`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller's process.
    Client,
    /// The process that runs the method.
    Server,
}

impl Side {
    /// `"client"` or `"server"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// The client-side call layer of one service: wraps the [`Transport`] its
/// client sends over. [`Container::get`](crate::Container::get) applies it.
#[derive(Debug, Clone, Copy)]
pub struct ClientCalls {
    service: &'static str,
    methods: &'static [MethodInfo],
}

impl ClientCalls {
    /// The layer of service `S`'s calls.
    pub fn of<S: Service + ?Sized>() -> Self {
        ClientCalls {
            service: S::NAME,
            methods: S::METHODS,
        }
    }
}

impl Layer<dyn Transport> for ClientCalls {
    fn layer(&self, inner: Arc<dyn Transport>) -> Arc<dyn Transport> {
        let metrics = CallMetrics::new(Side::Client, self.service, self.methods);
        Arc::new(MeasuredTransport { inner, metrics })
    }
}

/// The server-side call layer: wraps a [`Dispatch`]. The
/// [`DispatchTable`](crate::DispatchTable) applies it to every dispatcher it takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerCalls;

impl Layer<dyn Dispatch> for ServerCalls {
    fn layer(&self, inner: Arc<dyn Dispatch>) -> Arc<dyn Dispatch> {
        let metrics = CallMetrics::new(Side::Server, inner.service(), inner.methods());
        Arc::new(MeasuredDispatch { inner, metrics })
    }
}

/// The handles of one (service, method, side).
struct MethodMetrics {
    method: &'static str,
    calls: Arc<Sharded>,
    seconds: Arc<ShardedHistogram>,
    sent: Arc<Sharded>,
    received: Arc<Sharded>,
}

impl MethodMetrics {
    fn new(side: Side, service: &'static str, method: &'static str) -> Self {
        let side = side.as_str();
        let labels = [("service", service), ("method", method), ("side", side)];
        let bytes = |direction: &'static str| {
            let labels = [
                ("service", service),
                ("method", method),
                ("side", side),
                ("direction", direction),
            ];
            Sharded::counter(metrics::counter!("modkit_call_bytes_total", &labels))
        };
        MethodMetrics {
            method,
            calls: Sharded::counter(metrics::counter!("modkit_calls_total", &labels)),
            seconds: ShardedHistogram::new(metrics::histogram!("modkit_call_seconds", &labels)),
            sent: bytes("sent"),
            received: bytes("received"),
        }
    }
}

/// What one layer knows about the calls it measures.
struct CallMetrics {
    side: Side,
    service: &'static str,
    /// `None`: metrics were off when the layer was applied.
    handles: Option<Handles>,
}

/// The registered handles of one layer.
struct Handles {
    methods: Box<[MethodMetrics]>,
    /// Calls of a method not declared (answered `NotFound` by a dispatcher):
    /// one series, so a caller cannot make up labels; registered on the first.
    unknown: OnceLock<MethodMetrics>,
}

impl CallMetrics {
    fn new(side: Side, service: &'static str, methods: &'static [MethodInfo]) -> Self {
        let handles = metrics_enabled().then(|| {
            describe();
            Handles {
                methods: methods
                    .iter()
                    .map(|m| MethodMetrics::new(side, service, m.name))
                    .collect(),
                unknown: OnceLock::new(),
            }
        });
        CallMetrics {
            side,
            service,
            handles,
        }
    }

    /// Starts measuring a call of `method` carrying `payload` bytes out (client)
    /// or in (server).
    fn start(&self, method: &str, payload: usize) -> Measure<'_> {
        let handles = self.handles.as_ref().map(|h| {
            let found = h.methods.iter().find(|m| m.method == method);
            found.unwrap_or_else(|| {
                h.unknown
                    .get_or_init(|| MethodMetrics::new(self.side, self.service, "unknown"))
            })
        });
        if let Some(m) = handles {
            m.calls.add(1);
            match self.side {
                Side::Client => m.sent.add(payload as i64),
                Side::Server => m.received.add(payload as i64),
            }
        }
        Measure {
            metrics: self,
            method: handles,
            started: handles.map(|_| Instant::now()),
            finished: false,
        }
    }
}

/// One call being measured; a call dropped before it ends (its caller gave
/// up, its deadline passed, its method panicked) is counted as such.
struct Measure<'a> {
    metrics: &'a CallMetrics,
    method: Option<&'a MethodMetrics>,
    started: Option<Instant>,
    finished: bool,
}

impl Measure<'_> {
    /// Records the call's end, with its outcome.
    fn finish(mut self, method: &str, result: &Result<Vec<u8>>) {
        self.finished = true;
        let (service, side) = (self.metrics.service, self.metrics.side.as_str());
        let failed = match result {
            Ok(reply) if reply_is_err(reply) => {
                // The method's own error: business as usual for the platform.
                tracing::debug!(service, method, side, "call returned the method's error");
                Some("application")
            }
            Ok(_) => None,
            // A non-owner's refusal of a stateful service's call: it did
            // not run, and the caller's proxy sends it to the owner.
            Err(e) if e.kind() == crate::ErrorKind::Moved => {
                tracing::debug!(service, method, side, error = %e, "call refused: not the owner");
                Some(e.kind().as_str())
            }
            Err(e) => {
                let kind = e.kind().as_str();
                tracing::warn!(service, method, side, kind, error = %e, "call failed");
                Some(kind)
            }
        };
        let Some(m) = self.method else { return };
        if let Ok(reply) = result {
            match self.metrics.side {
                Side::Client => m.received.add(reply.len() as i64),
                Side::Server => m.sent.add(reply.len() as i64),
            }
        }
        self.record(m, failed);
    }

    fn record(&self, m: &MethodMetrics, failed: Option<&'static str>) {
        if let Some(started) = self.started {
            m.seconds.record(started.elapsed().as_secs_f64());
        }
        if let Some(kind) = failed {
            let labels = [
                ("service", self.metrics.service),
                ("method", m.method),
                ("side", self.metrics.side.as_str()),
                ("kind", kind),
            ];
            metrics::counter!("modkit_call_errors_total", &labels).increment(1);
        }
    }
}

impl Drop for Measure<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let kind = match std::thread::panicking() {
            true => "panicked",
            false => "cancelled",
        };
        tracing::debug!(
            service = self.metrics.service,
            side = self.metrics.side.as_str(),
            kind,
            "call ended before its reply"
        );
        if let Some(m) = self.method {
            self.record(m, Some(kind));
        }
    }
}

struct MeasuredTransport {
    inner: Arc<dyn Transport>,
    metrics: CallMetrics,
}

#[async_trait]
impl Transport for MeasuredTransport {
    async fn call(&self, call: Call) -> Result<Vec<u8>> {
        let (service, method) = (call.service, call.method);
        let span = tracing::debug_span!("modkit.call", service, method, side = "client");
        async move {
            let measure = self.metrics.start(method, call.payload.len());
            let result = self.inner.call(call).await;
            measure.finish(method, &result);
            result
        }
        .instrument(span)
        .await
    }
}

struct MeasuredDispatch {
    inner: Arc<dyn Dispatch>,
    metrics: CallMetrics,
}

#[async_trait]
impl Dispatch for MeasuredDispatch {
    fn service(&self) -> &'static str {
        self.inner.service()
    }

    fn methods(&self) -> &'static [MethodInfo] {
        self.inner.methods()
    }

    async fn dispatch(&self, method: &str, payload: &[u8]) -> Result<Vec<u8>> {
        let service = self.inner.service();
        let span = tracing::debug_span!("modkit.serve", service, method, side = "server");
        async move {
            let measure = self.metrics.start(method, payload.len());
            let result = self.inner.dispatch(method, payload).await;
            measure.finish(method, &result);
            result
        }
        .instrument(span)
        .await
    }
}

/// The metrics' descriptions (`# HELP` lines), given once per process.
fn describe() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        use metrics::Unit;
        metrics::describe_counter!("modkit_calls_total", "Service calls started.");
        metrics::describe_counter!(
            "modkit_call_errors_total",
            "Service calls that failed, by error kind (application: the method's own error)."
        );
        metrics::describe_histogram!(
            "modkit_call_seconds",
            Unit::Seconds,
            "Duration of service calls, as the side measuring saw it."
        );
        metrics::describe_counter!(
            "modkit_call_bytes_total",
            Unit::Bytes,
            "Encoded arguments and replies of service calls."
        );
    });
}
