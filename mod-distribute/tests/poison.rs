//! Poison messages: stream entries whose field `m` the codec cannot decode,
//! written straight into the queue's stream with `XADD`, against a real
//! `redis-server`. Every good message must arrive in order, the garbage must
//! land in the dead-letter stream at once with a reason, and nobody sees it again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use mod_api::{Consumer, Queue, QueueConfig, QueueExt};
use mod_distribute::{Redis, RedisQueue, RedisServer};
use redis::Value as Reply;

/// WARN events saying a message was moved to the dead-letter queue for being
/// undecodable, counted per queue name (the tests use different names).
static ORDERS_WARNINGS: AtomicUsize = AtomicUsize::new(0);
static JOBS_WARNINGS: AtomicUsize = AtomicUsize::new(0);

struct CountPoisonWarnings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountPoisonWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if !fields.message.contains("cannot be decoded") || !fields.has_id {
            return;
        }
        match fields.queue.as_str() {
            "orders" => ORDERS_WARNINGS.fetch_add(1, Ordering::SeqCst),
            "jobs" => JOBS_WARNINGS.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    queue: String,
    has_id: bool,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "queue" => self.queue = format!("{value:?}"),
            "id" => self.has_id = true,
            _ => {}
        }
    }
}

fn count_warnings() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(CountPoisonWarnings);
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
    });
}

async fn setup() -> (RedisServer, Redis) {
    count_warnings();
    let server = RedisServer::start().expect("redis-server");
    let redis = Redis::connect(&server.url(), "p").await.expect("connect");
    (server, redis)
}

async fn xadd(redis: &Redis, key: &str, field: &str, value: &[u8]) -> String {
    redis::cmd("XADD")
        .arg(key)
        .arg("*")
        .arg(field)
        .arg(value)
        .query_async(&mut redis.conn())
        .await
        .expect("XADD")
}

