//! What the resilience tests share: a real group (a primary and its
//! replicas), a single-voter controller over it, waiting for a committed
//! state, and the small Redis and signal calls around them.
#![allow(dead_code)] // each test crate uses its own part

use std::sync::Arc;
use std::time::Duration;

pub mod fault_proxy;

use mod_distribute::RedisServer;
use mod_resilience::{Controller, GroupState, HaConfig, Solo};

/// A primary and `replicas` replicas of it, linked.
pub fn group(replicas: usize) -> Vec<RedisServer> {
    let primary = RedisServer::start().unwrap();
    let port = primary.port();
    std::iter::once(primary)
        .chain((0..replicas).map(|_| RedisServer::start_replica_of(port).unwrap()))
        .collect()
}

/// `[ha]` over `nodes`, subscriptions on a free port.
pub fn ha(nodes: Vec<String>) -> HaConfig {
    HaConfig {
        nodes,
        listen: "127.0.0.1:0".into(),
        ..HaConfig::default()
    }
}

/// `[ha]` over the servers of `group`.
pub fn ha_over(group: &[RedisServer]) -> HaConfig {
    ha(group.iter().map(RedisServer::addr).collect())
}

/// A single-voter controller, once it committed its first topology.
pub async fn solo(config: HaConfig) -> Controller {
    let controller = Controller::start(config, Arc::new(Solo::new(1, GroupState::default())))
        .await
        .unwrap();
    wait_state(&controller, "the first topology", |s| s.topology.epoch >= 1).await;
    controller
}

/// The state once `f` holds (20 s at most, then a panic naming `what`).
pub async fn wait_state(
    controller: &Controller,
    what: &str,
    f: impl Fn(&GroupState) -> bool,
) -> GroupState {
    let mut state = controller.state();
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        state.wait_for(|s| f(s)).await.map(|s| s.clone())
    })
    .await;
    got.unwrap_or_else(|_| {
        panic!(
            "timed out waiting for {what}: {:?}",
            controller.state().borrow().topology
        )
    })
    .unwrap()
}

/// `kill <sig> <pid>`.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// `INFO replication` of the node at `addr`, if it answers.
pub async fn info(addr: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://{addr}")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .ok()
}

/// `CONFIG GET key` on the node at `addr`.
pub async fn config_get(addr: &str, key: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://{addr}")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .ok()?;
    pair.get(1).cloned()
}

/// Waits (10 s at most) until `CONFIG GET key` on `addr` says `value`.
pub async fn wait_config(addr: &str, key: &str, value: &str) {
    let start = std::time::Instant::now();
    while config_get(addr, key).await.as_deref() != Some(value) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{addr}: {key} never became {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A modkit handle that follows `controller` (keys under `prefix`).
pub async fn following(controller: &Controller, prefix: &str) -> mod_distribute::Redis {
    mod_distribute::Redis::connect_with(&mod_distribute::RedisConfig {
        prefix: prefix.into(),
        controllers: vec![controller.local_addr().to_string()],
        ..mod_distribute::RedisConfig::default()
    })
    .await
    .unwrap()
}

/// `SET w:<key>` then `WAIT 1 500` on one connection.
pub async fn write_acked(redis: &mod_distribute::Redis, key: u64) -> bool {
    let mut conn = redis.conn();
    let reply: redis::RedisResult<((), i64)> = redis::pipe()
        .cmd("SET")
        .arg(format!("w:{key}"))
        .arg(key)
        .cmd("WAIT")
        .arg(1)
        .arg(500)
        .query_async(&mut conn)
        .await;
    matches!(reply, Ok(((), n)) if n >= 1)
}

pub async fn keys_on(server_addr: &str) -> Vec<u64> {
    let client = redis::Client::open(format!("redis://{server_addr}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("w:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.iter().filter_map(|k| k[2..].parse().ok()).collect()
}
