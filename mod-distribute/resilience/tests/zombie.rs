//! A frozen primary (SIGSTOP: a zombie that still holds its clients) is
//! failed over through the fencing window, and when it wakes (SIGCONT) it
//! accepts no write: its replicas were taken from it, so its own
//! `min-replicas-to-write` (kept by the controller) refuses them, until the
//! controller demotes it.

use std::time::{Duration, Instant};

use mod_resilience::HaConfig;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_zombie_primary_accepts_no_write() {
    let nodes = common::group(2);
    let a = &nodes[0];
    let controller = common::solo(HaConfig {
        wait_replicas: 1,
        ..common::ha_over(&nodes)
    })
    .await;
    let mut state = controller.state();
    // The controller keeps min-replicas-to-write on the primary.
    common::wait_config(&a.addr(), "min-replicas-to-write", "1").await;

    common::signal(a.pid().unwrap(), "-STOP");
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

    common::signal(a.pid().unwrap(), "-CONT");
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
