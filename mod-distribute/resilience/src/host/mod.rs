//! The host agent: the part of the deployer that stays running on a host.
//!
//! A [`HostAgent`] owns the [`Deployment`] of its host (the deployment
//! file's processes whose `host` is its label:
//! [`Launcher::host`](mod_distribute::deploy::Launcher::host)), whose
//! supervisors restart a crashed replica by its restart policy, and does two
//! things more, through the deployment's Redis (under its key prefix):
//!
//! - **It reports.** Every [`report_every`](HostAgentConfig::report_every)
//!   it writes a [`HostReport`] (JSON) to [`report_key`]
//!   `<prefix>:hosts:<host>` with `SET … PX <3 × report_every>`: the host's
//!   load, memory and free disk, and per replica its pid, its state from
//!   `/proc/<pid>/stat` (running, stopped by SIGSTOP, zombie, gone), its CPU
//!   time and resident memory, its restart count, and the agent's own health
//!   probe of it ([`probe`](mod_distribute::rpc::probe) on the address it
//!   listens on, from its registry instance's `listen` metadata, else its
//!   advertised address) — all replicas probed at once,
//!   each within [`probe_timeout`](HostAgentConfig::probe_timeout), so a
//!   frozen replica shows as a timeout without delaying the report. A write
//!   that does not finish within a period is given up with a WARN; the next
//!   period tries again. A silent agent's report expires after three periods.
//! - **It takes instructions.** It `BLPOP`s JSON
//!   [`Instruction`](crate::faults::report::Instruction)s from [`inbox_key`]
//!   `<prefix>:hosts:<host>:inbox` (on a connection of its own) and carries
//!   them out one at a time: `restart` kills the replica and starts it again
//!   at once ([`Deployment::restart`]), `stop` stops it for good
//!   ([`Deployment::stop_replica`], SIGTERM then SIGKILL after
//!   [`stop_grace`](HostAgentConfig::stop_grace)), `start` starts a new
//!   replica of a process of the file here ([`Deployment::start_replica`]).
//!   Each gets an [`ActionResult`](crate::faults::report::ActionResult) (ok,
//!   what happened, how long it took) in the following reports (the last
//!   [`KEPT_ACTIONS`]) and an INFO event. An entry that is not an
//!   instruction is skipped with a WARN.
//!
//! The fault monitor reads the reports to tell a host fault (the report
//! expired: agent and processes gone or cut off) from a network fault (the
//! report says running and probed fine locally, observers cannot reach it)
//! from a service fault (the process is gone, stopped, or its local probe
//! times out or fails), and repairs and migrates by pushing instructions
//! (`RPUSH <inbox> <json>`), reading their outcome from the next reports.
//!
//! ```no_run
//! # async fn run(redis: mod_distribute::Redis, registry: std::sync::Arc<dyn mod_api::Registry>) -> mod_api::Result<()> {
//! use std::time::Duration;
//! use mod_distribute::deploy::{DeploymentFile, Launcher};
//! use mod_resilience::host::{HostAgent, HostAgentConfig};
//!
//! let file = DeploymentFile::load("deploy.toml")?;
//! let mut config = mod_api::Config::load(None)?;
//! let deployment = Launcher::new(&file).host("box-a").launch(&mut config)?;
//! let agent = HostAgent::start(HostAgentConfig::new("box-a"), deployment, redis, registry);
//! // … until told to stop:
//! agent.stop(Duration::from_secs(10)).await;
//! # Ok(())
//! # }
//! ```

mod inbox;
pub mod procfs;
mod reporter;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mod_api::Registry;
use mod_distribute::deploy::Deployment;
use mod_distribute::rpc::RpcConnections;
use mod_distribute::{Redis, RpcConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use inbox::KEPT_ACTIONS;

use crate::faults::report::{inbox_key, report_key, HostReport};
use inbox::{Actions, Inbox};
use reporter::Reporter;

/// How a [`HostAgent`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct HostAgentConfig {
    /// The host's label: the deployment file's `host` of its processes, and
    /// the last part of its report and inbox keys.
    pub host: String,
    /// How often it writes its report (default 250 ms); the report lives
    /// three times as long.
    pub report_every: Duration,
    /// How long its health probe of one replica may take (default 200 ms).
    pub probe_timeout: Duration,
    /// How long a `stop` instruction waits after SIGTERM before SIGKILL
    /// (default 5 s).
    pub stop_grace: Duration,
    /// How its probes connect (secret, TLS): the replicas' `[rpc]` section
    /// (default [`RpcConfig::default`]).
    pub rpc: RpcConfig,
}

