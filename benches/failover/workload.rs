//! The workload both sides run: `SET` + `WAIT 1` in a loop, every write
//! recorded (key, acknowledged or not, which node, when), and a sampler of
//! every node's role for the time with two writable primaries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mod_distribute::RedisServer;

/// How long `WAIT 1` may wait for the replica's acknowledgement.
pub const WAIT_MS: u64 = 200;
/// Between two writes of the writer.
pub const PACE: Duration = Duration::from_millis(2);

/// One recorded write.
#[derive(Debug, Clone)]
pub struct Write {
    pub cycle: u64,
    pub key: u64,
    pub acked: bool,
    /// `host:port` the write was sent to.
    pub node: String,
    pub at: Instant,
}

/// Writes and their history, shared with the writer task.
#[derive(Clone, Default)]
pub struct History {
    pub writes: Arc<Mutex<Vec<Write>>>,
    pub cycle: Arc<AtomicU64>,
}

impl History {
    /// Records a write of `c<cycle>:<key>` (the cycle the writer named).
    pub fn record(&self, cycle: u64, key: u64, reply: Option<&Reply>, node: String) {
        let acked = matches!(reply, Some(Ok(((), n))) if *n >= 1);
        self.writes.lock().unwrap().push(Write {
            cycle,
            key,
            acked,
            node,
            at: Instant::now(),
        });
    }

    /// The first acknowledged write on `node` after `since`.
    pub fn first_acked_on(&self, node: &str, since: Instant) -> Option<Instant> {
        let writes = self.writes.lock().unwrap();
        writes
            .iter()
            .find(|w| w.acked && w.at > since && w.node == node)
            .map(|w| w.at)
    }

    /// Records a plain `SET` (no `WAIT`): acknowledged when it returned OK.
    pub fn record_set(&self, cycle: u64, key: u64, ok: bool, node: String) {
        self.writes.lock().unwrap().push(Write {
            cycle,
            key,
            acked: ok,
            node,
            at: Instant::now(),
        });
    }

    /// The longest time between two acknowledged writes of `cycle`.
    pub fn longest_gap(&self, cycle: u64) -> Duration {
        let writes = self.writes.lock().unwrap();
        let acked: Vec<Instant> = writes
            .iter()
            .filter(|w| w.cycle == cycle && w.acked)
            .map(|w| w.at)
            .collect();
        acked
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// The acknowledged keys of `cycle`.
    pub fn acked(&self, cycle: u64) -> Vec<u64> {
        let writes = self.writes.lock().unwrap();
        writes
            .iter()
            .filter(|w| w.cycle == cycle && w.acked)
            .map(|w| w.key)
            .collect()
    }
}

/// The pipeline of one write: `SET c<cycle>:<key>`, then `WAIT 1`.
pub fn write_pipe(cycle: u64, key: u64) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(format!("c{cycle}:{key}"))
        .arg(key)
        .cmd("WAIT")
        .arg(1)
        .arg(WAIT_MS);
    pipe
}

/// The reply of one write: the `SET`, then how many replicas `WAIT` counted.
pub type Reply = redis::RedisResult<((), i64)>;

/// The keys of `cycle` on the node at `addr`.
pub async fn keys_on(addr: &str, cycle: u64) -> Vec<u64> {
    keys_with(addr, 'c', cycle).await
}

/// The keys `<prefix><cycle>:*` on the node at `addr`, by number.
pub async fn keys_with(addr: &str, prefix: char, cycle: u64) -> Vec<u64> {
    let Ok(mut conn) = connect(addr).await else {
        return Vec::new();
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}{cycle}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    keys.iter()
        .filter_map(|k| k.split_once(':')?.1.parse().ok())
        .collect()
}

pub async fn connect(addr: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(WAIT_MS + 300)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Samples which nodes are writable primaries every 20 ms; sums the time
/// during which two or more were.
pub struct DualSampler {
    pub dual_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DualSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DualSampler {
    pub fn start(addrs: Vec<String>) -> DualSampler {
        let dual_ms = Arc::new(AtomicU64::new(0));
        let total = dual_ms.clone();
        let task = tokio::spawn(async move {
            let step = Duration::from_millis(20);
            loop {
                let mut masters = 0;
                for addr in &addrs {
                    if writable_primary(addr).await {
                        masters += 1;
                    }
                }
                if masters >= 2 {
                    total.fetch_add(step.as_millis() as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(step).await;
            }
        });
        DualSampler { dual_ms, task }
    }
}

/// A node that takes a write now: a primary, not paused (modkit's fence
/// and switchover; Redis 7.0's `INFO` does not show a pause, and a paused
/// write blocks, so it times out here) and not refusing writes
/// (`NOREPLICAS`). The probe key is outside the workload's keys.
async fn writable_primary(addr: &str) -> bool {
    let probe = async {
        let mut conn = connect(addr).await.ok()?;
        redis::cmd("SET")
            .arg("dual-probe")
            .arg(1)
            .query_async::<()>(&mut conn)
            .await
            .ok()
    };
    tokio::time::timeout(Duration::from_millis(100), probe)
        .await
        .ok()
        .flatten()
        .is_some()
}

/// Starts a node; `--repl-diskless-sync-delay 0` so a returning node
/// resyncs at once between cycles.
pub fn node(port: Option<u16>, replica_of: Option<u16>) -> RedisServer {
    let primary = replica_of.map(|p| p.to_string());
    let mut args = vec!["--repl-diskless-sync-delay", "0"];
    if let Some(p) = &primary {
        args.extend(["--replicaof", "127.0.0.1", p]);
    }
    match port {
        Some(port) => RedisServer::start_on_port(port, &args),
        None => RedisServer::start_with_args(&args),
    }
    .expect("redis-server")
}

pub use modkit_benches::percentile;

/// The role, link and offset lines of a node's `INFO replication`.
pub async fn info(addr: &str) -> String {
    let Ok(mut conn) = connect(addr).await else {
        return "unreachable".into();
    };
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    info.lines()
        .filter(|l| l.starts_with("role") || l.starts_with("master_") || l.starts_with("slave"))
        .collect::<Vec<_>>()
        .join(" ")
}
