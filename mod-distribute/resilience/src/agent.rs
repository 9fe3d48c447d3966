//! The node agent: runs one `redis-server` beside it and restarts it when
//! it dies — only ever as a replica of the committed primary, never as a
//! primary. A node that comes back empty and writable would be a second
//! primary with no data (or, with persistence, with a stale tail of writes
//! nobody else saw); started with `--replicaof`, it resyncs from the
//! primary instead, and the controller unfences it once it caught up.
//!
//! The first start uses the command as given (the deployment decides the
//! initial roles; the controller's bootstrap takes over from there).

use std::process::{Child, Command};
use std::time::Duration;

use mod_api::{Error, Result};
use mod_distribute::topology::{Follower, Topology};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long one subscription attempt waits for a topology.
const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(10);
/// How often the agent looks at its process.
const CHECK_EVERY: Duration = Duration::from_millis(50);
/// The pause before a restart (a crash loop must not spin).
const RESTART_AFTER: Duration = Duration::from_millis(200);

/// A running agent; dropping it stops the agent and its `redis-server`.
pub struct NodeAgent {
    pid: watch::Receiver<Option<u32>>,
    restarts: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NodeAgent {
    /// Starts `command` (a `redis-server` command line that makes it listen
    /// on `node`, `host:port`) and supervises it, following the topology of
    /// the controller group at `controllers` (subscribed to after the start:
    /// the group may need this very node to commit its first topology).
    pub fn start(node: &str, command: Vec<String>, controllers: Vec<String>) -> Result<NodeAgent> {
        if command.is_empty() {
            return Err(Error::config("node agent: an empty redis-server command"));
        }
        let child = spawn(&command, None)?;
        let (pid_tx, pid) = watch::channel(Some(child.id()));
        let (restarts_tx, restarts) = watch::channel(0);
        let supervisor = Supervisor {
            node: node.to_owned(),
            command,
            controllers,
            follower: None,
            pid: pid_tx,
            restarts: restarts_tx,
        };
        tracing::info!(%node, pid = child.id(), "node agent started redis-server");
        let task = tokio::spawn(supervisor.run(child));
        Ok(NodeAgent {
            pid,
            restarts,
            task,
        })
    }

    /// The pid of the running `redis-server` (`None` between a death and
    /// its restart).
    pub fn pid(&self) -> Option<u32> {
        *self.pid.borrow()
    }

    /// How many times the agent restarted it; changes on every restart.
    pub fn restarts(&self) -> watch::Receiver<u64> {
        self.restarts.clone()
    }
}

struct Supervisor {
    node: String,
    command: Vec<String>,
    controllers: Vec<String>,
    follower: Option<Follower>,
    pid: watch::Sender<Option<u32>>,
    restarts: watch::Sender<u64>,
}

/// Kills the child when the supervisor goes (aborted, or the agent dropped).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Supervisor {
    async fn run(mut self, child: Child) {
        let mut running = Running(child);
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            match running.0.try_wait() {
                Ok(None) => continue,
                Ok(Some(status)) => {
                    tracing::warn!(node = %self.node, %status, "redis-server exited; restarting it as a replica");
                }
                Err(e) => {
                    tracing::warn!(node = %self.node, error = %e, "cannot check redis-server");
                    continue;
                }
            }
            self.pid.send_replace(None);
            tokio::time::sleep(RESTART_AFTER).await;
            let primary = self.primary_elsewhere().await;
            match spawn(&self.command, Some(&primary)) {
                Ok(child) => {
                    tracing::info!(node = %self.node, %primary, pid = child.id(), "redis-server restarted as a replica");
                    self.pid.send_replace(Some(child.id()));
                    self.restarts.send_modify(|n| *n += 1);
                    running = Running(child);
                }
                Err(e) => {
                    // Keep the dead handle: the next check sees it dead and
                    // tries again after the pause.
                    tracing::warn!(node = %self.node, error = %e, "cannot restart redis-server");
                }
            }
        }
    }

    /// Waits for a committed primary that is not this node (while this node
    /// is the committed one, the controller is failing it over).
    async fn primary_elsewhere(&mut self) -> String {
        let node = self.node.clone();
        let mut topology = self.follower().await.watch();
        let elsewhere = |t: &Topology| t.primary.clone().filter(|p| *p != node);
        if topology.borrow().primary.as_ref() == Some(&node) {
            tracing::info!(%node, "waiting for the controller to commit another primary");
        }
        loop {
            let seen = topology.wait_for(|t| elsewhere(t).is_some()).await;
            match seen.map(|t| elsewhere(&t)) {
                Ok(Some(primary)) => return primary,
                // Only if the follower went, which it does not while held.
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}

impl Supervisor {
    /// The subscription, made on first use (retried until it works).
    async fn follower(&mut self) -> &Follower {
        while self.follower.is_none() {
            match Follower::subscribe(&self.controllers, SUBSCRIBE_WITHIN).await {
                Ok(follower) => self.follower = Some(follower),
                Err(e) => {
                    tracing::warn!(node = %self.node, error = %e, "node agent: no topology yet")
                }
            }
        }
        self.follower.as_ref().expect("just set")
    }
}

/// Spawns the command, as a replica of `primary` when given.
fn spawn(command: &[String], primary: Option<&str>) -> Result<Child> {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    if let Some(primary) = primary {
        let (host, port) = primary.rsplit_once(':').unwrap_or((primary, "6379"));
        cmd.args(["--replicaof", host, port]);
    }
    mod_distribute::redis_server::spawn_tied(cmd).map_err(|e| {
        Error::unavailable(format!("node agent: cannot run {:?}", command[0])).with_source(e)
    })
}
