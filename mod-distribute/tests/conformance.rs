//! The conformance suite of mod-api, run against the distributed backend on a
//! real `redis-server` that each test starts on a free port and stops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mod_api::config::RegistryConfig;
use mod_api::testkit::Harness;
use mod_api::Config;
use mod_distribute::RedisConfig;
use mod_distribute::{Distributed, RedisServer};

/// One Redis per test; every `node()` is a separate runtime (own registry
/// listener, own RPC server) connected to it, as separate processes would be.
struct RedisHarness {
    server: RedisServer,
    nodes: Mutex<Vec<Distributed>>,
    next: AtomicUsize,
}

#[mod_api::async_trait]
impl Harness for RedisHarness {
    type Backend = Distributed;

    async fn node(&self) -> Distributed {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let config = Config {
            node_id: Some(format!("node-{n}")),
            registry: RegistryConfig {
                sweep: Duration::from_millis(50),
                ttl: Duration::from_millis(600),
            },
            ..Config::default()
        }
        .with_section(&RedisConfig {
            url: self.server.url(),
            prefix: "conformance".into(),
            ..RedisConfig::default()
        });
        let node = Distributed::start(config).await.expect("distributed node");
        self.nodes.lock().unwrap().push(node.clone());
        node
    }
}

async fn harness() -> RedisHarness {
    RedisHarness {
        server: RedisServer::start()
            .expect("redis-server (install it: apt-get install redis-server)"),
        nodes: Mutex::new(Vec::new()),
        next: AtomicUsize::new(0),
    }
}

mod_api::conformance_suite!(harness);