/// The entries of stream `key` as (id, field → value).
async fn entries(redis: &Redis, key: &str) -> Vec<(String, Vec<(String, Vec<u8>)>)> {
    let reply: Reply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut redis.conn())
        .await
        .expect("XRANGE");
    let Reply::Array(items) = reply else {
        return Vec::new();
    };
    items
        .into_iter()
        .map(|item| {
            let Reply::Array(mut parts) = item else {
                panic!("entry shape")
            };
            let Reply::Array(fields) = parts.pop().unwrap() else {
                panic!("fields shape")
            };
            let id: String = redis::from_redis_value(parts.pop().unwrap()).unwrap();
            let mut out = Vec::new();
            let mut fields = fields.into_iter();
            while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
                let k: String = redis::from_redis_value(k).unwrap();
                let v: Vec<u8> = redis::from_redis_value(v).unwrap();
                out.push((k, v));
            }
            (id, out)
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

async fn pending(redis: &Redis, key: &str, group: &str) -> i64 {
    let reply: Reply = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .query_async(&mut redis.conn())
        .await
        .expect("XPENDING");
    match reply {
        Reply::Array(items) => match items.first() {
            Some(Reply::Int(n)) => *n,
            _ => panic!("XPENDING shape {items:?}"),
        },
        other => panic!("XPENDING reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_goes_to_the_dead_letter_stream_at_once_and_good_messages_flow() {
    let (_server, redis) = setup().await;
    // A high max_deliveries: the poison must not wait for it.
    let config = QueueConfig {
        max_deliveries: 100,
        visibility_timeout: Duration::from_secs(30),
        ..QueueConfig::default()
    };
    let q = RedisQueue::<String>::open(redis.clone(), "orders", config.clone()).unwrap();
    assert_eq!(q.key(), "p:queue:orders", "the key docs.md names");
    q.offer("a".into()).await.unwrap();
    q.offer("b".into()).await.unwrap();
    // A String's length prefix, then not enough bytes: fails to decode.
    let poison = xadd(&redis, q.key(), "m", &[0xff, 0xff, 0xff]).await;
    // An entry without field `m` at all.
    let fieldless = xadd(&redis, q.key(), "x", b"y").await;
    q.offer("c".into()).await.unwrap();
    // Well-framed, but not UTF-8: not a String.
    let wrong_type = xadd(&redis, q.key(), "m", &[0x02, 0xc3, 0x28]).await;
    // A length prefix of 2^40: once aborted every consumer (1 TiB allocation).
    let bomb = xadd(&redis, q.key(), "m", &mod_api::testkit::length_bomb()).await;
    q.offer("d".into()).await.unwrap();

    let c = Consumer::new("g", "c1");
    let mut got = Vec::new();
    // Mix plain polls and the blocking path; each returns a good message.
    while let Some(d) = q
        .poll_timeout(&c, Duration::from_millis(200))
        .await
        .unwrap()
    {
        assert_eq!(d.delivery_count, 1);
        assert!(q.ack_delivery(&d).await.unwrap());
        got.push(d.message);
    }
    assert_eq!(got, ["a", "b", "c", "d"], "every good message, in order");

    let dlq = entries(&redis, "p:queue:orders.dlq").await;
    assert_eq!(dlq.len(), 4, "the four bad entries, dead-lettered: {dlq:?}");
    let reasons: Vec<String> = dlq
        .iter()
        .map(|(_, f)| String::from_utf8(field(f, "reason").expect("reason").to_vec()).unwrap())
        .collect();
    assert!(
        reasons.iter().all(|r| r.starts_with("undecodable: ")),
        "{reasons:?}"
    );
    let ids: Vec<&[u8]> = dlq
        .iter()
        .map(|(_, f)| field(f, "source_id").unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            poison.as_bytes(),
            fieldless.as_bytes(),
            wrong_type.as_bytes(),
            bomb.as_bytes()
        ],
        "each names the id it had"
    );
    assert_eq!(
        field(&dlq[0].1, "m"),
        Some(&[0xffu8, 0xff, 0xff][..]),
        "raw bytes kept"
    );
    assert_eq!(
        pending(&redis, q.key(), "g").await,
        0,
        "nothing left pending"
    );
    assert_eq!(q.len().await.unwrap(), 0, "settled entries left the stream");
    assert_eq!(
        ORDERS_WARNINGS.load(Ordering::SeqCst),
        4,
        "one WARN per poison entry"
    );

    // A restarted consumer (new handle, same group) sees nothing again.
    drop(q);
    let q = RedisQueue::<String>::open(redis.clone(), "orders", config).unwrap();
    let c2 = Consumer::new("g", "c2");
    assert!(q
        .poll_timeout(&c2, Duration::from_millis(100))
        .await
        .unwrap()
        .is_none());
    q.offer("e".into()).await.unwrap();
    assert_eq!(q.take(&c2).await.unwrap().message, "e");
    assert_eq!(entries(&redis, "p:queue:orders.dlq").await.len(), 4);
    assert_eq!(
        ORDERS_WARNINGS.load(Ordering::SeqCst),
        4,
        "not logged again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_left_pending_by_a_crashed_consumer_is_dead_lettered_on_redelivery() {
    let (_server, redis) = setup().await;
    let config = QueueConfig {
        max_deliveries: 100,
        visibility_timeout: Duration::from_millis(200),
        ..QueueConfig::default()
    };
    let q = RedisQueue::<String>::open(redis.clone(), "jobs", config).unwrap();
    q.offer("first".into()).await.unwrap();
    // Make the group first, then a crashed consumer's raw read takes the
    // poison and a good message into its pending list and never acks them.
    let c = Consumer::new("g", "alive");
    let first = q.poll(&c).await.unwrap().unwrap();
    assert!(q.ack_delivery(&first).await.unwrap());
    let poison = xadd(&redis, q.key(), "m", &[0xff, 0xff, 0xff]).await;
    q.offer("second".into()).await.unwrap();
    let _: Reply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("crashed")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(q.key())
        .arg(">")
        .query_async(&mut redis.conn())
        .await
        .unwrap();
    assert_eq!(pending(&redis, q.key(), "g").await, 2);
    q.offer("third".into()).await.unwrap();

    // After the visibility timeout the poison comes back through XCLAIM: it
    // is dead-lettered and the same poll goes on to "second" (redelivered).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = q.poll(&c).await.unwrap().expect("a good message");
    assert_eq!(d.message, "second");
    assert_eq!(d.delivery_count, 2);
    assert!(q.ack_delivery(&d).await.unwrap());
    let d = q.take(&c).await.unwrap();
    assert_eq!(d.message, "third");
    assert!(q.ack_delivery(&d).await.unwrap());

    let dlq = entries(&redis, "p:queue:jobs.dlq").await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(field(&dlq[0].1, "source_id"), Some(poison.as_bytes()));
    assert!(field(&dlq[0].1, "reason")
        .unwrap()
        .starts_with(b"undecodable: "));
    assert_eq!(pending(&redis, q.key(), "g").await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        q.poll(&c).await.unwrap().is_none(),
        "the poison never comes back"
    );
}
