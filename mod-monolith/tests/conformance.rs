//! The conformance suite of mod-api, run against the monolith.

use std::time::Duration;

use mod_api::testkit::Harness;
use mod_api::Config;
use mod_monolith::Monolith;

/// One monolith per test; every node of it is the same in-process runtime.
struct MonolithHarness {
    node: Monolith,
}

#[mod_api::async_trait]
impl Harness for MonolithHarness {
    type Backend = Monolith;

    async fn node(&self) -> Monolith {
        self.node.clone()
    }
}

async fn harness() -> MonolithHarness {
    let mut config = Config::default();
    config.registry.sweep = Duration::from_millis(50);
    config.registry.ttl = Duration::from_millis(600);
    MonolithHarness {
        node: Monolith::new(config).expect("monolith"),
    }
}

mod_api::conformance_suite!(harness);
