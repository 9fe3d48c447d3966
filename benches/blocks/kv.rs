//! Cache and session groups of the `blocks` bench.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::Criterion;
use modkit::{Backend, CacheExt, CachePolicy, SessionConfig};
use redis::aio::MultiplexedConnection;
use tokio::runtime::Runtime;

use crate::fixtures::payload;
use crate::{BoxFut, Env};

/// A raw redis-rs `GET` of `key` (for `to_async(..).iter`).
fn raw_get(raw: &MultiplexedConnection, key: &str) -> impl Fn() -> BoxFut<Option<Vec<u8>>> {
    let (conn, key) = (raw.clone(), Arc::new(key.to_owned()));
    move || {
        let (mut conn, key) = (conn.clone(), key.clone());
        Box::pin(async move {
            let got: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&*key)
                .query_async(&mut conn)
                .await
                .unwrap();
            got
        })
    }
}

pub fn cache(c: &mut Criterion, rt: &Runtime, env: &Env) {
    let policy = CachePolicy::new()
        .max_entries(100_000)
        .ttl(Duration::from_secs(300));
    let mono = env.mono.cache::<Vec<u8>>("blocks", policy.clone()).unwrap();
    let dist = env.dist.cache::<Vec<u8>>("blocks", policy).unwrap();
    let moka: moka::future::Cache<String, Vec<u8>> = moka::future::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(Duration::from_secs(300))
        .build();
    let p = payload();
    rt.block_on(async {
        mono.set("k", p.clone()).await.unwrap();
        dist.set("k", p.clone()).await.unwrap();
        moka.insert("k".to_owned(), p.clone()).await;
    });
    let raw_key = format!("{}:cache:blocks:k:k", env.prefix);
    let get_raw = raw_get(&env.raw, &raw_key);
    let mut g = c.benchmark_group("cache/get");
    g.bench_function("monolith", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(mono.get("k").await.unwrap()) })
    });
    g.bench_function("peer:moka", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(moka.get("k").await) })
    });
    g.bench_function("redis", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(dist.get("k").await.unwrap()) })
    });
    g.bench_function("peer:redis-rs", |b| {
        b.to_async(rt).iter(|| async { black_box(get_raw().await) })
    });
    g.finish();

    let mut g = c.benchmark_group("cache/set");
    g.bench_function("monolith", |b| {
        b.to_async(rt)
            .iter(|| async { mono.set("k", p.clone()).await.unwrap() })
    });
    g.bench_function("peer:moka", |b| {
        b.to_async(rt)
            .iter(|| async { moka.insert("k".to_owned(), p.clone()).await })
    });
    g.bench_function("redis", |b| {
        b.to_async(rt)
            .iter(|| async { dist.set("k", p.clone()).await.unwrap() })
    });
    let conn = env.raw.clone();
    let set_key = format!("{}:cache:rawset:k:k", env.prefix);
    g.bench_function("peer:redis-rs", |b| {
        b.to_async(rt).iter(|| {
            let (mut conn, key, p) = (conn.clone(), set_key.clone(), p.clone());
            async move {
                let () = redis::cmd("SET")
                    .arg(&key)
                    .arg(p)
                    .arg("PX")
                    .arg(300_000)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        })
    });
    g.finish();

    // get-or-load of a present key: the hit path (the loader never runs).
    let mut g = c.benchmark_group("cache/get_or_load");
    let load = || async { Ok(payload()) };
    g.bench_function("monolith", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(mono.get_or_insert_with("k", load).await.unwrap()) })
    });
    g.bench_function("peer:moka-get_with", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(moka.get_with("k".to_owned(), async { payload() }).await) })
    });
    g.bench_function("redis", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(dist.get_or_insert_with("k", load).await.unwrap()) })
    });
    g.bench_function("peer:redis-rs-get", |b| {
        b.to_async(rt).iter(|| async { black_box(get_raw().await) })
    });
    g.finish();
}

pub fn session(c: &mut Criterion, rt: &Runtime, env: &Env) {
    let mono = env
        .mono
        .sessions::<Vec<u8>>("blocks", SessionConfig::default())
        .unwrap();
    let dist = env
        .dist
        .sessions::<Vec<u8>>("blocks", SessionConfig::default())
        .unwrap();
    let (ms, ds) = rt.block_on(async {
        (
            mono.create("ada", payload()).await.unwrap(),
            dist.create("ada", payload()).await.unwrap(),
        )
    });
    let moka: moka::future::Cache<String, modkit::Session<Vec<u8>>> =
        moka::future::Cache::builder().max_capacity(100_000).build();
    rt.block_on(moka.insert(ms.id.as_str().to_owned(), ms.clone()));
    let raw_key = format!("{}:sess:blocks:s:{}", env.prefix, ds.id.as_str());
    let get_raw = raw_get(&env.raw, &raw_key);
    let mut g = c.benchmark_group("session/validate");
    g.bench_function("monolith", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(mono.validate(&ms.id).await.unwrap()) })
    });
    g.bench_function("peer:moka-get", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(moka.get(ms.id.as_str()).await) })
    });
    g.bench_function("redis", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(dist.validate(&ds.id).await.unwrap()) })
    });
    g.bench_function("peer:redis-rs-get", |b| {
        b.to_async(rt).iter(|| async { black_box(get_raw().await) })
    });
    g.finish();

    let mut g = c.benchmark_group("session/update");
    let version = Mutex::new((ms.version, ds.version));
    g.bench_function("monolith", |b| {
        b.to_async(rt).iter(|| async {
            let v = version.lock().unwrap().0;
            let s = mono.update(&ms.id, v, payload()).await.unwrap();
            version.lock().unwrap().0 = s.version;
        })
    });
    g.bench_function("peer:moka-insert", |b| {
        b.to_async(rt)
            .iter(|| async { moka.insert(ms.id.as_str().to_owned(), ms.clone()).await })
    });
    g.bench_function("redis", |b| {
        b.to_async(rt).iter(|| async {
            let v = version.lock().unwrap().1;
            let s = dist.update(&ds.id, v, payload()).await.unwrap();
            version.lock().unwrap().1 = s.version;
        })
    });
    let record = rt.block_on(get_raw()).unwrap();
    let key = format!("{}:sess:peer:s:x", env.prefix);
    g.bench_function("peer:redis-rs-set", |b| {
        b.to_async(rt).iter(|| {
            let (mut conn, key, record) = (env.raw.clone(), key.clone(), record.clone());
            async move {
                let () = redis::cmd("SET")
                    .arg(&key)
                    .arg(record)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        })
    });
    g.finish();
}
