//! The distributed package's sections of the configuration, `[redis]` and
//! `[rpc]`, with their `MODKIT_REDIS_*` / `MODKIT_RPC_*` overrides.
//!
//! ```toml
//! [redis]
//! url = "redis://127.0.0.1:6379"  # user:password@ for AUTH/ACL; rediss:// for TLS
//! prefix = "modkit"
//! wait_replicas = 0            # >0: acknowledged writes wait for this many replicas (WAIT)
//! wait_timeout = "1s"          # how long they wait; then a retryable Timeout
//! controllers = []             # HA: "host:port" of the controllers; follow their primary
//!
//! [redis.tls]                  # PEM files, with a rediss:// URL (default: the system roots)
//! ca = "/etc/shop/redis-ca.pem"
//! cert = "/etc/shop/redis-client.pem"  # for a server with tls-auth-clients yes
//! key = "/etc/shop/redis-client.key"
//!
//! [rpc]
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
//! [rpc.tls]                    # PEM files (default: no TLS)
//! cert = "/etc/shop/node.pem"  # server certificate chain; key = its private key
//! key = "/etc/shop/node.key"
//! ca = "/etc/shop/ca.pem"      # CA clients verify servers against
//! client_ca = "/etc/shop/ca.pem"  # mutual TLS: the server requires client certificates
//! client_cert = "/etc/shop/node.pem"
//! client_key = "/etc/shop/node.key"
//! ```
//!
//! | variable | field |
//! |---|---|
//! | `MODKIT_REDIS_URL`, `MODKIT_REDIS_PREFIX` | `redis.url`, `redis.prefix` |
//! | `MODKIT_REDIS_WAIT_REPLICAS`, `MODKIT_REDIS_WAIT_TIMEOUT` | `redis.wait_replicas`, `redis.wait_timeout` |
//! | `MODKIT_REDIS_CONTROLLERS` (comma-separated) | `redis.controllers` |
//! | `MODKIT_REDIS_TLS_CA`, `MODKIT_REDIS_TLS_CERT`, `MODKIT_REDIS_TLS_KEY` | `redis.tls.*` |
//! | `MODKIT_RPC_LISTEN`, `MODKIT_RPC_ADVERTISE`, `MODKIT_RPC_SECRET`, `MODKIT_RPC_MAX_FRAME_BYTES` | `rpc.*` |
//! | `MODKIT_RPC_MAX_QUEUED_REPLY_BYTES`, `MODKIT_RPC_MAX_CALLS_PER_CONNECTION`, `MODKIT_RPC_MAX_CONNECTIONS`, `MODKIT_RPC_IDLE_TIMEOUT`, `MODKIT_RPC_FRAME_TIMEOUT` | `rpc.*` limits |
//! | `MODKIT_RPC_INSECURE` (`1`/`0`) | `rpc.insecure` |
//! | `MODKIT_RPC_TLS_CERT`, `_KEY`, `_CA`, `_CLIENT_CERT`, `_CLIENT_KEY`, `_CLIENT_CA`, `_SERVER_NAME` | `rpc.tls.*` |
//!
//! Read them with [`Config::section`](mod_api::Config::section) (the
//! variables [`Config::apply_env`](mod_api::Config::apply_env) saw apply on
//! top of the file); set them in code with
//! `config.edit_section(|r: &mut RedisConfig| r.url = url)`.

use std::path::PathBuf;
use std::time::Duration;

use mod_api::config::{parse_duration, Section};
use mod_api::{Error, Result};
use serde::{Deserialize, Serialize};

mod rpc;

pub use rpc::{RpcConfig, RpcTlsConfig};

/// The sections this package reads: what the facade accepts besides
/// mod-api's own when this package is compiled in.
pub const SECTIONS: &[&str] = &[RedisConfig::NAME, RpcConfig::NAME];

/// Redis settings: section `[redis]`.
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
    /// Replicas that must confirm a write before modkit acknowledges it to
    /// its caller (`WAIT n`): queue offer and ack, session create, update,
    /// rotate and destroy, registry register. `0` (default): asynchronous
    /// replication, as Redis does by itself — such a write can be lost in a
    /// failover. See the package docs, "Durable writes".
    pub wait_replicas: u32,
    /// How long an acknowledged write waits for `wait_replicas` confirmations
    /// before it fails with a retryable [`Timeout`](mod_api::ErrorKind::Timeout)
    /// (the write is applied on the primary but not known replicated). Default
    /// 1 s; at most 4 s (under the connection's 5 s reply timeout).
    #[serde(with = "mod_api::config::duration")]
    pub wait_timeout: Duration,
    /// `host:port` of the HA controllers (`modkit-ha controller`, or nodes
    /// with an `[ha]` section). When set, the primary is whichever node the
    /// controllers' committed topology names, and this process follows every
    /// failover; `url` then gives only scheme, credentials and database.
    /// Empty (default): `url` is the one fixed Redis.
    pub controllers: Vec<String>,
}

