//! Conformance tests of the queue building block (the model of [`crate::queue`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
use super::*;
use crate::backend::Backend;
use crate::error::ErrorKind;
use crate::queue::{
    BacklogPolicy, Consumer, Delivery, MessageId, Offered, Queue, QueueConfig, QueueExt,
};
use crate::Value;

/// The queue tests, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_queue {
    ($harness:path) => {
        $crate::__conformance_tests!($harness, queue;
            offer_then_poll_delivers_once,
            poll_on_empty_returns_none,
            delivers_in_offer_order,
            poll_timeout_waits_for_a_later_offer,
            poll_timeout_returns_none_after_the_timeout,
            take_waits_for_a_message,
            ack_removes_the_message,
            ack_of_unknown_delivery_is_false,
            unacked_message_is_redelivered_to_the_group,
            redelivery_comes_before_newer_messages,
            max_deliveries_moves_message_to_dead_letter_queue,
            every_group_sees_every_message,
            message_leaves_the_log_when_every_group_acked,
            late_group_sees_only_messages_still_in_the_log,
            consumers_of_one_group_share_messages,
            remove_withdraws_an_undelivered_message,
            remove_of_a_delivered_message_is_false,
            reject_policy_fails_when_full,
            drop_oldest_policy_displaces_the_oldest,
            drop_newest_policy_discards_the_offer,
            block_policy_times_out_when_nobody_consumes,
            block_policy_succeeds_when_room_is_made,
            queues_are_isolated_by_name,
            another_node_sees_the_same_queue,
            invalid_config_is_rejected,
            oversized_message_is_refused,
        );
    };
}

const WITHIN: Duration = Duration::from_secs(5);

fn config(capacity: usize, backlog: BacklogPolicy) -> QueueConfig {
    QueueConfig {
        capacity,
        backlog,
        ..QueueConfig::default()
    }
}

fn quick_redelivery(max_deliveries: u32) -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_millis(300),
        max_deliveries,
        ..QueueConfig::default()
    }
}

async fn open<H: Harness, M: Value>(h: &H, name: &str, config: QueueConfig) -> Arc<dyn Queue<M>> {
    h.node().await.queue::<M>(name, config).expect("open queue")
}

async fn poll<M: Value>(q: &dyn Queue<M>, c: &Consumer) -> Option<Delivery<M>> {
    q.poll(c).await.expect("poll")
}

async fn one<M: Value>(q: &dyn Queue<M>, c: &Consumer) -> Delivery<M> {
    poll(q, c).await.expect("a delivery")
}

async fn ack<M: Value>(q: &dyn Queue<M>, d: &Delivery<M>) -> bool {
    q.ack_delivery(d).await.expect("ack")
}

async fn len<M: Value>(q: &dyn Queue<M>) -> usize {
    q.len().await.expect("len")
}

/// Polls in short steps until a delivery comes or `within` passes.
async fn next<M: Value>(q: &dyn Queue<M>, c: &Consumer, within: Duration) -> Option<Delivery<M>> {
    let start = Instant::now();
    loop {
        let got = q
            .poll_timeout(c, Duration::from_millis(100))
            .await
            .expect("poll");
        if got.is_some() || start.elapsed() >= within {
            return got;
        }
    }
}

/// Polls and acks until nothing comes for 200 ms; the messages, in order.
async fn drain<M: Value>(q: &dyn Queue<M>, c: &Consumer) -> Vec<M> {
    let mut out = Vec::new();
    while let Some(d) = q
        .poll_timeout(c, Duration::from_millis(200))
        .await
        .expect("poll")
    {
        assert!(ack(q, &d).await, "fresh delivery not ackable");
        out.push(d.message);
    }
    out
}

async fn offer_all<M: Value>(
    q: &dyn Queue<M>,
    messages: impl IntoIterator<Item = M>,
) -> Vec<MessageId> {
    let mut ids = Vec::new();
    for m in messages {
        ids.push(
            q.offer(m)
                .await
                .expect("offer")
                .id()
                .expect("stored")
                .clone(),
        );
    }
    ids
}

