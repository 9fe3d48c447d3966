//! The building blocks across a failover: three real `redis-server`s (one
//! primary, two replicas), one controller (`Solo`, `wait_replicas = 1`), and
//! two distributed nodes following it with `[redis] wait_replicas = 1`.
//! While a producer and a consumer, sessions, a cache, a registry lease and
//! watch, and RPC calls run, the primary is killed (`kill -9`). Checked on the
//! recorded history: no acknowledged message, session or update lost, only
//! retryable errors during the switch, and every block working after it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mod_api::config::{InvokeConfig, RegistryConfig};
use mod_api::{async_trait, service, Backend, CachePolicy, Config, Consumer, Error, Instance};
use mod_api::{QueueConfig, RegistryExt, SessionId};
use mod_distribute::{Distributed, RedisConfig};
use mod_resilience::HaConfig;

mod common;

#[service(crate = mod_api, name = "blocks.Echo")]
pub trait Echo {
    #[idempotent]
    async fn echo(&self, n: u64) -> Result<u64, Error>;
}

struct Echoer;

#[async_trait]
impl Echo for Echoer {
    async fn echo(&self, n: u64) -> Result<u64, Error> {
        Ok(n)
    }
}

/// The outcomes of one kind of call: when each succeeded, the retryable
/// errors by kind, and every other error (which the test refuses).
#[derive(Default)]
struct Tally {
    ok_at: Vec<Instant>,
    retryable: BTreeMap<&'static str, u64>,
    fatal: Vec<String>,
}

impl Tally {
    fn record<T>(&mut self, result: &Result<T, Error>) {
        match result {
            Ok(_) => self.ok_at.push(Instant::now()),
            Err(e) if e.is_retryable() => {
                *self.retryable.entry(e.kind().as_str()).or_default() += 1
            }
            Err(e) => self.fatal.push(format!("{e:?}")),
        }
    }

    fn ok_after(&self, t: Instant) -> Option<Duration> {
        self.ok_at.iter().find(|at| **at > t).map(|at| *at - t)
    }

    /// `ok N (before the kill/until the commit/after it), retryable {kind: n}, …`.
    fn show(&self, killed: Instant, committed: Instant) -> String {
        let before = self.ok_at.iter().filter(|t| **t < killed).count();
        let after = self.ok_at.iter().filter(|t| **t > committed).count();
        let (all, retryable) = (self.ok_at.len(), &self.retryable);
        let first = self.ok_after(committed);
        let during = all - before - after;
        let oks = format!("ok {all} ({before}/{during}/{after})");
        format!("{oks}, retryable {retryable:?}, first ok after the commit {first:?}")
    }

    /// Only retryable errors, a success before the kill, one within 5 s of the commit.
    fn check(&self, what: &str, killed: Instant, committed: Instant) {
        let fatal = &self.fatal;
        assert!(fatal.is_empty(), "{what}: non-retryable errors {fatal:?}");
        let early = self.ok_at.iter().any(|t| *t < killed);
        assert!(early, "{what}: no success before the kill");
        let first = self.ok_after(committed);
        let soon = first.is_some_and(|d| d < ms(5000));
        assert!(soon, "{what}: first success after the commit: {first:?}");
    }
}

/// Everything the traffic tasks record.
#[derive(Default)]
struct History {
    offer: Tally,
    consume: Tally,
    session: Tally,
    cache: Tally,
    rpc: Tally,
    offered_ok: BTreeSet<u64>,
    delivered: BTreeSet<u64>,
    /// Sessions created Ok: id, number, whether the update was acknowledged, when.
    created: Vec<(SessionId, u64, bool, Instant)>,
    /// When a value set in the cache was read back.
    readback: Vec<Instant>,
    /// What the registry watch saw: when, which instance ids.
    watched: Vec<(Instant, Vec<String>)>,
}

type Shared = Arc<Mutex<History>>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls `check` every 20 ms until it holds (true) or `limit` passes (false).
async fn within<F: Future<Output = bool>>(limit: Duration, mut check: impl FnMut() -> F) -> bool {
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(ms(20)).await;
    }
    true
}

/// Runs `step(0)`, `step(1)`, … `pause` apart until `running` is cleared.
fn traffic<F, Fut>(
    running: &Arc<AtomicBool>,
    pause: u64,
    mut step: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let running = running.clone();
    tokio::spawn(async move {
        for i in 0.. {
            if !running.load(Ordering::SeqCst) {
                break;
            }
            step(i).await;
            tokio::time::sleep(ms(pause)).await;
        }
    })
}

