//! Unit tests of the Redis cache and its near cache, on real `redis-server`s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use mod_api::{CacheExt, Error, ErrorKind};

use super::entry::MAX_MS;
use super::lua::NO_EXPIRY;
use super::*;
use crate::RedisServer;

async fn start() -> (RedisServer, Redis) {
    let server = RedisServer::start().expect("redis-server");
    let redis = Redis::connect(&server.url(), "t").await.expect("connect");
    (server, redis)
}

fn open<V: Value>(redis: &Redis, name: &str, policy: CachePolicy) -> RedisCache<V> {
    RedisCache::new(redis.clone(), None, name, &policy).expect("cache")
}

async fn raw<T: redis::FromRedisValue>(redis: &Redis, cmd: &mut Cmd) -> T {
    cmd.query_async(&mut redis.conn())
        .await
        .expect("raw command")
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < within,
            "not true within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basics_and_key_layout() {
    let (_server, redis) = start().await;
    let c: RedisCache<String> = open(&redis, "a:k:b", CachePolicy::new());
    assert_eq!(c.get("k").await.unwrap(), None);
    c.set("k", "one".into()).await.unwrap();
    c.set("k", "two".into()).await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("two"));
    assert!(c.contains("k").await.unwrap());
    // The name is escaped, so it cannot collide with cache "a" and key "b:k:k".
    let exists: i64 = raw(&redis, redis::cmd("EXISTS").arg("t:cache:a%3Ak%3Ab:k:k")).await;
    assert_eq!(exists, 1);
    let members: Vec<String> = raw(
        &redis,
        redis::cmd("ZRANGE")
            .arg("t:cache:a%3Ak%3Ab:idx")
            .arg(0)
            .arg(-1),
    )
    .await;
    assert_eq!(members, ["k"]);
    let other: RedisCache<String> = open(&redis, "a", CachePolicy::new());
    assert_eq!(other.get("b:k:k").await.unwrap(), None);
    assert!(c.remove("k").await.unwrap());
    assert!(!c.remove("k").await.unwrap());
    assert!(!c.contains("k").await.unwrap());
    assert_eq!(c.indexed_len().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_is_isolated_and_handles_many_batches() {
    let (_server, redis) = start().await;
    let a: RedisCache<u32> = open(&redis, "a", CachePolicy::new());
    let b: RedisCache<u32> = open(&redis, "b", CachePolicy::new());
    for i in 0..1200u32 {
        a.set(&format!("k{i}"), i).await.unwrap();
    }
    for i in 0..10u32 {
        b.set(&format!("k{i}"), i + 1000).await.unwrap();
    }
    a.clear().await.unwrap();
    for i in [0u32, 599, 1199] {
        assert_eq!(a.get(&format!("k{i}")).await.unwrap(), None);
    }
    for i in 0..10u32 {
        assert_eq!(b.get(&format!("k{i}")).await.unwrap(), Some(i + 1000));
    }
    // Only b's 10 entries and b's index remain.
    let keys: i64 = raw(&redis, &mut redis::cmd("DBSIZE")).await;
    assert_eq!(keys, 11);
    a.set("k1", 7).await.unwrap();
    assert_eq!(a.get("k1").await.unwrap(), Some(7));
}

/// Overwrites (`SET XX`, no index write) and writes of new keys (indexed)
/// mixed in every order: the index still lists exactly the live entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrites_and_new_keys_stay_indexed() {
    let (_server, redis) = start().await;
    let c: RedisCache<u32> = open(&redis, "ow", CachePolicy::new());
    let other: RedisCache<u32> = open(&redis, "ow", CachePolicy::new());
    for round in 0..3u32 {
        for i in 0..40u32 {
            c.set(&format!("k{i}"), round).await.unwrap();
        }
    }
    // Another handle removed a key: this handle's next write of it is new again.
    assert!(other.remove("k3").await.unwrap());
    c.set("k3", 9).await.unwrap();
    // After many overwrites, a run of new keys; then overwrites again.
    for i in 40..80u32 {
        c.set(&format!("k{i}"), i).await.unwrap();
    }
    for i in 0..80u32 {
        c.set(&format!("k{i}"), i).await.unwrap();
    }
    assert_eq!(c.indexed_len().await.unwrap(), 80);
    c.clear().await.unwrap();
    let keys: i64 = raw(&redis, &mut redis::cmd("DBSIZE")).await;
    assert_eq!(keys, 0, "clear left entries behind");
    c.set("k1", 1).await.unwrap();
    assert_eq!(c.indexed_len().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_per_entry_ttl_and_zero_ttl() {
    let (_server, redis) = start().await;
    let c: RedisCache<String> = open(
        &redis,
        "ttl",
        CachePolicy::new().ttl(Duration::from_millis(300)),
    );
    c.set("short", "s".into()).await.unwrap();
    c.set_with_ttl("long", "l".into(), Duration::from_secs(60))
        .await
        .unwrap();
    c.set_with_ttl("gone", "g".into(), Duration::ZERO)
        .await
        .unwrap();
    assert!(!c.contains("gone").await.unwrap());
    let pttl: i64 = raw(&redis, redis::cmd("PTTL").arg("t:cache:ttl:k:short")).await;
    assert!((1..=300).contains(&pttl), "pttl {pttl}");
    eventually(
        "policy TTL ended the entry",
        Duration::from_secs(5),
        || async { c.get("short").await.unwrap().is_none() },
    )
    .await;
    assert_eq!(c.get("long").await.unwrap().as_deref(), Some("l"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tti_refreshes_on_get_but_not_on_contains() {
    let (_server, redis) = start().await;
    let c: RedisCache<String> = open(
        &redis,
        "tti",
        CachePolicy::new().tti(Duration::from_millis(400)),
    );
    c.set("read", "r".into()).await.unwrap();
    c.set("polled", "p".into()).await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(c.get("read").await.unwrap().as_deref(), Some("r"));
        let _ = c.contains("polled").await.unwrap();
    }
    assert!(
        !c.contains("polled").await.unwrap(),
        "contains refreshed the TTI"
    );
    eventually("idle entry ended", Duration::from_secs(5), || async {
        !c.contains("read").await.unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tti_with_ttl_ends_at_the_ttl_however_often_read() {
    let (_server, redis) = start().await;
    let policy = CachePolicy::new()
        .tti(Duration::from_millis(300))
        .ttl(Duration::from_millis(900));
    let c: RedisCache<String> = open(&redis, "both", policy);
    let start = Instant::now();
    c.set("k", "v".into()).await.unwrap();
    // A per-entry TTL replaces the policy's, under the same TTI.
    c.set_with_ttl("long", "l".into(), Duration::from_secs(60))
        .await
        .unwrap();
    while c.get("k").await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "TTL never ended a read entry"
        );
        let _ = c.get("long").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "ended early: {:?}",
        start.elapsed()
    );
    assert_eq!(c.get("long").await.unwrap().as_deref(), Some("l"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_entries_is_enforced_by_upkeep() {
    let (_server, redis) = start().await;
    let c: RedisCache<u32> = open(&redis, "max", CachePolicy::new().max_entries(50));
    for i in 0..200u32 {
        c.set(&format!("k{i}"), i).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    c.maintain().await.unwrap();
    assert!(c.indexed_len().await.unwrap() <= 50);
    let keys: i64 = raw(&redis, &mut redis::cmd("DBSIZE")).await;
    assert!(keys <= 51, "{keys} keys for at most 50 entries + index");
    assert_eq!(
        c.get("k199").await.unwrap(),
        Some(199),
        "newest entry evicted"
    );
    assert_eq!(c.get("k0").await.unwrap(), None, "oldest entry kept");
    let none: RedisCache<u32> = open(&redis, "none", CachePolicy::new().max_entries(0));
    none.set("k", 1).await.unwrap();
    assert_eq!(none.get("k").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upkeep_drops_index_members_of_expired_entries() {
    let (_server, redis) = start().await;
    let c: RedisCache<u32> = open(
        &redis,
        "sweep",
        CachePolicy::new().ttl(Duration::from_millis(100)),
    );
    for i in 0..100u32 {
        c.set(&format!("k{i}"), i).await.unwrap();
    }
    c.set_with_ttl("stays", 1, Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.maintain().await.unwrap();
    assert_eq!(c.indexed_len().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_load_is_single_flight_and_errors_are_not_stored() {
    let (_server, redis) = start().await;
    let c = Arc::new(open::<String>(&redis, "load", CachePolicy::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, calls) = (c.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_insert_with("k", || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err::<String, _>(Error::unavailable("db down"))
            })
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err().kind(), ErrorKind::Unavailable);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(!c.contains("k").await.unwrap());
    assert_eq!(c.flights.in_flight(), 0);
    let v = c
        .get_or_insert_with("k", || async { Ok("loaded".to_string()) })
        .await
        .unwrap();
    assert_eq!(v, "loaded");
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("loaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_by_value_and_bad_bytes_are_codec_errors() {
    let (_server, redis) = start().await;
    let c: RedisCache<Vec<u32>> = open(&redis, "bytes", CachePolicy::new());
    let mut v = vec![1, 2, 3];
    c.set("k", v.clone()).await.unwrap();
    v.push(4);
    let mut got = c.get("k").await.unwrap().unwrap();
    got.clear();
    assert_eq!(c.get("k").await.unwrap(), Some(vec![1, 2, 3]));
    for garbage in [&b"zzz"[..], b"", b"1123", b"0\xff\xff\xff\xff\xff"] {
        let _: () = raw(
            &redis,
            redis::cmd("SET").arg("t:cache:bytes:k:bad").arg(garbage),
        )
        .await;
        let err = c.get("bad").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec, "{garbage:?}");
    }
}

#[test]
fn scripts_agree_with_constants() {
    assert!(lua::MAINTAIN.get_hash().len() == 40);
    assert_eq!(NO_EXPIRY, 1_125_899_906_842_624);
    assert_eq!(millis(Duration::from_micros(10)), 1);
    assert_eq!(millis(Duration::MAX), MAX_MS);
}
