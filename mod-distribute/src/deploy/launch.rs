//! Launching a deployment: the [`Launcher`] builder, the environment of
//! each replica, the choice of Redis.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use mod_api::{Config, Error, Result};
use tokio::sync::broadcast;

use super::file::{self, DeploymentFile, ProcessSpec};
use super::logs::Sink;
use super::supervise::{Backoff, Recipe};
use super::{Deployment, Role, HOST_ENV, PROCESS_ENV, REPLICA_ENV};
use crate::{RedisConfig, RedisServer};

/// The hook of [`Launcher::replica_env`].
type ReplicaEnv = Box<dyn FnMut(&Role) -> Vec<(String, String)>>;

/// Builds a [`Deployment`] with other than the defaults of
/// [`Deployment::launch`]: another program, arguments, a log sink, extra
/// environment per replica, restart delays, one host's share of the file.
pub struct Launcher {
    file: DeploymentFile,
    host: Option<String>,
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
            .field("host", &self.host)
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
            host: None,
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

    /// Launches only the processes whose `host` is `label` (default: every
    /// process): the share of one host agent, the others' run under the
    /// agents of their hosts. The whole file stays known to the deployment:
    /// [`Deployment::start_replica`] may start any of its processes here (a
    /// migration), and every replica of this deployment gets `label` as its
    /// `MODKIT_DEPLOY_HOST`. A label no process names launches nothing (a
    /// spare host, a migration target).
    pub fn host(mut self, label: impl Into<String>) -> Launcher {
        self.host = Some(label.into());
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
        let (events, _) = broadcast::channel(256);
        let template = Template {
            file: self.file,
            host: self.host,
            program,
            args: self.args,
            redis_url: redis_config.url,
            redis_prefix: redis_config.prefix,
            sink: self.sink.unwrap_or_else(Sink::stderr),
            backoff: self.backoff,
        };
        let deployment = Deployment {
            slots: Default::default(),
            supervisors: Default::default(),
            template,
            events,
            stopped: false,
            _redis: redis,
        };
        let template = &deployment.template;
        for spec in template.local_processes() {
            for replica in 0..spec.replicas {
                let role = template.role(spec, replica, file::node_id(&spec.name, replica));
                let extra = match self.replica_env.as_mut() {
                    Some(hook) => hook(&role),
                    None => Vec::new(),
                };
                // On an error, dropping `deployment` kills what started so far.
                deployment.add_replica(template.recipe(spec, role, extra))?;
            }
        }
        tracing::info!(
            processes = deployment.processes().len(),
            host = template.host.as_deref().unwrap_or("(every host)"),
            redis = %crate::redis::redact(&template.redis_url),
            prefix = %template.redis_prefix,
            "deployment launched"
        );
        Ok(deployment)
    }
}

/// What starting a replica of the deployment takes, at launch and later
/// ([`Deployment::start_replica`]).
pub(super) struct Template {
    /// The whole file (its processes may be started here later).
    pub(super) file: DeploymentFile,
    /// [`Launcher::host`]: the label of this deployment's host.
    pub(super) host: Option<String>,
    pub(super) program: PathBuf,
    pub(super) args: Vec<OsString>,
    pub(super) redis_url: String,
    pub(super) redis_prefix: String,
    pub(super) sink: Sink,
    pub(super) backoff: Backoff,
}

impl Template {
    /// The processes launched here: those of this host, or all.
    pub(super) fn local_processes(&self) -> impl Iterator<Item = &ProcessSpec> {
        let host = self.host.as_deref();
        self.file
            .process
            .iter()
            .filter(move |p| host.is_none_or(|h| p.host == h))
    }

    /// The role of replica `replica` (node `node`) of `spec`, on this host.
    pub(super) fn role(&self, spec: &ProcessSpec, replica: usize, node: String) -> Role {
        Role {
            process: spec.name.clone(),
            replica,
            node,
            host: self.host.clone().unwrap_or_else(|| spec.host.clone()),
            services: spec.services.clone(),
        }
    }

    /// How `role` of `spec` is started: the deployer's variables, then the
    /// process's `env`, then `extra`.
    pub(super) fn recipe(
        &self,
        spec: &ProcessSpec,
        role: Role,
        extra: Vec<(String, String)>,
    ) -> Recipe {
        let mut env: Vec<(String, String)> = vec![
            (PROCESS_ENV.into(), role.process.clone()),
            (REPLICA_ENV.into(), role.replica.to_string()),
            (HOST_ENV.into(), role.host.clone()),
            ("MODKIT_NODE_ID".into(), role.node.clone()),
            ("MODKIT_MODE".into(), "distribute".into()),
            ("MODKIT_HOST".into(), role.services.join(",")),
            ("MODKIT_REDIS_URL".into(), self.redis_url.clone()),
            ("MODKIT_REDIS_PREFIX".into(), self.redis_prefix.clone()),
        ];
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(extra);
        Recipe {
            role,
            restart: spec.restart,
            program: self.program.clone(),
            args: self.args.clone(),
            env,
        }
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