/// An offered message is delivered with count 1, and not again while in flight.
pub async fn offer_then_poll_delivers_once<H: Harness>(h: &H) {
    let q = open::<H, (String, u32)>(h, &unique("q"), QueueConfig::default()).await;
    let offered = q.offer(("hello".into(), 7)).await.expect("offer");
    let Offered::Enqueued(id) = offered else {
        panic!("expected Enqueued, got {offered:?}")
    };
    let c = Consumer::default();
    let d = one(&*q, &c).await;
    assert_eq!(d.message, ("hello".to_owned(), 7));
    assert_eq!(
        (d.id, d.group.as_str(), d.delivery_count),
        (id, "default", 1)
    );
    assert!(
        poll(&*q, &c).await.is_none(),
        "in-flight message delivered twice"
    );
}

/// Polling an empty queue returns `None` at once.
pub async fn poll_on_empty_returns_none<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    assert!(poll(&*q, &Consumer::default()).await.is_none());
    assert_eq!(len(&*q).await, 0);
    assert!(q.is_empty().await.expect("is_empty"));
}

/// Messages come out in the order they went in.
pub async fn delivers_in_offer_order<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    offer_all(&*q, 0..20).await;
    assert_eq!(len(&*q).await, 20);
    assert_eq!(
        drain(&*q, &Consumer::default()).await,
        (0..20).collect::<Vec<_>>()
    );
}

/// `poll_timeout` returns a message offered while it waits.
pub async fn poll_timeout_waits_for_a_later_offer<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    let producer = q.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        producer.offer(42).await.expect("offer");
    });
    let d = q
        .poll_timeout(&Consumer::default(), WITHIN)
        .await
        .expect("poll");
    assert_eq!(d.map(|d| d.message), Some(42));
    task.await.expect("producer");
}

/// `poll_timeout` on an empty queue waits, then returns `None`.
pub async fn poll_timeout_returns_none_after_the_timeout<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    let start = Instant::now();
    let got = q
        .poll_timeout(&Consumer::default(), Duration::from_millis(300))
        .await
        .expect("poll");
    assert!(got.is_none());
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "returned before the timeout"
    );
}

/// `take` waits until a message is there.
pub async fn take_waits_for_a_message<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    let producer = q.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        producer.offer(5).await.expect("offer");
    });
    let d = tokio::time::timeout(WITHIN, q.take(&Consumer::default()))
        .await
        .expect("take timed out")
        .expect("take");
    assert_eq!(d.message, 5);
    task.await.expect("producer");
}

/// Acknowledging the only group's delivery removes the message from the log.
pub async fn ack_removes_the_message<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), quick_redelivery(5)).await;
    q.offer(1).await.expect("offer");
    assert_eq!(len(&*q).await, 1);
    let c = Consumer::default();
    let d = one(&*q, &c).await;
    assert!(ack(&*q, &d).await);
    assert_eq!(len(&*q).await, 0);
    assert!(!ack(&*q, &d).await, "second ack succeeded");
    // Acknowledged means never delivered again, even past the visibility timeout.
    assert!(next(&*q, &c, Duration::from_millis(700)).await.is_none());
}

/// Acks of ids that are not pending in that group are `false`, not errors.
pub async fn ack_of_unknown_delivery_is_false<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    assert!(!q
        .ack("default", &MessageId("no-such-id".into()))
        .await
        .expect("ack"));
    q.offer(1).await.expect("offer");
    let d = one(&*q, &Consumer::default()).await;
    assert!(
        !q.ack("other-group", &d.id).await.expect("ack"),
        "acked in a group it was not delivered in"
    );
    assert!(ack(&*q, &d).await);
}

