//! RPC settings (distributed package): the transport, its resource bounds and
//! their `MODKIT_RPC_*` overrides.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// RPC settings (distributed package).
///
/// Every resource a peer can make a server hold is bounded here; the defaults
/// are safe for a server reachable by untrusted peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: String,
    /// Address other nodes use to reach this one; default: the bound address.
    pub advertise: Option<String>,
    /// Largest frame accepted or sent. Default 16 MiB.
    pub max_frame_bytes: u32,
    /// Shared secret every connection must present; `None` disables authentication.
    pub secret: Option<String>,
    /// Reply bytes a server queues for one connection; past it the server
    /// stops reading that connection's requests until the queue drains (no
    /// accepted call is dropped). Default 8 MiB.
    pub max_queued_reply_bytes: u64,
    /// Calls running at once for one connection; past it the server stops
    /// reading that connection's requests until calls finish. Default 1024.
    pub max_calls_per_connection: u32,
    /// Connections a server holds at once (including those in their
    /// handshake); past it a new connection is closed at once. Default 1024.
    pub max_connections: u32,
    /// A connection with no call running, no reply to write and no frame
    /// received for this long is closed by the server; clients send keepalive
    /// pings well within it. `0` never closes idle connections. Default 60 s.
    #[serde(with = "super::duration")]
    pub idle_timeout: Duration,
    /// Time a peer has to finish a frame once its first bytes arrived; a
    /// half-sent frame older than that closes the connection. Default 10 s.
    #[serde(with = "super::duration")]
    pub frame_timeout: Duration,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            listen: "127.0.0.1:0".into(),
            advertise: None,
            max_frame_bytes: 16 * 1024 * 1024,
            secret: None,
            max_queued_reply_bytes: 8 * 1024 * 1024,
            max_calls_per_connection: 1024,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(60),
            frame_timeout: Duration::from_secs(10),
        }
    }
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.trim()
        .parse()
        .map_err(|_| Error::config(format!("{key}: not a number: {v:?}")))
}

fn duration(key: &str, v: &str) -> Result<Duration> {
    super::parse_duration(v).map_err(|e| Error::config(format!("{key}: {e}")))
}

impl RpcConfig {
    /// Applies the `MODKIT_RPC_*` overrides read through `var`.
    pub(crate) fn apply_env(&mut self, var: &impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(v) = var("MODKIT_RPC_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = var("MODKIT_RPC_ADVERTISE") {
            self.advertise = Some(v);
        }
        if let Some(v) = var("MODKIT_RPC_SECRET") {
            self.secret = Some(v);
        }
        if let Some(v) = var("MODKIT_RPC_MAX_FRAME_BYTES") {
            self.max_frame_bytes = number("MODKIT_RPC_MAX_FRAME_BYTES", &v)?;
        }
        if let Some(v) = var("MODKIT_RPC_MAX_QUEUED_REPLY_BYTES") {
            self.max_queued_reply_bytes = number("MODKIT_RPC_MAX_QUEUED_REPLY_BYTES", &v)?;
        }
        if let Some(v) = var("MODKIT_RPC_MAX_CALLS_PER_CONNECTION") {
            self.max_calls_per_connection = number("MODKIT_RPC_MAX_CALLS_PER_CONNECTION", &v)?;
        }
        if let Some(v) = var("MODKIT_RPC_MAX_CONNECTIONS") {
            self.max_connections = number("MODKIT_RPC_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = var("MODKIT_RPC_IDLE_TIMEOUT") {
            self.idle_timeout = duration("MODKIT_RPC_IDLE_TIMEOUT", &v)?;
        }
        if let Some(v) = var("MODKIT_RPC_FRAME_TIMEOUT") {
            self.frame_timeout = duration("MODKIT_RPC_FRAME_TIMEOUT", &v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn limits_from_toml_and_env() {
        let mut c = Config::from_toml(
            "[rpc]\nmax_queued_reply_bytes = 1024\nidle_timeout = \"2s\"\nframe_timeout = 500\n",
        )
        .unwrap();
        assert_eq!(c.rpc.max_queued_reply_bytes, 1024);
        assert_eq!(c.rpc.idle_timeout, Duration::from_secs(2));
        assert_eq!(c.rpc.frame_timeout, Duration::from_millis(500));
        assert_eq!(c.rpc.max_connections, 1024);
        c.apply_env(|k| match k {
            "MODKIT_RPC_MAX_CONNECTIONS" => Some("8".into()),
            "MODKIT_RPC_IDLE_TIMEOUT" => Some("0".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.rpc.max_connections, 8);
        assert_eq!(c.rpc.idle_timeout, Duration::ZERO);
        let e = c
            .apply_env(|k| (k == "MODKIT_RPC_MAX_CONNECTIONS").then(|| "many".into()))
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        assert!(Config::from_toml("[rpc]\nmax_conections = 3\n").is_err());
    }
}
