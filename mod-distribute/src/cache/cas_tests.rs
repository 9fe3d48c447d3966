//! Unit tests of the Redis cache's `compare_and_set`, on real `redis-server`s:
//! what the conformance suite cannot see (index, bad bytes, a cache that
//! holds nothing).

use mod_api::{Cache, CachePolicy, Cas, ErrorKind};
use redis::Cmd;

use super::RedisCache;
use crate::redis::Redis;
use crate::RedisServer;

async fn start() -> (RedisServer, Redis) {
    let server = RedisServer::start().expect("redis-server");
    let redis = Redis::connect(&server.url(), "t").await.expect("connect");
    (server, redis)
}

async fn raw<T: redis::FromRedisValue>(redis: &Redis, cmd: &mut Cmd) -> T {
    cmd.query_async(&mut redis.conn())
        .await
        .expect("raw command")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_value_is_indexed_and_bad_bytes_are_a_codec_error() {
    let (_server, redis) = start().await;
    let c: RedisCache<String> =
        RedisCache::new(redis.clone(), None, "c", &CachePolicy::new()).unwrap();
    assert_eq!(
        c.compare_and_set("k", None, "v".into()).await.unwrap(),
        Cas::Stored
    );
    let score: Option<f64> = raw(&redis, redis::cmd("ZSCORE").arg("t:cache:c:idx").arg("k")).await;
    assert!(
        score.is_some(),
        "the entry is not in the index: clear would miss it"
    );
    c.clear().await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), None);

    // Bytes another program wrote: an error, and the entry is left alone.
    let _: () = raw(
        &redis,
        redis::cmd("SET").arg("t:cache:c:k:bad").arg("0\u{ff}"),
    )
    .await;
    let err = c
        .compare_and_set("bad", None, "v".into())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    let left: Vec<u8> = raw(&redis, redis::cmd("GET").arg("t:cache:c:k:bad")).await;
    assert_eq!(left, "0\u{ff}".as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_holds_nothing_reports_every_key_absent() {
    let (_server, redis) = start().await;
    let policy = CachePolicy::new().max_entries(0);
    let c: RedisCache<String> = RedisCache::new(redis.clone(), None, "z", &policy).unwrap();
    assert_eq!(
        c.compare_and_set("k", None, "v".into()).await.unwrap(),
        Cas::Stored
    );
    assert_eq!(c.get("k").await.unwrap(), None);
    let expected = "v".to_string();
    let outcome = c.compare_and_set("k", Some(&expected), "w".into()).await;
    assert_eq!(outcome.unwrap(), Cas::Mismatch(None));
}
