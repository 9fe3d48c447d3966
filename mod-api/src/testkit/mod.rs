//! The conformance suite: SPEC §2 as tests, run unchanged against every backend.
//!
//! A backend crate provides a [`Harness`] — something that makes nodes of one
//! fresh, isolated test deployment — and expands [`conformance_suite!`](crate::conformance_suite)
//! in a test file:
//!
//! ```no_run
//! use mod_api::testkit::Harness;
//! use mod_api::Config;
//! use mod_monolith::Monolith;
//!
//! /// Every node of a monolith deployment is the same in-process runtime.
//! struct MonolithHarness(Monolith);
//!
//! #[mod_api::async_trait]
//! impl Harness for MonolithHarness {
//!     type Backend = Monolith;
//!     async fn node(&self) -> Monolith {
//!         self.0.clone()
//!     }
//! }
//!
//! async fn harness() -> MonolithHarness {
//!     let mut config = Config::default();
//!     config.registry.sweep = std::time::Duration::from_millis(50);
//!     MonolithHarness(Monolith::new(config).expect("monolith"))
//! }
//!
//! mod_api::conformance_suite!(harness);
//! # fn main() {}
//! ```
//!
//! That makes one `#[test]` per contract behaviour, grouped in modules per
//! building block (`cache::…`, `queue::…`), and the tests of the optional
//! features in `optional::…`, run as the backend's
//! [`Backend::capabilities`] say. Each test gets its own harness.
//! Time-based checks use short durations and poll with generous bounds
//! ([`eventually`]), so a loaded two-core machine does not make them flake.

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backend::Backend;

pub mod cache;
pub mod cache_update;
pub mod invoke;
pub mod optional;
pub mod queue;
pub mod registry;
pub mod session;

/// Makes nodes of one isolated test deployment.
///
/// Nodes of one harness share state as nodes of one deployment do: the monolith
/// returns the same in-process runtime; the distributed backend returns separate
/// runtimes connected to the same shared store. The registry of a harness's nodes must
/// sweep expired instances at least every 200 ms, so expiry tests stay short.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The backend under test.
    type Backend: Backend;

    /// A node of this deployment (the first call makes the first node).
    async fn node(&self) -> Self::Backend;
}

/// Runs a test future on a fresh two-worker runtime, failing it after 120 s.
pub fn run<F: Future<Output = ()>>(test: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), test)
            .await
            .expect("conformance test did not finish within 120 s");
    });
}

/// Polls `check` until it returns `true` or `within` passes; panics with `what` then.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < within,
            "not true within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A length prefix claiming 2^40 bytes in the wire format of this build's
/// codec, then three bytes: as a `String` or byte buffer it once made a decoder
/// allocate 1 TiB and abort the process. Decoding it must be a `Codec` error.
pub fn length_bomb() -> Vec<u8> {
    use crate::codec::{Codec, DefaultCodec};
    // Both codecs write a length prefix as they write a u64.
    let mut b = DefaultCodec::encode(&(1u64 << 40)).expect("a u64 encodes");
    b.extend_from_slice(b"abc");
    b
}

/// Says that conformance test `test` does not apply to the backend under
/// test, which does not claim `capability` ([`Capabilities`](crate::Capabilities)),
/// as an INFO event and on stderr (shown by `cargo test -- --nocapture`).
pub fn skipped(test: &str, capability: &str) {
    tracing::info!(
        test,
        capability,
        "conformance test skipped: capability not claimed"
    );
    eprintln!("conformance test {test} skipped: the backend does not claim {capability}");
}

/// A name unique within the process, for building blocks opened by a test.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Expands to one `#[test]` per conformance behaviour, each calling `$harness().await`.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:path) => {
        $crate::__conformance_registry!($harness);
        $crate::__conformance_invoke!($harness);
        $crate::__conformance_cache!($harness);
        $crate::__conformance_cache_update!($harness);
        $crate::__conformance_session!($harness);
        $crate::__conformance_queue!($harness);
        $crate::__conformance_optional!($harness);
    };
}

/// Expands the tests `$name…` of block `$block` (module `testkit::$block`).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($harness:path, $block:ident; $($name:ident),* $(,)?) => {
        mod $block {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $crate::testkit::run(async {
                        let harness = $harness().await;
                        $crate::testkit::$block::$name(&harness).await;
                    });
                }
            )*
        }
    };
}
