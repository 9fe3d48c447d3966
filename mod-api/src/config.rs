//! Configuration: defaults, then a TOML file, then `MODKIT_*` environment variables.
//!
//! ```toml
//! mode = "monolith"            # the package to run (a backend's name); default: the facade's
//! node_id = "node-a"           # default: "<hostname-or-node>-<pid>"
//! data_dir = "/var/lib/shop"   # where a backend keeps files (default: none)
//!
//! [invoke]
//! timeout = "5s"               # default deadline of a remote call
//! host = ["Catalog", "Auth"]   # services this process serves; [] none, ["*"] all (unset: all, with a WARN)
//! colocate = true              # call services hosted here without the network
//! balance = "round_robin"      # or "least_in_flight"
//! retries = 2                  # other instances tried by idempotent calls
//! site = "a"                   # calls prefer instances of the same site (default: none)
//!
//! [registry]
//! ttl = "10s"                  # lease of a registered instance
//! sweep = "1s"                 # how often expired instances are removed
//!
//! [broker]                     # a backend's own section (see "Sections" below)
//! url = "…"
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
//! | `MODKIT_SITE` | `invoke.site` (empty: none) |
//! | `MODKIT_REGISTRY_TTL`, `MODKIT_REGISTRY_SWEEP` | `registry.ttl`, `registry.sweep` |
//! | `MODKIT_METRICS_LISTEN` | `metrics.listen` (empty: off) |
//! | `MODKIT_<SECTION>_*` | a backend's section, applied by that backend ([`Section::apply_env`]) |
//!
//! # Sections
//!
//! Every other top-level table belongs to a backend: `[name]` is kept as raw
//! TOML in [`Config::sections`] and parsed by the backend that owns it into
//! its own typed [`Section`] (which denies unknown fields, so a misspelt field
//! is still an error naming it). The `MODKIT_*` variables that
//! [`Config::apply_env`] sees are recorded and applied by that backend on top
//! of its section, so the precedence stays defaults, file, environment. A
//! section that no package compiled into the application reads is a
//! [`Config`](crate::ErrorKind::Config) error when the facade starts
//! ([`Sections::check_known`]); each backend's documentation lists its sections.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod invoke;
mod metrics;
mod sections;

pub use invoke::{Balance, InvokeConfig, OutlierConfig, HOST_ALL};
pub use metrics::MetricsConfig;
pub use sections::{Section, Sections};

/// The whole configuration of a modkit runtime.
///
/// Only backend-neutral settings are typed here; a backend's own settings are
/// its [`Section`]s, in [`sections`](Config::sections).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Which package to run, by its [`Backend::name`](crate::Backend::name);
    /// unset: the facade's default package. The facade checks the name.
    pub mode: Option<String>,
    /// This node's id; default `node-<pid>`.
    pub node_id: Option<String>,
    /// Where a backend keeps its files (for the monolith: its queues'
    /// overflow); default: none.
    pub data_dir: Option<PathBuf>,
    /// Invocation.
    pub invoke: InvokeConfig,
    /// Registry.
    pub registry: RegistryConfig,
    /// The Prometheus endpoint and status page (facade feature `prometheus`).
    pub metrics: MetricsConfig,
    /// Every other top-level table: the backends' own sections.
    #[serde(flatten)]
    pub sections: Sections,
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

impl Config {
    /// Parses TOML text (missing fields take their defaults; unknown ones are
    /// errors, in a backend's section when that backend parses it).
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text)
            .map_err(|e| Error::config(format!("invalid configuration: {e}")))?;
        config.sections.check_tables()?;
        Ok(config)
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
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        config.apply_env(vars)?;
        Ok(config)
    }

    /// Applies the `MODKIT_*` overrides among `vars` (testable without touching
    /// the process environment): this crate's now, a backend's section's when
    /// that backend parses it ([`Config::section`]).
    pub fn apply_env<K, V>(&mut self, vars: impl IntoIterator<Item = (K, V)>) -> Result<()>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let var = |key: &str| vars.get(key).cloned();
        let dur = |key: &str, text: String| {
            parse_duration(&text).map_err(|e| Error::config(format!("{key}: {e}")))
        };
        if let Some(v) = var("MODKIT_MODE") {
            self.mode = Some(v);
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
        if let Some(v) = var("MODKIT_SITE") {
            self.invoke.site = Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        }
        if let Some(v) = var("MODKIT_REGISTRY_TTL") {
            self.registry.ttl = dur("MODKIT_REGISTRY_TTL", v)?;
        }
        if let Some(v) = var("MODKIT_REGISTRY_SWEEP") {
            self.registry.sweep = dur("MODKIT_REGISTRY_SWEEP", v)?;
        }
        if let Some(v) = var("MODKIT_METRICS_LISTEN") {
            self.metrics.listen = Some(v).filter(|v| !v.trim().is_empty());
        }
        self.sections.record_env(vars);
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
        assert_eq!(c.mode.as_deref(), Some("distribute"));
        assert_eq!(c.invoke.timeout, Duration::from_millis(250));
        assert_eq!(c.registry.ttl, Duration::from_secs(3));
        assert_eq!(c.registry.sweep, Duration::from_secs(1));
        c.apply_env([
            ("MODKIT_MODE", "monolith"),
            ("MODKIT_HOST", "Catalog, Auth"),
        ])
        .unwrap();
        assert_eq!(c.mode.as_deref(), Some("monolith"));
        assert!(c.invoke.hosts("Auth") && !c.invoke.hosts("Orders"));
        // A later call applies only its own variables.
        c.mode = Some("distribute".into());
        c.apply_env([("MODKIT_NODE_ID", "n1")]).unwrap();
        assert_eq!(c.mode.as_deref(), Some("distribute"));
    }

    #[test]
    fn site_from_file_and_env() {
        let mut c = Config::from_toml("[invoke]\nsite = \"a\"\n").unwrap();
        assert_eq!(c.invoke.site.as_deref(), Some("a"));
        c.apply_env([("MODKIT_SITE", " b ")]).unwrap();
        assert_eq!(c.invoke.site.as_deref(), Some("b"));
        c.apply_env([("MODKIT_SITE", "")]).unwrap();
        assert_eq!(c.invoke.site, None, "empty: no site");
    }

    #[test]
    fn metrics_listen_from_file_and_env() {
        let mut c = Config::from_toml("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(c.metrics.listen.as_deref(), Some("127.0.0.1:9464"));
        c.apply_env([("MODKIT_METRICS_LISTEN", "0.0.0.0:9100")])
            .unwrap();
        assert_eq!(c.metrics.listen.as_deref(), Some("0.0.0.0:9100"));
        c.apply_env([("MODKIT_METRICS_LISTEN", "")]).unwrap();
        assert_eq!(c.metrics.listen, None, "empty turns it off");
        assert!(Config::from_toml("[metrics]\nport = 1\n").is_err());
    }

    #[test]
    fn bad_input_is_a_config_error() {
        assert!(Config::from_toml("nope = 1").is_err());
        assert!(Config::from_toml("[invoke]\ntimeout = \"5 fortnights\"").is_err());
        assert!(Config::from_toml("[registry]\ntll = 3").is_err());
        let mut c = Config::default();
        let e = c.apply_env([("MODKIT_COLOCATE", "sometimes")]).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
    }
}
