//! Cache: the monolith against raw moka, the Redis cache against raw redis-rs
//! on one multiplexed connection, and the near cache against a raw `GET`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use mod_distribute::Distributed;
use mod_monolith::Monolith;
use modkit::{Backend, Cache, CachePolicy, Config, NearCachePolicy};
use redis::aio::MultiplexedConnection;

use crate::fixtures::{node_config, payload};
use crate::harness::{compare, concurrent, side, Plan, Side};
use crate::{timed_loop, BenchResult};

/// Distinct keys each comparison cycles through (all present: reads hit).
const KEYS: usize = 1024;
const C64: usize = 64;
/// The same policy on both sides: bounded, with a TTL.
const MAX_ENTRIES: u64 = 100_000;
const TTL: Duration = Duration::from_secs(300);

fn policy() -> CachePolicy {
    CachePolicy::new().max_entries(MAX_ENTRIES).ttl(TTL)
}

fn keys() -> Arc<Vec<String>> {
    Arc::new((0..KEYS).map(|i| format!("key-{i:04}")).collect())
}

/// A side calling `$op(cache, key, payload)` in a timed loop of `$batch`.
macro_rules! cache_side {
    ($cache:expr, $keys:expr, $batch:expr, |$c:ident, $k:ident, $p:ident| $op:expr) => {{
        let (cache, keys, p) = ($cache.clone(), $keys.clone(), Arc::new(payload()));
        side(move |dur| {
            let (cache, keys, p) = (cache.clone(), keys.clone(), p.clone());
            Box::pin(async move {
                let $c = &cache;
                let $p = &p;
                let mut i = 0usize;
                timed_loop!(dur, $batch, {
                    let $k = &keys[i % KEYS];
                    i += 1;
                    black_box($op);
                })
            })
        })
    }};
}

/// `cache.get.monolith`, `cache.set.monolith` vs moka `future::Cache` with the
/// same bound and TTL.
pub async fn monolith(plan: Plan) -> BenchResult {
    let mono = Monolith::new(Config::default())?;
    let cache = mono.cache::<Vec<u8>>("bench", policy())?;
    let moka: moka::future::Cache<String, Vec<u8>> = moka::future::Cache::builder()
        .max_capacity(MAX_ENTRIES)
        .time_to_live(TTL)
        .build();
    let keys = keys();
    for k in keys.iter() {
        cache.set(k, payload()).await?;
        moka.insert(k.clone(), payload()).await;
    }
    let get = cache_side!(cache, keys, 256, |c, k, _p| c.get(k).await.unwrap());
    let peer = cache_side!(moka, keys, 256, |c, k, _p| c.get(k.as_str()).await);
    compare(plan, "cache.get.monolith", "moka", get, peer).await;

    // The API takes `&str` and copies the key; moka takes it by value: a clone.
    let set = cache_side!(cache, keys, 256, |c, k, p| c
        .set(k, p.to_vec())
        .await
        .unwrap());
    let peer = cache_side!(moka, keys, 256, |c, k, p| c
        .insert(k.clone(), p.to_vec())
        .await);
    compare(plan, "cache.set.monolith", "moka", set, peer).await;
    Ok(())
}

/// A raw redis-rs side: `GET` of each of `keys` in turn (all present),
/// sequential or `workers` wide. Also the peer of `session.validate.redis.seq`.
pub fn raw_get(conn: &MultiplexedConnection, keys: Arc<Vec<String>>, workers: usize) -> Side {
    let conn = conn.clone();
    side(move |dur| {
        let (conn, keys) = (conn.clone(), keys.clone());
        Box::pin(concurrent(workers, dur, move |w, dur| {
            let (mut conn, keys) = (conn.clone(), keys.clone());
            async move {
                let mut i = w * 17;
                timed_loop!(dur, 1, {
                    let key = &keys[i % keys.len()];
                    i += 1;
                    let got: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    black_box(got.unwrap());
                })
            }
        }))
    })
}

