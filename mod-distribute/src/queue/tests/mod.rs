//! Unit tests of the Redis queue against a real `redis-server`: the model here,
//! and in [`robustness`] what the conformance suite cannot see (bad bytes, the
//! dead-letter stream, two nodes on one stream, concurrency, cancellation).

mod robustness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_api::{
    BacklogPolicy, Consumer, ErrorKind, MessageId, Offered, Queue, QueueConfig, QueueExt,
};

use super::RedisQueue;
use crate::{Redis, RedisServer};

async fn setup() -> (RedisServer, Redis) {
    let server = RedisServer::start().expect("redis-server");
    let redis = Redis::connect(&server.url(), "t").await.expect("connect");
    (server, redis)
}

fn config(capacity: usize, backlog: BacklogPolicy) -> QueueConfig {
    QueueConfig {
        capacity,
        backlog,
        ..QueueConfig::default()
    }
}

fn short(visibility_ms: u64, max_deliveries: u32) -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_millis(visibility_ms),
        max_deliveries,
        ..QueueConfig::default()
    }
}

async fn xlen(redis: &Redis, key: &str) -> usize {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut redis.conn())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_groups_ack_and_key_layout() {
    let (_server, redis) = setup().await;
    let q = RedisQueue::<String>::open(redis.clone(), "orders", QueueConfig::default()).unwrap();
    assert_eq!(q.key(), "t:queue:orders");
    for i in 0..3 {
        assert!(matches!(
            q.offer(format!("m{i}")).await.unwrap(),
            Offered::Enqueued(_)
        ));
    }
    assert_eq!(q.len().await.unwrap(), 3);
    let (a, b) = (Consumer::new("a", "1"), Consumer::new("b", "1"));
    let mut seen = Vec::new();
    while let Some(d) = q.poll(&a).await.unwrap() {
        assert_eq!(d.delivery_count, 1);
        assert!(q.ack_delivery(&d).await.unwrap());
        assert!(
            !q.ack_delivery(&d).await.unwrap(),
            "a second ack finds nothing pending"
        );
        seen.push(d.message);
    }
    assert_eq!(seen, ["m0", "m1", "m2"]);
    // Group a is done, but group b (made now) still sees every message still in the log.
    assert_eq!(
        q.len().await.unwrap(),
        0,
        "a was the only group: acked messages left"
    );
    q.offer("m3".into()).await.unwrap();
    let db = q.poll(&b).await.unwrap().unwrap();
    assert_eq!(db.message, "m3");
    let da = q.poll(&a).await.unwrap().unwrap();
    assert!(q.ack_delivery(&da).await.unwrap());
    assert_eq!(q.len().await.unwrap(), 1, "b has not acked yet");
    assert!(q.ack_delivery(&db).await.unwrap());
    assert_eq!(q.len().await.unwrap(), 0);
    assert!(!q.ack("a", &MessageId("garbage".into())).await.unwrap());
    assert!(!q.ack("nogroup", &da.id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn offered_before_any_group_waits_for_the_first() {
    let (_server, redis) = setup().await;
    let q = RedisQueue::<u32>::open(redis, "early", QueueConfig::default()).unwrap();
    let id = q.offer(1).await.unwrap().id().unwrap().clone();
    let c = Consumer::new("late", "x");
    let d = q.poll(&c).await.unwrap().unwrap();
    assert_eq!((d.id.clone(), d.message), (id, 1));
    assert!(q.poll(&c).await.unwrap().is_none(), "pending in this group");
}

/// Polls of a group found calm are plain reads (`poll.rs`); expiries after the
/// calm period and a group deleted meanwhile are still handled.
#[tokio::test(flavor = "multi_thread")]
async fn calm_groups_still_see_expiries_and_lost_groups() {
    let (_server, redis) = setup().await;
    let q = RedisQueue::<u32>::open(redis.clone(), "calm", short(300, 5)).unwrap();
    let c = Consumer::new("g", "one");
    q.offer(1).await.unwrap();
    q.offer(2).await.unwrap();
    // The first poll makes the group, calm (nothing pending); the next reads plainly.
    let one = q.poll(&c).await.unwrap().unwrap();
    let two = q.poll(&c).await.unwrap().unwrap();
    assert_eq!((one.message, two.message), (1, 2));
    assert!(q.ack_delivery(&two).await.unwrap());
    assert!(q.poll(&c).await.unwrap().is_none());
    // 1 expires after the calm half of its visibility timeout: it comes back.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = q.poll(&c).await.unwrap().unwrap();
    assert_eq!((again.message, again.delivery_count), (1, 2));
    assert!(q.ack_delivery(&again).await.unwrap());
    assert!(q.poll(&c).await.unwrap().is_none(), "calm again");
    // The group vanishes while the handle takes it for calm: made again.
    let _: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(q.key())
        .arg("g")
        .query_async(&mut redis.conn())
        .await
        .unwrap();
    q.offer(3).await.unwrap();
    assert_eq!(q.poll(&c).await.unwrap().unwrap().message, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivery_then_dead_letter_queue() {
    let (_server, redis) = setup().await;
    let q = RedisQueue::<u32>::open(redis.clone(), "jobs", short(100, 2)).unwrap();
    let dlq = RedisQueue::<u32>::open(redis.clone(), "jobs.dlq", QueueConfig::default()).unwrap();
    q.offer(7).await.unwrap();
    q.offer(8).await.unwrap();
    let c = Consumer::new("g", "one");
    let other = Consumer::new("g", "two");
    let first = q.poll(&c).await.unwrap().unwrap();
    assert_eq!((first.message, first.delivery_count), (7, 1));
    // 8 is new; 7 is not expired yet.
    let eight = q.poll(&c).await.unwrap().unwrap();
    assert_eq!(eight.message, 8);
    assert!(q.ack_delivery(&eight).await.unwrap());
    // Redelivered to another consumer of the group, while it waits.
    let again = q
        .poll_timeout(&other, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.message, again.delivery_count, &again.id),
        (7, 2, &first.id)
    );
    // Delivered max_deliveries times: the next expiry dead-letters it.
    assert!(q
        .poll_timeout(&c, Duration::from_millis(400))
        .await
        .unwrap()
        .is_none());
    assert_eq!(q.len().await.unwrap(), 0);
    assert!(!q.ack_delivery(&again).await.unwrap());
    assert_eq!(dlq.len().await.unwrap(), 1);
    let dead = dlq.poll(&c).await.unwrap().unwrap();
    assert_eq!((dead.message, dead.delivery_count), (7, 1));
    assert!(dlq.ack_delivery(&dead).await.unwrap());
    assert_eq!(dlq.len().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn backlog_policies() {
    let (_server, redis) = setup().await;
    let reject =
        RedisQueue::<u32>::open(redis.clone(), "r", config(2, BacklogPolicy::Reject)).unwrap();
    reject.offer(1).await.unwrap();
    reject.offer(2).await.unwrap();
    let err = reject.offer(3).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QueueFull);
    assert!(err.is_retryable());

    let newest =
        RedisQueue::<u32>::open(redis.clone(), "n", config(1, BacklogPolicy::DropNewest)).unwrap();
    newest.offer(1).await.unwrap();
    assert_eq!(newest.offer(2).await.unwrap(), Offered::Discarded);
    assert_eq!(
        newest
            .poll(&Consumer::default())
            .await
            .unwrap()
            .unwrap()
            .message,
        1
    );

    let oldest =
        RedisQueue::<u32>::open(redis.clone(), "o", config(2, BacklogPolicy::DropOldest)).unwrap();
    let first = oldest.offer(1).await.unwrap().id().unwrap().clone();
    oldest.offer(2).await.unwrap();
    let d = oldest.poll(&Consumer::default()).await.unwrap().unwrap();
    assert_eq!(d.id, first);
    match oldest.offer(3).await.unwrap() {
        Offered::DisplacedOldest { dropped, .. } => assert_eq!(dropped, first),
        other => panic!("{other:?}"),
    }
    assert!(
        !oldest.ack_delivery(&d).await.unwrap(),
        "dropped: nothing to ack"
    );
    assert_eq!(oldest.len().await.unwrap(), 2);

    let block = |ms| {
        config(
            1,
            BacklogPolicy::Block {
                timeout: Duration::from_millis(ms),
            },
        )
    };
    let blocked = Arc::new(RedisQueue::<u32>::open(redis.clone(), "b", block(150)).unwrap());
    blocked.offer(1).await.unwrap();
    let started = Instant::now();
    let err = blocked.offer(2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(150));
    // Room made by a consumer lets a blocked offer through.
    let patient = Arc::new(RedisQueue::<u32>::open(redis.clone(), "b", block(5_000)).unwrap());
    let offer = tokio::spawn({
        let patient = patient.clone();
        async move { patient.offer(2).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let d = blocked.poll(&Consumer::default()).await.unwrap().unwrap();
    assert!(blocked.ack_delivery(&d).await.unwrap());
    assert!(matches!(
        offer.await.unwrap().unwrap(),
        Offered::Enqueued(_)
    ));

    let spill = QueueConfig {
        backlog: BacklogPolicy::Overflow,
        ..QueueConfig::default()
    };
    let err = RedisQueue::<u32>::open(redis.clone(), "s", spill).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err =
        RedisQueue::<u32>::open(redis.clone(), "bad name", QueueConfig::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = RedisQueue::<u32>::open(redis, "zero", config(0, BacklogPolicy::Reject)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_only_before_any_group_received_it() {
    let (_server, redis) = setup().await;
    let q = RedisQueue::<u32>::open(redis, "rm", QueueConfig::default()).unwrap();
    let a = q.offer(1).await.unwrap().id().unwrap().clone();
    let b = q.offer(2).await.unwrap().id().unwrap().clone();
    let c = q.offer(3).await.unwrap().id().unwrap().clone();
    assert!(q.remove(&b).await.unwrap(), "no group yet");
    assert!(!q.remove(&b).await.unwrap(), "gone already");
    let d = q.poll(&Consumer::default()).await.unwrap().unwrap();
    assert_eq!(d.id, a);
    assert!(!q.remove(&a).await.unwrap(), "received by a group");
    assert!(q.remove(&c).await.unwrap(), "not received yet");
    assert!(!q.remove(&MessageId("nope".into())).await.unwrap());
    assert_eq!(q.len().await.unwrap(), 1);
    assert!(q.poll(&Consumer::default()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_timeout_waits_and_times_out() {
    let (_server, redis) = setup().await;
    let q = RedisQueue::<u32>::open(redis, "wait", QueueConfig::default()).unwrap();
    let c = Consumer::default();
    let started = Instant::now();
    assert!(q
        .poll_timeout(&c, Duration::from_millis(300))
        .await
        .unwrap()
        .is_none());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert!(q.poll_timeout(&c, Duration::ZERO).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_deliveries_come_back_first_in_id_order() {
    let (_server, redis) = setup().await;
    let q = RedisQueue::<u32>::open(redis.clone(), "order", short(100, 5)).unwrap();
    let c = Consumer::default();
    for i in 0..3 {
        q.offer(i).await.unwrap();
    }
    let a = q.poll(&c).await.unwrap().unwrap();
    let b = q.poll(&c).await.unwrap().unwrap();
    // An entry deleted by hand while pending is skipped, not delivered empty.
    let _: i64 = redis::cmd("XDEL")
        .arg(q.key())
        .arg(&a.id.0)
        .query_async(&mut redis.conn())
        .await
        .unwrap();
    q.offer(3).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let again = q.poll(&c).await.unwrap().unwrap();
    assert_eq!(
        (again.id, again.message, again.delivery_count),
        (b.id, 1, 2)
    );
    let rest: Vec<u32> = [q.poll(&c).await.unwrap(), q.poll(&c).await.unwrap()]
        .into_iter()
        .map(|d| d.unwrap().message)
        .collect();
    assert_eq!(rest, [2, 3]);
}
