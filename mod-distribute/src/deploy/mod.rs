//! The deployer: runs the processes of a deployment file, with one command.
//!
//! An application is one binary. Started by hand it is the **launcher**: it
//! reads a [`DeploymentFile`], calls [`Deployment::launch`], and the deployer
//! starts the binary again once per replica of every `[[process]]`, each copy
//! in a **serving role** told by its environment which services to host.
//! [`role`] tells `main` which of the two it is:
//!
//! ```no_run
//! use std::time::Duration;
//! use mod_api::{Config, Result};
//! use mod_distribute::deploy::{self, Deployment, DeploymentFile};
//!
//! # async fn serve(_: Config) -> Result<()> { Ok(()) }
//! # async fn play(_: &Config) -> Result<()> { Ok(()) }
//! # async fn example() -> Result<()> {
//! let mut config = Config::load(None)?;
//! if deploy::role().is_some() {
//!     // A serving role: start, provide every service, serve until SIGTERM
//!     // (with the facade: `App::start`, `provide`, `app.serve_until_signal()`).
//!     return serve(config).await;
//! }
//! let file = DeploymentFile::load("deploy.toml")?;
//! let deployment = Deployment::launch(&mut config, &file)?;
//! // `config` now reaches the deployment's Redis and hosts nothing:
//! // start a caller on it, `deployment.wait_ready(..)`, do the work, or just
//! deployment.run_until_signal(Duration::from_secs(10)).await
//! # }
//! ```
//!
//! # The deployment file
//!
//! ```toml
//! [[process]]
//! name = "front"
//! services = ["shop.Catalog", "shop.Auth"]
//!
//! [[process]]
//! name = "orders"
//! services = ["shop.Orders"]
//! replicas = 2              # nodes orders-0 and orders-1 (default 1)
//! restart = "always"        # "on-failure" (default), "always", "never"
//! host = "local"            # a label for now (see below)
//!
//! [process.env]             # this process's own configuration
//! MODKIT_INVOKE_TIMEOUT = "2s"
//! RUST_LOG = "info"
//! ```
//!
//! [`DeploymentFile`] has the fields; a bad file (an unknown field, zero
//! replicas, no services, a repeated name) is a
//! [`Config`](mod_api::ErrorKind::Config) error naming the file and the field.
//!
//! # What a replica gets
//!
//! The launcher's environment (so `MODKIT_CONFIG`, `RUST_LOG` and the rest
//! carry over; a fixed listen address there, such as `MODKIT_METRICS_LISTEN`
//! or `MODKIT_RPC_LISTEN`, would be every replica's: set those per process
//! or per replica instead), then:
//!
//! | variable | value |
//! |---|---|
//! | `MODKIT_DEPLOY_PROCESS` | the process's `name` ([`role`] reads it) |
//! | `MODKIT_DEPLOY_REPLICA` | the replica's index, from 0 |
//! | `MODKIT_DEPLOY_HOST` | the process's `host` label |
//! | `MODKIT_NODE_ID` | `<name>-<index>` |
//! | `MODKIT_MODE` | `distribute` |
//! | `MODKIT_HOST` | its `services`, comma-separated |
//! | `MODKIT_REDIS_URL`, `MODKIT_REDIS_PREFIX` | the deployment's Redis |
//!
//! then the process's `[process.env]`, then what a
//! [`Launcher::replica_env`] hook adds. Redis: the launcher's configuration
//! (`[redis] url`, `MODKIT_REDIS_URL`) if it names one, else a private
//! `redis-server` the deployer starts ([`RedisServer`](crate::RedisServer))
//! and stops with the deployment; the key prefix is `<prefix>-<launcher pid>`,
//! fresh per run, unless `MODKIT_REDIS_PREFIX` is set (or
//! [`Launcher::fresh_prefix`]`(false)`).
//!
//! The `host` label places a process: [`Launcher::host`] launches only the
//! processes of one host, the share of that host's agent
//! (`mod_resilience::host`); without it a deployment runs every process
//! here. Several agents on one machine stand for several hosts.
//!
//! # Acting on one replica
//!
//! [`Deployment::restart`] kills a replica and starts it again at once,
//! [`Deployment::stop_replica`] stops one for good (SIGTERM, then SIGKILL
//! after a grace period), [`Deployment::start_replica`] starts a new replica
//! of any process of the file here (a migration target): how a host agent
//! carries out the fault monitor's repairs and migrations.
//!
//! # Logs
//!
//! A replica's standard output and error are forwarded, line by line, to the
//! launcher's standard error (or [`Launcher::log_writer`]), each line
//! prefixed with `[<node>] `; a line longer than [`MAX_LINE_BYTES`] is cut.
//! The launcher's standard output stays its own.
//!
//! # Supervision
//!
//! A replica that exits while the deployment runs is started again per its
//! process's `restart` policy ([`Restart`]): after 100 ms, doubling up to
//! 5 s, back to 100 ms once it ran 10 s ([`Backoff`]). Every restart is a
//! `tracing` WARN naming the node, its exit status and the restart count, and
//! an [`Event`] ([`Deployment::events`]); [`Deployment::processes`] has the
//! counts. Replicas die with the launcher however it dies (on Linux the
//! kernel kills them when it does, SIGKILL included).
//!
//! # Stopping and signals
//!
//! [`Deployment::stop`] ends supervision first (nothing is restarted during
//! a stop), sends SIGTERM to every replica, waits up to a grace period and
//! kills what is left; dropping a [`Deployment`] kills its replicas at once.
//! [`Deployment::run_until_signal`] runs a deployment until the launcher gets
//! SIGINT or SIGTERM, then stops it so. On Linux each replica runs in a
//! process group of its own, so a Ctrl-C at the terminal reaches the
//! launcher alone and the replicas hear it from the launcher, as SIGTERM (or
//! die with it, if it does not handle the signal). A serving role ends on that
//! SIGTERM by deregistering its services and draining its calls
//! (`App::serve_until_signal` in the facade; [`shutdown_signal`] here).