/// An unacknowledged message is delivered again, to any consumer of the group.
pub async fn unacked_message_is_redelivered_to_the_group<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), quick_redelivery(5)).await;
    q.offer(9).await.expect("offer");
    let (a, b) = (Consumer::new("g", "a"), Consumer::new("g", "b"));
    let first = one(&*q, &a).await;
    assert!(
        poll(&*q, &b).await.is_none(),
        "delivered twice before the timeout"
    );
    let again = next(&*q, &b, WITHIN).await.expect("redelivery");
    assert_eq!(
        (&again.id, again.message, again.delivery_count),
        (&first.id, 9, 2)
    );
    assert!(ack(&*q, &again).await);
    assert_eq!(len(&*q).await, 0);
}

/// An expired delivery comes back before messages offered after it.
pub async fn redelivery_comes_before_newer_messages<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), quick_redelivery(5)).await;
    let c = Consumer::default();
    q.offer(1).await.expect("offer");
    let first = one(&*q, &c).await;
    q.offer(2).await.expect("offer");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let d = one(&*q, &c).await;
    assert_eq!((d.id, d.message, d.delivery_count), (first.id, 1, 2));
    let d = one(&*q, &c).await;
    assert_eq!((d.message, d.delivery_count), (2, 1));
}

/// After `max_deliveries` deliveries without ack a message goes to `"<name>.dlq"`.
pub async fn max_deliveries_moves_message_to_dead_letter_queue<H: Harness>(h: &H) {
    let name = unique("q");
    let q = open::<H, u32>(h, &name, quick_redelivery(2)).await;
    let dlq = open::<H, u32>(
        h,
        &QueueConfig::dead_letter_name(&name),
        QueueConfig::default(),
    )
    .await;
    q.offer(13).await.expect("offer");
    let c = Consumer::default();
    for count in 1..=2 {
        let d = next(&*q, &c, WITHIN).await.expect("a delivery");
        assert_eq!((d.message, d.delivery_count), (13, count));
    }
    eventually("message reaches the dead-letter queue", WITHIN, || {
        let (q, dlq, c) = (q.clone(), dlq.clone(), c.clone());
        async move {
            let again = poll(&*q, &c).await;
            assert!(
                again.is_none(),
                "delivered more than max_deliveries times: {again:?}"
            );
            len(&*dlq).await == 1
        }
    })
    .await;
    let dead = one(&*dlq, &c).await;
    assert_eq!(dead.message, 13);
    assert!(
        next(&*q, &c, Duration::from_millis(700)).await.is_none(),
        "dead letter delivered again"
    );
    assert_eq!(len(&*q).await, 0);
}

/// Every consumer group sees every message.
pub async fn every_group_sees_every_message<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    offer_all(&*q, 0..5).await;
    // Both groups exist before either acknowledges, so nothing leaves the log early.
    let billing = Consumer::new("billing", "c");
    let mut pending = Vec::new();
    while let Some(d) = poll(&*q, &billing).await {
        pending.push(d);
    }
    let seen: Vec<u32> = pending.iter().map(|d| d.message).collect();
    assert_eq!(seen, vec![0, 1, 2, 3, 4], "group billing");
    assert_eq!(
        drain(&*q, &Consumer::new("audit", "c")).await,
        vec![0, 1, 2, 3, 4],
        "group audit"
    );
    for d in &pending {
        assert!(ack(&*q, d).await);
    }
    assert_eq!(len(&*q).await, 0);
}

/// A message stays in the log until every group that exists acknowledged it.
pub async fn message_leaves_the_log_when_every_group_acked<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    q.offer(1).await.expect("offer");
    let a = q
        .poll(&Consumer::new("a", "1"))
        .await
        .expect("poll")
        .expect("delivery to a");
    let b = q
        .poll(&Consumer::new("b", "1"))
        .await
        .expect("poll")
        .expect("delivery to b");
    assert_eq!(a.id, b.id);
    assert!(ack(&*q, &a).await);
    assert_eq!(len(&*q).await, 1, "group b has not acked yet");
    assert!(ack(&*q, &b).await);
    assert_eq!(len(&*q).await, 0);
}

