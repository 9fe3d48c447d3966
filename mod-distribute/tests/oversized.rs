//! Values above what the Redis server accepts (`proto-max-bulk-len`), against
//! a real `redis-server` started with a 1 MB limit: the caller of the big
//! request gets a non-retryable `PayloadTooLarge`, and unrelated calls sharing
//! the node's connection keep succeeding.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mod_api::{Cache, CachePolicy, ErrorKind};
use mod_distribute::{Redis, RedisCache, RedisServer};

const LIMIT: &str = "1mb";
const BIG: usize = 2 << 20;

/// Runs gets and sets of small values on `cache` until `stop`; the errors seen.
fn background(
    cache: Arc<RedisCache<Vec<u8>>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, Vec<String>)>> {
    (0..4)
        .map(|t| {
            let (cache, stop) = (cache.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut calls, mut errors) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let outcome = if t % 2 == 0 {
                        cache
                            .get("small")
                            .await
                            .map(|v| assert_eq!(v.as_deref(), Some(&[1u8; 10][..])))
                    } else {
                        cache.set(&format!("k{t}"), vec![2; 100]).await
                    };
                    if let Err(e) = outcome {
                        errors.push(format!("{e:?}"));
                    }
                    calls += 1;
                }
                (calls, errors)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_above_the_server_limit_fails_alone_and_not_retryable() {
    let server = RedisServer::start_with_args(&["--proto-max-bulk-len", LIMIT]).unwrap();
    let redis = Redis::connect(&server.url(), "o").await.unwrap();
    assert_eq!(redis.conn().bulk_limit(), 1 << 20, "read from the server");
    let policy = CachePolicy::default();
    let cache = Arc::new(RedisCache::<Vec<u8>>::new(redis.clone(), None, "c", &policy).unwrap());
    cache.set("small", vec![1; 10]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = background(cache.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        let e = cache.set("big", vec![7; BIG]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PayloadTooLarge, "{e:?}");
        assert!(!e.is_retryable(), "{e:?}");
    }
    // A TTL'd set (another command shape) too; the entry never appeared.
    let e = cache
        .set_with_ttl("big", vec![7; BIG], Duration::from_secs(9))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PayloadTooLarge);
    assert_eq!(cache.get("big").await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let (calls, errors) = task.await.unwrap();
        assert!(calls > 0);
        assert!(errors.is_empty(), "concurrent calls failed: {errors:?}");
    }
    // Just under the limit still goes through.
    cache.set("fits", vec![3; (1 << 20) - 64]).await.unwrap();
    assert_eq!(
        cache.get("fits").await.unwrap().unwrap().len(),
        (1 << 20) - 64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_lowered_at_runtime_is_learnt_from_the_failure() {
    let server = RedisServer::start().unwrap();
    let redis = Redis::connect(&server.url(), "o").await.unwrap();
    let policy = CachePolicy::default();
    let cache = RedisCache::<Vec<u8>>::new(redis.clone(), None, "c", &policy).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("proto-max-bulk-len")
        .arg(LIMIT)
        .query_async(&mut redis.conn())
        .await
        .unwrap();
    // The server refuses it and closes the connection: still not retryable.
    let e = cache.set("big", vec![7; BIG]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PayloadTooLarge, "{e:?}");
    assert!(!e.is_retryable());
    assert_eq!(redis.conn().bulk_limit(), 1 << 20, "learnt");
    // From now on refused before the wire, and the connection serves the rest.
    cache.set("small", vec![1; 10]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = background(Arc::new(cache), stop.clone());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cache = RedisCache::<Vec<u8>>::new(redis.clone(), None, "c", &policy).unwrap();
    let e = cache.set("big", vec![7; BIG]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PayloadTooLarge);
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let (_, errors) = task.await.unwrap();
        assert!(errors.is_empty(), "{errors:?}");
    }
}
