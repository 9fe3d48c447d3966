//! Conformance tests of the cache's conditional writes and loader variants:
//! [`Cache::compare_and_set`], [`CacheExt::update`],
//! [`CacheExt::try_get_or_insert_with`] and
//! [`CacheExt::optionally_get_or_insert_with`].

#[allow(unused_imports)]
use super::*;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{AppError, Backend, Cache, CacheExt, CachePolicy, Cas, ErrorKind, NearCachePolicy};

/// The tests, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cache_update {
    ($harness:path) => {
        $crate::__conformance_tests!($harness, cache_update;
            cas_on_an_absent_key_inserts_once,
            cas_mismatch_returns_the_current_value_and_changes_nothing,
            cas_compares_values_not_encodings,
            concurrent_updates_from_two_nodes_lose_nothing,
            cas_stores_with_the_policy_ttl,
            cas_is_a_read_for_tti,
            cas_keeps_a_near_cache_coherent,
            try_loader_returns_the_callers_error_and_stores_nothing,
            try_loader_waiters_get_a_retryable_platform_error,
            optional_loader_none_is_not_cached,
            optional_loader_none_is_shared_by_concurrent_misses,
        );
    };
}

const WITHIN: Duration = Duration::from_secs(5);

fn open<B: Backend, V: crate::Value>(
    node: &B,
    name: &str,
    policy: CachePolicy,
) -> Arc<dyn Cache<V>> {
    node.cache::<V>(name, policy).expect("open cache")
}

/// `None` expects the key absent: the first such call stores, the next one
/// sees the value it stored.
pub async fn cas_on_an_absent_key_inserts_once<H: Harness>(h: &H) {
    let node = h.node().await;
    let c: Arc<dyn Cache<String>> = open(&node, &unique("cas"), CachePolicy::new());
    let first = c.compare_and_set("k", None, "one".into()).await.unwrap();
    assert_eq!(first, Cas::Stored);
    let second = c.compare_and_set("k", None, "two".into()).await.unwrap();
    assert_eq!(second, Cas::Mismatch(Some("one".into())));
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("one"));
}

/// A wrong expectation changes nothing and returns what is there (`None` for
/// an absent key); the right one stores.
pub async fn cas_mismatch_returns_the_current_value_and_changes_nothing<H: Harness>(h: &H) {
    let node = h.node().await;
    let c: Arc<dyn Cache<String>> = open(&node, &unique("cas"), CachePolicy::new());
    let absent = c
        .compare_and_set("k", Some(&"x".into()), "y".into())
        .await
        .unwrap();
    assert_eq!(absent, Cas::Mismatch(None));
    assert!(!c.contains("k").await.unwrap(), "a mismatch stored a value");

    c.set("k", "a".into()).await.unwrap();
    let wrong = c
        .compare_and_set("k", Some(&"b".into()), "c".into())
        .await
        .unwrap();
    assert_eq!(wrong, Cas::Mismatch(Some("a".into())));
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("a"));
    let right = c
        .compare_and_set("k", Some(&"a".into()), "c".into())
        .await
        .unwrap();
    assert_eq!(right, Cas::Stored);
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("c"));
}

/// Values equal by `PartialEq` match even when they encode differently (a
/// `HashMap` built in another order).
pub async fn cas_compares_values_not_encodings<H: Harness>(h: &H) {
    let node = h.node().await;
    let c: Arc<dyn Cache<HashMap<String, u32>>> = open(&node, &unique("cas"), CachePolicy::new());
    let forward: HashMap<String, u32> = (0..32).map(|i| (format!("k{i}"), i)).collect();
    c.set("m", forward.clone()).await.unwrap();
    // Same content, inserted in reverse (its own random order, too).
    let backward: HashMap<String, u32> = (0..32).rev().map(|i| (format!("k{i}"), i)).collect();
    assert_eq!(forward, backward);
    let mut next = backward.clone();
    next.insert("new".into(), 99);
    let outcome = c.compare_and_set("m", Some(&backward), next.clone()).await;
    assert_eq!(outcome.unwrap(), Cas::Stored);
    assert_eq!(c.get("m").await.unwrap(), Some(next));
}

/// Read-modify-write increments from many tasks on two nodes lose no update.
pub async fn concurrent_updates_from_two_nodes_lose_nothing<H: Harness>(h: &H) {
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    let name = unique("cas");
    let (a, b) = (h.node().await, h.node().await);
    let caches: [Arc<dyn Cache<u64>>; 2] = [
        open(&a, &name, CachePolicy::new()),
        open(&b, &name, CachePolicy::new()),
    ];
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let c = caches[(t % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                c.update("n", |n| n.copied().unwrap_or(0) + 1)
                    .await
                    .expect("update");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(caches[0].get("n").await.unwrap(), Some(TASKS * EACH));
}

/// A stored value gets the policy's TTL from now, like `set` (a per-entry
/// TTL of the replaced entry is not kept).
pub async fn cas_stores_with_the_policy_ttl<H: Harness>(h: &H) {
    let node = h.node().await;
    let policy = CachePolicy::new().ttl(Duration::from_millis(300));
    let c: Arc<dyn Cache<String>> = open(&node, &unique("cas"), policy);
    c.set_with_ttl("k", "long".into(), Duration::from_secs(60))
        .await
        .unwrap();
    let outcome = c
        .compare_and_set("k", Some(&"long".into()), "short".into())
        .await;
    assert_eq!(outcome.unwrap(), Cas::Stored);
    eventually(
        "the compare-and-set value expired by the policy TTL",
        WITHIN,
        || async { c.get("k").await.unwrap().is_none() },
    )
    .await;
}

/// A compare-and-set reads the entry, whatever the outcome: in a TTI cache
/// (here with a TTL too) mismatching calls keep it alive, and it idles out
/// once they stop.
pub async fn cas_is_a_read_for_tti<H: Harness>(h: &H) {
    let node = h.node().await;
    let policy = CachePolicy::new()
        .tti(Duration::from_millis(500))
        .ttl(Duration::from_secs(60));
    let c: Arc<dyn Cache<String>> = open(&node, &unique("cas"), policy);
    let stored = c.compare_and_set("k", None, "v".into()).await.unwrap();
    assert_eq!(stored, Cas::Stored);
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let outcome = c.compare_and_set("k", None, "w".into()).await.unwrap();
        assert_eq!(outcome, Cas::Mismatch(Some("v".into())), "entry idled out");
    }
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("v"));
    eventually(
        "entry idled out after the calls stopped",
        WITHIN,
        || async { !c.contains("k").await.unwrap() },
    )
    .await;
}

