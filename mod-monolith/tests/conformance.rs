//! The conformance suite of mod-api, run against the monolith.

use std::time::Duration;

use mod_api::testkit::Harness;
use mod_api::Config;
use mod_monolith::Monolith;

/// One monolith per test; every node of it is the same in-process runtime,
/// with a `data_dir` of its own (so queue overflow is exercised).
struct MonolithHarness {
    node: Monolith,
    _data_dir: tempfile::TempDir,
}

#[mod_api::async_trait]
impl Harness for MonolithHarness {
    type Backend = Monolith;

    async fn node(&self) -> Monolith {
        self.node.clone()
    }
}

async fn harness() -> MonolithHarness {
    let data_dir = tempfile::tempdir().expect("a temporary data_dir");
    let mut config = Config::default();
    config.registry.sweep = Duration::from_millis(50);
    config.registry.ttl = Duration::from_millis(600);
    config.data_dir = Some(data_dir.path().to_path_buf());
    MonolithHarness {
        node: Monolith::new(config).expect("monolith"),
        _data_dir: data_dir,
    }
}

mod_api::conformance_suite!(harness);
