//! Launching a deployment: the [`Launcher`] builder, the environment of
//! each replica, the choice of Redis.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use mod_api::{Config, Error, Result};
use tokio::sync::broadcast;

use super::file::{self, DeploymentFile};
use super::logs::Sink;
use super::supervise::{self, Backoff, Recipe, Slot};
use super::{Deployment, Role, HOST_ENV, PROCESS_ENV, REPLICA_ENV};
use crate::{RedisConfig, RedisServer};

/// The hook of [`Launcher::replica_env`].
type ReplicaEnv = Box<dyn FnMut(&Role) -> Vec<(String, String)>>;

/// Builds a [`Deployment`] with other than the defaults of
/// [`Deployment::launch`]: another program, arguments, a log sink, extra
/// environment per replica, restart delays.
pub struct Launcher {
    file: DeploymentFile,
    program: Option<PathBuf>,
    args: Vec<OsString>,
    sink: Option<Sink>,
    replica_env: Option<ReplicaEnv>,
    backoff: Backoff,
    fresh_prefix: bool,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("file", &self.file)
            .field("program", &self.program)
            .field("args", &self.args)
            .field("backoff", &self.backoff)
            .field("fresh_prefix", &self.fresh_prefix)
            .finish_non_exhaustive()
    }
}

impl Launcher {
    /// A launcher of `file`'s processes, with the defaults.
    pub fn new(file: &DeploymentFile) -> Launcher {
        Launcher {
            file: file.clone(),
            program: None,
            args: Vec::new(),
            sink: None,
            replica_env: None,
            backoff: Backoff::default(),
            fresh_prefix: true,
        }
    }

    /// The binary every replica runs (default: this process's own,
    /// [`std::env::current_exe`]).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Launcher {
        self.program = Some(program.into());
        self
    }

    /// Arguments of every replica (default: none).
    pub fn args<I, S>(mut self, args: I) -> Launcher
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Where the replicas' prefixed output lines go (default: standard error).
    pub fn log_writer(mut self, writer: impl Write + Send + 'static) -> Launcher {
        self.sink = Some(Sink::new(Box::new(writer)));
        self
    }

    /// A hook that adds environment variables to one replica, called once
    /// per replica at launch (a restarted replica gets the same ones): for
    /// what differs between replicas, such as a listen address.
    pub fn replica_env(
        mut self,
        hook: impl FnMut(&Role) -> Vec<(String, String)> + 'static,
    ) -> Launcher {
        self.replica_env = Some(Box::new(hook));
        self
    }

    /// Restart delays (default [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Launcher {
        self.backoff = backoff;
        self
    }

    /// Whether the Redis key prefix gets the launcher's pid appended, so two
    /// runs against one Redis never share keys (default `true`; never when
    /// `MODKIT_REDIS_PREFIX` is set).
    pub fn fresh_prefix(mut self, fresh: bool) -> Launcher {
        self.fresh_prefix = fresh;
        self
    }

    /// Starts the deployment: see [`Deployment::launch`].
    pub fn launch(mut self, config: &mut Config) -> Result<Deployment> {
        let redis = if names_redis(config)? {
            None
        } else {
            let server = RedisServer::start()?;
            config.edit_section(|r: &mut RedisConfig| r.url = server.url())?;
            Some(server)
        };
        if self.fresh_prefix && std::env::var_os("MODKIT_REDIS_PREFIX").is_none() {
            let pid = std::process::id();
            config.edit_section(|r: &mut RedisConfig| r.prefix = format!("{}-{pid}", r.prefix))?;
        }
        // What the replicas connect to: the section with the environment's overrides.
        let redis_config: RedisConfig = config.section()?;
        config.invoke.host = Some(Vec::new());

        let program = match self.program.take() {
            Some(program) => program,
            None => std::env::current_exe().map_err(|e| {
                Error::unavailable("deployment: cannot find this program's binary").with_source(e)
            })?,
        };
        let sink = self.sink.take().unwrap_or_else(Sink::stderr);
        let (events, _) = broadcast::channel(256);
        let mut deployment = Deployment {
            slots: Vec::new(),
            supervisors: Vec::new(),
            services: self.file.services(),
            events,
            redis_url: redis_config.url.clone(),
            redis_prefix: redis_config.prefix.clone(),
            stopped: false,
            _redis: redis,
        };
        for spec in &self.file.process {
            for replica in 0..spec.replicas {
                let role = Role {
                    process: spec.name.clone(),
                    replica,
                    node: file::node_id(&spec.name, replica),
                    host: spec.host.clone(),
                    services: spec.services.clone(),
                };
                let mut env: Vec<(String, String)> = vec![
                    (PROCESS_ENV.into(), role.process.clone()),
                    (REPLICA_ENV.into(), replica.to_string()),
                    (HOST_ENV.into(), role.host.clone()),
                    ("MODKIT_NODE_ID".into(), role.node.clone()),
                    ("MODKIT_MODE".into(), "distribute".into()),
                    ("MODKIT_HOST".into(), role.services.join(",")),
                    ("MODKIT_REDIS_URL".into(), redis_config.url.clone()),
                    ("MODKIT_REDIS_PREFIX".into(), redis_config.prefix.clone()),
                ];
                env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                if let Some(hook) = self.replica_env.as_mut() {
                    env.extend(hook(&role));
                }
                let recipe = Recipe {
                    role,
                    restart: spec.restart,
                    program: program.clone(),
                    args: self.args.clone(),
                    env,
                };
                // On an error, dropping `deployment` kills what started so far.
                let child = recipe.spawn(&sink)?;
                let slot = Arc::new(Slot::new(recipe, child));
                deployment.slots.push(slot.clone());
                let supervisor = supervise::supervise(
                    slot,
                    self.backoff,
                    sink.clone(),
                    deployment.events.clone(),
                )
                .map_err(|e| {
                    Error::unavailable("deployment: cannot start a supervisor thread")
                        .with_source(e)
                })?;
                deployment.supervisors.push(supervisor);
            }
        }
        tracing::info!(
            processes = deployment.slots.len(),
            redis = %crate::redis::redact(&deployment.redis_url),
            prefix = %deployment.redis_prefix,
            "deployment launched"
        );
        Ok(deployment)
    }
}

/// Whether `config` names a Redis (`[redis] url` in the file or in code,
/// `MODKIT_REDIS_URL`): then the deployment uses it rather than its own.
fn names_redis(config: &Config) -> Result<bool> {
    if std::env::var_os("MODKIT_REDIS_URL").is_some() {
        return Ok(true);
    }
    if config.section::<RedisConfig>()?.url != RedisConfig::default().url {
        return Ok(true);
    }
    // Set, to the default URL.
    let sections = toml::Table::try_from(&config.sections)
        .map_err(|e| Error::config(format!("configuration sections: {e}")))?;
    Ok(sections.get("redis").and_then(|r| r.get("url")).is_some())
}
