//! Conformance tests of the invoke building block.
//!
//! They use one test service, [`Counter`], provided on one node and called
//! through `get` on another: in the monolith both are the same process, in the
//! distributed package the call crosses RPC.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{eventually, Harness};
use crate::backend::Backend;
use crate::error::{Error, ErrorKind};
use crate::invoke::{MethodInfo, Service, ServiceExt};
use crate::registry::Status;

/// The [`Counter`] service's own error type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterError {
    /// The error a method returns on purpose.
    Failed(String),
    /// A transport failure (no instance, deadline, …), by kind.
    Transport(ErrorKind),
}

impl From<Error> for CounterError {
    fn from(err: Error) -> Self {
        CounterError::Transport(err.kind())
    }
}

/// A counter: the service of the invoke conformance tests.
#[crate::service(crate = crate, name = "modkit.testkit.Counter")]
pub trait Counter {
    /// Adds `n`; returns the new count.
    async fn add(&self, n: u64) -> Result<u64, CounterError>;
    /// The current count; safe to retry.
    #[idempotent]
    async fn get(&self) -> Result<u64, CounterError>;
    /// Always fails with [`CounterError::Failed`]`(msg)`.
    async fn fail(&self, msg: String) -> Result<(), CounterError>;
    /// Sleeps `millis` ms, then adds 1; returns the new count (for deadlines:
    /// a call dropped before the end leaves the count as it was).
    async fn stall(&self, millis: u64) -> Result<u64, CounterError>;
}

/// A service that no test provides.
#[crate::service(crate = crate, name = "modkit.testkit.Absent")]
pub trait Absent {
    /// Never answers: nobody provides the service.
    async fn ping(&self) -> Result<(), CounterError>;
}

/// The in-memory [`Counter`].
#[derive(Debug, Default)]
pub struct MemCounter {
    count: AtomicU64,
}

#[async_trait::async_trait]
impl Counter for MemCounter {
    async fn add(&self, n: u64) -> Result<u64, CounterError> {
        Ok(self.count.fetch_add(n, Ordering::SeqCst) + n)
    }

    async fn get(&self) -> Result<u64, CounterError> {
        Ok(self.count.load(Ordering::SeqCst))
    }

    async fn fail(&self, msg: String) -> Result<(), CounterError> {
        Err(CounterError::Failed(msg))
    }

