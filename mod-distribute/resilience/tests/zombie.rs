//! A frozen primary (SIGSTOP: a zombie that still holds its clients) is
//! failed over through the fencing window, and when it wakes (SIGCONT) it
//! accepts no write: its replicas were taken from it, so its own
//! `min-replicas-to-write` (kept by the controller) refuses them, until the
//! controller demotes it.

use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_distribute::RedisServer;
use mod_resilience::{Controller, GroupState, HaConfig, Solo};

fn signal(server: &RedisServer, sig: &str) {
    let pid = server.pid().expect("running").to_string();
    assert!(Process::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

async fn config_get(server: &RedisServer, key: &str) -> Option<String> {
    let client = redis::Client::open(server.url()).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .ok()?;
    pair.get(1).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_zombie_primary_accepts_no_write() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start_replica_of(a.port()).unwrap();
    let c = RedisServer::start_replica_of(a.port()).unwrap();
    let config = HaConfig {
        nodes: vec![a.addr(), b.addr(), c.addr()],
        listen: "127.0.0.1:0".into(),
        wait_replicas: 1,
        ..HaConfig::default()
    };
    let controller = Controller::start(config, Arc::new(Solo::new(1, GroupState::default())))
        .await
        .unwrap();
    let mut state = controller.state();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| s.topology.epoch == 1),
    )
    .await
    .unwrap();
    // The controller keeps min-replicas-to-write on the primary.
    let start = Instant::now();
    while config_get(&a, "min-replicas-to-write").await.as_deref() != Some("1") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "min-replicas-to-write never set"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    signal(&a, "-STOP");
    let stopped = Instant::now();
    let committed = tokio::time::timeout(
        Duration::from_secs(15),
        state.wait_for(|s| s.topology.epoch >= 2),
    )
    .await
    .expect("no failover of the frozen primary")
    .unwrap()
    .topology
    .clone();
    let took = stopped.elapsed();
    assert_ne!(committed.primary, Some(a.addr()));
    // Silent, not refused: the fencing window was waited out.
    assert!(
        took >= Duration::from_secs(2),
        "promoted after {took:?}, inside the fencing window"
    );

    signal(&a, "-CONT");
    // Writes straight to the woken node, as a client that missed the
    // failover would send them.
    let client = redis::Client::open(a.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (mut accepted, mut refused) = (0, 0);
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let reply: redis::RedisResult<()> = redis::cmd("SET")
            .arg("zombie")
            .arg(1)
            .query_async(&mut conn)
            .await;
        match reply {
            Ok(()) => accepted += 1,
            Err(_) => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(accepted, 0, "the woken zombie accepted writes");
    assert!(refused > 0);
    // And it is made a replica of the new primary.
    let start = Instant::now();
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if info.contains("role:slave") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the woken zombie stayed a primary"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
