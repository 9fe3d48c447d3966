//! Conformance tests of the cache building block.
//!
//! Only the contract of [`Cache`] and [`Backend::cache`]; never
//! `max_entries`, whose exactness is a capability (`optional::…`).

#[allow(unused_imports)]
use super::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{Backend, Cache, CacheExt, CachePolicy, Error, ErrorKind};

/// The cache tests, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cache {
    ($harness:path) => {
        $crate::__conformance_tests!($harness, cache;
            set_then_get,
            get_missing_is_none,
            set_overwrites,
            remove_reports_presence,
            contains_reflects_presence,
            clear_empties_only_this_cache,
            same_key_in_two_caches_is_independent,
            policy_ttl_expires_entries,
            per_entry_ttl_shorter_than_policy,
            per_entry_ttl_longer_than_policy,
            tti_keeps_read_entries_alive,
            contains_does_not_refresh_tti,
            get_or_load_runs_one_loader_for_concurrent_misses,
            get_or_load_hit_skips_loader,
            get_or_load_error_is_returned_and_not_stored,
            values_are_stored_by_value,
            other_node_sees_same_cache,
            other_value_type_is_type_mismatch,
            oversized_value_is_refused,
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

/// A cache of a fresh name. Tests keep `node` alive while they use the cache.
fn fresh<B: Backend>(node: &B, policy: CachePolicy) -> Arc<dyn Cache<String>> {
    open(node, &unique("cache"), policy)
}

/// A value set is read back.
pub async fn set_then_get<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new());
    c.set("k", "v".into()).await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("v"));
}

/// A key never set reads as `None`.
pub async fn get_missing_is_none<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new());
    assert_eq!(c.get("nothing").await.unwrap(), None);
    assert!(!c.contains("nothing").await.unwrap());
}

/// A second `set` replaces the value.
pub async fn set_overwrites<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new());
    c.set("k", "one".into()).await.unwrap();
    c.set("k", "two".into()).await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("two"));
}

/// `remove` is `true` for a present key, then `false`; the key is gone.
pub async fn remove_reports_presence<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new());
    c.set("k", "v".into()).await.unwrap();
    c.set("other", "w".into()).await.unwrap();
    assert!(c.remove("k").await.unwrap());
    assert!(!c.remove("k").await.unwrap());
    assert_eq!(c.get("k").await.unwrap(), None);
    assert_eq!(c.get("other").await.unwrap().as_deref(), Some("w"));
}

/// `contains` follows set and remove.
pub async fn contains_reflects_presence<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new());
    assert!(!c.contains("k").await.unwrap());
    c.set("k", "v".into()).await.unwrap();
    assert!(c.contains("k").await.unwrap());
    c.remove("k").await.unwrap();
    assert!(!c.contains("k").await.unwrap());
}

/// `clear` removes every key of its cache, none of another, and the cache stays usable.
pub async fn clear_empties_only_this_cache<H: Harness>(h: &H) {
    let node = h.node().await;
    let a = fresh(&node, CachePolicy::new());
    let b = fresh(&node, CachePolicy::new());
    for k in ["x", "y", "z"] {
        a.set(k, "a".into()).await.unwrap();
        b.set(k, "b".into()).await.unwrap();
    }
    a.clear().await.unwrap();
    for k in ["x", "y", "z"] {
        assert_eq!(a.get(k).await.unwrap(), None, "{k} survived clear");
        assert_eq!(
            b.get(k).await.unwrap().as_deref(),
            Some("b"),
            "clear leaked into {k}"
        );
    }
    a.set("x", "again".into()).await.unwrap();
    assert_eq!(a.get("x").await.unwrap().as_deref(), Some("again"));
}

/// One key in two caches holds two values; removing one leaves the other.
pub async fn same_key_in_two_caches_is_independent<H: Harness>(h: &H) {
    let node = h.node().await;
    let a = fresh(&node, CachePolicy::new());
    let b = fresh(&node, CachePolicy::new());
    a.set("k", "a".into()).await.unwrap();
    assert_eq!(b.get("k").await.unwrap(), None);
    b.set("k", "b".into()).await.unwrap();
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some("a"));
    assert!(a.remove("k").await.unwrap());
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some("b"));
}

/// An entry goes after the policy's TTL, even while it is read.
pub async fn policy_ttl_expires_entries<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new().ttl(Duration::from_millis(300)));
    c.set("k", "v".into()).await.unwrap();
    assert!(c.contains("k").await.unwrap());
    eventually("entry expired by TTL", WITHIN, || async {
        c.get("k").await.unwrap().is_none()
    })
    .await;
}

/// A per-entry TTL shorter than the policy's ends that entry only.
pub async fn per_entry_ttl_shorter_than_policy<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new().ttl(Duration::from_secs(60)));
    c.set_with_ttl("short", "s".into(), Duration::from_millis(300))
        .await
        .unwrap();
    c.set("long", "l".into()).await.unwrap();
    eventually("per-entry TTL ended the entry", WITHIN, || async {
        !c.contains("short").await.unwrap()
    })
    .await;
    assert_eq!(c.get("long").await.unwrap().as_deref(), Some("l"));
}

/// A per-entry TTL longer than the policy's replaces it for that entry.
pub async fn per_entry_ttl_longer_than_policy<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new().ttl(Duration::from_millis(300)));
    c.set_with_ttl("long", "l".into(), Duration::from_secs(60))
        .await
        .unwrap();
    c.set("short", "s".into()).await.unwrap();
    eventually("policy TTL ended the plain entry", WITHIN, || async {
        !c.contains("short").await.unwrap()
    })
    .await;
    assert_eq!(c.get("long").await.unwrap().as_deref(), Some("l"));
}

