//! A benchmark's distributed node configuration, shared by the bench
//! targets (each includes this file with `#[path]`).

use modkit::config::InvokeConfig;
use modkit::distribute::RedisConfig;
use modkit::Config;

/// A distributed node's configuration: `prefix` isolates a run's keys; `host`
/// lists the services it serves (empty: it must call every service remotely).
pub fn node_config(url: &str, prefix: &str, node: &str, host: &[&str]) -> Config {
    Config {
        node_id: Some(node.into()),
        invoke: InvokeConfig {
            host: Some(host.iter().map(|s| s.to_string()).collect()),
            // Never short-cut to a local object: the remote benches measure the network path.
            colocate: false,
            ..InvokeConfig::default()
        },
        ..Config::default()
    }
    .with_section(&RedisConfig {
        url: url.into(),
        prefix: prefix.into(),
        ..RedisConfig::default()
    })
}
