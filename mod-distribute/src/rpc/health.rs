//! The built-in health probe: every [`RpcServer`](super::RpcServer) answers
//! service [`HEALTH_SERVICE`] (`modkit.Health`) itself, whatever it hosts,
//! so an observer can tell "the process answers" from "its calls time out".
//!
//! ```no_run
//! # async fn run(pool: &mod_distribute::rpc::RpcConnections) -> mod_api::Result<()> {
//! use std::time::Duration;
//! let report = mod_distribute::rpc::probe(pool, "127.0.0.1:7001", Duration::from_millis(250)).await?;
//! println!("{} calls in flight, serving {:?}", report.in_flight, report.services);
//! # Ok(())
//! # }
//! ```

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mod_api::{async_trait, service, Dispatch, Error, Result, Service};
use serde::{Deserialize, Serialize};

use super::server::ServerShared;
use super::{RpcConnections, RpcTransport};

/// The name of the built-in health service.
pub const HEALTH_SERVICE: &str = "modkit.Health";

/// What a server says about itself when probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The services it serves now.
    pub services: Vec<String>,
    /// Calls running on it (the probe not counted).
    pub in_flight: usize,
    /// Connections open to it.
    pub connections: usize,
    /// Whether it is shutting down (refusing new calls).
    pub shutting_down: bool,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
}

/// The health probe every RPC server answers.
#[service(crate = mod_api, name = "modkit.Health")]
pub trait Health {
    /// The server's report on itself.
    #[idempotent]
    async fn check(&self) -> Result<HealthReport, Error>;
}

/// The server's own answer to [`Health::check`].
struct ServerHealth {
    server: Weak<ServerShared>,
    started: Instant,
}

#[async_trait]
impl Health for ServerHealth {
    async fn check(&self) -> Result<HealthReport, Error> {
        let server = self
            .server
            .upgrade()
            .ok_or_else(|| Error::closed("the rpc server is gone"))?;
        let mut services: Vec<String> = server
            .services
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        services.sort();
        Ok(HealthReport {
            services,
            in_flight: server.inflight.load(Ordering::Acquire).saturating_sub(1),
            connections: server.connections(),
            shutting_down: server.shutting_down.load(Ordering::Acquire),
            uptime_ms: self.started.elapsed().as_millis() as u64,
        })
    }
}

/// The dispatcher of `server`'s health service.
pub(super) fn dispatcher(server: Weak<ServerShared>) -> Arc<dyn Dispatch> {
    <dyn Health as Service>::dispatcher(Arc::new(ServerHealth {
        server,
        started: Instant::now(),
    }))
}

/// Probes the RPC server at `addr`: its report, or an error when it does not
/// answer within `timeout` (connecting included) — `Timeout` for a process
/// that accepts but does not answer (frozen, overloaded), `Unavailable` for
/// one that is not there.
pub async fn probe(pool: &RpcConnections, addr: &str, timeout: Duration) -> Result<HealthReport> {
    let check = async {
        let client = pool.get(addr).await?;
        let health = <dyn Health as Service>::client(Arc::new(RpcTransport::new(client, timeout)));
        health.check().await
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(report) => report.map_err(|e| e.with_context("probed", addr)),
        Err(_) => Err(Error::timeout(format!(
            "health probe of {addr}: no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}
