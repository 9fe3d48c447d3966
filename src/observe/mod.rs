//! Metrics for Prometheus and a live status page (feature `prometheus`).
//!
//! With `[metrics] listen = "host:port"` (`MODKIT_METRICS_LISTEN`),
//! [`App::start`](crate::App::start) installs the Prometheus recorder (once
//! per process: a second `App` reuses it), turns modkit's metrics on
//! ([`enable_metrics`](mod_api::layer::enable_metrics)) before the backend
//! opens anything, and serves on that address:
//!
//! - `GET /metrics`: every metric in the Prometheus text format; durations
//!   (`*_seconds`) as histograms with buckets from 50 µs to 10 s, so
//!   `histogram_quantile` works on them;
//! - `GET /status`: a small HTML page that shows this node, the services and
//!   their instances, per-method call rates and p99, queues, caches and the
//!   Redis endpoint, refreshed every 2 s from
//! - `GET /status.json`: the page's data, computed from the recorder's
//!   output (the one source of truth) and the registry.
//!
//! [`App::metrics_address`](crate::App::metrics_address) is the bound address.
//!
//! Another recorder of your own instead: install it (`metrics::set_global_recorder`)
//! and call [`enable_metrics`](mod_api::layer::enable_metrics) before
//! [`App::start`](crate::App::start), and leave `metrics.listen` unset.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{Error, ErrorKind, Result};

mod scrape;
mod server;
mod status;

pub(crate) use server::Observer;

/// Histogram buckets of every `*_seconds` metric: 50 µs to 10 s.
const BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// How often the recorder drains its histograms (it has no task of its own).
const UPKEEP: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder
/// (once; later calls reuse it) and turns modkit's metrics on.
///
/// [`App::start`](crate::App::start) calls it when `metrics.listen` is set;
/// call it yourself to record without serving (the benchmarks' `--metrics`).
/// Fails with [`ErrorKind::Config`] when another recorder is installed already.
pub fn install_prometheus() -> Result<()> {
    handle().map(|_| ())
}

/// The recorder's handle, installing it on first use.
fn handle() -> Result<&'static PrometheusHandle> {
    if let Some(handle) = RECORDER.get() {
        return Ok(handle);
    }
    // Serialized: two Apps starting at once must not both try to install.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = RECORDER.get() {
        return Ok(handle);
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| {
            Error::new(ErrorKind::Config, "cannot install the Prometheus recorder").with_source(e)
        })?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("modkit-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP);
            upkeep.run_upkeep();
        })
        .map_err(|e| Error::new(ErrorKind::Io, "cannot start the metrics upkeep").with_source(e))?;
    mod_api::layer::enable_metrics();
    tracing::debug!("prometheus recorder installed; metrics on");
    Ok(RECORDER.get_or_init(|| handle))
}

/// Binds `listen` for the metrics server, after installing the recorder.
pub(crate) async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    handle()?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        let kind = match e.kind() {
            std::io::ErrorKind::InvalidInput => ErrorKind::Config,
            _ => ErrorKind::Unavailable,
        };
        Error::new(
            kind,
            format!("cannot serve metrics on {listen:?} (metrics.listen)"),
        )
        .with_source(e)
    })?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
