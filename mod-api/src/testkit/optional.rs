//! Conformance tests of the optional features ([`Capabilities`](crate::Capabilities)): each runs
//! where the backend claims its capability. Where it does not, a test checks
//! the refusal when the API has one, or says that it skips ([`skipped`]).

use std::sync::Arc;

#[allow(unused_imports)]
use super::*;
use crate::queue::{BacklogPolicy, Consumer, Offered, QueueConfig};
use crate::{Backend, Cache, CachePolicy, ErrorKind, NearCachePolicy};

/// The tests of optional features, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_optional {
    ($harness:path) => {
        $crate::__conformance_tests!($harness, optional;
            overflow_is_delivered_in_order_after_the_log,
            max_entries_is_exact_once_maintained,
            near_cache_follows_changes_on_other_nodes,
        );
    };
}

const WITHIN: Duration = Duration::from_secs(5);

/// `durable_overflow`: past `capacity`, offers overflow and are delivered in
/// offer order after the log; without the capability such a queue is refused.
pub async fn overflow_is_delivered_in_order_after_the_log<H: Harness>(h: &H) {
    let node = h.node().await;
    let config = QueueConfig {
        capacity: 2,
        backlog: BacklogPolicy::Overflow,
        ..QueueConfig::default()
    };
    let opened = node.queue::<u32>(&unique("overflow"), config);
    if !node.capabilities().durable_overflow {
        let err = opened
            .err()
            .expect("Overflow accepted without the capability");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        return;
    }
    let q = opened.expect("open an Overflow queue");
    let mut outcomes = Vec::new();
    for m in 1..=5 {
        outcomes.push(q.offer(m).await.expect("offer"));
    }
    assert!(
        matches!(outcomes[..2], [Offered::Enqueued(_), Offered::Enqueued(_)]),
        "{outcomes:?}"
    );
    for o in &outcomes[2..] {
        assert!(matches!(o, Offered::Overflowed(_)), "{outcomes:?}");
    }
    assert_eq!(q.len().await.unwrap(), 5);
    let c = Consumer::new("g", "c1");
    let mut got = Vec::new();
    while let Some(d) = q.poll_timeout(&c, WITHIN).await.unwrap() {
        assert!(q.ack(&d.group, &d.id).await.unwrap());
        got.push(d.message);
        if got.len() == 5 {
            break;
        }
    }
    assert_eq!(got, [1, 2, 3, 4, 5]);
    assert_eq!(q.len().await.unwrap(), 0);
}

/// `exact_max_entries`: a cache over its bound ends with exactly `max_entries`
/// entries, the newest among them.
pub async fn max_entries_is_exact_once_maintained<H: Harness>(h: &H) {
    let node = h.node().await;
    if !node.capabilities().exact_max_entries {
        return skipped("max_entries_is_exact_once_maintained", "exact_max_entries");
    }
    let c: Arc<dyn Cache<u32>> = node
        .cache(&unique("max"), CachePolicy::new().max_entries(10))
        .expect("open cache");
    for i in 0..30 {
        c.set(&format!("k{i}"), i).await.unwrap();
    }
    // Reads drive the backend's maintenance; the last key read is the newest.
    eventually("exactly 10 entries", WITHIN, || async {
        let mut live = 0;
        for i in 0..30 {
            live += c.get(&format!("k{i}")).await.unwrap().is_some() as usize;
        }
        live == 10
    })
    .await;
    assert_eq!(
        c.get("k29").await.unwrap(),
        Some(29),
        "the newest entry was evicted"
    );
}

/// `near_cache`: a node's near copy follows every change another node makes:
/// set, remove and clear.
pub async fn near_cache_follows_changes_on_other_nodes<H: Harness>(h: &H) {
    let (node_a, node_b) = (h.node().await, h.node().await);
    if !node_a.capabilities().near_cache {
        return skipped("near_cache_follows_changes_on_other_nodes", "near_cache");
    }
    let name = unique("near");
    let policy = CachePolicy::new().near(NearCachePolicy::default());
    let open = |node: &H::Backend| -> Arc<dyn Cache<String>> {
        node.cache(&name, policy.clone()).expect("open cache")
    };
    let (a, b) = (open(&node_a), open(&node_b));
    let read = |c: Arc<dyn Cache<String>>| async move { c.get("k").await.unwrap() };
    a.set("k", "v1".into()).await.unwrap();
    assert_eq!(read(b.clone()).await.as_deref(), Some("v1"));
    a.set("k", "v2".into()).await.unwrap();
    eventually("the other node saw the set", WITHIN, || async {
        read(b.clone()).await.as_deref() == Some("v2")
    })
    .await;
    assert!(a.remove("k").await.unwrap());
    eventually("the other node saw the remove", WITHIN, || async {
        read(b.clone()).await.is_none()
    })
    .await;
    a.set("k", "v3".into()).await.unwrap();
    eventually("the other node saw the new value", WITHIN, || async {
        read(b.clone()).await.as_deref() == Some("v3")
    })
    .await;
    a.clear().await.unwrap();
    eventually("the other node saw the clear", WITHIN, || async {
        read(b.clone()).await.is_none()
    })
    .await;
}
