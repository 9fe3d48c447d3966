//! Blocking queue reads across a Redis restart, against a real `redis-server`
//! killed (SIGKILL) and started again on the same port: consumers waiting in
//! `take` get a retryable error or keep waiting during the outage, and once
//! Redis is back every call succeeds (no stray errors from pooled blocking
//! connections that died with the old server).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_api::{Consumer, Queue, QueueConfig, QueueExt};
use mod_distribute::{Redis, RedisQueue, RedisServer};

/// Offers until one succeeds (the shared connection reconnects on its own).
async fn offer_when_back(q: &RedisQueue<String>, m: String) {
    let start = Instant::now();
    loop {
        match q.offer(m.clone()).await {
            Ok(_) => return,
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "redis never came back: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_reads_recover_without_stray_errors_after_a_restart() {
    let mut server = RedisServer::start().unwrap();
    let port = server.port();
    let redis = Redis::connect(&server.url(), "r").await.unwrap();
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(2),
        ..QueueConfig::default()
    };
    let q = Arc::new(RedisQueue::<String>::open(redis.clone(), "work", config).unwrap());
    // Fill the pool of blocking connections: many consumers wait at once, so
    // that idle pooled connections die with the server too.
    const CONSUMERS: usize = 6;
    let mut waiting = Vec::new();
    for i in 0..3 * CONSUMERS {
        let q = q.clone();
        waiting.push(tokio::spawn(async move {
            q.poll_timeout(
                &Consumer::new("g", format!("c{i}")),
                Duration::from_millis(300),
            )
            .await
        }));
    }
    for w in waiting {
        assert!(w.await.unwrap().unwrap().is_none());
    }
    // Now consumers wait in `take` while Redis dies.
    let mut takers = Vec::new();
    for i in 0..CONSUMERS {
        let q = q.clone();
        takers.push(tokio::spawn(async move {
            q.take(&Consumer::new("g", format!("t{i}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = RedisServer::start_on_port(port, &[]).unwrap();
    // During the outage a take may fail, but only retryably.
    let mut outage_errors = 0;
    for t in takers {
        match tokio::time::timeout(Duration::from_millis(50), t).await {
            Ok(Ok(Err(e))) => {
                assert!(e.is_retryable(), "{e:?}");
                outage_errors += 1;
            }
            Ok(Ok(Ok(d))) => panic!("a delivery from an empty queue: {d:?}"),
            Ok(Err(join)) => panic!("{join}"),
            Err(_) => {} // still waiting: fine (dropped here)
        }
    }
    eprintln!("takes failed during the outage: {outage_errors}");
    offer_when_back(&q, "first".into()).await;

    // Back: every call succeeds, over more time than the stray errors took.
    let c = Consumer::new("g", "after");
    let until = Instant::now() + Duration::from_secs(8);
    let mut n = 0;
    while Instant::now() < until {
        let d = q
            .take(&c)
            .await
            .unwrap_or_else(|e| panic!("take #{n}: {e:?}"));
        assert!(q.ack_delivery(&d).await.unwrap());
        // Waits that find nothing exercise every pooled connection.
        let mut waits = Vec::new();
        for i in 0..CONSUMERS {
            let q = q.clone();
            waits.push(tokio::spawn(async move {
                q.poll_timeout(
                    &Consumer::new("g", format!("w{i}")),
                    Duration::from_millis(150),
                )
                .await
            }));
        }
        for w in waits {
            let got = w
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("poll #{n}: {e:?}"));
            assert!(got.is_none());
        }
        q.offer(format!("m{n}")).await.unwrap();
        n += 1;
    }
    assert!(n > 3, "only {n} rounds");
    drop(server);
}
