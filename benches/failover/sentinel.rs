//! Redis Sentinel's side: three nodes, three sentinels (quorum 2,
//! `down-after-milliseconds 1000`, `failover-timeout 3000`), and a client
//! that follows them as Redis's Sentinel client guidelines say: subscribed
//! to `+switch-master`, and asking `SENTINEL get-master-addr-by-name` again
//! on any error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mod_distribute::RedisServer;

use crate::workload::{connect, keys_on, node, write_pipe, DualSampler, History, Reply};
use crate::{wait_online, Cycle};

const MASTER: &str = "m";

/// One `+switch-master` seen: when, from, to.
type Switch = (Instant, String, String);

pub struct SentinelGroup {
    nodes: Vec<RedisServer>,
    _sentinels: Vec<RedisServer>,
    sentinel_addrs: Vec<String>,
    history: History,
    sampler: DualSampler,
    switches: Arc<Mutex<Vec<Switch>>>,
    /// Switches and dual-primary time counted up to the end of the last
    /// cycle (so what happens between cycles counts in the next).
    mark: (usize, u64),
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SentinelGroup {
    pub async fn start() -> SentinelGroup {
        let a = node(None, None);
        let replicas = vec![node(None, Some(a.port())), node(None, Some(a.port()))];
        let nodes: Vec<RedisServer> = std::iter::once(a).chain(replicas).collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        wait_online(&addrs[0], 2).await;
        let lines = vec![
            format!("sentinel monitor {MASTER} 127.0.0.1 {} 2", nodes[0].port()),
            format!("sentinel down-after-milliseconds {MASTER} 1000"),
            format!("sentinel failover-timeout {MASTER} 3000"),
        ];
        let log = |i: usize| {
            format!(
                "logfile /tmp/modkit-bench-sentinel-{}-{i}.log",
                std::process::id()
            )
        };
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|i| {
                let mut lines = lines.clone();
                // MODKIT_BENCH_SENTINEL_LOG=1: each sentinel's log in /tmp.
                if std::env::var_os("MODKIT_BENCH_SENTINEL_LOG").is_some() {
                    lines.push(log(i));
                }
                RedisServer::start_sentinel(&lines).expect("sentinel")
            })
            .collect();
        let sentinel_addrs: Vec<String> = sentinels.iter().map(RedisServer::addr).collect();
        let master = Arc::new(Mutex::new(addrs[0].clone()));
        let switches = Arc::new(Mutex::new(Vec::new()));
        let history = History::default();
        let mut tasks: Vec<_> = sentinel_addrs
            .iter()
            .map(|s| tokio::spawn(subscribe(s.clone(), master.clone(), switches.clone())))
            .collect();
        tasks.push(tokio::spawn(write_loop(
            sentinel_addrs.clone(),
            master,
            history.clone(),
        )));
        let sampler = DualSampler::start(addrs);
        SentinelGroup {
            nodes,
            _sentinels: sentinels,
            sentinel_addrs,
            history,
            sampler,
            switches,
            mark: (0, 0),
            tasks,
        }
    }

    /// The master every sentinel names, when they agree.
    async fn agreed_master(&self) -> Option<String> {
        let mut seen = Vec::new();
        for s in &self.sentinel_addrs {
            seen.push(ask_master(s).await?);
        }
        seen.windows(2)
            .all(|w| w[0] == w[1])
            .then(|| seen[0].clone())
    }

