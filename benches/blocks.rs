//! Criterion benches of every building block on both backends, each group with
//! the peer the block replaces: `cargo bench -p modkit-benches --bench blocks [-- --quick] [FILTER]`.
//!
//! Starts a private `redis-server` (killed at exit) unless `MODKIT_REDIS_URL`
//! is set. `cargo bench -p modkit-benches --bench compare` is the interleaved, one-line-per-pair
//! comparison; these are the per-operation latencies with criterion's statistics.

#[path = "compare/fixtures.rs"]
mod fixtures;
#[path = "blocks/kv.rs"]
mod kv;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::Criterion;
use fixtures::{node_config, payload, tarpc_echo, Echo, EchoImpl, EchoPair};
use futures_util::StreamExt;
use mod_distribute::{Distributed, RedisServer};
use mod_monolith::Monolith;
use modkit::{Backend, Config, Consumer, Instance, QueueConfig, QueueExt, Registry};
use redis::aio::MultiplexedConnection;
use tokio::runtime::Runtime;

/// A boxed future.
pub type BoxFut<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

const SERVICE: &str = "bench.Looked";

/// The two backends, a raw redis-rs connection, and the run's key prefix.
pub struct Env {
    mono: Monolith,
    dist: Distributed,
    raw: MultiplexedConnection,
    prefix: String,
}

fn registry(c: &mut Criterion, rt: &Runtime, env: &Env) {
    let mut g = c.benchmark_group("registry/lookup");
    let instances: Vec<Instance> = (0..3)
        .map(|i| Instance::new(SERVICE, format!("i{i}"), "127.0.0.1:1"))
        .collect();
    let (m, d) = (env.mono.registry(), env.dist.registry());
    rt.block_on(async {
        for i in &instances {
            m.register(i.clone(), Duration::from_secs(600))
                .await
                .unwrap();
            d.register(i.clone(), Duration::from_secs(600))
                .await
                .unwrap();
        }
    });
    g.bench_function("monolith", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(m.lookup(SERVICE).await.unwrap()) })
    });
    let map = Mutex::new(HashMap::from([(SERVICE.to_owned(), instances.clone())]));
    g.bench_function("peer:mutex-hashmap", |b| {
        b.iter(|| black_box(map.lock().unwrap().get(SERVICE).cloned()))
    });
    g.bench_function("redis", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(d.lookup(SERVICE).await.unwrap()) })
    });
    let key = format!("{}:reg:inst:{SERVICE}", env.prefix);
    g.bench_function("peer:redis-rs-hgetall", |b| {
        b.to_async(rt).iter(|| {
            let (mut conn, key) = (env.raw.clone(), key.clone());
            async move {
                let all: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                black_box(all)
            }
        })
    });
    g.finish();

    // Watch: register → the watcher's snapshot, on one node / across two nodes.
    let mut g = c.benchmark_group("registry/watch");
    g.bench_function("monolith", |b| {
        b.iter_custom(|n| rt.block_on(watch_rounds(&m, &m, n)))
    });
    let other = rt
        .block_on(Distributed::start(node_config(
            &env.dist.redis_config().url,
            &env.prefix,
            "watcher",
            &[],
        )))
        .unwrap();
    let o = other.registry();
    g.bench_function("redis", |b| {
        b.iter_custom(|n| rt.block_on(watch_rounds(&d, &o, n)))
    });
    g.bench_function("peer:tokio-watch", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let (tx, mut rx) = tokio::sync::watch::channel(0u64);
                let start = Instant::now();
                for i in 0..n {
                    tx.send(i).unwrap();
                    rx.changed().await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    let url = env.dist.redis_config().url.clone();
    let mut conn = env.raw.clone();
    g.bench_function("peer:redis-pubsub", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let mut sub = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_async_pubsub()
                    .await
                    .unwrap();
                sub.subscribe("blocks-watch").await.unwrap();
                let mut msgs = sub.on_message();
                let start = Instant::now();
                for i in 0..n {
                    let _: i64 = redis::cmd("PUBLISH")
                        .arg("blocks-watch")
                        .arg(i)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    msgs.next().await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

/// `n` times: register on `a` until `watcher`'s watch shows it (timed), then deregister (untimed).
async fn watch_rounds(a: &Arc<dyn Registry>, watcher: &Arc<dyn Registry>, n: u64) -> Duration {
    let mut watch = watcher.watch("bench.W").await.unwrap();
    watch.next().await.unwrap();
    let mut total = Duration::ZERO;
    for i in 0..n {
        let id = format!("w{i}");
        let start = Instant::now();
        a.register(
            Instance::new("bench.W", id.clone(), "x:1"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        while !watch
            .next()
            .await
            .unwrap()
            .instances
            .iter()
            .any(|x| x.id == id)
        {}
        total += start.elapsed();
        a.deregister("bench.W", &id).await.unwrap();
        while !watch.next().await.unwrap().instances.is_empty() {}
    }
    total
}

fn invoke(c: &mut Criterion, rt: &Runtime, env: &Env) {
    let mut g = c.benchmark_group("invoke");
    let p = payload();
    rt.block_on(env.mono.container().provide::<dyn Echo>(Arc::new(EchoImpl)))
        .unwrap();
    let local = env.mono.container().get::<dyn Echo>().unwrap();
    let direct: Arc<dyn Echo> = Arc::new(EchoImpl);
    g.bench_function("monolith", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(local.echo(p.clone()).await.unwrap()) })
    });
    g.bench_function("peer:direct-dyn-call", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(direct.echo(p.clone()).await.unwrap()) })
    });
    let pair = rt
        .block_on(EchoPair::start(
            &env.dist.redis_config().url,
            &format!("{}-echo", env.prefix),
        ))
        .unwrap();
    let tarpc = rt.block_on(tarpc_echo()).unwrap();
    g.bench_function("remote", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(pair.echo.echo(p.clone()).await.unwrap()) })
    });
    g.bench_function("peer:tarpc", |b| {
        b.to_async(rt).iter(|| async {
            black_box(
                tarpc
                    .echo(tarpc::context::current(), p.clone())
                    .await
                    .unwrap(),
            )
        })
    });
    g.finish();
    rt.block_on(pair.shutdown());
}