/// A group made by a later first poll sees what is still in the log, and only that.
pub async fn late_group_sees_only_messages_still_in_the_log<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    offer_all(&*q, [1, 2]).await;
    let early = Consumer::new("early", "1");
    let d = one(&*q, &early).await;
    assert!(ack(&*q, &d).await);
    assert_eq!(len(&*q).await, 1);
    assert_eq!(drain(&*q, &Consumer::new("late", "1")).await, vec![2]);
    assert_eq!(drain(&*q, &early).await, vec![2]);
    assert_eq!(len(&*q).await, 0);
}

/// Consumers of one group split the messages: no duplicates, none lost.
pub async fn consumers_of_one_group_share_messages<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    offer_all(&*q, 0..40).await;
    let workers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let q = q.clone();
            tokio::spawn(async move { drain(&*q, &Consumer::new("workers", name)).await })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    let distinct: BTreeSet<u32> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "duplicates or losses: {all:?}");
    assert_eq!(distinct, (0..40).collect());
}

/// A message no group has received can be withdrawn; it is never delivered.
pub async fn remove_withdraws_an_undelivered_message<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    let ids = offer_all(&*q, [1, 2, 3]).await;
    assert!(q.remove(&ids[1]).await.expect("remove"));
    assert_eq!(len(&*q).await, 2);
    assert!(!q.remove(&ids[1]).await.expect("remove"), "removed twice");
    assert!(!q
        .remove(&MessageId("no-such-id".into()))
        .await
        .expect("remove"));
    assert_eq!(drain(&*q, &Consumer::default()).await, vec![1, 3]);
}

/// A message already delivered cannot be withdrawn.
pub async fn remove_of_a_delivered_message_is_false<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    q.offer(1).await.expect("offer");
    let d = one(&*q, &Consumer::default()).await;
    assert!(!q.remove(&d.id).await.expect("remove"));
    assert_eq!(len(&*q).await, 1);
    assert!(ack(&*q, &d).await, "remove broke the pending delivery");
}

/// `Reject`: a full queue fails the offer with a retryable `QueueFull`.
pub async fn reject_policy_fails_when_full<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), config(2, BacklogPolicy::Reject)).await;
    offer_all(&*q, [1, 2]).await;
    let err = q.offer(3).await.expect_err("offer to a full queue");
    assert_eq!(err.kind(), ErrorKind::QueueFull);
    assert!(err.is_retryable());
    assert_eq!(len(&*q).await, 2);
    // Room made by a consumer lets the next offer in.
    let c = Consumer::default();
    let d = one(&*q, &c).await;
    assert!(ack(&*q, &d).await);
    q.offer(3).await.expect("offer after room was made");
    assert_eq!(drain(&*q, &c).await, vec![2, 3]);
}

/// `DropOldest`: the oldest message makes room and is reported.
pub async fn drop_oldest_policy_displaces_the_oldest<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), config(2, BacklogPolicy::DropOldest)).await;
    let ids = offer_all(&*q, [1, 2]).await;
    let offered = q.offer(3).await.expect("offer");
    let Offered::DisplacedOldest { dropped, .. } = &offered else {
        panic!("expected DisplacedOldest, got {offered:?}")
    };
    assert_eq!(dropped, &ids[0]);
    assert_eq!(len(&*q).await, 2);
    assert_eq!(drain(&*q, &Consumer::default()).await, vec![2, 3]);
}

/// `DropNewest`: the offered message is discarded and the queue is unchanged.
pub async fn drop_newest_policy_discards_the_offer<H: Harness>(h: &H) {
    let q = open::<H, u32>(h, &unique("q"), config(2, BacklogPolicy::DropNewest)).await;
    offer_all(&*q, [1, 2]).await;
    let offered = q.offer(3).await.expect("offer");
    assert_eq!(offered, Offered::Discarded);
    assert_eq!(offered.id(), None);
    assert_eq!(len(&*q).await, 2);
    assert_eq!(drain(&*q, &Consumer::default()).await, vec![1, 2]);
}