    async fn stall(&self, millis: u64) -> Result<u64, CounterError> {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        Ok(self.count.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

/// The invoke tests, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_invoke {
    ($harness:path) => {
        $crate::__conformance_tests!($harness, invoke;
            provided_service_is_callable_from_another_node,
            state_persists_across_calls_and_nodes,
            method_error_comes_back_as_its_own_variant,
            get_of_a_service_provided_nowhere_fails,
            providing_twice_on_one_node_is_already_exists,
            provided_service_is_listed_in_the_registry,
            methods_report_idempotency_in_declaration_order,
            concurrent_calls_all_succeed,
            per_call_deadline_times_out_and_drops_the_call,
        );
    };
}

/// Provides a fresh [`MemCounter`] on `node`.
async fn provide(node: &impl Backend) {
    node.container()
        .provide::<dyn Counter>(Arc::new(MemCounter::default()))
        .await
        .expect("provide Counter");
}

/// Gets the [`Counter`] through `node`.
fn counter(node: &impl Backend) -> Arc<dyn Counter> {
    node.container().get::<dyn Counter>().expect("get Counter")
}

/// Provided on one node, a service is reached through `get` on another.
pub async fn provided_service_is_callable_from_another_node<H: Harness>(h: &H) {
    let (a, b) = (h.node().await, h.node().await);
    provide(&a).await;
    let remote = counter(&b);
    assert_eq!(remote.add(5).await, Ok(5));
    assert_eq!(remote.get().await, Ok(5));
}

/// One instance serves every call: state accumulates across calls, clients and nodes.
pub async fn state_persists_across_calls_and_nodes<H: Harness>(h: &H) {
    let (a, b) = (h.node().await, h.node().await);
    provide(&a).await;
    assert_eq!(counter(&b).add(2).await, Ok(2));
    assert_eq!(counter(&b).add(3).await, Ok(5));
    assert_eq!(
        counter(&a).add(10).await,
        Ok(15),
        "the provider's node sees the same state"
    );
    assert_eq!(counter(&b).get().await, Ok(15));
}

/// A method's own error comes back as that error, not as a transport failure.
pub async fn method_error_comes_back_as_its_own_variant<H: Harness>(h: &H) {
    let (a, b) = (h.node().await, h.node().await);
    provide(&a).await;
    let remote = counter(&b);
    let msg = "out of stock: ünïcode ✓".to_string();
    assert_eq!(
        remote.fail(msg.clone()).await,
        Err(CounterError::Failed(msg))
    );
    assert_eq!(
        remote.add(1).await,
        Ok(1),
        "a failed call leaves the service usable"
    );
}

/// A service provided nowhere fails with NotFound or Unavailable: at `get`
/// (monolith) or at the first call (a proxy that resolves lazily).
pub async fn get_of_a_service_provided_nowhere_fails<H: Harness>(h: &H) {
    let (a, b) = (h.node().await, h.node().await);
    provide(&a).await;
    let kind = match b.container().get::<dyn Absent>() {
        Err(err) => err.kind(),
        Ok(proxy) => match tokio::time::timeout(Duration::from_secs(30), proxy.ping()).await {
            Ok(Err(CounterError::Transport(kind))) => kind,
            Ok(other) => panic!("a call to a service provided nowhere returned {other:?}"),
            Err(_) => panic!("a call to a service provided nowhere did not fail within 30 s"),
        },
    };
    assert!(
        matches!(kind, ErrorKind::NotFound | ErrorKind::Unavailable),
        "expected NotFound or Unavailable, got {kind:?}"
    );
}

/// Providing a service twice on one node is AlreadyExists; the first stays in use.
pub async fn providing_twice_on_one_node_is_already_exists<H: Harness>(h: &H) {
    let a = h.node().await;
    provide(&a).await;
    assert_eq!(counter(&a).add(4).await, Ok(4));
    let err = a
        .container()
        .provide::<dyn Counter>(Arc::new(MemCounter::default()))
        .await
        .expect_err("second provide");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        counter(&a).get().await,
        Ok(4),
        "the first instance still serves"
    );
}

/// Providing a service registers an Up instance of it, visible on every node.
pub async fn provided_service_is_listed_in_the_registry<H: Harness>(h: &H) {
    let (a, b) = (h.node().await, h.node().await);
    let name = <dyn Counter as Service>::NAME;
    assert_eq!(name, "modkit.testkit.Counter");
    provide(&a).await;
    let reg = b.registry();
    eventually(
        "an Up instance of the provided service is registered",
        Duration::from_secs(5),
        || async {
            reg.lookup(name).await.is_ok_and(|found| {
                found
                    .iter()
                    .any(|i| i.service == name && i.status == Status::Up)
            })
        },
    )
    .await;
    let services = reg.services().await.expect("services");
    assert!(
        services.iter().any(|s| s == name),
        "{name} not in {services:?}"
    );
}

/// `METHODS` lists the methods in declaration order, marking `#[idempotent]` ones.
pub async fn methods_report_idempotency_in_declaration_order<H: Harness>(_h: &H) {
    let expected = [
        MethodInfo {
            name: "add",
            idempotent: false,
        },
        MethodInfo {
            name: "get",
            idempotent: true,
        },
        MethodInfo {
            name: "fail",
            idempotent: false,
        },
        MethodInfo {
            name: "stall",
            idempotent: false,
        },
    ];
    assert_eq!(<dyn Counter as Service>::METHODS, expected);
    assert_eq!(<dyn Absent as Service>::NAME, "modkit.testkit.Absent");
}

/// 32 tasks calling at once all succeed, and no update is lost.
pub async fn concurrent_calls_all_succeed<H: Harness>(h: &H) {
    const TASKS: u64 = 32;
    const CALLS: u64 = 10;
    let (a, b) = (h.node().await, h.node().await);
    provide(&a).await;
    let remote = counter(&b);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let remote = remote.clone();
            tokio::spawn(async move {
                for _ in 0..CALLS {
                    remote.add(1).await.expect("concurrent add");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task finished without panicking");
    }
    assert_eq!(remote.get().await, Ok(TASKS * CALLS));
}

/// A call through `handle.with_timeout(short)` that outlasts it fails with
/// `Timeout` at the deadline, and the callee's future is dropped (its work
/// after the deadline never happens); the handle it came from keeps its
/// default deadline, and the last deadline set wins.
pub async fn per_call_deadline_times_out_and_drops_the_call<H: Harness>(h: &H) {
    let (a, b) = (h.node().await, h.node().await);
    provide(&a).await;
    let remote = counter(&b);
    let start = Instant::now();
    let outcome = remote
        .with_timeout(Duration::from_millis(100))
        .stall(2_000)
        .await;
    let elapsed = start.elapsed();
    assert_eq!(outcome, Err(CounterError::Transport(ErrorKind::Timeout)));
    assert!(
        elapsed < Duration::from_millis(1_500),
        "the call returned after {elapsed:?}, not at its deadline"
    );
    tokio::time::sleep(Duration::from_millis(2_500).saturating_sub(elapsed)).await;
    assert_eq!(
        remote.get().await,
        Ok(0),
        "the dropped call went on past its deadline"
    );
    // No per-call deadline: the default (none in process, `invoke.timeout`
    // over RPC, longer than this call) applies.
    assert_eq!(remote.stall(300).await, Ok(1));
    let relaxed = remote
        .with_timeout(Duration::from_millis(100))
        .with_timeout(Duration::from_secs(30));
    assert_eq!(
        relaxed.stall(300).await,
        Ok(2),
        "the last deadline set wins"
    );
}