/// The longest [`RedisConfig::wait_timeout`]: the shared connection gives a
/// reply 5 s, and `WAIT` must answer within it.
pub const MAX_WAIT_TIMEOUT: Duration = Duration::from_secs(4);

impl RedisConfig {
    /// Refuses settings that cannot work: a `wait_timeout` of 0 (Redis would
    /// wait forever) or above [`MAX_WAIT_TIMEOUT`] when `wait_replicas` is set.
    pub fn validate(&self) -> Result<()> {
        if self.wait_replicas > 0
            && (self.wait_timeout.is_zero() || self.wait_timeout > MAX_WAIT_TIMEOUT)
        {
            return Err(Error::config(format!(
                "[redis] wait_timeout must be above 0 and at most {MAX_WAIT_TIMEOUT:?} \
                 when wait_replicas is set (got {:?})",
                self.wait_timeout
            )));
        }
        Ok(())
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "modkit".into(),
            tls: None,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            controllers: Vec::new(),
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

impl Section for RedisConfig {
    const NAME: &'static str = "redis";

    /// Applies the `MODKIT_REDIS_*` overrides read through `var`.
    fn apply_env(&mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(v) = var("MODKIT_REDIS_URL") {
            self.url = v;
        }
        if let Some(v) = var("MODKIT_REDIS_PREFIX") {
            self.prefix = v;
        }
        if let Some(v) = var("MODKIT_REDIS_WAIT_REPLICAS") {
            self.wait_replicas = v.trim().parse().map_err(|_| {
                Error::config(format!("MODKIT_REDIS_WAIT_REPLICAS: not a count: {v:?}"))
            })?;
        }
        if let Some(v) = var("MODKIT_REDIS_WAIT_TIMEOUT") {
            self.wait_timeout = parse_duration(&v)
                .map_err(|e| Error::config(format!("MODKIT_REDIS_WAIT_TIMEOUT: {e}")))?;
        }
        if let Some(v) = var("MODKIT_REDIS_CONTROLLERS") {
            self.controllers = v
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
        }
        type Field = fn(&mut RedisTlsConfig) -> &mut Option<PathBuf>;
        let files: [(&str, Field); 3] = [
            ("MODKIT_REDIS_TLS_CA", |t| &mut t.ca),
            ("MODKIT_REDIS_TLS_CERT", |t| &mut t.cert),
            ("MODKIT_REDIS_TLS_KEY", |t| &mut t.key),
        ];
        for (key, field) in files {
            if let Some(v) = var(key) {
                *field(self.tls.get_or_insert_with(Default::default)) = Some(v.into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mod_api::Config;

    #[test]
    fn defaults_then_file_then_env() {
        let mut c = Config::from_toml("[redis]\nprefix = \"shop\"\n").unwrap();
        c.apply_env([
            ("MODKIT_REDIS_URL", "redis://127.0.0.1:7001"),
            ("MODKIT_REDIS_TLS_CA", "/ca.pem"),
            ("MODKIT_REDIS_WAIT_REPLICAS", "1"),
            ("MODKIT_REDIS_WAIT_TIMEOUT", "250ms"),
        ])
        .unwrap();
        let redis: RedisConfig = c.section().unwrap();
        assert_eq!(redis.url, "redis://127.0.0.1:7001");
        assert_eq!(redis.prefix, "shop");
        assert_eq!(redis.tls.as_ref().unwrap().ca, Some("/ca.pem".into()));
        assert_eq!(redis.wait_replicas, 1);
        assert_eq!(redis.wait_timeout, Duration::from_millis(250));
        redis.validate().unwrap();
        let forever = RedisConfig {
            wait_timeout: Duration::ZERO,
            ..redis
        };
        assert_eq!(
            forever.validate().unwrap_err().kind(),
            mod_api::ErrorKind::Config
        );
        let typo = Config::from_toml("[redis]\nurll = \"redis://x\"\n").unwrap();
        let e = typo.section::<RedisConfig>().unwrap_err();
        assert_eq!(e.kind(), mod_api::ErrorKind::Config);
        assert!(
            e.to_string().contains("[redis]") && e.to_string().contains("urll"),
            "{e}"
        );
    }

    #[test]
    fn every_field_round_trips_through_the_config() {
        let redis = RedisConfig {
            url: "rediss://u:p@h:1/2".into(),
            prefix: "p".into(),
            tls: Some(RedisTlsConfig {
                ca: Some("/ca.pem".into()),
                cert: Some("/c.pem".into()),
                key: Some("/k.pem".into()),
            }),
            wait_replicas: 2,
            wait_timeout: Duration::from_millis(1500),
            controllers: vec!["c1:7070".into(), "c2:7070".into()],
        };
        let mut c = Config::default();
        c.set_section(&redis);
        assert_eq!(c.section::<RedisConfig>().unwrap(), redis);
        c.edit_section(|r: &mut RedisConfig| r.tls = None).unwrap();
        assert_eq!(c.section::<RedisConfig>().unwrap().tls, None);
    }
}
