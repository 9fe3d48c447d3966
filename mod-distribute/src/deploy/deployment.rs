//! The running deployment: its replicas' state and events, readiness, stop.

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mod_api::{Config, Error, Registry, Result, Status};
use tokio::sync::broadcast;

use super::file::DeploymentFile;
use super::launch::Template;
use super::supervise::{self, Slot};
use super::{Event, Launcher, Role};
use crate::RedisServer;

/// The running processes of a deployment, their supervisors, and its
/// `redis-server` when it started one.
///
/// Stop it with [`stop`](Deployment::stop) (graceful) or by dropping it
/// (SIGKILL at once). One replica is acted on with
/// [`restart`](Deployment::restart), [`stop_replica`](Deployment::stop_replica)
/// and [`start_replica`](Deployment::start_replica) (what a host agent does
/// on instructions).
pub struct Deployment {
    /// One per replica, in launch order; replicas started later are added.
    pub(super) slots: Mutex<Vec<Arc<Slot>>>,
    pub(super) supervisors: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub(super) template: Template,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) stopped: bool,
    // Last: dropped after the replicas are gone.
    pub(super) _redis: Option<RedisServer>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("processes", &self.processes())
            .field("host", &self.template.host)
            .field("redis_prefix", &self.template.redis_prefix)
            .finish_non_exhaustive()
    }
}

/// The state of one replica: [`Deployment::processes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its role (process, node id, services, host label).
    pub role: Role,
    /// Its process id while it runs; `None` between an exit and a restart.
    pub pid: Option<u32>,
    /// How often it was started again.
    pub restarts: u32,
    /// How its last process exited, if one did.
    pub last_exit: Option<ExitStatus>,
    /// Whether it exited and its policy leaves it stopped.
    pub given_up: bool,
    /// Whether [`Deployment::stop_replica`] stopped it (it stays stopped
    /// until [`restart`](Deployment::restart) or
    /// [`start_replica`](Deployment::start_replica) starts it again).
    pub stopped: bool,
}

impl Deployment {
    /// Starts the deployment `file` describes, with the defaults (this
    /// binary, output to standard error; [`Launcher`] for others).
    ///
    /// Starts a `redis-server` unless `config` names a Redis (`[redis] url`,
    /// `MODKIT_REDIS_URL`), then every replica of every process in its role
    /// (see the [module docs](super) for its environment), each supervised.
    /// Points `config` at the same Redis and prefix, hosting no service
    /// (`invoke.host = []`): the launcher's own node is a pure caller.
    ///
    /// Fails (killing what it started) when Redis or a replica cannot start.
    pub fn launch(config: &mut Config, file: &DeploymentFile) -> Result<Deployment> {
        Launcher::new(file).launch(config)
    }

