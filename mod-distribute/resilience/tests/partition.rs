//! A partition, for real: every link to every node (the controller's
//! probes, the clients, replication itself) goes through an in-process TCP
//! fault proxy in front of that node, so cutting one proxy isolates its
//! node completely while its process runs on. The primary is cut off; a
//! client on its side of the partition keeps writing to it directly.
//!
//! Checked on the recorded history of both writers: the isolated primary
//! takes no write once its `min-replicas-max-lag` (+ 2 s) passed, before
//! the new primary is promoted (Redis refuses them: `NOREPLICAS`), no
//! `WAIT`-acknowledged write is lost, and when the partition heals the old primary rejoins as a replica and the writes it
//! took that the new primary never saw are reported (`Alert::Divergence`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mod_distribute::topology::Alert;
use mod_distribute::RedisServer;
use mod_resilience::HaConfig;

mod common;

use common::fault_proxy::FaultProxy;

/// One write of either writer.
#[derive(Debug, Clone)]
struct Write {
    key: String,
    /// The node took the `SET`.
    accepted: bool,
    /// `WAIT 1` counted a replica.
    acked: bool,
    at: Instant,
}

async fn set_wait(conn: &mut impl redis::aio::ConnectionLike, key: &str) -> (bool, bool) {
    let reply: redis::RedisResult<((), i64)> = redis::pipe()
        .cmd("SET")
        .arg(key)
        .arg(1)
        .cmd("WAIT")
        .arg(1)
        .arg(200)
        .query_async(conn)
        .await;
    match reply {
        Ok(((), n)) => (true, n >= 1),
        Err(_) => (false, false),
    }
}

type History = Arc<Mutex<Vec<Write>>>;

fn record(history: &History, key: String, (accepted, acked): (bool, bool)) {
    history.lock().unwrap().push(Write {
        key,
        accepted,
        acked,
        at: Instant::now(),
    });
}

async fn keys_on(addr: &str) -> Vec<String> {
    let client = redis::Client::open(format!("redis://{addr}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg("p:*")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_primary_takes_no_write_and_rejoins_with_its_divergence_reported() {
    let a = RedisServer::start().unwrap();
    let pa = FaultProxy::start(a.port()).await;
    let pa_port = pa.addr.rsplit_once(':').unwrap().1.to_owned();
    let replica_of = ["--replicaof", "127.0.0.1", pa_port.as_str()];
    let b = RedisServer::start_with_args(&replica_of).unwrap();
    let c = RedisServer::start_with_args(&replica_of).unwrap();
    let (pb, pc) = (
        FaultProxy::start(b.port()).await,
        FaultProxy::start(c.port()).await,
    );
    let config = HaConfig {
        wait_replicas: 1,
        ..common::ha(vec![pa.addr.clone(), pb.addr.clone(), pc.addr.clone()])
    };
    let max_lag = config.min_replicas_max_lag;
    let controller = common::solo(config).await;
    assert_eq!(
        controller.state().borrow().topology.primary,
        Some(pa.addr.clone())
    );
    let mut alerts = controller.alerts();
    let mut state = controller.state();
    let redis = common::following(&controller, "part").await;
    // Before the cut: replication through the proxies is up, and the
    // controller keeps `min-replicas-to-write 1` on the primary.
    common::wait_config(&a.addr(), "min-replicas-to-write", "1").await;

    let (majority, minority): (History, History) = Default::default();
    let follower_writer = {
        let (redis, history) = (redis.clone(), majority.clone());
        tokio::spawn(async move {
            for n in 0.. {
                let key = format!("p:m{n}");
                let outcome = set_wait(&mut redis.conn(), &key).await;
                record(&history, key, outcome);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    // A client on the isolated side: straight to the old primary's port.
    let stale_writer = {
        let (url, history) = (a.url(), minority.clone());
        tokio::spawn(async move {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            for n in 0.. {
                let key = format!("p:s{n}");
                let outcome = set_wait(&mut conn, &key).await;
                record(&history, key, outcome);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cut_at = Instant::now();
    pa.cut(true);
    let committed = tokio::time::timeout(
        Duration::from_secs(15),
        state.wait_for(|s| s.topology.epoch >= 2),
    )
    .await
    .expect("failover of the isolated primary")
    .unwrap()
    .topology
    .clone();
    let promoted_at = Instant::now();
    let new_primary = committed.primary.clone().unwrap();
    assert_ne!(new_primary, pa.addr);
    assert_eq!(committed.fenced, vec![pa.addr.clone()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    pa.cut(false);
    let healed = tokio::time::timeout(
        Duration::from_secs(15),
        state.wait_for(|s| s.topology.fenced.is_empty()),
    )
    .await
    .expect("the old primary rejoins")
    .unwrap()
    .topology
    .clone();
    assert!(healed.replicas.contains(&pa.addr), "{healed:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    follower_writer.abort();
    stale_writer.abort();

    let (majority, minority) = (
        majority.lock().unwrap().clone(),
        minority.lock().unwrap().clone(),
    );
    let on_new = keys_on(&new_primary).await;
    let lost: Vec<&String> = majority
        .iter()
        .chain(&minority)
        .filter(|w| w.acked && !on_new.contains(&w.key))
        .map(|w| &w.key)
        .collect();
    // The fence: past `min-replicas-max-lag` + 2 s (Redis counts the lag
    // in whole seconds and recounts once a second) the isolated primary
    // takes nothing — before the new primary was promoted.
    let window = cut_at + max_lag + Duration::from_secs(2);
    assert!(window < promoted_at, "promoted inside the window");
    let accepted_late = minority
        .iter()
        .filter(|w| w.accepted && w.at > window)
        .count();
    let accepted_cut = minority
        .iter()
        .filter(|w| w.accepted && w.at > cut_at)
        .count();
    let acked_cut = minority
        .iter()
        .filter(|w| w.acked && w.at > cut_at + Duration::from_millis(50))
        .count();
    eprintln!(
        "majority side: {} writes, {} acked; isolated side: {} writes, {accepted_cut} accepted after the cut, {accepted_late} after its window, {acked_cut} acked after the cut; lost acked: {}",
        majority.len(),
        majority.iter().filter(|w| w.acked).count(),
        minority.len(),
        lost.len()
    );
    assert!(
        majority.iter().filter(|w| w.acked).count() > 50,
        "too few writes to judge"
    );
    assert_eq!(lost, Vec::<&String>::new(), "WAIT-acknowledged writes lost");
    assert_eq!(
        accepted_late, 0,
        "the isolated primary took writes after its window"
    );
    assert_eq!(acked_cut, 0, "no replica can acknowledge across the cut");

    // What the isolated primary took before its window closed is reported.
    let mut divergence = None;
    while let Ok(alert) = alerts.try_recv() {
        if let Alert::Divergence { node, bytes, .. } = alert {
            divergence = Some((node, bytes));
        }
    }
    if accepted_cut > 0 {
        let (node, bytes) = divergence.expect("a divergence alert");
        assert_eq!(node, pa.addr);
        assert!(bytes > 0);
    }
}
