//! Configuration: defaults, then a TOML file, then `MODKIT_*` environment variables.
//!
//! ```toml
//! mode = "monolith"            # or "distribute"; default: monolith if compiled in
//! node_id = "node-a"           # default: "<hostname-or-node>-<pid>"
//! data_dir = "/var/lib/shop"   # spill files of queues (default: none)
//!
//! [invoke]
//! timeout = "5s"               # default deadline of a remote call
//! host = ["Catalog", "Auth"]   # services this process serves; [] none, ["*"] all (unset: all, with a WARN)
//! colocate = true              # call services hosted here without the network
//! balance = "round_robin"      # or "least_in_flight"
//! retries = 2                  # other instances tried by idempotent calls
//!
//! [registry]
//! ttl = "10s"                  # lease of a registered instance
//! sweep = "1s"                 # how often expired instances are removed
//!
//! [redis]                      # distributed package
//! url = "redis://127.0.0.1:6379"  # user:password@ for AUTH/ACL; rediss:// for TLS
//! prefix = "modkit"
//!
//! [rpc]                        # distributed package
//! listen = "127.0.0.1:0"
//! advertise = "10.0.0.5:7000"  # default: the bound address
//! max_frame_bytes = 16777216
//! secret = "…"                 # shared-secret authentication (default: off)
//! max_queued_reply_bytes = 8388608  # per connection; then stop reading it
//! max_calls_per_connection = 1024
//! max_connections = 1024
//! idle_timeout = "60s"         # 0: never close idle connections
//! frame_timeout = "10s"        # to finish a frame once begun
//! insecure = false             # true: allow a non-loopback listen without TLS or secret
//!
//! [rpc.tls]                    # distributed package; PEM files (default: no TLS)
//! cert = "/etc/shop/node.pem"  # server certificate chain; key = its private key
//! key = "/etc/shop/node.key"
//! ca = "/etc/shop/ca.pem"      # CA clients verify servers against
//! client_ca = "/etc/shop/ca.pem"  # mutual TLS: the server requires client certificates
//! client_cert = "/etc/shop/node.pem"
//! client_key = "/etc/shop/node.key"
//!
//! [metrics]                    # facade feature `prometheus`
//! listen = "127.0.0.1:9464"    # serves /metrics, /status, /status.json (default: off)
//! ```
//!
//! Durations are written `"250ms"`, `"5s"`, `"2m"`, `"1h"`, or a bare number of
//! milliseconds. Environment variables override the file:
//!
//! | variable | field |
//! |---|---|
//! | `MODKIT_CONFIG` | path of the TOML file ([`Config::load`]) |
//! | `MODKIT_MODE` | `mode` |
//! | `MODKIT_NODE_ID` | `node_id` |
//! | `MODKIT_DATA_DIR` | `data_dir` |
//! | `MODKIT_INVOKE_TIMEOUT` | `invoke.timeout` |
//! | `MODKIT_HOST` | `invoke.host` (comma-separated; empty: host nothing; `*`: host all) |
//! | `MODKIT_COLOCATE` | `invoke.colocate` (`true`/`false`) |
//! | `MODKIT_REGISTRY_TTL`, `MODKIT_REGISTRY_SWEEP` | `registry.ttl`, `registry.sweep` |
//! | `MODKIT_REDIS_URL`, `MODKIT_REDIS_PREFIX` | `redis.url`, `redis.prefix` |
//! | `MODKIT_REDIS_TLS_CA`, `MODKIT_REDIS_TLS_CERT`, `MODKIT_REDIS_TLS_KEY` | `redis.tls.*` |
//! | `MODKIT_RPC_LISTEN`, `MODKIT_RPC_ADVERTISE`, `MODKIT_RPC_SECRET`, `MODKIT_RPC_MAX_FRAME_BYTES` | `rpc.*` |
//! | `MODKIT_RPC_MAX_QUEUED_REPLY_BYTES`, `MODKIT_RPC_MAX_CALLS_PER_CONNECTION`, `MODKIT_RPC_MAX_CONNECTIONS`, `MODKIT_RPC_IDLE_TIMEOUT`, `MODKIT_RPC_FRAME_TIMEOUT` | `rpc.*` limits |
//! | `MODKIT_RPC_INSECURE` (`1`/`0`) | `rpc.insecure` |
//! | `MODKIT_RPC_TLS_CERT`, `_KEY`, `_CA`, `_CLIENT_CERT`, `_CLIENT_KEY`, `_CLIENT_CA`, `_SERVER_NAME` | `rpc.tls.*` |
//! | `MODKIT_METRICS_LISTEN` | `metrics.listen` (empty: off) |

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::error::{Error, Result};

