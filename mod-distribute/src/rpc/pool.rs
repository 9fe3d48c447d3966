//! One cached [`RpcClient`] per server address, replaced when it closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::config::RpcConfig;
use mod_api::{Call, Result};
use tracing::Instrument;

use super::client::RpcClient;
use super::tls::{self, ClientTls};

#[derive(Default)]
struct Slot {
    client: Mutex<Option<RpcClient>>,
    /// One connect at a time per address; others wait and reuse its result.
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn live(&self) -> Option<RpcClient> {
        let client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        client.as_ref().filter(|c| !c.is_closed()).cloned()
    }
}

/// Connections to RPC servers, one per address, shared by every caller.
///
/// A closed connection (lost, or its server sent GOAWAY) is replaced by a new
/// one on the next [`get`](Self::get); concurrent callers share one connect.
pub struct RpcConnections {
    config: RpcConfig,
    /// Read once from `config.tls`; an error is returned by every `get`.
    tls: std::result::Result<Option<ClientTls>, mod_api::Error>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl std::fmt::Debug for RpcConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcConnections")
            .field("addresses", &self.slots().len())
            .finish()
    }
}

impl RpcConnections {
    /// An empty set of connections that connect with `config` (secret, frame
    /// limit, TLS: its files are read here, once).
    pub fn new(config: RpcConfig) -> Self {
        let tls = tls::connector(&config);
        if let Err(e) = &tls {
            tracing::error!(error = %e, "rpc client TLS configuration unusable; calls will fail");
        }
        RpcConnections {
            tls,
            config,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live connection to `addr`, connecting (again) if there is none.
    pub async fn get(&self, addr: &str) -> Result<RpcClient> {
        let slot = {
            let mut slots = self.slots();
            match slots.get(addr) {
                Some(slot) => slot.clone(),
                None => slots.entry(addr.to_string()).or_default().clone(),
            }
        };
        if let Some(client) = slot.live() {
            return Ok(client);
        }
        let span = tracing::debug_span!("rpc.pool.connect", addr);
        async {
            let _one = slot.connecting.lock().await;
            if let Some(client) = slot.live() {
                return Ok(client);
            }
            let tls = self.tls.as_ref().map_err(mod_api::Error::to_detached)?;
            let client = RpcClient::connect_with(addr, &self.config, tls.as_ref()).await?;
            *slot.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
            Ok(client)
        }
        .instrument(span)
        .await
    }

    /// Sends `call` to the server at `addr` (see [`RpcClient::call`]).
    pub async fn call(&self, addr: &str, call: Call, timeout: Duration) -> Result<Vec<u8>> {
        self.get(addr).await?.call(call, timeout).await
    }

    /// Forgets the connection to `addr`, e.g. when the instance left the
    /// registry; it closes once the calls using it are done.
    pub fn remove(&self, addr: &str) {
        self.slots().remove(addr);
    }

    /// Keeps only the addresses for which `keep` is true.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.slots().retain(|addr, _| keep(addr));
    }
}
