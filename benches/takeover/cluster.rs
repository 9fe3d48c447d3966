//! The pieces of a scenario: node processes, the client's update loop, the
//! probe that waits for a node to answer, and the check of the state read
//! back.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modkit::distribute::redis_server::spawn_tied;
use modkit::distribute::state::StateStore;
use modkit::distribute::Redis;
use modkit::Error;

use crate::{Answer, Ledger, ROLE, SERVICE};

/// A node process (this binary in node role); killed (`SIGKILL`) and
/// reaped when dropped.
pub struct Node {
    /// The node id.
    pub name: String,
    /// The process, until it is killed or stopped.
    child: Option<Child>,
}

impl Node {
    /// Starts node `name` of namespace `prefix` on the Redis at `url`.
    pub fn spawn(url: &str, prefix: &str, name: &str) -> std::io::Result<Node> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(ROLE, format!("{name}@{prefix}@{url}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Ok(Node {
            name: name.to_owned(),
            child: Some(spawn_tied(cmd)?),
        })
    }

    /// `kill -9` of the process, reaped at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Graceful stop: closes its stdin (it shuts down, an owner handing the
    /// service over) and waits up to `limit` for it to exit, then kills it.
    /// Whether it exited by itself.
    pub async fn stop(&mut self, limit: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        drop(child.stdin.take());
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the client's update loop saw.
#[derive(Default)]
pub struct Log {
    /// Acknowledged updates: id, the node that applied it, when the
    /// acknowledgement arrived.
    pub acked: Vec<(u64, String, Instant)>,
    /// Updates that returned an error.
    pub failed: usize,
    /// The first few errors, for stderr.
    pub errors: Vec<String>,
}

/// The client's loop of non-idempotent updates, one at a time.
pub struct Load {
    /// Set to end the loop.
    stop: Arc<AtomicBool>,
    /// What it saw so far.
    pub log: Arc<Mutex<Log>>,
    /// The loop.
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts sending `apply(1)`, `apply(2)`, … through `client`.
    pub fn start(client: Arc<dyn Ledger>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let task = {
            let (stop, log) = (stop.clone(), log.clone());
            tokio::spawn(async move {
                let mut id = 0;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    let outcome = client.apply(id).await;
                    {
                        let mut log = log.lock().unwrap();
                        match outcome {
                            Ok(node) => log.acked.push((id, node, Instant::now())),
                            Err(e) => {
                                log.failed += 1;
                                if log.errors.len() < 5 {
                                    log.errors.push(format!("update {id}: {e}"));
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        Load { stop, log, task }
    }

    /// Stops the loop (after its current call) and returns what it saw.
    pub async fn finish(self) -> Log {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        for e in &log.errors {
            eprintln!("takeover: failed call: {e}");
        }
        log
    }
}

/// Calls `whoami` every 2 ms until node `node` answers, for up to `limit`:
/// the time from `since` to that answer (ms), and the answer.
pub async fn answered_by(
    client: &dyn Ledger,
    node: &str,
    since: Instant,
    limit: Duration,
) -> Option<(f64, Answer)> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(answer) = client.whoami().await {
            if answer.0 == node {
                return Some((since.elapsed().as_secs_f64() * 1e3, answer));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Waits up to `limit` until `node` heartbeats as a standby of the service.
pub async fn wait_standby(
    url: &str,
    prefix: &str,
    node: &str,
    limit: Duration,
) -> modkit::Result<()> {
    let store = StateStore::new(Redis::connect(url, prefix).await?, SERVICE);
    let until = Instant::now() + limit;
    loop {
        if store.standbys().await?.iter().any(|(n, _)| n == node) {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(Error::timeout(format!(
                "{node} did not become a standby within {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The acknowledged updates (of `acked`) missing from `state`, not in
/// `known` (lost before): their ids and acknowledgement times.
pub fn missing(
    acked: &[(u64, String, Instant)],
    state: &[u64],
    known: &HashSet<u64>,
) -> Vec<(u64, Instant)> {
    let present: HashSet<u64> = state.iter().copied().collect();
    acked
        .iter()
        .filter(|(id, _, _)| !present.contains(id) && !known.contains(id))
        .map(|(id, _, at)| (*id, *at))
        .collect()
}

/// The applied ids of the owner, read through `client`.
pub async fn read_state(client: &dyn Ledger) -> modkit::Result<Vec<u64>> {
    let bytes = client.applied().await?;
    Ok(bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect())
}

/// Ids that appear more than once in `state`.
pub fn duplicates(state: &[u64]) -> usize {
    let unique: HashSet<u64> = state.iter().copied().collect();
    state.len() - unique.len()
}
