//! Unit tests on real `redis-server` processes: two registries on one server
//! stand for two nodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_api::registry::{ConsumerInfo, Instance, Registry, Snapshot, Status, Watch};
use mod_api::ErrorKind;

use super::RedisRegistry;
use crate::{Redis, RedisServer};

const SWEEP: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(60);

async fn node(server: &RedisServer) -> Arc<RedisRegistry> {
    let redis = Redis::connect(&server.url(), "t").await.expect("connect");
    RedisRegistry::start(redis, SWEEP).await.expect("start")
}

/// The next snapshot within `within`, if any.
async fn next(watch: &mut Watch, within: Duration) -> Option<Snapshot> {
    tokio::time::timeout(within, watch.next())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread")]
async fn register_on_a_is_visible_on_b() {
    let server = RedisServer::start().expect("server");
    let (a, b) = (node(&server).await, node(&server).await);
    let mut inst = Instance::new("svc", "i2", "10.0.0.1:1");
    inst.metadata.insert("zone".into(), "z".into());
    a.register(inst.clone(), LONG).await.expect("register");
    a.register(Instance::new("svc", "i1", "10.0.0.1:2"), LONG)
        .await
        .expect("register");
    let found = b.lookup("svc").await.expect("lookup");
    assert_eq!(
        found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["i1", "i2"]
    );
    assert_eq!(found[1], inst);
    assert_eq!(b.services().await.expect("services"), ["svc"]);

    b.set_status("svc", "i2", Status::Draining)
        .await
        .expect("status");
    assert_eq!(
        a.lookup("svc").await.expect("lookup")[1].status,
        Status::Draining
    );
    b.heartbeat("svc", "i2").await.expect("heartbeat");
    assert!(b.deregister("svc", "i2").await.expect("deregister"));
    assert!(!a.deregister("svc", "i2").await.expect("deregister again"));
    let err = a.heartbeat("svc", "i2").await.expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let c = ConsumerInfo {
        service: "svc".into(),
        consumer: "web".into(),
    };
    a.register_consumer(c.clone()).await.expect("consumer");
    assert_eq!(b.consumers("svc").await.expect("consumers"), vec![c]);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_on_b_sees_register_on_a_quickly() {
    let server = RedisServer::start().expect("server");
    let (a, b) = (node(&server).await, node(&server).await);
    let mut watch = b.watch("fast").await.expect("watch");
    let first = next(&mut watch, Duration::from_secs(1))
        .await
        .expect("first");
    assert!(first.instances.is_empty());
    let mut last = first.version;
    let mut latencies = Vec::new();
    for n in 0..50 {
        let id = format!("i{n:02}");
        let start = Instant::now();
        a.register(Instance::new("fast", &id, "addr"), LONG)
            .await
            .expect("register");
        loop {
            let snap = next(&mut watch, Duration::from_secs(2))
                .await
                .expect("event");
            assert!(snap.version > last, "versions strictly increase");
            last = snap.version;
            if snap.instances.iter().any(|i| i.id == id) {
                break;
            }
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "register on A → event on B: p50 {:?}, p99 {p99:?}",
        latencies[25]
    );
    // Generous for a loaded CI box; the benchmark holds the 5 ms target.
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lapsed_lease_expires_within_ttl_plus_sweep() {
    let server = RedisServer::start().expect("server");
    let (a, b) = (node(&server).await, node(&server).await);
    let ttl = Duration::from_millis(300);
    a.register(Instance::new("exp", "keep", "addr"), LONG)
        .await
        .expect("register");
    let start = Instant::now();
    a.register(Instance::new("exp", "dies", "addr"), ttl)
        .await
        .expect("register");
    let mut watch = b.watch("exp").await.expect("watch");
    let first = next(&mut watch, Duration::from_secs(1))
        .await
        .expect("first");
    assert_eq!(first.instances.len(), 2);
    // Nobody reads or renews: the sweepers must notice.
    let snap = next(&mut watch, Duration::from_secs(3))
        .await
        .expect("expiry event");
    let took = start.elapsed();
    assert_eq!(snap.instances.len(), 1);
    assert_eq!(snap.instances[0].id, "keep");
    assert!(snap.version > first.version);
    assert!(took >= ttl, "removed before its ttl: {took:?}");
    // TTL + one sweep, plus generous slack for a loaded 2-core machine.
    assert!(
        took < ttl + SWEEP + Duration::from_millis(1200),
        "took {took:?}"
    );
    let err = a.heartbeat("exp", "dies").await.expect_err("expired");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    a.heartbeat("exp", "keep").await.expect("live one renews");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_server_never_yields_an_empty_snapshot() {
    // Durable server, so a restart on the same port keeps the data.
    let args = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut server = RedisServer::start_with_args(&args).expect("server");
    let (a, b) = (node(&server).await, node(&server).await);
    a.register(Instance::new("kill", "i1", "addr"), LONG)
        .await
        .expect("register");
    let mut watch = b.watch("kill").await.expect("watch");
    let first = next(&mut watch, Duration::from_secs(1))
        .await
        .expect("first");
    assert_eq!(first.instances.len(), 1);
    let mut last = first.version;

    server.kill();
    // Several sweeps and resyncs fail meanwhile; force refreshes to fail too
    // (as a notification or resync would start them).
    for _ in 0..5 {
        b.request_refresh("kill", None);
        tokio::time::sleep(SWEEP * 2).await;
    }
    while let Some(snap) = watch.try_next() {
        assert!(
            !snap.instances.is_empty(),
            "empty snapshot while redis is down: {snap:?}"
        );
    }
    assert!(b.lookup("kill").await.is_err(), "redis is down");

    let _restarted = RedisServer::start_on_port(server.port(), &args).expect("restart");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match a.register(Instance::new("kill", "i2", "addr"), LONG).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "waiting for redis");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("redis did not come back: {e}"),
        }
    }
    loop {
        // Generous: on a loaded 2-core CI machine the reconnect backoffs and
        // the restarted server's start-up add up (one 10 s timeout was seen to run out).
        let snap = next(&mut watch, Duration::from_secs(30))
            .await
            .expect("watch recovers");
        assert!(!snap.instances.is_empty(), "empty snapshot: {snap:?}");
        assert!(snap.version > last);
        last = snap.version;
        if snap.instances.len() == 2 {
            break;
        }
    }
    // Both nodes' listeners re-subscribed (not just resynced by the sweeper).
    let redis = Redis::connect(&server.url(), "t").await.expect("connect");
    let channel = redis.key(&["reg", "events"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut redis.conn())
            .await
            .map(|mut v: Vec<(String, u64)>| v.remove(0))
            .expect("numsub");
        if subscribers == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{subscribers} subscribers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_redis_data_never_makes_versions_go_back() {
    let mut server = RedisServer::start().expect("server");
    let (a, b) = (node(&server).await, node(&server).await);
    let mut watch = b.watch("lost").await.expect("watch");
    let mut last = next(&mut watch, Duration::from_secs(1))
        .await
        .expect("first")
        .version;
    for id in ["i1", "i2", "i3"] {
        a.register(Instance::new("lost", id, "addr"), LONG)
            .await
            .expect("register");
    }
    server.kill();
    // Not durable: everything, versions included, is gone after the restart.
    let _restarted = RedisServer::start_on_port(server.port(), &[]).expect("restart");
    let deadline = Instant::now() + Duration::from_secs(15);
    while a
        .register(Instance::new("lost", "i9", "addr"), LONG)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "redis did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        // Generous: on a loaded 2-core CI machine the reconnect backoffs and
        // the restarted server's start-up add up (one 10 s timeout was seen to run out).
        let snap = next(&mut watch, Duration::from_secs(30))
            .await
            .expect("watch recovers");
        assert!(snap.version > last, "{} after {last}", snap.version);
        last = snap.version;
        if snap.instances.iter().map(|i| i.id.as_str()).eq(["i9"]) {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_registry_ends_its_watches() {
    let server = RedisServer::start().expect("server");
    let b = node(&server).await;
    let mut watch = b.watch("end").await.expect("watch");
    assert!(next(&mut watch, Duration::from_secs(1)).await.is_some());
    drop(b);
    let end = tokio::time::timeout(Duration::from_secs(2), watch.next()).await;
    assert!(matches!(end, Ok(None)), "watch did not end: {end:?}");
}