    /// Every replica's state, in launch order (replicas started with
    /// [`start_replica`](Deployment::start_replica) last).
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let info = |slot: &Arc<Slot>| {
            let state = slot.lock();
            ProcessInfo {
                role: slot.recipe.role.clone(),
                pid: state.pid,
                restarts: state.restarts,
                last_exit: state.last_exit,
                given_up: state.given_up,
                stopped: state.held,
            }
        };
        self.slots().iter().map(info).collect()
    }

    pub(super) fn slots(&self) -> MutexGuard<'_, Vec<Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The label of the host this deployment runs on ([`Launcher::host`]);
    /// `None` when it runs every process of its file.
    pub fn host(&self) -> Option<&str> {
        self.template.host.as_deref()
    }

    /// The deployment file (all of it, also with [`Launcher::host`]).
    pub fn file(&self) -> &DeploymentFile {
        &self.template.file
    }

    /// The state of replica `node` (`<process>-<index>`).
    pub fn process(&self, node: &str) -> Option<ProcessInfo> {
        self.processes().into_iter().find(|p| p.role.node == node)
    }

    /// Exits and restarts of replicas from now on. A receiver that falls
    /// more than 256 events behind loses the oldest
    /// ([`RecvError::Lagged`](broadcast::error::RecvError::Lagged)).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The Redis URL the replicas use.
    pub fn redis_url(&self) -> &str {
        &self.template.redis_url
    }

    /// The Redis key prefix the replicas use.
    pub fn redis_prefix(&self) -> &str {
        &self.template.redis_prefix
    }

    /// Every service of the deployment's replicas with the node ids that
    /// host it; replicas [`stop_replica`](Deployment::stop_replica) stopped
    /// are left out.
    pub fn services(&self) -> BTreeMap<String, Vec<String>> {
        let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for slot in self.slots().iter() {
            if slot.lock().held {
                continue;
            }
            let role = &slot.recipe.role;
            for service in &role.services {
                services
                    .entry(service.clone())
                    .or_default()
                    .push(role.node.clone());
            }
        }
        services
    }

    /// Waits until every replica is registered `Up` for each of its services
    /// in `registry` (the launcher's node's registry; an instance counts for
    /// its node by its `node` metadata or id). Replicas stopped with
    /// [`stop_replica`](Deployment::stop_replica) are not waited for.
    ///
    /// A stateful service (`provide_stateful`) is registered by its owner
    /// only, never by its standbys: list it in a process of one replica, or
    /// wait for its owner yourself (`registry.lookup`), else this times out
    /// naming the standbys.
    ///
    /// Fails with [`Timeout`](mod_api::ErrorKind::Timeout) after `timeout`,
    /// or with [`Unavailable`](mod_api::ErrorKind::Unavailable) at once when
    /// a replica it waits for exited for good; the error names every
    /// service and node still missing.
    pub async fn wait_ready(&self, registry: &dyn Registry, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut missing = Vec::new();
            let services = self.services();
            for (service, nodes) in &services {
                let instances = registry.lookup(service).await?;
                let up = |node: &String| {
                    instances.iter().any(|i| {
                        i.status == Status::Up && i.metadata.get("node").unwrap_or(&i.id) == node
                    })
                };
                missing.extend(
                    nodes
                        .iter()
                        .filter(|n| !up(n))
                        .map(|n| (service.as_str(), n.as_str())),
                );
            }
            if missing.is_empty() {
                return Ok(());
            }
            let processes = self.processes();
            let describe = |(service, node): &(&str, &str)| {
                let state = processes.iter().find(|p| p.role.node == *node);
                let state = match state {
                    Some(p) if p.given_up => match p.last_exit {
                        Some(status) => format!(" (exited: {status}; not restarted)"),
                        None => " (exited; not restarted)".into(),
                    },
                    Some(ProcessInfo { pid: None, .. }) => " (restarting)".into(),
                    _ => String::new(),
                };
                format!("{service} on {node}{state}")
            };
            let list = || missing.iter().map(describe).collect::<Vec<_>>().join(", ");
            let gone = missing
                .iter()
                .any(|(_, node)| processes.iter().any(|p| p.role.node == *node && p.given_up));
            if gone {
                return Err(Error::unavailable(format!(
                    "deployment not ready: not up: {}",
                    list()
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "deployment not ready after {timeout:?}: not up: {}",
                    list()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the deployment gracefully: ends supervision (nothing is
    /// restarted from here on), sends SIGTERM to every replica, waits up to
    /// `grace` for them to exit, kills (SIGKILL) the rest with a WARN each,
    /// then stops the deployment's `redis-server` if it started one.
    pub async fn stop(mut self, grace: Duration) {
        let stopping = tokio::task::spawn_blocking(move || {
            self.stop_blocking(grace);
            drop(self);
        });
        let _ = stopping.await;
    }

    fn stop_blocking(&mut self, grace: Duration) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let slots = self.slots().clone();
        for slot in &slots {
            let mut state = slot.stopping();
            if let Some(child) = state.child.as_mut() {
                supervise::terminate(child);
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            let mut running = 0;
            for slot in &slots {
                let mut state = slot.lock();
                if let Some(child) = state.child.as_mut() {
                    match child.try_wait() {
                        Ok(Some(status)) => {
                            state.last_exit = Some(status);
                            state.child = None;
                            state.pid = None;
                        }
                        _ => running += 1,
                    }
                }
            }
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for slot in &slots {
            let mut state = slot.lock();
            if let Some(mut child) = state.child.take() {
                tracing::warn!(node = %slot.recipe.role.node, ?grace, "deployment: process did not stop within the grace period; killing it");
                let _ = child.kill();
                state.last_exit = child.wait().ok();
                state.pid = None;
            }
        }
        self.join_supervisors();
        tracing::info!(processes = slots.len(), "deployment stopped");
    }

    /// Runs the deployment until this process gets SIGINT or SIGTERM, then
    /// [`stop`](Deployment::stop)s it with `grace`: the whole of a launcher
    /// that only runs the deployment.
    pub async fn run_until_signal(self, grace: Duration) -> Result<()> {
        let signal = super::shutdown_signal().await?;
        tracing::info!(signal, "deployment: stopping on signal");
        self.stop(grace).await;
        Ok(())
    }

    /// Kills every replica at once (SIGKILL) and ends supervision.
    fn kill_all(&mut self) {
        let slots = self.slots().clone();
        for slot in &slots {
            let mut state = slot.stopping();
            if let Some(mut child) = state.child.take() {
                let _ = child.kill();
                state.last_exit = child.wait().ok();
                state.pid = None;
            }
        }
        self.join_supervisors();
    }

    fn join_supervisors(&mut self) {
        let supervisors = self
            .supervisors
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        for supervisor in supervisors.drain(..) {
            let _ = supervisor.join();
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            self.kill_all();
        }
        // Then `_redis` drops: its server (if the deployment started one) stops.
    }
}