impl HostAgentConfig {
    /// The defaults, for host `host`.
    pub fn new(host: impl Into<String>) -> Self {
        HostAgentConfig {
            host: host.into(),
            report_every: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(200),
            stop_grace: Duration::from_secs(5),
            rpc: RpcConfig::default(),
        }
    }
}

impl Default for HostAgentConfig {
    /// The defaults, for host `local` (the deployment file's default label).
    fn default() -> Self {
        HostAgentConfig::new("local")
    }
}

/// A running host agent: see the [module docs](self).
///
/// Stop it with [`stop`](HostAgent::stop) (its replicas get SIGTERM and a
/// grace period); dropping it stops its loops and kills its replicas at
/// once.
pub struct HostAgent {
    host: String,
    report_key: String,
    inbox_key: String,
    deployment: Option<Arc<Deployment>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    latest: Arc<Mutex<Option<HostReport>>>,
}

impl std::fmt::Debug for HostAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAgent")
            .field("host", &self.host)
            .field("report_key", &self.report_key)
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

impl HostAgent {
    /// Starts the agent of host `config.host` over `deployment` (launched
    /// for that host), reporting to and taking instructions from `redis`
    /// (the deployment's Redis and prefix), finding its replicas' addresses
    /// in `registry`. Must be called within a Tokio runtime.
    pub fn start(
        config: HostAgentConfig,
        deployment: Deployment,
        redis: Redis,
        registry: Arc<dyn Registry>,
    ) -> HostAgent {
        let deployment = Arc::new(deployment);
        let report_key = report_key(redis.prefix(), &config.host);
        let inbox_key = inbox_key(redis.prefix(), &config.host);
        let (stop, stopped) = watch::channel(false);
        let actions = Arc::new(Actions::default());
        let latest = Arc::new(Mutex::new(None));
        let reporter = Reporter {
            host: config.host.clone(),
            key: report_key.clone(),
            every: config.report_every.max(Duration::from_millis(10)),
            probe_timeout: config.probe_timeout,
            redis: redis.clone(),
            registry,
            pool: RpcConnections::new(config.rpc.clone()),
            deployment: Arc::downgrade(&deployment),
            actions: actions.clone(),
            latest: latest.clone(),
            addresses: HashMap::new(),
            page_size: procfs::page_size(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            failures: 0,
        };
        let inbox = Inbox {
            host: config.host.clone(),
            key: inbox_key.clone(),
            redis,
            deployment: Arc::downgrade(&deployment),
            actions,
            stop_grace: config.stop_grace,
        };
        let tasks = vec![
            tokio::spawn(reporter.run(stopped.clone())),
            tokio::spawn(inbox.run(stopped)),
        ];
        tracing::info!(host = %config.host, report = %report_key, inbox = %inbox_key,
            replicas = deployment.processes().len(), every_ms = config.report_every.as_millis() as u64,
            "host agent started");
        HostAgent {
            host: config.host,
            report_key,
            inbox_key,
            deployment: Some(deployment),
            stop,
            tasks,
            latest,
        }
    }

    /// The host's label.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The Redis key of its reports.
    pub fn report_key(&self) -> &str {
        &self.report_key
    }

    /// The Redis key of its inbox.
    pub fn inbox_key(&self) -> &str {
        &self.inbox_key
    }

    /// The deployment it supervises.
    pub fn deployment(&self) -> &Deployment {
        self.deployment
            .as_deref()
            .expect("a running agent has its deployment")
    }

    /// The last report it wrote to Redis (`None` before the first).
    pub fn latest(&self) -> Option<HostReport> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the agent: no more reports (the last one expires after three
    /// periods) or instructions (one being carried out finishes first),
    /// then stops the deployment gracefully ([`Deployment::stop`] with
    /// `grace`).
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        if let Some(deployment) = self.deployment.take() {
            match Arc::try_unwrap(deployment) {
                Ok(deployment) => deployment.stop(grace).await,
                // Only a task that did not end holds it: dropping kills.
                Err(deployment) => drop(deployment),
            }
        }
        tracing::info!(host = %self.host, "host agent stopped");
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
        // Then `deployment` drops: its replicas are killed.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = HostAgentConfig::default();
        assert_eq!(config.host, "local");
        assert_eq!(config.report_every, Duration::from_millis(250));
        assert_eq!(config.probe_timeout, Duration::from_millis(200));
        assert_eq!(HostAgentConfig::new("box-b").host, "box-b");
    }
}
