//! `[metrics]`: where the Prometheus endpoint and the status page are served.

use serde::{Deserialize, Serialize};

/// Metrics settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` to serve `GET /metrics` (Prometheus text), `GET /status`
    /// (the live status page) and `GET /status.json` on, with the facade's
    /// `prometheus` feature; port 0 takes a free one. Unset (the default):
    /// no recorder is installed and nothing is served.
    pub listen: Option<String>,
}
