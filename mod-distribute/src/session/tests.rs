//! Unit tests of the Redis session store on a real `redis-server`.

use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::RedisServer;

const LONG: Duration = Duration::from_secs(600);

async fn start() -> (RedisServer, Redis) {
    let server = RedisServer::start().expect("redis-server");
    let redis = Redis::connect(&server.url(), "t").await.expect("connect");
    (server, redis)
}

fn store(redis: &Redis, idle: Duration, absolute: Duration) -> RedisSessions<u32> {
    let config = SessionConfig {
        idle_timeout: idle,
        absolute_lifetime: absolute,
        ..SessionConfig::default()
    };
    RedisSessions::new(redis.clone(), "web", config)
}

async fn raw<T: redis::FromRedisValue>(redis: &Redis, cmd: &mut redis::Cmd) -> T {
    cmd.query_async(&mut redis.conn())
        .await
        .expect("raw command")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_and_key_layout() {
    let (_server, redis) = start().await;
    let s = store(&redis, Duration::from_secs(60), LONG);
    let created = s.create("alice", 7).await.unwrap();
    assert_eq!((created.version, created.data), (1, 7));
    let key = format!("t:sess:web:s:{}", created.id);
    let pttl: i64 = raw(&redis, redis::cmd("PTTL").arg(&key)).await;
    assert!(
        (59_000..=60_000).contains(&pttl),
        "session key expiry {pttl}"
    );
    let members: Vec<String> = raw(&redis, redis::cmd("SMEMBERS").arg("t:sess:web:p:alice")).await;
    assert_eq!(members, [created.id.to_string()]);

    let got = s.get(&created.id).await.unwrap().unwrap();
    assert_eq!(got, created);
    // Right after a refresh (< idle / 1000 = 60 ms ago) validate does not write.
    let seen = s.validate(&created.id).await.unwrap().unwrap();
    assert_eq!(seen.last_seen_ms, created.last_seen_ms);
    // Again, now with the Redis clock bounded from the first validate's `TIME`.
    let again = s.validate(&created.id).await.unwrap().unwrap();
    assert_eq!((&again.data, again.version), (&seen.data, seen.version));
    assert!(again.last_seen_ms >= seen.last_seen_ms);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = s.validate(&created.id).await.unwrap().unwrap();
    assert!(
        seen.last_seen_ms >= created.last_seen_ms + 150,
        "validate did not slide"
    );
    let pttl: i64 = raw(&redis, redis::cmd("PTTL").arg(&key)).await;
    assert!(pttl > 59_900, "idle timer not refreshed: {pttl}");
    let updated = s.update(&created.id, 1, 8).await.unwrap();
    assert_eq!((updated.version, updated.data), (2, 8));
    let err = s.update(&created.id, 1, 9).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.is_retryable());

    let rotated = s.rotate(&created.id).await.unwrap();
    assert_ne!(rotated.id, created.id);
    assert_eq!(
        (rotated.data, rotated.version, rotated.created_ms),
        (8, 3, created.created_ms)
    );
    assert!(s.get(&created.id).await.unwrap().is_none());
    assert_eq!(
        s.update(&created.id, 3, 1).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.rotate(&created.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let members: Vec<String> = raw(&redis, redis::cmd("SMEMBERS").arg("t:sess:web:p:alice")).await;
    assert_eq!(members, [rotated.id.to_string()]);
    let idx_ttl: i64 = raw(&redis, redis::cmd("PTTL").arg("t:sess:web:p:alice")).await;
    assert!(idx_ttl > 0, "principal index without expiry");

    assert!(s.destroy(&rotated.id).await.unwrap());
    assert!(!s.destroy(&rotated.id).await.unwrap());
    let left: i64 = raw(&redis, &mut redis::cmd("DBSIZE")).await;
    assert_eq!(left, 0, "destroy left keys behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_ids_are_none() {
    let (_server, redis) = start().await;
    let s = store(&redis, LONG, LONG);
    // A malformed id cannot even be deserialized: it never reaches the store.
    let bytes = mod_api::codec::encode(&"not-an-id".to_owned()).unwrap();
    let err = mod_api::codec::decode::<SessionId>(&bytes).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    let unknown = SessionId::generate().unwrap();
    assert!(s.get(&unknown).await.unwrap().is_none());
    assert!(s.validate(&unknown).await.unwrap().is_none());
    assert!(!s.destroy(&unknown).await.unwrap());
    assert_eq!(
        s.update(&unknown, 1, 1).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_slides_and_absolute_lifetime_ends() {
    let (_server, redis) = start().await;
    let s = store(
        &redis,
        Duration::from_millis(400),
        Duration::from_millis(1500),
    );
    let id = s.create("alice", 1).await.unwrap().id;
    let idle = s.create("alice", 2).await.unwrap().id;
    let start = Instant::now();
    while s.validate(&id).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "absolute lifetime never ended it"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lived = start.elapsed();
    assert!(
        lived >= Duration::from_millis(1300),
        "ended after {lived:?}"
    );
    assert!(
        s.get(&idle).await.unwrap().is_none(),
        "unused session outlived its idle timeout"
    );
    // Dead sessions do not count.
    assert_eq!(s.destroy_principal("alice").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_principal_counts_live_sessions_only() {
    let (_server, redis) = start().await;
    let s = store(&redis, LONG, LONG);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(s.create("alice", i).await.unwrap().id);
    }
    let bob = s.create("bob", 9).await.unwrap().id;
    s.destroy(&ids[0]).await.unwrap();
    assert_eq!(s.destroy_principal("alice").await.unwrap(), 2);
    for id in &ids {
        assert!(s.get(id).await.unwrap().is_none());
    }
    assert!(s.get(&bob).await.unwrap().is_some());
    assert_eq!(s.destroy_principal("alice").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_lose_nothing() {
    let (_server, redis) = start().await;
    let s = Arc::new(store(&redis, LONG, LONG));
    let id = s.create("alice", 0).await.unwrap().id;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (s, id) = (s.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let cur = s.get(&id).await.unwrap().unwrap();
                match s.update(&id, cur.version, cur.data + 1).await {
                    Ok(_) => return,
                    Err(e) if e.kind() == ErrorKind::Conflict => tokio::task::yield_now().await,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = s.get(&id).await.unwrap().unwrap();
    assert_eq!((got.data, got.version), (8, 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data_is_a_codec_error() {
    let (_server, redis) = start().await;
    let s = store(&redis, LONG, LONG);
    let id = s.create("alice", 1).await.unwrap().id;
    let key = format!("t:sess:web:s:{id}");
    // Bad data behind a good header, then a bad header.
    let good: Vec<u8> = raw(&redis, redis::cmd("GET").arg(&key)).await;
    let mut bad_data = good[..55 + 5].to_vec();
    bad_data.extend_from_slice(b"\xff\xff\xff\xff\xff\xff");
    let _: () = raw(&redis, redis::cmd("SET").arg(&key).arg(&bad_data)).await;
    assert_eq!(s.get(&id).await.unwrap_err().kind(), ErrorKind::Codec);
    assert_eq!(s.validate(&id).await.unwrap_err().kind(), ErrorKind::Codec);
    let _: () = raw(&redis, redis::cmd("SET").arg(&key).arg("garbage")).await;
    assert_eq!(s.get(&id).await.unwrap_err().kind(), ErrorKind::Codec);
    assert!(s.validate(&id).await.is_err());
    assert!(s.update(&id, 1, 2).await.is_err());
}
