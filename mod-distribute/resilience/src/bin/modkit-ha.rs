//! `modkit-ha`: the resilience layer's processes.
//!
//! ```text
//! modkit-ha controller --config ha.toml      # one voter ([ha] section)
//! modkit-ha proxy --listen 127.0.0.1:6380 --controllers h1:7070,h2:7070
//! modkit-ha agent --node 127.0.0.1:7001 --controllers h1:7070,h2:7070 -- redis-server --port 7001
//! modkit-ha switchover --admin h1:7071,h2:7071 [--to 10.0.0.2:6379]
//! modkit-ha status --admin h1:7071,h2:7071
//! ```
//!
//! `agent` runs the `redis-server` command after `--` and restarts it,
//! when it dies, only as a replica of the committed primary.
//!
//! Logs go to stderr (`RUST_LOG` filters them, default `info`).

use mod_api::{Config, Result};
use mod_resilience::{Controller, HaConfig, NodeAgent, Proxy};

const USAGE: &str = "usage: modkit-ha controller --config <file.toml>\n       \
    modkit-ha proxy --listen <host:port> --controllers <host:port,...>\n       \
    modkit-ha agent --node <host:port> --controllers <host:port,...> -- <redis-server command>\n       \
    modkit-ha switchover --admin <host:port,...> [--to <host:port>]\n       \
    modkit-ha status --admin <host:port,...>";

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args).await {
        eprintln!("modkit-ha: {e}\n{USAGE}");
        std::process::exit(2);
    }
}

/// The value after `--name`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

async fn run(args: &[String]) -> Result<()> {
    let missing = |what: &str| mod_api::Error::config(format!("missing {what}"));
    match args.first().map(String::as_str) {
        Some("controller") => {
            let path = flag(args, "--config").ok_or_else(|| missing("--config"))?;
            let config = Config::load(Some(std::path::Path::new(path)))?;
            let ha: HaConfig = config.section()?;
            let consensus = mod_resilience::consensus_for(&ha).await?;
            let controller = Controller::start(ha, consensus).await?;
            tracing::info!(subscriptions = %controller.local_addr(), "controller running; Ctrl-C stops it");
            shutdown().await;
            Ok(())
        }
        Some("proxy") => {
            let listen = flag(args, "--listen").ok_or_else(|| missing("--listen"))?;
            let follower = mod_distribute::topology::Follower::subscribe(
                &controllers(args)?,
                std::time::Duration::from_secs(10),
            )
            .await?;
            let _proxy = Proxy::start(listen, follower).await?;
            shutdown().await;
            Ok(())
        }
        Some("agent") => {
            let node = flag(args, "--node").ok_or_else(|| missing("--node"))?;
            let command: Vec<String> = args
                .iter()
                .position(|a| a == "--")
                .map(|i| args[i + 1..].to_vec())
                .unwrap_or_default();
            let _agent = NodeAgent::start(node, command, controllers(args)?)?;
            shutdown().await;
            Ok(())
        }
        Some("status") => {
            for admin in list(args, "--admin")? {
                match mod_resilience::admin::status(&admin).await {
                    Ok((voter, leading, t)) => println!(
                        "{admin}: voter {voter}{} epoch {} primary {} replicas {:?} fenced {:?}",
                        if leading { " (leader)" } else { "" },
                        t.epoch,
                        t.primary.unwrap_or_default(),
                        t.replicas,
                        t.fenced
                    ),
                    Err(e) => println!("{admin}: {e}"),
                }
            }
            Ok(())
        }
        Some("switchover") => {
            let admins = list(args, "--admin")?;
            let to = flag(args, "--to").map(str::to_owned);
            let request = mod_resilience::admin::Request::Switchover { to };
            let topology = mod_resilience::admin::send(&admins, &request).await?;
            println!(
                "switched over: epoch {} primary {}",
                topology.epoch,
                topology.primary.unwrap_or_default()
            );
            Ok(())
        }
        _ => Err(mod_api::Error::config("no command")),
    }
}

/// The comma-separated addresses after `name`.
fn list(args: &[String], name: &str) -> Result<Vec<String>> {
    Ok(flag(args, name)
        .ok_or_else(|| mod_api::Error::config(format!("missing {name}")))?
        .split(',')
        .map(str::to_owned)
        .collect())
}

/// The addresses `--controllers` names.
fn controllers(args: &[String]) -> Result<Vec<String>> {
    list(args, "--controllers")
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stopping");
}
