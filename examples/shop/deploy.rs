//! The launcher of the distributed shop: reads the deployment file, starts a
//! `redis-server` (unless `MODKIT_REDIS_URL` names one), and starts the OS
//! processes it lists — this same binary, in `serve` role, each told by
//! `MODKIT_HOST` which services to host. Service-Weaver-style, one binary.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use modkit::distribute::{RedisConfig, RedisServer};
use modkit::prelude::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployFile {
    process: Vec<ProcessSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessSpec {
    name: String,
    services: Vec<String>,
    #[serde(default = "one")]
    replicas: usize,
}

fn one() -> usize {
    1
}

/// Whether this run is on the distributed package.
pub fn wanted(config: &Config) -> bool {
    modkit::BackendKind::of(config).is_ok_and(|kind| kind == modkit::BackendKind::Distribute)
}

/// The running processes of a deployment (and its Redis, when it started one).
pub struct Deployment {
    children: Vec<(String, Child)>,
    replicas: BTreeMap<String, usize>,
    /// With feature `prometheus`: the first process's node and metrics address.
    metrics: Option<(String, String)>,
    _redis: Option<RedisServer>,
}

impl Deployment {
    /// Starts Redis if needed and every process of the deployment file; points
    /// `config` at the same Redis, hosting no service itself.
    pub fn launch(config: &mut Config) -> Result<Deployment> {
        let path = std::env::var("MODKIT_SHOP_DEPLOY").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/shop/deploy.toml").into()
        });
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::config(format!("cannot read deployment file {path}")).with_source(e)
        })?;
        let file: DeployFile = toml::from_str(&text)
            .map_err(|e| Error::config(format!("invalid deployment file {path}: {e}")))?;

        let redis = match std::env::var("MODKIT_REDIS_URL") {
            Ok(_) => None,
            Err(_) => {
                let server = RedisServer::start()?;
                config.edit_section(|r: &mut RedisConfig| r.url = server.url())?;
                Some(server)
            }
        };
        if std::env::var("MODKIT_REDIS_PREFIX").is_err() {
            // A fresh namespace per run, so runs against a shared Redis never mix.
            let prefix = format!("shop-{}", std::process::id());
            config.edit_section(|r: &mut RedisConfig| r.prefix = prefix)?;
        }
        // What the processes connect to: the section with the environment's overrides.
        let redis_config: RedisConfig = config.section()?;
        config.invoke.host = Some(Vec::new());

        let exe = std::env::current_exe()?;
        let mut children = Vec::new();
        let mut replicas = BTreeMap::new();
        let mut metrics = None;
        for spec in &file.process {
            for service in &spec.services {
                *replicas.entry(service.clone()).or_insert(0) += spec.replicas;
            }
            for i in 0..spec.replicas {
                let node = format!("{}-{i}", spec.name);
                let mut command = Command::new(&exe);
                if cfg!(feature = "prometheus") && metrics.is_none() {
                    // The first process serves its metrics (a free port now;
                    // a race with another program taking it is harmless here).
                    let port = std::net::TcpListener::bind("127.0.0.1:0")?
                        .local_addr()?
                        .port();
                    let addr = format!("127.0.0.1:{port}");
                    command.env("MODKIT_METRICS_LISTEN", &addr);
                    metrics = Some((node.clone(), addr));
                }
                let child = command
                    .env("MODKIT_SHOP_ROLE", "serve")
                    .env("MODKIT_MODE", "distribute")
                    .env("MODKIT_HOST", spec.services.join(","))
                    .env("MODKIT_NODE_ID", &node)
                    .env("MODKIT_REDIS_URL", &redis_config.url)
                    .env("MODKIT_REDIS_PREFIX", &redis_config.prefix)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()?;
                eprintln!(
                    "shop: started process {node} (pid {}) hosting {:?}",
                    child.id(),
                    spec.services
                );
                children.push((node, child));
            }
        }
        Ok(Deployment {
            children,
            replicas,
            metrics,
            _redis: redis,
        })
    }

    /// Waits until every service has all its replicas registered and `Up`.
    pub async fn wait_ready(&self, app: &App) -> Result<()> {
        let registry = app.registry();
        let deadline = Instant::now() + Duration::from_secs(30);
        for (service, want) in &self.replicas {
            loop {
                let up = registry
                    .lookup(service)
                    .await?
                    .iter()
                    .filter(|i| i.status == Status::Up)
                    .count();
                if up >= *want {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::timeout(format!(
                        "{service}: {up} of {want} replicas up after 30 s"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Reads the `/metrics` of the process that serves them (feature
    /// `prometheus`) after the scenario: its services' per-method call
    /// counters and latency histograms must be there. Reports on stderr (the
    /// transcript on stdout is the same with and without metrics).
    #[cfg(feature = "prometheus")]
    pub async fn check_metrics(&self) -> Result<()> {
        use crate::scrape::{get, value};
        let Some((node, addr)) = &self.metrics else {
            return Ok(());
        };
        let text = get(addr, "/metrics").await?;
        let server =
            |service, method| [("service", service), ("method", method), ("side", "server")];
        let calls = |service, method| value(&text, "modkit_calls_total", &server(service, method));
        let list = calls("shop.Catalog", "list").unwrap_or(0.0);
        let logins = calls("shop.Auth", "login").unwrap_or(0.0);
        let refused = [
            server("shop.Auth", "login").as_slice(),
            &[("kind", "application")],
        ]
        .concat();
        let refused = value(&text, "modkit_call_errors_total", &refused).unwrap_or(0.0);
        let latency = [server("shop.Auth", "login").as_slice(), &[("le", "+Inf")]].concat();
        let timed = value(&text, "modkit_call_seconds_bucket", &latency).unwrap_or(0.0);
        if list < 1.0 || logins < 2.0 || refused < 1.0 || timed != logins {
            return Err(Error::internal(format!(
                "{node}'s /metrics lacks the scenario's calls (Catalog.list {list}, Auth.login {logins}, \
                 refused {refused}, timed {timed}):\n{text}"
            )));
        }
        let methods = text
            .lines()
            .filter(|l| l.starts_with("modkit_calls_total{") && l.contains("side=\"server\""))
            .count();
        eprintln!(
            "shop: metrics of {node} at http://{addr}/metrics: {methods} server methods counted, \
             Auth.login {logins} calls ({refused} refused), latency histograms present"
        );
        Ok(())
    }

    /// Closes every process's standard input (its signal to shut down
    /// gracefully), waits up to 10 s, then kills what is left.
    pub fn stop(mut self) {
        for (_, child) in &mut self.children {
            drop(child.stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (node, child) in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        eprintln!("shop: process {node} did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // On an early error: never leave processes behind.
        for (_, child) in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