/// With a near cache, a compare-and-set is seen at once by its own node and
/// soon by another node that had read the old value.
pub async fn cas_keeps_a_near_cache_coherent<H: Harness>(h: &H) {
    let name = unique("cas");
    let policy = CachePolicy::new().near(NearCachePolicy::default());
    let (node_a, node_b) = (h.node().await, h.node().await);
    let a: Arc<dyn Cache<String>> = open(&node_a, &name, policy.clone());
    let b: Arc<dyn Cache<String>> = open(&node_b, &name, policy);
    a.set("k", "old".into()).await.unwrap();
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some("old"));
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some("old"));
    let outcome = b
        .compare_and_set("k", Some(&"old".into()), "new".into())
        .await;
    assert_eq!(outcome.unwrap(), Cas::Stored);
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some("new"));
    eventually("the other node saw the new value", WITHIN, || async {
        a.get("k").await.unwrap().as_deref() == Some("new")
    })
    .await;
    // A stale expectation from the other node is refused with the new value.
    let stale = a
        .compare_and_set("k", Some(&"old".into()), "lost".into())
        .await;
    assert_eq!(stale.unwrap(), Cas::Mismatch(Some("new".into())));
}

/// A failing loader of `try_get_or_insert_with` gives the caller its own
/// error type back, and nothing is stored.
pub async fn try_loader_returns_the_callers_error_and_stores_nothing<H: Harness>(h: &H) {
    let node = h.node().await;
    let c: Arc<dyn Cache<String>> = open(&node, &unique("load"), CachePolicy::new());
    let err = c
        .try_get_or_insert_with("k", || async {
            Err::<String, _>(AppError::App("no such user".to_string()))
        })
        .await
        .unwrap_err();
    assert_eq!(err.app().map(String::as_str), Some("no such user"));
    assert!(!c.contains("k").await.unwrap());
    let v = c
        .try_get_or_insert_with("k", || async { Ok::<_, AppError<String>>("ada".into()) })
        .await
        .unwrap();
    assert_eq!(v, "ada");
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("ada"));
}

/// Concurrent misses run one `try_get_or_insert_with` loader; when it fails,
/// its caller gets its own error and the waiters a retryable platform error
/// of kind `Internal` that quotes it.
pub async fn try_loader_waiters_get_a_retryable_platform_error<H: Harness>(h: &H) {
    let node = h.node().await;
    let c: Arc<dyn Cache<String>> = open(&node, &unique("load"), CachePolicy::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (c, calls) = (c.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.try_get_or_insert_with("k", || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err::<String, _>(AppError::App("locked".to_string()))
            })
            .await
        }));
    }
    let (mut own, mut waiters) = (0, 0);
    for task in tasks {
        match task.await.expect("task").unwrap_err() {
            AppError::App(e) => {
                assert_eq!(e, "locked");
                own += 1;
            }
            AppError::Platform(e) => {
                assert_eq!(e.kind(), ErrorKind::Internal);
                assert!(e.is_retryable(), "{e}");
                assert!(e.message().contains("locked"), "{e}");
                waiters += 1;
            }
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "loader ran more than once");
    assert_eq!((own, waiters), (1, 5));
    assert!(!c.contains("k").await.unwrap());
}

/// `None` from an optional loader is `None` for the caller and caches
/// nothing: the next call loads again.
pub async fn optional_loader_none_is_not_cached<H: Harness>(h: &H) {
    let node = h.node().await;
    let c: Arc<dyn Cache<String>> = open(&node, &unique("load"), CachePolicy::new());
    let calls = AtomicUsize::new(0);
    for _ in 0..2 {
        let got = c
            .optionally_get_or_insert_with("k", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(None)
            })
            .await
            .unwrap();
        assert_eq!(got, None);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "a `None` was cached");
    assert!(!c.contains("k").await.unwrap());
    let found = c
        .optionally_get_or_insert_with("k", || async { Ok(Some("v".to_string())) })
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some("v"));
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("v"));
    // A loader error is still an error.
    let err = c
        .optionally_get_or_insert_with("other", || async {
            Err(crate::Error::unavailable("database down"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

/// Concurrent misses of one key run one optional loader; its `None` reaches all.
pub async fn optional_loader_none_is_shared_by_concurrent_misses<H: Harness>(h: &H) {
    let node = h.node().await;
    let c: Arc<dyn Cache<String>> = open(&node, &unique("load"), CachePolicy::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, calls) = (c.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.optionally_get_or_insert_with("k", || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(None)
            })
            .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task").unwrap(), None);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "loader ran more than once");
}
