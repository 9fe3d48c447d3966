//! What the conformance suite cannot see: undecodable entries, the dead-letter
//! streams, two nodes (connections) on one stream, concurrency, cancellation
//! and a Redis that refuses writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_api::{BacklogPolicy, Consumer, ErrorKind, Offered, Queue, QueueConfig, QueueExt};

use super::{config, setup, short, xlen};
use crate::queue::RedisQueue;
use crate::{Redis, RedisServer};

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_messages_move_to_the_dead_letter_stream() {
    let (_server, redis) = setup().await;
    let q =
        RedisQueue::<(u64, String)>::open(redis.clone(), "typed", QueueConfig::default()).unwrap();
    q.offer((1, "one".into())).await.unwrap();
    let mut conn = redis.conn();
    let _: String = redis::cmd("XADD")
        .arg(q.key())
        .arg("*")
        .arg("m")
        .arg(&[0xffu8, 0xff, 0xff][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(q.key())
        .arg("*")
        .arg("other")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    q.offer((2, "two".into())).await.unwrap();
    let c = Consumer::default();
    let mut got = Vec::new();
    while let Some(d) = q.poll(&c).await.unwrap() {
        assert!(q.ack_delivery(&d).await.unwrap());
        got.push(d.message.0);
    }
    assert_eq!(got, [1, 2]);
    assert_eq!(q.len().await.unwrap(), 0);
    assert_eq!(
        xlen(&redis, "t:queue:typed.dlq").await,
        2,
        "both bad entries kept, raw"
    );
    // The dead-letter queue of the same type skips them too, one level down.
    let dlq = RedisQueue::<(u64, String)>::open(redis.clone(), "typed.dlq", QueueConfig::default())
        .unwrap();
    assert!(dlq
        .poll_timeout(&c, Duration::from_millis(50))
        .await
        .unwrap()
        .is_none());
    assert_eq!(xlen(&redis, "t:queue:typed.dlq.dlq").await, 2);
    // The blocking path handles them the same way.
    let waiter = {
        let redis = redis.clone();
        tokio::spawn(async move {
            let q =
                RedisQueue::<(u64, String)>::open(redis, "typed", QueueConfig::default()).unwrap();
            q.poll_timeout(&Consumer::default(), Duration::from_secs(5))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _: String = redis::cmd("XADD")
        .arg(q.key())
        .arg("*")
        .arg("m")
        .arg("junk")
        .query_async(&mut conn)
        .await
        .unwrap();
    q.offer((3, "three".into())).await.unwrap();
    let d = waiter.await.unwrap().unwrap().unwrap();
    assert_eq!(d.message.0, 3);
    assert_eq!(
        xlen(&redis, "t:queue:typed.dlq").await,
        1,
        "the new bad entry (the old two moved on)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_one_stream() {
    let server = RedisServer::start().unwrap();
    let node_a = Redis::connect(&server.url(), "shop").await.unwrap();
    let node_b = Redis::connect(&server.url(), "shop").await.unwrap();
    let qa = Arc::new(RedisQueue::<u32>::open(node_a, "work", QueueConfig::default()).unwrap());
    let qb = Arc::new(RedisQueue::<u32>::open(node_b, "work", QueueConfig::default()).unwrap());
    // A consumer on b waits; an offer on a wakes it.
    let waiter = {
        let qb = qb.clone();
        tokio::spawn(async move { qb.take(&Consumer::new("g", "b")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    qa.offer(1).await.unwrap();
    let d = waiter.await.unwrap().unwrap();
    assert_eq!(d.message, 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "woken by the offer"
    );
    assert!(
        qa.ack_delivery(&d).await.unwrap(),
        "acked through the other node"
    );
    // One group over both nodes: every message once.
    for i in 0..20 {
        qa.offer(i).await.unwrap();
    }
    let mut all = Vec::new();
    loop {
        let (x, y) = (
            qa.poll(&Consumer::new("g", "a")).await.unwrap(),
            qb.poll(&Consumer::new("g", "b")).await.unwrap(),
        );
        if x.is_none() && y.is_none() {
            break;
        }
        for d in x.into_iter().chain(y) {
            assert!(qb.ack_delivery(&d).await.unwrap());
            all.push(d.message);
        }
    }
    all.sort_unstable();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    assert_eq!(qb.len().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_consumers_get_each_message_once_per_group() {
    let (_server, redis) = setup().await;
    let q = Arc::new(RedisQueue::<u32>::open(redis, "busy", QueueConfig::default()).unwrap());
    const N: u32 = 400;
    // A group sees what is still in the log when it first polls, so both groups
    // exist before the first offer (otherwise one group's acks could delete
    // messages the other, created later on a loaded machine, never sees).
    for group in ["even", "odd"] {
        assert!(q.poll(&Consumer::new(group, "c")).await.unwrap().is_none());
    }
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let q = q.clone();
            tokio::spawn(async move {
                for i in 0..N / 4 {
                    q.offer(p * (N / 4) + i).await.unwrap();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..8)
        .map(|c| {
            let q = q.clone();
            let consumer = Consumer::new(if c % 2 == 0 { "even" } else { "odd" }, format!("c{c}"));
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(d) = q
                    .poll_timeout(&consumer, Duration::from_millis(500))
                    .await
                    .unwrap()
                {
                    assert_eq!(d.delivery_count, 1);
                    assert!(q.ack_delivery(&d).await.unwrap());
                    got.push(d.message);
                }
                (consumer.group, got)
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let (mut even, mut odd) = (Vec::new(), Vec::new());
    for c in consumers {
        let (group, got) = c.await.unwrap();
        if group == "even" {
            even.extend(got)
        } else {
            odd.extend(got)
        }
    }
    even.sort_unstable();
    odd.sort_unstable();
    assert_eq!(even, (0..N).collect::<Vec<_>>());
    assert_eq!(odd, (0..N).collect::<Vec<_>>());
    assert_eq!(q.len().await.unwrap(), 0, "both groups acked everything");
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_holds_under_concurrent_offers() {
    let (_server, redis) = setup().await;
    let q =
        Arc::new(RedisQueue::<u32>::open(redis, "cap", config(10, BacklogPolicy::Reject)).unwrap());
    let offers: Vec<_> = (0..50)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move { q.offer(i).await })
        })
        .collect();
    let (mut ok, mut full) = (0, 0);
    for offer in offers {
        match offer.await.unwrap() {
            Ok(Offered::Enqueued(_)) => ok += 1,
            Err(e) if e.kind() == ErrorKind::QueueFull => full += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((ok, full), (10, 40));
    assert_eq!(q.len().await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_wait_loses_nothing() {
    let (_server, redis) = setup().await;
    let q = RedisQueue::<u32>::open(redis, "cancel", short(200, 5)).unwrap();
    let c = Consumer::default();
    let waited = tokio::time::timeout(
        Duration::from_millis(50),
        q.poll_timeout(&c, Duration::from_secs(5)),
    )
    .await;
    assert!(waited.is_err(), "cancelled while blocked");
    q.offer(1).await.unwrap();
    let d = q
        .poll_timeout(&c, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.message, 1);
    assert!(q.ack_delivery(&d).await.unwrap());
    assert_eq!(q.len().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_append_fails_only_that_offer() {
    let (_server, redis) = setup().await;
    let q = RedisQueue::<u32>::open(redis.clone(), "oom", QueueConfig::default()).unwrap();
    let set = |value: &'static str| {
        let redis = redis.clone();
        async move {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg(value)
                .query_async(&mut redis.conn())
                .await
                .unwrap();
        }
    };
    set("1").await;
    let err = q.offer(1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    set("0").await;
    assert!(matches!(q.offer(2).await.unwrap(), Offered::Enqueued(_)));
    assert_eq!(q.len().await.unwrap(), 1);
}