mod control;
mod deployment;
mod file;
mod launch;
mod logs;
mod supervise;

use std::process::ExitStatus;
use std::time::Duration;

pub use deployment::{Deployment, ProcessInfo};
pub use file::{DeploymentFile, ProcessSpec, Restart};
pub use launch::Launcher;
pub use logs::MAX_LINE_BYTES;
pub use supervise::Backoff;

/// The environment variable that carries a replica's process name.
pub const PROCESS_ENV: &str = "MODKIT_DEPLOY_PROCESS";
/// The environment variable that carries a replica's index.
pub const REPLICA_ENV: &str = "MODKIT_DEPLOY_REPLICA";
/// The environment variable that carries the `host` label of a replica's process.
pub const HOST_ENV: &str = "MODKIT_DEPLOY_HOST";

/// Which replica of a deployment a process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The `[[process]]` name.
    pub process: String,
    /// The replica's index, from 0.
    pub replica: usize,
    /// Its node id, `<process>-<replica>`.
    pub node: String,
    /// The `host` label of its process.
    pub host: String,
    /// The services it hosts.
    pub services: Vec<String>,
}

/// This process's role when the deployer started it; `None` in a process
/// started otherwise (the launcher, a standalone run).
///
/// Read from the environment the deployer sets (`MODKIT_DEPLOY_PROCESS`,
/// `MODKIT_DEPLOY_REPLICA`, `MODKIT_NODE_ID`, `MODKIT_DEPLOY_HOST`,
/// `MODKIT_HOST`).
pub fn role() -> Option<Role> {
    let var = |key| std::env::var(key).ok();
    let process = var(PROCESS_ENV)?;
    let replica = var(REPLICA_ENV).and_then(|r| r.parse().ok()).unwrap_or(0);
    Some(Role {
        node: var("MODKIT_NODE_ID").unwrap_or_else(|| file::node_id(&process, replica)),
        host: var(HOST_ENV).unwrap_or_else(|| "local".into()),
        services: var("MODKIT_HOST")
            .map(|h| {
                let names = h.split(',').map(str::trim).filter(|s| !s.is_empty());
                names.map(String::from).collect()
            })
            .unwrap_or_default(),
        process,
        replica,
    })
}

/// What happened to a replica: see [`Deployment::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A replica's process exited while the deployment ran.
    Exited {
        /// Its node id.
        node: String,
        /// How it exited.
        status: ExitStatus,
        /// When it is started again; `None`: its policy leaves it stopped.
        restart_in: Option<Duration>,
    },
    /// A replica was started again, or a new one was started
    /// ([`Deployment::start_replica`]: `restarts` 0).
    Started {
        /// Its node id.
        node: String,
        /// Its new process id.
        pid: u32,
        /// How often it was started again so far.
        restarts: u32,
    },
}

/// Waits for SIGINT or SIGTERM (elsewhere than Unix: Ctrl-C) and returns the
/// signal's name: how a serving role or a launcher learns it should stop.
pub async fn shutdown_signal() -> mod_api::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}