async fn node(id: &str, controller: &str, host: &[&str]) -> Distributed {
    let (ttl, sweep) = (ms(2000), ms(100));
    let registry = RegistryConfig { ttl, sweep };
    let host = Some(host.iter().map(|s| s.to_string()).collect());
    let config = Config {
        node_id: Some(id.into()),
        registry,
        invoke: InvokeConfig {
            host,
            ..InvokeConfig::default()
        },
        ..Config::default()
    };
    Distributed::start(config.with_section(&RedisConfig {
        prefix: "blocks".into(),
        controllers: vec![controller.into()],
        wait_replicas: 1,
        wait_timeout: ms(500),
        ..RedisConfig::default()
    }))
    .await
    .expect("distributed node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_building_blocks_survive_a_failover() {
    let started = Instant::now();
    let mut nodes = common::group(2);
    let controller = common::solo(HaConfig {
        wait_replicas: 1,
        ..common::ha_over(&nodes)
    })
    .await;
    let at = controller.local_addr().to_string();
    let server = node("server", &at, &["blocks.Echo"]).await;
    // Its registration is a write confirmed by WAIT 1 within 500 ms; on a
    // loaded machine the first confirmation can miss that (a retryable
    // Timeout, the write on the primary, the provide rolled back): again.
    for attempt in 1.. {
        let provided = server.container().provide::<dyn Echo>(Arc::new(Echoer));
        match provided.await {
            Ok(()) => break,
            Err(e) if e.is_retryable() && attempt < 5 => eprintln!("provide: {e}; again"),
            Err(e) => panic!("provide: {e}"),
        }
    }
    let app = node("app", &at, &[]).await;
    let echo = app.container().get::<dyn Echo>().unwrap();
    let e = echo.clone();
    let reachable = within(ms(10_000), || {
        let e = e.clone();
        async move { e.echo(0).await.is_ok() }
    });
    assert!(reachable.await, "the echo service never answered");

    let h: Shared = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    // Registry: a leased instance (TTL 2 s, renewed every 2/3 s) and a watch.
    let registry = app.registry();
    let before = Instance::new("blocks.Reg", "before", "127.0.0.1:1");
    let _lease = registry.register_leased(before, ms(2000)).await.unwrap();
    let mut watch = registry.watch("blocks.Reg").await.unwrap();
    let hw = h.clone();
    let watcher = tokio::spawn(async move {
        while let Some(snap) = watch.next().await {
            let ids = snap.instances.into_iter().map(|i| i.id).collect();
            hw.lock().unwrap().watched.push((Instant::now(), ids));
        }
    });
    // Queue: numbered offers; a consumer that acks; redelivery after 1 s.
    let visibility_timeout = ms(1000);
    let config = QueueConfig {
        visibility_timeout,
        ..QueueConfig::default()
    };
    let queue = app.queue::<u64>("jobs", config).unwrap();
    let (q, hq) = (queue.clone(), h.clone());
    let producer = traffic(&running, 5, move |n| {
        let (q, h) = (q.clone(), hq.clone());
        async move {
            let r = q.offer(n).await;
            let mut h = h.lock().unwrap();
            if r.is_ok() {
                h.offered_ok.insert(n);
            }
            h.offer.record(&r);
        }
    });
    let consuming = Arc::new(AtomicBool::new(true));
    let (q, hc, me) = (queue.clone(), h.clone(), Consumer::new("workers", "w1"));
    let consumer = traffic(&consuming, 0, move |_| {
        let (q, h, me) = (q.clone(), hc.clone(), me.clone());
        async move {
            let r = q.poll_timeout(&me, ms(100)).await;
            h.lock().unwrap().consume.record(&r);
            match r {
                Ok(Some(d)) => {
                    h.lock().unwrap().delivered.insert(d.message);
                    let acked = q.ack(&d.group, &d.id).await;
                    h.lock().unwrap().consume.record(&acked);
                }
                Ok(None) => {}
                Err(_) => tokio::time::sleep(ms(20)).await,
            }
        }
    });
    // Sessions: each created with `<i>-0`, then updated to `<i>-1`.
    let sessions = app.sessions::<String>("web", Default::default()).unwrap();
    let (s, hs) = (sessions.clone(), h.clone());
    let session_task = traffic(&running, 10, move |i| {
        let (s, h) = (s.clone(), hs.clone());
        async move {
            let r = s.create(&format!("user{i}"), format!("{i}-0")).await;
            h.lock().unwrap().session.record(&r);
            if let Ok(created) = r {
                let u = s.update(&created.id, created.version, format!("{i}-1"));
                let u = u.await;
                let mut h = h.lock().unwrap();
                h.session.record(&u);
                h.created.push((created.id, i, u.is_ok(), Instant::now()));
            }
        }
    });
    let cache = app.cache::<u64>("kv", CachePolicy::default()).unwrap();
    let hk = h.clone();
    let cache_task = traffic(&running, 5, move |i| {
        let (c, h) = (cache.clone(), hk.clone());
        async move {
            let key = format!("k{}", i % 50);
            let set = c.set(&key, i).await;
            let got = c.get(&key).await;
            let mut h = h.lock().unwrap();
            if set.is_ok() && matches!(got, Ok(Some(v)) if v == i) {
                h.readback.push(Instant::now());
            }
            h.cache.record(&set);
            h.cache.record(&got);
        }
    });
    let hr = h.clone();
    let rpc_task = traffic(&running, 10, move |n| {
        let (e, h) = (echo.clone(), hr.clone());
        async move {
            let r = e.echo(n).await;
            assert!(!matches!(r, Ok(m) if m != n), "echo answered another call");
            h.lock().unwrap().rpc.record(&r);
        }
    });

    // Traffic on the first primary, then kill -9 of it.
    tokio::time::sleep(ms(1500)).await;
    let killed = Instant::now();
    nodes[0].kill();
    let after = common::wait_state(&controller, "the failover", |s| s.topology.epoch >= 2)
        .await
        .topology;
    let committed = Instant::now();
    let primary = after.primary.clone().unwrap_or_default();
    assert!(
        primary == nodes[1].addr() || primary == nodes[2].addr(),
        "{primary}"
    );

    // Registry: two lease TTLs after the commit the leased instance is still
    // listed, and one registered now reaches the watch opened before it.
    tokio::time::sleep(ms(4500)).await;
    let listed = registry.lookup("blocks.Reg").await.unwrap();
    let kept = listed.iter().any(|i| i.id == "before");
    assert!(kept, "leased instance gone: {listed:?}");
    let registered = Instant::now();
    let late = Instance::new("blocks.Reg", "after", "127.0.0.1:2");
    registry.register(late, ms(30_000)).await.unwrap();
    let seen_after = |h: &History| {
        let mut hits = h
            .watched
            .iter()
            .filter(|(at, ids)| *at > registered && ids.iter().any(|i| i == "after"));
        hits.next().map(|(at, _)| *at - registered)
    };
    let resumed = within(ms(5000), || {
        let seen = seen_after(&h.lock().unwrap()).is_some();
        async move { seen }
    });
    assert!(
        resumed.await,
        "the watch opened before the failover never saw 'after'"
    );

    running.store(false, Ordering::SeqCst);
    for task in [producer, session_task, cache_task, rpc_task] {
        task.await.expect("traffic task");
    }
    // The consumer drains: deliveries the old primary handed out but whose
    // reply was lost come back after the visibility timeout.
    let drained = within(ms(8000), || {
        let h = h.lock().unwrap();
        let done = h.offered_ok.is_subset(&h.delivered);
        async move { done }
    })
    .await;
    consuming.store(false, Ordering::SeqCst);
    consumer.await.expect("consumer");
    watcher.abort();

    // Sessions: every acknowledged create (and update) readable now.
    let created = h.lock().unwrap().created.clone();
    let mut stale = Vec::new();
    for (id, i, updated, _) in &created {
        let got = sessions.get(id).await.expect("session get");
        let data = got.map(|s| s.data);
        let (v0, v1) = (format!("{i}-0"), format!("{i}-1"));
        if !matches!(&data, Some(d) if *d == v1 || (!updated && *d == v0)) {
            stale.push((*i, data));
        }
    }
    let h = h.lock().unwrap();
    let lost: Vec<u64> = h.offered_ok.difference(&h.delivered).copied().collect();
    let mut by_phase = [0; 3];
    for (.., t) in &created {
        by_phase[(*t > killed) as usize + (*t > committed) as usize] += 1;
    }
    let gaps = h
        .watched
        .iter()
        .filter(|(_, i)| !i.contains(&"before".into()));
    let (gaps, lag) = (gaps.count(), seen_after(&h));
    let readback = h.readback.iter().find(|t| **t > committed);
    let readback = readback.map(|t| *t - committed);
    let (took, ran) = (committed - killed, started.elapsed());
    eprintln!("failover: {took:?} from kill -9 to the commit, new primary {primary}; ran {ran:?}");
    eprintln!("(ok counts: all (before the kill/until the commit/after the commit))");
    let tallies = [
        ("queue offer", &h.offer),
        ("queue poll/ack", &h.consume),
        ("session create/update", &h.session),
        ("cache set/get", &h.cache),
        ("rpc", &h.rpc),
    ];
    for (what, tally) in tallies {
        eprintln!("{what}: {}", tally.show(killed, committed));
    }
    let (ok, delivered) = (h.offered_ok.len(), h.delivered.len());
    let (lost_n, stale_n) = (lost.len(), stale.len());
    eprintln!("queue: offered ok {ok}, delivered {delivered}, lost {lost_n}");
    eprintln!("sessions created ok by phase {by_phase:?}, missing or stale {stale_n}");
    eprintln!("cache: first value read back {readback:?} after the commit");
    eprintln!("registry: 'after' watched {lag:?} after its register; gaps of 'before' {gaps}");
    for (what, tally) in tallies {
        tally.check(what, killed, committed);
    }
    assert!(ok > 100, "too few acknowledged offers: {ok}");
    assert_eq!(lost, Vec::<u64>::new(), "acknowledged, never delivered");
    assert!(drained, "the drain timed out");
    assert!(by_phase[0] > 20 && by_phase[2] > 0, "{by_phase:?}");
    // (i, data found) of sessions whose acknowledged create or update is lost.
    assert_eq!(stale, Vec::new(), "sessions lost or stale");
    assert!(readback.is_some(), "no cache read-back after the commit");
}
