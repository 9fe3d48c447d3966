//! `modkit_rpc_connections{side}`: the RPC connections open in this process,
//! as clients (`client`) and as a server (`server`).

use std::future::Future;

use metrics::Gauge;
use mod_api::layer::{metrics_enabled, Side};

/// Runs `connection` (a connection's task) counted as an open connection of
/// `side` until it ends or is dropped. Counts nothing when metrics are off.
pub(crate) async fn counted<F: Future>(side: Side, connection: F) -> F::Output {
    let _open = Open::new(side);
    connection.await
}

/// One open connection in the gauge, taken out again when dropped.
struct Open(Option<Gauge>);

impl Open {
    fn new(side: Side) -> Open {
        if !metrics_enabled() {
            return Open(None);
        }
        let gauge = metrics::gauge!("modkit_rpc_connections", "side" => side.as_str());
        gauge.increment(1.0);
        Open(Some(gauge))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.decrement(1.0);
        }
    }
}