/// A modkit side: `get` (or `set`), sequential or `workers` wide.
fn modkit_side(cache: &Arc<dyn Cache<Vec<u8>>>, workers: usize, set: bool) -> Side {
    let (cache, keys, p) = (cache.clone(), keys(), Arc::new(payload()));
    side(move |dur| {
        let (cache, keys, p) = (cache.clone(), keys.clone(), p.clone());
        Box::pin(concurrent(workers, dur, move |w, dur| {
            let (cache, keys, p) = (cache.clone(), keys.clone(), p.clone());
            async move {
                let mut i = w * 17;
                timed_loop!(dur, 1, {
                    let key = &keys[i % KEYS];
                    i += 1;
                    if set {
                        cache.set(key, p.to_vec()).await.unwrap();
                    } else {
                        black_box(cache.get(key).await.unwrap().unwrap());
                    }
                })
            }
        }))
    })
}

/// Redis comparisons. The raw side reads the very keys (and bytes) the modkit
/// cache wrote (key layout in mod-distribute's cache docs), so both move the
/// same data; for `set` it writes `SET key value PX ttl` under its own keys,
/// while modkit's `set` also indexes the key (`ZADD`, same pipeline).
pub async fn redis(plan: Plan, url: &str, prefix: &str) -> BenchResult {
    let node = Distributed::start(node_config(url, prefix, "cache", &[])).await?;
    let cache = node.cache::<Vec<u8>>("bench", policy())?;
    let writes = node.cache::<Vec<u8>>("benchset", policy())?;
    let near = node.cache::<Vec<u8>>(
        "benchnear",
        policy().near(NearCachePolicy {
            max_entries: 10_000,
            ttl: Some(Duration::from_secs(60)),
        }),
    )?;
    for k in keys().iter() {
        cache.set(k, payload()).await?;
        near.set(k, payload()).await?;
    }
    // Let the invalidations of those writes come back over pub/sub, then read
    // every key once: from here on, `near.get` hits in process.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for k in keys().iter() {
        near.get(k).await?;
    }
    let conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let base = format!("{prefix}:cache:bench:k:");
    {
        let mut c = conn.clone();
        let probe: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("{base}key-0000"))
            .query_async(&mut c)
            .await?;
        if probe.is_none() {
            return Err("cache key layout changed: the raw side would read nothing".into());
        }
    }

    let raw_keys: Arc<Vec<String>> =
        Arc::new(keys().iter().map(|k| format!("{base}{k}")).collect());
    let seq_get = modkit_side(&cache, 1, false);
    let raw_seq = raw_get(&conn, raw_keys.clone(), 1);
    compare(
        plan,
        "cache.get.redis.seq",
        "redis-rs",
        seq_get,
        raw_seq.clone(),
    )
    .await;
    let c64_get = modkit_side(&cache, C64, false);
    let raw_c64 = raw_get(&conn, raw_keys, C64);
    compare(plan, "cache.get.redis.c64", "redis-rs", c64_get, raw_c64).await;

    let c64_set = modkit_side(&writes, C64, true);
    let raw_set = {
        let keys: Arc<Vec<String>> = Arc::new(
            keys()
                .iter()
                .map(|k| format!("{prefix}:cache:rawset:k:{k}"))
                .collect(),
        );
        let (conn, p) = (conn.clone(), Arc::new(payload()));
        let ttl_ms = TTL.as_millis() as u64;
        side(move |dur| {
            let (conn, keys, p) = (conn.clone(), keys.clone(), p.clone());
            Box::pin(concurrent(C64, dur, move |w, dur| {
                let (mut conn, keys, p) = (conn.clone(), keys.clone(), p.clone());
                async move {
                    let mut i = w * 17;
                    timed_loop!(dur, 1, {
                        let key = &keys[i % KEYS];
                        i += 1;
                        let () = redis::cmd("SET")
                            .arg(key)
                            .arg(p.as_slice())
                            .arg("PX")
                            .arg(ttl_ms)
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                    })
                }
            }))
        })
    };
    compare(plan, "cache.set.redis.c64", "redis-rs", c64_set, raw_set).await;

    let near_get = modkit_side(&near, 1, false);
    compare(plan, "cache.get.near", "redis-rs", near_get, raw_seq).await;
    Ok(())
}
