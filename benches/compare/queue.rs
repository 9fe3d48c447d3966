//! Queue: offer + take + ack per message. The monolith queue against a bounded
//! tokio `mpsc`; the Redis Streams queue against raw redis-rs stream commands.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_distribute::{Distributed, RedisConfig, RedisServer};
use mod_monolith::Monolith;
use modkit::{Backend, BacklogPolicy, Config, Consumer, Queue, QueueConfig, QueueExt};
use redis::aio::MultiplexedConnection;

use crate::fixtures::{node_config, payload};
use crate::harness::{compare, concurrent, side, BoxFut, Plan, Side};
use crate::{timed_loop, BenchResult};

/// The bound on both sides of `queue.monolith`.
const CAPACITY: usize = 1024;
const C64: usize = 64;

/// One producer task and one consumer task. The producer offers until the
/// slice ends, then an empty message that tells the consumer to stop; the
/// consumer counts messages until then. Same protocol on both sides.
fn pipeline<P, C>(producer: P, consumer: C) -> BoxFut<(u64, Duration)>
where
    P: std::future::Future<Output = ()> + Send + 'static,
    C: std::future::Future<Output = u64> + Send + 'static,
{
    Box::pin(async move {
        let start = Instant::now();
        let producer = tokio::spawn(producer);
        let consumed = tokio::spawn(consumer).await.expect("consumer panicked");
        producer.await.expect("producer panicked");
        (consumed, start.elapsed())
    })
}

/// `queue.monolith` vs `tokio::sync::mpsc::channel(1024)`: the modkit queue
/// has the same bound and blocks the producer when full, like `send`.
pub async fn monolith(plan: Plan) -> BenchResult {
    let mono = Monolith::new(Config::default())?;
    let config = QueueConfig {
        capacity: CAPACITY,
        backlog: BacklogPolicy::Block {
            timeout: Duration::from_secs(60),
        },
        ..QueueConfig::default()
    };
    let queue = mono.queue::<Vec<u8>>("bench", config)?;
    let p = Arc::new(payload());

    let modkit = {
        let (queue, p) = (queue.clone(), p.clone());
        side(move |dur| {
            let (q, p) = (queue.clone(), p.clone());
            let producer = async move {
                timed_loop!(dur, 64, {
                    q.offer(p.to_vec()).await.unwrap();
                });
                q.offer(Vec::new()).await.unwrap();
            };
            let q = queue.clone();
            let consumer = async move {
                let me = Consumer::new("bench", "consumer");
                let mut n = 0;
                loop {
                    let d = q.take(&me).await.unwrap();
                    q.ack_delivery(&d).await.unwrap();
                    if d.message.is_empty() {
                        break n;
                    }
                    black_box(&d.message);
                    n += 1;
                }
            };
            pipeline(producer, consumer)
        })
    };
    let peer = side(move |dur| {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CAPACITY);
        let p = p.clone();
        let producer = async move {
            timed_loop!(dur, 64, {
                tx.send(p.to_vec()).await.unwrap();
            });
            tx.send(Vec::new()).await.unwrap();
        };
        let consumer = async move {
            let mut n = 0;
            while let Some(m) = rx.recv().await {
                if m.is_empty() {
                    break;
                }
                black_box(&m);
                n += 1;
            }
            n
        };
        pipeline(producer, consumer)
    });
    compare(plan, "queue.monolith", "mpsc", modkit, peer).await;
    Ok(())
}

/// An `XREADGROUP` reply: `[[stream, [[id, [field, value, …]], …]], …]`, or nil.
type ReadReply = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;

