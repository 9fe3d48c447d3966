//! `registry.watch.redis`: how long after `register` starts on node A node B's
//! watch yields a snapshot with the new instance. For scale, the same is
//! measured for a raw Redis `PUBLISH` reaching a subscriber (`peer_pubsub_*`).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mod_distribute::Distributed;
use modkit::{Backend, Instance};

use crate::fixtures::node_config;
use crate::harness::quantile;
use crate::BenchResult;

const SERVICE: &str = "bench.Watched";
const TTL: Duration = Duration::from_secs(30);
/// Longest wait for one notification before the run is declared broken.
const PATIENCE: Duration = Duration::from_secs(10);

pub async fn watch(samples: usize, url: &str, prefix: &str) -> BenchResult {
    let a = Distributed::start(node_config(url, prefix, "watch-a", &[])).await?;
    let b = Distributed::start(node_config(url, prefix, "watch-b", &[])).await?;
    let (ra, rb) = (a.registry(), b.registry());
    let mut watch = rb.watch(SERVICE).await?;
    tokio::time::timeout(PATIENCE, watch.next())
        .await?
        .ok_or("watch ended")?;

    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples + 5 {
        let id = format!("inst-{i}");
        let start = Instant::now();
        ra.register(Instance::new(SERVICE, id.clone(), "127.0.0.1:1"), TTL)
            .await?;
        loop {
            let snap = tokio::time::timeout(PATIENCE, watch.next())
                .await?
                .ok_or("watch ended")?;
            if snap.instances.iter().any(|x| x.id == id) {
                break;
            }
        }
        if i >= 5 {
            // The first few warm up connections and scripts.
            lat.push(start.elapsed());
        }
        // Back to an empty service, untimed: every sample sees the same state.
        ra.deregister(SERVICE, &id).await?;
        loop {
            let snap = tokio::time::timeout(PATIENCE, watch.next())
                .await?
                .ok_or("watch ended")?;
            if snap.instances.is_empty() {
                break;
            }
        }
    }
    lat.sort();

    let peer = pubsub(samples, url, prefix).await?;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "compare registry.watch.redis p50_us={:.0} p99_us={:.0} samples={} max_us={:.0} peer_pubsub_p50_us={:.0} peer_pubsub_p99_us={:.0}",
        us(quantile(&lat, 0.50)),
        us(quantile(&lat, 0.99)),
        lat.len(),
        us(*lat.last().unwrap_or(&Duration::ZERO)),
        us(quantile(&peer, 0.50)),
        us(quantile(&peer, 0.99)),
    );
    Ok(())
}

/// `PUBLISH` on one connection to a message on a subscribed one, sorted.
async fn pubsub(samples: usize, url: &str, prefix: &str) -> Result<Vec<Duration>, crate::BoxError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut sub = client.get_async_pubsub().await?;
    let channel = format!("{prefix}:rawwatch");
    sub.subscribe(&channel).await?;
    let mut messages = sub.on_message();
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples + 5 {
        let start = Instant::now();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(i)
            .query_async(&mut conn)
            .await?;
        tokio::time::timeout(PATIENCE, messages.next())
            .await?
            .ok_or("subscription ended")?;
        if i >= 5 {
            lat.push(start.elapsed());
        }
    }
    lat.sort();
    Ok(lat)
}