fn queue(c: &mut Criterion, rt: &Runtime, env: &Env) {
    let mut g = c.benchmark_group("queue/offer_take_ack");
    let mono = env
        .mono
        .queue::<Vec<u8>>("blocks", QueueConfig::default())
        .unwrap();
    let dist = env
        .dist
        .queue::<Vec<u8>>("blocks", QueueConfig::default())
        .unwrap();
    let me = Consumer::new("g", "c");
    let p = payload();
    for (name, q) in [("monolith", &mono), ("redis", &dist)] {
        g.bench_function(name, |b| {
            b.to_async(rt).iter(|| async {
                q.offer(p.clone()).await.unwrap();
                let d = q.take(&me).await.unwrap();
                q.ack_delivery(&d).await.unwrap()
            })
        });
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    let rx = tokio::sync::Mutex::new(rx);
    g.bench_function("peer:mpsc", |b| {
        b.to_async(rt).iter(|| async {
            tx.send(p.clone()).await.unwrap();
            black_box(rx.lock().await.recv().await.unwrap())
        })
    });
    let key = format!("{}:rawq", env.prefix);
    let mut conn = env.raw.clone();
    rt.block_on(
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&key)
            .arg("g")
            .arg("$")
            .arg("MKSTREAM")
            .query_async::<()>(&mut conn),
    )
    .unwrap();
    g.bench_function("peer:redis-rs-streams", |b| {
        b.to_async(rt).iter(|| {
            let (mut conn, key, p) = (env.raw.clone(), key.clone(), p.clone());
            async move {
                let _: String = redis::cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("m")
                    .arg(p)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                type Reply = Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>;
                let got: Reply = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg("c")
                    .arg("COUNT")
                    .arg(1)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(">")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let _: i64 = redis::cmd("XACK")
                    .arg(&key)
                    .arg("g")
                    .arg(&got[0].1[0].0)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        })
    });
    g.finish();
}

fn main() {
    let server = match std::env::var("MODKIT_REDIS_URL") {
        Ok(_) => None,
        Err(_) => Some(RedisServer::start().expect("redis-server (apt-get install redis-server)")),
    };
    let url = std::env::var("MODKIT_REDIS_URL")
        .unwrap_or_else(|_| server.as_ref().map(|s| s.url()).unwrap_or_default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = format!("modkit-blocks-{}", std::process::id());
    let env = rt.block_on(async {
        Env {
            mono: Monolith::new(Config::default()).unwrap(),
            dist: Distributed::start(node_config(&url, &prefix, "blocks", &[]))
                .await
                .unwrap(),
            raw: redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
            prefix: prefix.clone(),
        }
    });
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    let all: [fn(&mut Criterion, &Runtime, &Env); 5] =
        [registry, invoke, kv::cache, kv::session, queue];
    for bench in all {
        bench(&mut c, &rt, &env);
    }
    c.final_summary();
    drop(env);
    drop(rt);
    drop(server);
}
