//! Unit tests of the in-process cache (the contract is in the conformance suite).

use super::*;
use mod_api::{CacheExt, Error, ErrorKind};

fn cache(policy: CachePolicy) -> MokaCache<u64> {
    MokaCache::new("unit", &policy)
}

#[tokio::test]
async fn max_entries_is_exact_after_maintenance_and_keeps_the_newest() {
    let c = cache(CachePolicy::new().max_entries(100));
    for i in 0..1000u64 {
        c.set(&format!("k{i}"), i).await.unwrap();
    }
    c.run_pending_tasks().await;
    assert_eq!(c.entry_count(), 100);
    let mut live = 0;
    for i in 0..1000u64 {
        live += c.contains(&format!("k{i}")).await.unwrap() as u64;
    }
    assert_eq!(live, 100);
    // LRU: the value set last survives.
    assert_eq!(c.get("k999").await.unwrap(), Some(999));
}

#[tokio::test]
async fn max_entries_evicts_least_recently_used() {
    let c = cache(CachePolicy::new().max_entries(3));
    for k in ["a", "b", "c"] {
        c.set(k, 1).await.unwrap();
    }
    c.run_pending_tasks().await;
    assert_eq!(c.get("a").await.unwrap(), Some(1)); // "b" is now the oldest use
    c.set("d", 4).await.unwrap();
    c.run_pending_tasks().await;
    assert_eq!(c.entry_count(), 3);
    assert!(!c.contains("b").await.unwrap());
    for k in ["a", "c", "d"] {
        assert!(c.contains(k).await.unwrap(), "{k} evicted");
    }
}

#[tokio::test]
async fn zero_max_entries_stores_nothing() {
    let c = cache(CachePolicy::new().max_entries(0));
    c.set("a", 1).await.unwrap();
    c.run_pending_tasks().await;
    assert_eq!(c.entry_count(), 0);
    assert_eq!(c.get("a").await.unwrap(), None);
}

#[tokio::test]
async fn per_entry_ttl_may_outlive_the_policy_ttl() {
    let c = cache(CachePolicy::new().ttl(Duration::from_millis(100)));
    c.set("short", 1).await.unwrap();
    c.set_with_ttl("long", 2, Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(c.get("short").await.unwrap(), None);
    assert_eq!(c.get("long").await.unwrap(), Some(2));
}

#[tokio::test]
async fn contains_does_not_refresh_tti_and_expired_remove_is_false() {
    let c = cache(CachePolicy::new().tti(Duration::from_millis(300)));
    c.set("k", 1).await.unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = c.contains("k").await.unwrap();
    }
    assert!(!c.contains("k").await.unwrap());
    assert!(!c.remove("k").await.unwrap());
}

#[tokio::test]
async fn get_right_after_clear_is_empty_and_later_sets_survive() {
    let c = cache(CachePolicy::new());
    c.set("a", 1).await.unwrap();
    c.clear().await.unwrap();
    assert_eq!(c.get("a").await.unwrap(), None);
    c.set("a", 2).await.unwrap();
    c.run_pending_tasks().await;
    assert_eq!(c.get("a").await.unwrap(), Some(2));
}

#[tokio::test]
async fn huge_durations_do_not_panic() {
    let policy = CachePolicy::new().ttl(Duration::MAX).tti(Duration::MAX);
    let c = cache(policy);
    c.set_with_ttl("k", 1, Duration::MAX).await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), Some(1));
}

#[tokio::test]
async fn loader_error_keeps_kind_flag_and_source_text() {
    let c = cache(CachePolicy::new());
    let err = c
        .get_or_insert_with("k", || async {
            let io = std::io::Error::other("disk");
            Err(Error::new(ErrorKind::Io, "load").with_source(io))
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(!err.is_retryable());
    assert_eq!(err.message(), "load: disk");
    assert!(!c.contains("k").await.unwrap());
}

#[tokio::test]
async fn a_cancelled_loader_hands_over_to_a_waiter() {
    let c = std::sync::Arc::new(cache(CachePolicy::new()));
    let leader = {
        let c = c.clone();
        tokio::spawn(async move {
            c.get_or_insert_with("k", std::future::pending::<mod_api::Result<u64>>)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.get_or_insert_with("k", || async { Ok(7) }).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter did not wait for the leader"
    );
    leader.abort();
    assert_eq!(waiter.await.unwrap().unwrap(), 7);
    assert_eq!(c.get("k").await.unwrap(), Some(7));
}

/// `compare_and_set` needs `V: PartialEq`; a cache of other values still
/// exists as a `dyn Cache` (the method's bound keeps it out of reach only).
#[tokio::test]
async fn values_without_partial_eq_still_make_a_cache() {
    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Opaque(u8);
    let c: std::sync::Arc<dyn Cache<Opaque>> =
        std::sync::Arc::new(MokaCache::new("opaque", &CachePolicy::new()));
    c.set("k", Opaque(7)).await.unwrap();
    assert_eq!(c.get("k").await.unwrap().map(|o| o.0), Some(7));
}
