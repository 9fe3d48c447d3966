//! The distributed shop's metrics (feature `prometheus`): the deployment's
//! first process serves them, and after the scenario the launcher reads that
//! process's `/metrics` (through `scrape`).

use modkit::distribute::deploy::{DeploymentFile, Launcher};
use modkit::{Error, Result};

use crate::scrape::{get, value};

/// Gives the first replica of the deployment's first process
/// `MODKIT_METRICS_LISTEN` with a free loopback port (a race with another
/// program taking it is harmless here); that node and address.
pub fn metrics_on_first(
    launcher: Launcher,
    file: &DeploymentFile,
) -> Result<(Launcher, Option<(String, String)>)> {
    let Some(first) = file.process.first() else {
        return Ok((launcher, None));
    };
    let node = format!("{}-0", first.name);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (serving, listen) = (node.clone(), addr.clone());
    let launcher = launcher.replica_env(move |role| match role.node == serving {
        true => vec![("MODKIT_METRICS_LISTEN".into(), listen.clone())],
        false => Vec::new(),
    });
    Ok((launcher, Some((node, addr))))
}

/// Reads the `/metrics` of the process that serves them after the scenario:
/// its services' per-method call counters and latency histograms must be
/// there. Reports on stderr (the transcript on stdout is the same with and
/// without metrics).
pub async fn check_metrics(node: &str, addr: &str) -> Result<()> {
    let text = get(addr, "/metrics").await?;
    let server = |service, method| [("service", service), ("method", method), ("side", "server")];
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