/// `Block`: the offer fails with `Timeout` when no room is made in time.
pub async fn block_policy_times_out_when_nobody_consumes<H: Harness>(h: &H) {
    let backlog = BacklogPolicy::Block {
        timeout: Duration::from_millis(300),
    };
    let q = open::<H, u32>(h, &unique("q"), config(1, backlog)).await;
    q.offer(1).await.expect("offer");
    let start = Instant::now();
    let err = q.offer(2).await.expect_err("offer to a full queue");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "gave up before the timeout"
    );
    assert_eq!(drain(&*q, &Consumer::default()).await, vec![1]);
}

/// `Block`: the offer goes through once a consumer acknowledges within the timeout.
pub async fn block_policy_succeeds_when_room_is_made<H: Harness>(h: &H) {
    let backlog = BacklogPolicy::Block {
        timeout: Duration::from_secs(3),
    };
    let q = open::<H, u32>(h, &unique("q"), config(1, backlog)).await;
    q.offer(1).await.expect("offer");
    let consumer = q.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let d = consumer
            .poll(&Consumer::default())
            .await
            .expect("poll")
            .expect("a delivery");
        assert!(ack(&*consumer, &d).await);
    });
    let offered = q.offer(2).await.expect("blocked offer");
    assert!(offered.id().is_some(), "{offered:?}");
    task.await.expect("consumer");
    assert_eq!(drain(&*q, &Consumer::default()).await, vec![2]);
}

/// Queues of different names share nothing.
pub async fn queues_are_isolated_by_name<H: Harness>(h: &H) {
    let a = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    let b = open::<H, u32>(h, &unique("q"), QueueConfig::default()).await;
    a.offer(1).await.expect("offer");
    assert_eq!(len(&*b).await, 0);
    assert!(poll(&*b, &Consumer::default()).await.is_none());
    assert_eq!(drain(&*a, &Consumer::default()).await, vec![1]);
}

/// Another node of the deployment opens the same queue by name.
pub async fn another_node_sees_the_same_queue<H: Harness>(h: &H) {
    let name = unique("q");
    let (one, two) = (h.node().await, h.node().await);
    let producer = one
        .queue::<u32>(&name, QueueConfig::default())
        .expect("open");
    let consumer = two
        .queue::<u32>(&name, QueueConfig::default())
        .expect("open");
    offer_all(&*producer, [1, 2]).await;
    assert_eq!(len(&*consumer).await, 2);
    assert_eq!(drain(&*consumer, &Consumer::default()).await, vec![1, 2]);
    assert_eq!(len(&*producer).await, 0);
}

/// A zero capacity or zero `max_deliveries` is `InvalidInput`.
pub async fn invalid_config_is_rejected<H: Harness>(h: &H) {
    let node = h.node().await;
    for config in [
        config(0, BacklogPolicy::Reject),
        QueueConfig {
            max_deliveries: 0,
            ..QueueConfig::default()
        },
    ] {
        let err = node
            .queue::<u32>(&unique("q"), config.clone())
            .err()
            .expect("invalid config accepted");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{config:?}");
    }
}

/// A message encoding to more than `max_value_bytes` is refused by `offer` with
/// a non-retryable `PayloadTooLarge` and not enqueued; one at the limit is.
pub async fn oversized_message_is_refused<H: Harness>(h: &H) {
    use crate::Codec;
    let fits = "x".repeat(1000);
    let config = QueueConfig {
        max_value_bytes: crate::DefaultCodec::encoded_len(&fits).unwrap(),
        ..QueueConfig::default()
    };
    let q = open::<H, String>(h, &unique("queue"), config).await;
    let err = q.offer("y".repeat(1001)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    assert!(!err.is_retryable());
    assert_eq!(len(&*q).await, 0);
    q.offer(fits.clone()).await.unwrap();
    let c = Consumer::new("g", "c1");
    assert_eq!(one(&*q, &c).await.message, fits);
}