/// `queue.redis.c64`: 64 loops of (offer, take, ack) on one queue handle vs 64
/// loops of raw stream commands with the connection shape modkit uses: the
/// shared multiplexed connection for `XADD`, a non-blocking
/// `XREADGROUP COUNT 1` and `XACK`, and, only when that read finds nothing,
/// `XREADGROUP COUNT 1 BLOCK` on a dedicated connection of the loop's own
/// (modkit pools up to 64 such connections per queue). The raw side does not
/// check capacity, count deliveries, redeliver or delete acknowledged entries,
/// which modkit's scripts do; it trims its stream before each round (untimed).
///
/// `queue.redis.c64.wait1`: the same modkit loop with `[redis] wait_replicas
/// = 1` (a replica of the bench's Redis started for it, on loopback), against
/// the same raw peer: the line is the cost of confirmed offers and acks.
pub async fn redis(plan: Plan, url: &str, prefix: &str) -> BenchResult {
    let node = Distributed::start(node_config(url, prefix, "queue", &[])).await?;
    let queue: Arc<dyn Queue<Vec<u8>>> = node.queue("benchq", QueueConfig::default())?;
    let p = Arc::new(payload());
    let modkit = offer_take_ack(queue, p.clone());

    let client = redis::Client::open(url)?;
    let shared = client.get_multiplexed_async_connection().await?;
    let mut dedicated = Vec::with_capacity(C64);
    for _ in 0..C64 {
        dedicated.push(client.get_multiplexed_async_connection().await?);
    }
    let dedicated = Arc::new(dedicated);
    let key = Arc::new(format!("{prefix}:rawq"));
    let _: redis::Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&*key)
        .arg("bench")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut shared.clone())
        .await?;
    let peer = side(move |dur| {
        let (shared, dedicated, key, p) =
            (shared.clone(), dedicated.clone(), key.clone(), p.clone());
        Box::pin(async move {
            let _: redis::Value = redis::cmd("XTRIM")
                .arg(&*key)
                .arg("MAXLEN")
                .arg(0)
                .query_async(&mut shared.clone())
                .await
                .unwrap();
            concurrent(C64, dur, move |w, dur| {
                let (shared, blocking) = (shared.clone(), dedicated[w].clone());
                let (key, p) = (key.clone(), p.clone());
                async move { raw_loop(dur, w, shared, blocking, &key, &p).await }
            })
            .await
        })
    });
    compare(plan, "queue.redis.c64", "redis-rs", modkit, peer.clone()).await;

    let port = url
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let replica = RedisServer::start_replica_of(port.parse()?)?;
    let mut config = node_config(url, prefix, "queue-wait", &[]);
    config.edit_section(|r: &mut RedisConfig| r.wait_replicas = 1)?;
    let node = Distributed::start(config).await?;
    let queue: Arc<dyn Queue<Vec<u8>>> = node.queue("benchq-wait", QueueConfig::default())?;
    let waiting = offer_take_ack(queue, Arc::new(payload()));
    compare(plan, "queue.redis.c64.wait1", "redis-rs", waiting, peer).await;
    drop(replica);
    Ok(())
}

/// 64 loops of (offer, take, ack) on `queue`.
fn offer_take_ack(queue: Arc<dyn Queue<Vec<u8>>>, p: Arc<Vec<u8>>) -> Side {
    side(move |dur| {
        let (queue, p) = (queue.clone(), p.clone());
        Box::pin(concurrent(C64, dur, move |w, dur| {
            let (q, p) = (queue.clone(), p.clone());
            async move {
                let me = Consumer::new("bench", format!("w{w}"));
                timed_loop!(dur, 1, {
                    q.offer(p.to_vec()).await.unwrap();
                    let d = q.take(&me).await.unwrap();
                    black_box(q.ack_delivery(&d).await.unwrap());
                })
            }
        }))
    })
}

async fn raw_loop(
    dur: Duration,
    w: usize,
    mut shared: MultiplexedConnection,
    mut blocking: MultiplexedConnection,
    key: &str,
    p: &[u8],
) -> (u64, Duration) {
    let name = format!("w{w}");
    timed_loop!(dur, 1, {
        let _: String = redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("m")
            .arg(p)
            .query_async(&mut shared)
            .await
            .unwrap();
        let mut got: ReadReply = read_cmd(&name, None, key)
            .query_async(&mut shared)
            .await
            .unwrap();
        while got.is_none() {
            got = read_cmd(&name, Some(1000), key)
                .query_async(&mut blocking)
                .await
                .unwrap();
        }
        let streams = got.unwrap();
        let (id, fields) = &streams[0].1[0];
        black_box(fields);
        let acked: i64 = redis::cmd("XACK")
            .arg(key)
            .arg("bench")
            .arg(id)
            .query_async(&mut shared)
            .await
            .unwrap();
        black_box(acked);
    })
}

/// `XREADGROUP GROUP bench <name> COUNT 1 [BLOCK <ms>] STREAMS <key> >`.
fn read_cmd(name: &str, block_ms: Option<u64>, key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg("bench").arg(name).arg("COUNT").arg(1);
    if let Some(ms) = block_ms {
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.arg("STREAMS").arg(key).arg(">");
    cmd
}
