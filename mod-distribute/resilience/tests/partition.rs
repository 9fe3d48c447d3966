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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mod_distribute::topology::Alert;
use mod_distribute::RedisServer;
use mod_resilience::HaConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

/// Forwards `127.0.0.1:<port>` to a node; [`FaultProxy::cut`] makes it
/// silent (bytes are held, nothing is refused: what a partition looks like).
struct FaultProxy {
    addr: String,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    async fn start(target: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut = flag.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = upstream.into_split();
                    tokio::select! {
                        _ = pipe(cr, uw, cut.clone()) => {}
                        _ = pipe(ur, cw, cut) => {}
                    }
                });
            }
        });
        FaultProxy { addr, cut, task }
    }

    fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` while not cut; while cut, holds what it read.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        while cut.load(Ordering::SeqCst) {
            // A healed link drops what crossed it while cut (as TCP would
            // after its retransmissions gave up): the connection ends.
            tokio::time::sleep(Duration::from_millis(5)).await;
            if !cut.load(Ordering::SeqCst) {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

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