/// With a TTI, an entry read often stays while an unread one goes; once reads
/// stop, the first goes too.
pub async fn tti_keeps_read_entries_alive<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new().tti(Duration::from_millis(500)));
    c.set("read", "r".into()).await.unwrap();
    c.set("unread", "u".into()).await.unwrap();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            c.get("read").await.unwrap().as_deref(),
            Some("r"),
            "read entry idled out"
        );
    }
    assert!(
        !c.contains("unread").await.unwrap(),
        "unread entry outlived its TTI"
    );
    eventually("entry idled out after reads stopped", WITHIN, || async {
        !c.contains("read").await.unwrap()
    })
    .await;
}

/// `contains` is not a read: polling it does not keep an entry from idling out.
pub async fn contains_does_not_refresh_tti<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new().tti(Duration::from_millis(300)));
    c.set("k", "v".into()).await.unwrap();
    eventually(
        "entry idled out while only `contains` touched it",
        WITHIN,
        || async { !c.contains("k").await.unwrap() },
    )
    .await;
}

/// Concurrent misses of one key on one node run the loader once; all get its value.
pub async fn get_or_load_runs_one_loader_for_concurrent_misses<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, calls) = (c.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_insert_with("k", || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok("loaded".to_string())
            })
            .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task").unwrap(), "loaded");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "loader ran more than once");
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("loaded"));
}

/// `get_or_load` of a present key returns it without running the loader.
pub async fn get_or_load_hit_skips_loader<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new());
    c.set("k", "cached".into()).await.unwrap();
    let ran = AtomicUsize::new(0);
    let v = c
        .get_or_insert_with("k", || async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok("loaded".to_string())
        })
        .await
        .unwrap();
    assert_eq!(v, "cached");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

/// A loader error comes back with its kind and nothing is stored.
pub async fn get_or_load_error_is_returned_and_not_stored<H: Harness>(h: &H) {
    let node = h.node().await;
    let c = fresh(&node, CachePolicy::new());
    let err = c
        .get_or_insert_with("k", || async { Err(Error::unavailable("database down")) })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(!c.contains("k").await.unwrap());
    let v = c
        .get_or_insert_with("k", || async { Ok("second try".to_string()) })
        .await
        .unwrap();
    assert_eq!(v, "second try");
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("second try"));
}

/// Changing a value after `set`, or one returned by `get`, leaves the cached one as is.
pub async fn values_are_stored_by_value<H: Harness>(h: &H) {
    let node = h.node().await;
    let c: Arc<dyn Cache<Vec<u32>>> = open(&node, &unique("cache"), CachePolicy::new());
    let mut v = vec![1, 2, 3];
    c.set("k", v.clone()).await.unwrap();
    v.push(4);
    let mut got = c.get("k").await.unwrap().expect("present");
    assert_eq!(got, vec![1, 2, 3]);
    got.clear();
    assert_eq!(c.get("k").await.unwrap(), Some(vec![1, 2, 3]));
}

/// A cache opened by name on another node sees the same entries.
pub async fn other_node_sees_same_cache<H: Harness>(h: &H) {
    let name = unique("cache");
    let (node_a, node_b) = (h.node().await, h.node().await);
    let a: Arc<dyn Cache<String>> = open(&node_a, &name, CachePolicy::new());
    let b: Arc<dyn Cache<String>> = open(&node_b, &name, CachePolicy::new());
    a.set("k", "from a".into()).await.unwrap();
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some("from a"));
    assert!(b.remove("k").await.unwrap());
    assert_eq!(a.get("k").await.unwrap(), None);
}

/// Opening an open cache name with another value type is `TypeMismatch`.
pub async fn other_value_type_is_type_mismatch<H: Harness>(h: &H) {
    let node = h.node().await;
    let name = unique("cache");
    let _strings = node
        .cache::<String>(&name, CachePolicy::new())
        .expect("open");
    match node.cache::<u64>(&name, CachePolicy::new()) {
        Ok(_) => panic!("a second value type was accepted"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::TypeMismatch),
    }
}

/// A value encoding to more than the policy's `max_value_bytes` is refused with
/// a non-retryable `PayloadTooLarge` and changes nothing; one at the limit is
/// stored. A loaded value that is too large reaches its caller but is not cached.
pub async fn oversized_value_is_refused<H: Harness>(h: &H) {
    use crate::Codec;
    let node = h.node().await;
    let fits = "x".repeat(1000);
    let max = crate::DefaultCodec::encoded_len(&fits).unwrap();
    let c = fresh(&node, CachePolicy::new().max_value_bytes(max));
    c.set("k", fits.clone()).await.unwrap();
    let err = c.set("k", "y".repeat(1001)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    assert!(
        !err.is_retryable(),
        "an oversized value never fits: not retryable"
    );
    let err = c
        .set_with_ttl("k", "y".repeat(1001), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    assert_eq!(c.get("k").await.unwrap(), Some(fits));
    let big = "z".repeat(2000);
    let loaded = c
        .get_or_insert_with("big", || async { Ok("z".repeat(2000)) })
        .await
        .unwrap();
    assert_eq!(loaded, big);
    assert!(!c.contains("big").await.unwrap());
}
