//! The distributed package's sections of the configuration, `[redis]` and
//! `[rpc]`, with their `MODKIT_REDIS_*` / `MODKIT_RPC_*` overrides.
//!
//! ```toml
//! [redis]
//! url = "redis://127.0.0.1:6379"  # user:password@ for AUTH/ACL; rediss:// for TLS
//! prefix = "modkit"
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

use mod_api::config::Section;
use mod_api::Result;
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
        ])
        .unwrap();
        let redis: RedisConfig = c.section().unwrap();
        assert_eq!(redis.url, "redis://127.0.0.1:7001");
        assert_eq!(redis.prefix, "shop");
        assert_eq!(redis.tls.unwrap().ca, Some("/ca.pem".into()));
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
        };
        let mut c = Config::default();
        c.set_section(&redis);
        assert_eq!(c.section::<RedisConfig>().unwrap(), redis);
        c.edit_section(|r: &mut RedisConfig| r.tls = None).unwrap();
        assert_eq!(c.section::<RedisConfig>().unwrap().tls, None);
    }
}
