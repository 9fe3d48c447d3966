//! Redis failover without Sentinel, as a readable timeline:
//!
//! ```sh
//! cargo run --example failover --features resilience
//! ```
//!
//! Starts three `redis-server`s (one primary, two replicas), three controller
//! voters agreeing through openraft, the stable-endpoint proxy, and a modkit
//! application whose cache writes run every 10 ms. Then it kills the primary
//! (`kill -9`) and prints what happened when: the alerts of the controller
//! group, the client's switch, the first write on the new primary, and the
//! figures. Needs `redis-server` on the PATH (or `MODKIT_REDIS_SERVER`).
//! `RUST_LOG=info` shows the logs beside the timeline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modkit::distribute::topology::Follower;
use modkit::distribute::RedisServer;
use modkit::prelude::*;
use modkit::resilience::{consensus_for, Controller, HaConfig, Proxy};

/// One cache write of the workload: when it returned, and how.
struct Write {
    at: Instant,
    ok: bool,
    retryable: bool,
}

fn free_addr() -> std::io::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}

#[tokio::main]
async fn main() -> modkit::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let t0 = Instant::now();
    let say = move |what: String| println!("[{:>6} ms] {what}", t0.elapsed().as_millis());

    // No 5 s wait before a full sync (Redis 7's default), so the replicas
    // (and a returning node) link at once.
    let mut nodes = vec![RedisServer::start_with_args(&[
        "--repl-diskless-sync-delay",
        "0",
    ])?];
    for _ in 0..2 {
        let replica = RedisServer::start_replica_of(nodes[0].port())?;
        nodes.push(replica);
    }
    let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
    say(format!(
        "redis group: primary {}, replicas {}, {}",
        addrs[0], addrs[1], addrs[2]
    ));

    let voters: Vec<String> = (0..3)
        .map(|_| free_addr())
        .collect::<std::io::Result<_>>()?;
    let mut controllers = Vec::new();
    for id in 1..=3 {
        let config = HaConfig {
            nodes: addrs.clone(),
            listen: "127.0.0.1:0".into(),
            voter: id,
            voters: voters.clone(),
            wait_replicas: 1,
            ..HaConfig::default()
        };
        let consensus = consensus_for(&config).await?;
        controllers.push(Controller::start(config, consensus).await?);
    }
    let subscriptions: Vec<String> = controllers
        .iter()
        .map(|c| c.local_addr().to_string())
        .collect();
    say(format!(
        "three controller voters (openraft), subscriptions on {}",
        subscriptions.join(", ")
    ));

    let proxy = Proxy::start(
        "127.0.0.1:0",
        Follower::subscribe(&subscriptions, Duration::from_secs(10)).await?,
    )
    .await?;
    say(format!(
        "proxy on {}: `redis-cli -p {}` always reaches the primary",
        proxy.local_addr(),
        proxy.local_addr().port()
    ));

    let config = Config::from_toml(&format!(
        "mode = \"distribute\"\n[redis]\ncontrollers = {subscriptions:?}\nwait_replicas = 1\n"
    ))?;
    let app = App::start(config).await?;
    let cache = app.cache::<u64>("orders", CachePolicy::default())?;
    say("application started, following the controllers; writing every 10 ms".into());

    let writes = Arc::new(Mutex::new(Vec::<Write>::new()));
    let workload = {
        let (cache, writes) = (cache.clone(), writes.clone());
        tokio::spawn(async move {
            for n in 0u64.. {
                let result = cache.set(&format!("order-{n}"), n).await;
                let retryable = result.as_ref().err().is_some_and(|e| e.is_retryable());
                writes.lock().unwrap().push(Write {
                    at: Instant::now(),
                    ok: result.is_ok(),
                    retryable,
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut alerts = controllers[0].alerts();
    let alert_log = tokio::spawn(async move {
        while let Ok(alert) = alerts.recv().await {
            println!(
                "[{:>6} ms] alert {}: {alert:?}",
                t0.elapsed().as_millis(),
                alert.kind()
            );
        }
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    nodes[0].kill();
    say(format!("kill -9 of the primary {}", addrs[0]));

    let mut state = controllers[0].state();
    let committed = tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| s.topology.epoch >= 2),
    )
    .await
    .map_err(|_| modkit::Error::timeout("no failover within 20 s"))?
    .map_err(|_| modkit::Error::internal("controller stopped"))?
    .topology
    .clone();
    let primary = committed.primary.clone().unwrap_or_default();
    say(format!(
        "topology epoch {} committed: primary {primary}",
        committed.epoch
    ));

    let first = loop {
        let found = writes
            .lock()
            .unwrap()
            .iter()
            .find(|w| w.ok && w.at > killed_at)
            .map(|w| w.at);
        if let Some(at) = found {
            break at;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "[{:>6} ms] first successful write after the kill",
        (first - t0).as_millis()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    workload.abort();
    alert_log.abort();

    let writes = writes.lock().unwrap();
    let failed: Vec<&Write> = writes.iter().filter(|w| !w.ok).collect();
    println!();
    println!(
        "kill -9 → first write on the new primary: {} ms",
        (first - killed_at).as_millis()
    );
    println!(
        "writes: {} succeeded, {} failed during the window, all retryable: {}",
        writes.len() - failed.len(),
        failed.len(),
        failed.iter().all(|w| w.retryable)
    );
    Ok(())
}
