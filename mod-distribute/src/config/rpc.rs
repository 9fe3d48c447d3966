//! `[rpc]`: the transport, its resource bounds and their `MODKIT_RPC_*` overrides.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use mod_api::config::{parse_duration, Section};
use mod_api::{Error, Result};

/// RPC settings: section `[rpc]`.
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
    /// pings well within it. A connection whose peer takes none of its queued
    /// replies for this long is closed too. `0` never closes idle
    /// connections. Default 60 s.
    #[serde(with = "mod_api::config::duration")]
    pub idle_timeout: Duration,
    /// Time a peer has to finish a frame once its first bytes arrived; a
    /// half-sent frame older than that closes the connection. Default 10 s.
    #[serde(with = "mod_api::config::duration")]
    pub frame_timeout: Duration,
    /// TLS for the server and for this node's calls (`[rpc.tls]`); `None`:
    /// plain TCP.
    pub tls: Option<RpcTlsConfig>,
    /// Allows listening on a non-loopback address with neither TLS nor a
    /// secret. Default `false`: such a server refuses to start.
    pub insecure: bool,
}

/// TLS settings of the RPC transport (`[rpc.tls]`), PEM files all.
///
/// The server speaks TLS when `cert` and `key` are set; this node's calls
/// use TLS when `ca` is set. A node of a TLS deployment sets both (and the
/// same files serve every node when its certificate names every host).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcTlsConfig {
    /// The server's certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The CA certificates a client verifies servers against.
    pub ca: Option<PathBuf>,
    /// The name a client expects in the server's certificate; default: the
    /// host of the address it connects to (a DNS name or an IP address).
    pub server_name: Option<String>,
    /// The client's certificate chain, for servers that require one.
    pub client_cert: Option<PathBuf>,
    /// The client's private key.
    pub client_key: Option<PathBuf>,
    /// When set, the server requires a client certificate signed by one of
    /// these CAs (mutual TLS).
    pub client_ca: Option<PathBuf>,
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
            tls: None,
            insecure: false,
        }
    }
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.trim()
        .parse()
        .map_err(|_| Error::config(format!("{key}: not a number: {v:?}")))
}

fn duration(key: &str, v: &str) -> Result<Duration> {
    parse_duration(v).map_err(|e| Error::config(format!("{key}: {e}")))
}

impl Section for RpcConfig {
    const NAME: &'static str = "rpc";

    /// Applies the `MODKIT_RPC_*` overrides read through `var`.
    fn apply_env(&mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<()> {
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
        if let Some(v) = var("MODKIT_RPC_INSECURE") {
            self.insecure = match v.trim() {
                "1" | "true" => true,
                "0" | "false" | "" => false,
                _ => {
                    return Err(Error::config(format!(
                        "MODKIT_RPC_INSECURE: expected 1/true or 0/false, got {v:?}"
                    )))
                }
            };
        }
        self.apply_tls_env(var);
        Ok(())
    }
}

impl RpcConfig {
    fn apply_tls_env(&mut self, var: &dyn Fn(&str) -> Option<String>) {
        type Field = fn(&mut RpcTlsConfig) -> &mut Option<PathBuf>;
        let vars: [(&str, Field); 6] = [
            ("MODKIT_RPC_TLS_CERT", |t| &mut t.cert),
            ("MODKIT_RPC_TLS_KEY", |t| &mut t.key),
            ("MODKIT_RPC_TLS_CA", |t| &mut t.ca),
            ("MODKIT_RPC_TLS_CLIENT_CERT", |t| &mut t.client_cert),
            ("MODKIT_RPC_TLS_CLIENT_KEY", |t| &mut t.client_key),
            ("MODKIT_RPC_TLS_CLIENT_CA", |t| &mut t.client_ca),
        ];
        for (key, field) in vars {
            if let Some(v) = var(key) {
                *field(self.tls.get_or_insert_with(Default::default)) = Some(v.into());
            }
        }
        if let Some(v) = var("MODKIT_RPC_TLS_SERVER_NAME") {
            self.tls.get_or_insert_with(Default::default).server_name = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mod_api::Config;

    #[test]
    fn limits_from_toml_and_env() {
        let mut c = Config::from_toml(
            "[rpc]\nmax_queued_reply_bytes = 1024\nidle_timeout = \"2s\"\nframe_timeout = 500\n",
        )
        .unwrap();
        let rpc: RpcConfig = c.section().unwrap();
        assert_eq!(rpc.max_queued_reply_bytes, 1024);
        assert_eq!(rpc.idle_timeout, Duration::from_secs(2));
        assert_eq!(rpc.frame_timeout, Duration::from_millis(500));
        assert_eq!(rpc.max_connections, 1024);
        c.apply_env([
            ("MODKIT_RPC_MAX_CONNECTIONS", "8"),
            ("MODKIT_RPC_IDLE_TIMEOUT", "0"),
        ])
        .unwrap();
        let rpc: RpcConfig = c.section().unwrap();
        assert_eq!(rpc.max_connections, 8);
        assert_eq!(rpc.idle_timeout, Duration::ZERO);
        c.apply_env([("MODKIT_RPC_MAX_CONNECTIONS", "many")])
            .unwrap();
        let e = c.section::<RpcConfig>().unwrap_err();
        assert_eq!(e.kind(), mod_api::ErrorKind::Config);
        assert!(e.to_string().contains("MODKIT_RPC_MAX_CONNECTIONS"), "{e}");
        let typo = Config::from_toml("[rpc]\nmax_conections = 3\n").unwrap();
        let e = typo.section::<RpcConfig>().unwrap_err();
        assert!(e.to_string().contains("max_conections"), "{e}");
    }

    #[test]
    fn tls_from_toml_and_env() {
        let mut c =
            Config::from_toml("[rpc]\ninsecure = true\n[rpc.tls]\ncert = \"/a.pem\"\n").unwrap();
        let rpc: RpcConfig = c.section().unwrap();
        assert!(rpc.insecure);
        let tls = rpc.tls.unwrap();
        assert_eq!(tls.cert, Some("/a.pem".into()));
        assert_eq!(tls.ca, None);
        c.apply_env([
            ("MODKIT_RPC_TLS_CA", "/ca.pem"),
            ("MODKIT_RPC_INSECURE", "0"),
        ])
        .unwrap();
        let rpc: RpcConfig = c.section().unwrap();
        assert!(!rpc.insecure);
        let tls = rpc.tls.unwrap();
        assert_eq!(
            (tls.cert, tls.ca),
            (Some("/a.pem".into()), Some("/ca.pem".into()))
        );
        let typo = Config::from_toml("[rpc.tls]\ncertificate = \"x\"\n").unwrap();
        assert!(typo.section::<RpcConfig>().is_err());
    }

    #[test]
    fn every_field_round_trips_through_the_config() {
        let rpc = RpcConfig {
            advertise: Some("10.0.0.5:7000".into()),
            secret: Some("s".into()),
            idle_timeout: Duration::from_millis(1500),
            tls: Some(RpcTlsConfig {
                cert: Some("/c.pem".into()),
                server_name: Some("node".into()),
                ..RpcTlsConfig::default()
            }),
            insecure: true,
            ..RpcConfig::default()
        };
        let mut c = Config::default();
        c.set_section(&rpc);
        assert_eq!(c.section::<RpcConfig>().unwrap(), rpc);
        c.set_section(&RpcConfig::default());
        assert_eq!(c.section::<RpcConfig>().unwrap(), RpcConfig::default());
    }
}
