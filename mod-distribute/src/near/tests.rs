//! Near-cache tests: the message format, and two hubs on one `redis-server`
//! acting as two nodes.

use std::time::{Duration, Instant};

use mod_api::{Cache, CachePolicy, NearCachePolicy};

use super::*;
use crate::cache::RedisCache;
use crate::RedisServer;

async fn start() -> (RedisServer, Redis) {
    let server = RedisServer::start().expect("redis-server");
    let redis = Redis::connect(&server.url(), "t").await.expect("connect");
    (server, redis)
}

async fn raw<T: redis::FromRedisValue>(redis: &Redis, cmd: &mut redis::Cmd) -> T {
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

#[test]
fn messages_round_trip_and_garbage_is_rejected() {
    let mut key = key_message_prefix("users");
    key.extend_from_slice("alice:1".as_bytes());
    assert_eq!(
        parse_message(&key),
        Some(Message::Key {
            name: "users",
            key: "alice:1"
        })
    );
    assert_eq!(
        parse_message(&clear_message("users")),
        Some(Message::Clear { name: "users" })
    );
    for bad in [
        &b""[..],
        b"\x01",
        b"\x01\x00\x09ab",
        b"\x07\x00\x01a",
        b"\x02\x00\x01ab",
    ] {
        assert_eq!(parse_message(bad), None, "{bad:?}");
    }
}

fn near_policy() -> CachePolicy {
    CachePolicy::new().near(NearCachePolicy {
        max_entries: 1000,
        ttl: Some(Duration::from_secs(60)),
    })
}

/// Writes an entry behind the caches' back: no invalidation is published, so
/// a reader's near fill cannot be voided by a racing message.
async fn put_raw(redis: &Redis, cache: &str, key: &str, value: &str) {
    let mut bytes = vec![b'0'];
    bytes.extend(mod_api::codec::encode(&value.to_owned()).unwrap());
    let entry = format!("t:cache:{cache}:k:{key}");
    let _: () = raw(redis, redis::cmd("SET").arg(entry).arg(bytes)).await;
}

async fn node(
    redis: &Redis,
    name: &str,
    policy: &CachePolicy,
) -> (Arc<NearHub>, RedisCache<String>) {
    let hub = NearHub::start(redis.clone()).await.expect("hub");
    let cache = RedisCache::new(redis.clone(), Some(hub.clone()), name, policy).expect("cache");
    (hub, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cache_is_invalidated_on_every_node() {
    let (_server, redis) = start().await;
    let (_hub_a, a) = node(&redis, "near", &near_policy()).await;
    let (_hub_b, b) = node(&redis, "near", &near_policy()).await;
    put_raw(&redis, "near", "k", "v1").await;
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some("v1"));
    // A near hit does not go to Redis: delete behind the caches' back.
    let _: i64 = raw(&redis, redis::cmd("DEL").arg("t:cache:near:k:k")).await;
    assert_eq!(
        b.get("k").await.unwrap().as_deref(),
        Some("v1"),
        "not a near hit"
    );
    a.set("k", "v2".into()).await.unwrap();
    eventually("b sees a's write", Duration::from_secs(2), || async {
        b.get("k").await.unwrap().as_deref() == Some("v2")
    })
    .await;
    // A writer reads its own write at once, near copy or not.
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some("v2"));
    a.set("k", "v3".into()).await.unwrap();
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some("v3"));
    eventually("b sees v3", Duration::from_secs(2), || async {
        b.get("k").await.unwrap().as_deref() == Some("v3")
    })
    .await;
    assert!(a.remove("k").await.unwrap());
    eventually("b sees the removal", Duration::from_secs(2), || async {
        b.get("k").await.unwrap().is_none()
    })
    .await;
    a.set("x", "1".into()).await.unwrap();
    assert_eq!(b.get("x").await.unwrap().as_deref(), Some("1"));
    assert_eq!(a.get("x").await.unwrap().as_deref(), Some("1"));
    b.clear().await.unwrap();
    assert_eq!(b.get("x").await.unwrap(), None);
    eventually("a sees the clear", Duration::from_secs(2), || async {
        a.get("x").await.unwrap().is_none()
    })
    .await;
}

/// The near copy holds about `max_entries` at most, and still serves hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cache_stays_near_its_bound() {
    let (_server, redis) = start().await;
    let policy = CachePolicy::new().near(NearCachePolicy {
        max_entries: 32,
        ttl: Some(Duration::from_secs(60)),
    });
    let (_hub, c) = node(&redis, "bound", &policy).await;
    for i in 0..200 {
        put_raw(&redis, "bound", &format!("k{i}"), "v").await;
        assert_eq!(c.get(&format!("k{i}")).await.unwrap().as_deref(), Some("v"));
    }
    let near = c.near_len().expect("near cache");
    assert!(
        (1..=32).contains(&near),
        "{near} near entries for a bound of 32"
    );
    assert_eq!(c.get("k199").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_entries_end_with_the_redis_ttl_and_hits_are_fast() {
    let (_server, redis) = start().await;
    let policy = near_policy().ttl(Duration::from_millis(300));
    let (_hub, c) = node(&redis, "fast", &policy).await;
    c.set("k", "v".into()).await.unwrap();
    assert!(c.get("k").await.unwrap().is_some());
    eventually(
        "near copy expired with the entry",
        Duration::from_secs(3),
        || async { c.get("k").await.unwrap().is_none() },
    )
    .await;
    let c = RedisCache::<String>::new(redis.clone(), Some(_hub.clone()), "fast2", &near_policy())
        .unwrap();
    let plain: RedisCache<String> =
        RedisCache::new(redis.clone(), None, "fast2", &CachePolicy::new()).unwrap();
    c.set("k", "v".into()).await.unwrap();
    c.get("k").await.unwrap();
    let n = 2000u32;
    let t = Instant::now();
    for _ in 0..n {
        assert!(c.get("k").await.unwrap().is_some());
    }
    let near = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..200 {
        assert!(plain.get("k").await.unwrap().is_some());
    }
    let remote = t.elapsed() / 200;
    println!(
        "near hit {near:?}, redis get {remote:?}: {:.0}x",
        remote.as_secs_f64() / near.as_secs_f64()
    );
    // Debug build on a shared machine: only a loose bound here.
    assert!(near * 5 < remote, "near hit {near:?} vs redis {remote:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_subscription_clears_near_caches_and_resubscribes() {
    let (_server, redis) = start().await;
    let (hub_a, a) = node(&redis, "drop", &near_policy()).await;
    let (hub_b, b) = node(&redis, "drop", &near_policy()).await;
    put_raw(&redis, "drop", "k", "v1").await;
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some("v1"));
    // A change b never hears of: only the reconnect can save it.
    put_raw(&redis, "drop", "k", "v9").await;
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some("v1"));
    let _: i64 = raw(
        &redis,
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"),
    )
    .await;
    eventually(
        "b dropped its stale copy",
        Duration::from_secs(5),
        || async { b.get("k").await.unwrap().as_deref() == Some("v9") },
    )
    .await;
    eventually("hubs resubscribed", Duration::from_secs(5), || async {
        hub_a.is_connected() && hub_b.is_connected()
    })
    .await;
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some("v9"));
    a.set("k", "v10".into()).await.unwrap();
    eventually(
        "invalidations flow again",
        Duration::from_secs(2),
        || async { b.get("k").await.unwrap().as_deref() == Some("v10") },
    )
    .await;
}