    /// Waits for a settled group: the sentinels agree on the master, it
    /// counts two replicas online, and every sentinel knows both as plain
    /// replicas (no failover in progress): a fair start for each cycle.
    /// `None` when it did not settle within 30 s (the caller then starts a
    /// fresh group, and counts it).
    async fn wait_healthy(&self) -> Option<String> {
        let start = Instant::now();
        loop {
            if let Some(m) = self.agreed_master().await {
                if crate::online_replicas(&m).await >= 2 && self.settled().await {
                    return Some(m);
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One kill -9 of the master, measured; `None` when the group did not
    /// settle before it.
    pub async fn cycle(&mut self, n: u64) -> Option<Cycle> {
        let killed = self.wait_healthy().await?;
        self.history
            .cycle
            .store(n, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (switches_start, dual_start) = self.mark;
        let idx = self
            .nodes
            .iter()
            .position(|s| s.addr() == killed)
            .expect("master is a node");
        let killed_at = Instant::now();
        self.nodes[idx].kill();
        let mut took_ms = 30_000.0;
        let mut new_master = None;
        while killed_at.elapsed() < Duration::from_secs(30) {
            let to = self.switches.lock().unwrap()[switches_start..]
                .iter()
                .find(|s| s.1 == killed)
                .map(|s| s.2.clone());
            if let Some(to) = to {
                if let Some(at) = self.history.first_acked_on(&to, killed_at) {
                    took_ms = (at - killed_at).as_secs_f64() * 1000.0;
                    new_master = Some(to);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let port = self.nodes[idx].port();
        let master_port = new_master
            .as_deref()
            .and_then(|p| p.rsplit_once(':')?.1.parse().ok());
        self.nodes[idx] = node(Some(port), master_port);
        let spurious = self.switches.lock().unwrap()[switches_start..]
            .iter()
            .filter(|s| s.1 != killed)
            .count();
        let acked_keys = self.history.acked(n);
        // No switch away from the killed node seen (Sentinel moved elsewhere,
        // or not at all): judge against the master the sentinels name now.
        let judge = match new_master {
            Some(m) => Some(m),
            None => ask_master(&self.sentinel_addrs[0]).await,
        };
        let on_new = match &judge {
            Some(m) => keys_on(m, n).await,
            None => Vec::new(),
        };
        let lost = crate::report_lost(
            "sentinel",
            &self.history,
            n,
            &acked_keys,
            &on_new,
            killed_at,
        );
        let dual_now = self
            .sampler
            .dual_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        self.mark = (self.switches.lock().unwrap().len(), dual_now);
        Some(Cycle {
            took_ms,
            lost,
            spurious,
            dual_ms: dual_now - dual_start,
            lost_unwaited: None,
            switch_ms: None,
        })
    }
}

impl SentinelGroup {
    async fn settled(&self) -> bool {
        for s in &self.sentinel_addrs {
            let Ok(mut conn) = connect(s).await else {
                return false;
            };
            let master: redis::RedisResult<Vec<String>> = redis::cmd("SENTINEL")
                .arg("master")
                .arg(MASTER)
                .query_async(&mut conn)
                .await;
            let flags = |fields: &[String]| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0] == "flags")
                    .map(|kv| kv[1].clone())
                    .unwrap_or_default()
            };
            if master.as_deref().map(flags).as_deref() != Ok("master") {
                return false;
            }
            let replicas: redis::RedisResult<Vec<Vec<String>>> = redis::cmd("SENTINEL")
                .arg("replicas")
                .arg(MASTER)
                .query_async(&mut conn)
                .await;
            let good = replicas
                .map(|rs| rs.iter().filter(|r| flags(r) == "slave").count())
                .unwrap_or(0);
            if good < 2 {
                return false;
            }
        }
        true
    }
}

async fn ask_master(sentinel: &str) -> Option<String> {
    let mut conn = connect(sentinel).await.ok()?;
    let reply: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER)
        .query_async(&mut conn)
        .await
        .ok()?;
    reply.map(|(h, p)| format!("{h}:{p}"))
}

/// `+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>` from one sentinel.
async fn subscribe(
    sentinel: String,
    master: Arc<Mutex<String>>,
    switches: Arc<Mutex<Vec<Switch>>>,
) {
    loop {
        let Ok(client) = redis::Client::open(format!("redis://{sentinel}")) else {
            return;
        };
        if let Ok(mut pubsub) = client.get_async_pubsub().await {
            if pubsub.subscribe("+switch-master").await.is_ok() {
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    let f: Vec<&str> = text.split(' ').collect();
                    if f.len() == 5 {
                        let (old, new) =
                            (format!("{}:{}", f[1], f[2]), format!("{}:{}", f[3], f[4]));
                        *master.lock().unwrap() = new.clone();
                        // Each sentinel announces the same switch: keep one.
                        let mut seen = switches.lock().unwrap();
                        if seen.last().is_none_or(|s| s.1 != old || s.2 != new) {
                            seen.push((Instant::now(), old, new));
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn write_loop(sentinels: Vec<String>, master: Arc<Mutex<String>>, history: History) {
    let mut conn: Option<(String, redis::aio::MultiplexedConnection)> = None;
    for key in 0.. {
        let target = master.lock().unwrap().clone();
        if conn.as_ref().is_none_or(|(a, _)| *a != target) {
            conn = connect(&target).await.ok().map(|c| (target.clone(), c));
        }
        let cycle = history.cycle.load(std::sync::atomic::Ordering::Relaxed);
        let reply: Option<Reply> = match conn.as_mut() {
            Some((_, c)) => {
                let reply = write_pipe(cycle, key).query_async(c).await;
                if reply.is_err() {
                    conn = None;
                    // The guidelines: on any error, ask the sentinels again.
                    for s in &sentinels {
                        if let Some(m) = ask_master(s).await {
                            *master.lock().unwrap() = m;
                            break;
                        }
                    }
                }
                Some(reply)
            }
            None => None,
        };
        history.record(cycle, key, reply.as_ref(), target);
        tokio::time::sleep(crate::workload::PACE).await;
    }
}