mod invoke;
mod metrics;
mod rpc;

pub use invoke::{Balance, InvokeConfig, HOST_ALL};
pub use metrics::MetricsConfig;
pub use rpc::{RpcConfig, RpcTlsConfig};

/// The whole configuration of a modkit runtime.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Which package to run; unset: the monolith when it is compiled in, else
    /// the distributed package.
    pub mode: Option<BackendKind>,
    /// This node's id; default `node-<pid>`.
    pub node_id: Option<String>,
    /// Where queues put spill files; a queue's own `spill_dir` wins.
    pub data_dir: Option<PathBuf>,
    /// Invocation.
    pub invoke: InvokeConfig,
    /// Registry.
    pub registry: RegistryConfig,
    /// Redis (distributed package).
    pub redis: RedisConfig,
    /// RPC transport (distributed package).
    pub rpc: RpcConfig,
    /// The Prometheus endpoint and status page (facade feature `prometheus`).
    pub metrics: MetricsConfig,
}

/// Registry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Lease of a registered instance.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// How often expired instances are swept.
    #[serde(with = "duration")]
    pub sweep: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            ttl: Duration::from_secs(10),
            sweep: Duration::from_secs(1),
        }
    }
}

/// Redis settings (distributed package).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Connection URL: `redis://[user][:password]@host:port[/db]`, or
    /// `rediss://…` for TLS. User and password (Redis AUTH / ACL) are passed
    /// to Redis as they are and never logged.
    pub url: String,
    /// Every key modkit writes starts with `<prefix>:`.
    pub prefix: String,
    /// Certificates for a `rediss://` URL; without it, the system's trusted roots.
    pub tls: Option<RedisTlsConfig>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "modkit".into(),
            tls: None,
        }
    }
}

/// TLS files for Redis (`[redis.tls]`, PEM), used with a `rediss://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisTlsConfig {
    /// CA that signed the Redis server's certificate (instead of the system roots).
    pub ca: Option<PathBuf>,
    /// Client certificate chain, for a server with `tls-auth-clients yes`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

impl Config {
    /// Parses TOML text (missing fields take their defaults; unknown ones are errors).
    pub fn from_toml(text: &str) -> Result<Config> {
        toml::from_str(text).map_err(|e| Error::config(format!("invalid configuration: {e}")))
    }

    /// Reads a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read configuration {}", path.display())).with_source(e)
        })?;
        Self::from_toml(&text)
    }

    /// Defaults, then the file at `path` (or at `MODKIT_CONFIG` when `path` is
    /// `None`), then `MODKIT_*` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let from_env = std::env::var_os("MODKIT_CONFIG").map(PathBuf::from);
        let mut config = match path.map(Path::to_path_buf).or(from_env) {
            Some(p) => Self::from_file(p)?,
            None => Config::default(),
        };
        config.apply_env(|key| std::env::var(key).ok())?;
        Ok(config)
    }

    /// Applies `MODKIT_*` overrides read through `var` (testable without touching the
    /// process environment).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        let dur = |key: &str, text: String| {
            parse_duration(&text).map_err(|e| Error::config(format!("{key}: {e}")))
        };
        if let Some(v) = var("MODKIT_MODE") {
            self.mode = Some(v.parse()?);
        }
        if let Some(v) = var("MODKIT_NODE_ID") {
            self.node_id = Some(v);
        }
        if let Some(v) = var("MODKIT_DATA_DIR") {
            self.data_dir = Some(v.into());
        }
        if let Some(v) = var("MODKIT_INVOKE_TIMEOUT") {
            self.invoke.timeout = dur("MODKIT_INVOKE_TIMEOUT", v)?;
        }
        if let Some(v) = var("MODKIT_HOST") {
            let list = v.split(',').map(str::trim).filter(|s| !s.is_empty());
            self.invoke.host = Some(list.map(String::from).collect());
        }
        if let Some(v) = var("MODKIT_COLOCATE") {
            self.invoke.colocate = v.parse().map_err(|_| {
                Error::config(format!(
                    "MODKIT_COLOCATE: expected true or false, got {v:?}"
                ))
            })?;
        }
        if let Some(v) = var("MODKIT_REGISTRY_TTL") {
            self.registry.ttl = dur("MODKIT_REGISTRY_TTL", v)?;
        }
        if let Some(v) = var("MODKIT_REGISTRY_SWEEP") {
            self.registry.sweep = dur("MODKIT_REGISTRY_SWEEP", v)?;
        }
        if let Some(v) = var("MODKIT_REDIS_URL") {
            self.redis.url = v;
        }
        if let Some(v) = var("MODKIT_REDIS_TLS_CA") {
            self.redis.tls.get_or_insert_with(Default::default).ca = Some(v.into());
        }
        if let Some(v) = var("MODKIT_REDIS_TLS_CERT") {
            self.redis.tls.get_or_insert_with(Default::default).cert = Some(v.into());
        }
        if let Some(v) = var("MODKIT_REDIS_TLS_KEY") {
            self.redis.tls.get_or_insert_with(Default::default).key = Some(v.into());
        }
        if let Some(v) = var("MODKIT_REDIS_PREFIX") {
            self.redis.prefix = v;
        }
        self.rpc.apply_env(&var)?;
        if let Some(v) = var("MODKIT_METRICS_LISTEN") {
            self.metrics.listen = Some(v).filter(|v| !v.trim().is_empty());
        }
        Ok(())
    }

    /// This node's id: the configured one, or `node-<pid>`.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| format!("node-{}", std::process::id()))
    }
}

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h"`, or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (use e.g. \"250ms\", \"5s\", \"2m\")"))?;
    match unit.trim() {
        "" | "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        other => Err(format!(
            "unknown duration unit {other:?} in {text:?} (ms, s, m, h)"
        )),
    }
}

/// Serde for a [`Duration`] written as `"5s"` / `"250ms"` / milliseconds.
pub mod duration {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Millis(u64),
        Text(String),
    }

    /// Writes `"<ms>ms"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    /// Reads a number of milliseconds or a duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Text::deserialize(d)? {
            Text::Millis(ms) => Ok(Duration::from_millis(ms)),
            Text::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Serde for an optional [`Duration`] (see [`duration`]).
pub mod opt_duration {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Writes `None` or `"<ms>ms"`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::duration")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env() {
        let mut c = Config::from_toml(
            "mode = \"distribute\"\n[invoke]\ntimeout = \"250ms\"\n[registry]\nttl = 3000\n",
        )
        .unwrap();
        assert_eq!(c.mode, Some(BackendKind::Distribute));
        assert_eq!(c.invoke.timeout, Duration::from_millis(250));
        assert_eq!(c.registry.ttl, Duration::from_secs(3));
        assert_eq!(c.registry.sweep, Duration::from_secs(1));
        c.apply_env(|k| match k {
            "MODKIT_MODE" => Some("monolith".into()),
            "MODKIT_HOST" => Some("Catalog, Auth".into()),
            "MODKIT_REDIS_URL" => Some("redis://127.0.0.1:7001".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.mode, Some(BackendKind::Monolith));
        assert!(c.invoke.hosts("Auth") && !c.invoke.hosts("Orders"));
        assert_eq!(c.redis.url, "redis://127.0.0.1:7001");
    }

    #[test]
    fn metrics_listen_from_file_and_env() {
        let mut c = Config::from_toml("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(c.metrics.listen.as_deref(), Some("127.0.0.1:9464"));
        c.apply_env(|k| (k == "MODKIT_METRICS_LISTEN").then(|| "0.0.0.0:9100".into()))
            .unwrap();
        assert_eq!(c.metrics.listen.as_deref(), Some("0.0.0.0:9100"));
        c.apply_env(|k| (k == "MODKIT_METRICS_LISTEN").then(String::new))
            .unwrap();
        assert_eq!(c.metrics.listen, None, "empty turns it off");
        assert!(Config::from_toml("[metrics]\nport = 1\n").is_err());
    }

    #[test]
    fn bad_input_is_a_config_error() {
        assert!(Config::from_toml("nope = 1").is_err());
        assert!(Config::from_toml("[invoke]\ntimeout = \"5 fortnights\"").is_err());
        let mut c = Config::default();
        let e = c
            .apply_env(|k| (k == "MODKIT_MODE").then(|| "cloud".into()))
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
    }
}
