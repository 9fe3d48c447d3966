//! `cargo bench -p modkit-benches --bench faults [-- --quick] [--cycles N] [--only KIND]`
//!
//! Faults injected for real into service processes, and what callers see.
//!
//! **Fault handling** (`mod_resilience::faults`): each injection starts a
//! fresh deployment through the library deployer under host agents (three
//! replicas of a service on host `h1`; for `host_loss`, one replica on `h1`
//! and a spare on `h2`), a fault monitor with the default rules
//! (`bench.Work` migratable) and a client calling an idempotent method every
//! 2 ms (500 ms deadline), then injects one fault:
//!
//! - `service_kill`: `kill -9` of a replica; recovered = Up again on a new address;
//! - `service_hang`: `SIGSTOP` of a replica; recovered = the monitor's
//!   `instance_recovered` (restarted by its agent, cordon lifted);
//! - `network_cut`: the replica's advertised address is a TCP proxy that goes
//!   silent (its agent still reaches it); healed at detection, recovered =
//!   `instance_recovered`;
//! - `host_loss`: host `h1`'s agent and its replica die together; migrated =
//!   the replica started on `h2` is Up.
//!
//! ```text
//! fault service_kill injected=N classified_ok=M detect_p50_ms=… detect_p99_ms=… recovered_p50_ms=… recovered_p99_ms=… failed_calls=K failed_calls_before_detect=J
//! fault host_loss injected=N classified_ok=M detect_p50_ms=… detect_p99_ms=… migrated_p50_ms=… migrated_p99_ms=… failed_calls=K failed_calls_before_detect=J
//! ```
//!
//! `classified_ok`: injections whose first fault alert named the injected
//! kind; `detect`: injection → that alert (the cordon is in the same step);
//! `failed_calls`: client calls started more than 200 ms after the detection
//! that failed (during cordon, repair and migration); `…_before_detect`:
//! the ones before (a frozen replica costs its callers their deadline until
//! it is ejected or cordoned). A time that never came is `inf`.
//!
//! **Outlier ejection** (`[invoke.outlier]`) against the behaviour without it
//! (`consecutive_failures = 0`), in the same run: each cycle starts two
//! replica processes (this binary, re-executed in replica role) on one
//! `redis-server`, runs 8 callers of a non-idempotent method through each of
//! two client nodes (ejection on, and off), injects the fault into one
//! replica and keeps calling for 3 s (`kill`: `kill -9`; `hang`: `SIGSTOP`).
//! Calls have a 250 ms deadline; the registry lease is the default 10 s, so
//! without ejection a frozen replica is chosen until its lease runs out.
//!
//! ```text
//! fault outlier kind=kill replicas=2 cycles=N failed_calls_after_fault=… last_failure_p99_ms=… baseline_failed_calls_after_fault=… baseline_last_failure_p99_ms=…
//! ```
//!
//! `failed_calls_after_fault`: calls that failed from the fault on, summed
//! over the cycles; `last_failure_p99_ms`: per cycle, the time from the fault
//! to the last failed call (0 when none failed), p99 over the cycles.
//! `baseline_…`: the same with ejection off.
//!
//! `--quick`: 3 injections or cycles each (about 2 minutes); default 20.
//! `--only service_kill|service_hang|network_cut|host_loss|outlier`.

mod handling;
#[path = "../node_config.rs"]
mod node_config;
mod outlier;

use std::sync::Arc;
use std::time::Duration;

use modkit::distribute::{Distributed, RedisServer};
use modkit::{async_trait, Backend, Config, Error};

const ROLE: &str = "MODKIT_BENCH_FAULTS_REPLICA";
const CALLERS: usize = 8;
const DEADLINE: Duration = Duration::from_millis(250);
const AFTER_FAULT: Duration = Duration::from_secs(3);

/// The service the replicas serve.
#[modkit::service(name = "bench.Work")]
pub trait Work {
    /// Echoes `seq`; not idempotent, so a call that was sent is never retried.
    async fn work(&self, seq: u64) -> Result<u64, Error>;
    /// Echoes `seq`; idempotent (retried on another replica when it may be).
    #[idempotent]
    async fn who(&self, seq: u64) -> Result<u64, Error>;
}

/// The replicas' implementation of [`Work`].
pub struct Worker;

#[async_trait]
impl Work for Worker {
    async fn work(&self, seq: u64) -> Result<u64, Error> {
        Ok(seq)
    }
    async fn who(&self, seq: u64) -> Result<u64, Error> {
        Ok(seq)
    }
}

fn config(url: &str, prefix: &str, node: &str, host: &[&str]) -> Config {
    let mut config = node_config::node_config(url, prefix, node, host);
    config.invoke.timeout = DEADLINE;
    config
}

/// The replica role: serves [`Work`] until killed or its stdin closes.
async fn replica(spec: String) -> modkit::Result<()> {
    let (node, rest) = spec.split_once('@').expect("node@prefix@url");
    let (prefix, url) = rest.split_once('@').expect("node@prefix@url");
    let app = Distributed::start(config(url, prefix, node, &["bench.Work"])).await?;
    app.container()
        .provide::<dyn Work>(Arc::new(Worker))
        .await?;
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await
    .ok();
    app.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// The `p` quantile (0..=1) of `values` (nearest rank); 0 for none.
fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((p * (values.len().max(1) - 1) as f64).round()) as usize;
    values.get(rank).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> modkit::Result<()> {
    if let Ok(spec) = std::env::var(ROLE) {
        return replica(spec).await;
    }
    if modkit::distribute::deploy::role().is_some() {
        return handling::serve().await;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let cycles = match args.iter().position(|a| a == "--cycles") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::config("--cycles needs a number"))?,
        None if args.iter().any(|a| a == "--quick") => 3,
        None => 20,
    };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let redis = RedisServer::start()?;
    let kinds = ["service_kill", "service_hang", "network_cut", "host_loss"];
    for kind in kinds
        .iter()
        .filter(|k| only.as_deref().is_none_or(|o| o == **k))
    {
        let mut seen = Vec::new();
        for n in 0..cycles {
            let prefix = format!("faults-{}-{kind}-{n}", std::process::id());
            seen.push(handling::inject(&redis.url(), &prefix, kind).await);
        }
        let times = |f: fn(&handling::Outcome) -> Option<f64>| -> Vec<f64> {
            seen.iter().map(|o| f(o).unwrap_or(f64::INFINITY)).collect()
        };
        let recovered = match *kind {
            "host_loss" => "migrated",
            _ => "recovered",
        };
        println!(
            "fault {kind} injected={cycles} classified_ok={} detect_p50_ms={:.0} detect_p99_ms={:.0} \
             {recovered}_p50_ms={:.0} {recovered}_p99_ms={:.0} failed_calls={} failed_calls_before_detect={}",
            seen.iter().filter(|o| o.classified_ok).count(),
            percentile(times(|o| o.detect_ms), 0.5),
            percentile(times(|o| o.detect_ms), 0.99),
            percentile(times(|o| o.recovered_ms), 0.5),
            percentile(times(|o| o.recovered_ms), 0.99),
            seen.iter().map(|o| o.failed_after).sum::<usize>(),
            seen.iter().map(|o| o.failed - o.failed_after).sum::<usize>(),
        );
    }
    for kind in ["kill", "hang"] {
        if only.as_deref().is_some_and(|o| o != "outlier") {
            break;
        }
        let (mut failed, mut last) = ([0, 0], [Vec::new(), Vec::new()]);
        for n in 0..cycles {
            let (with, without) = outlier::cycle(&redis.url(), kind, n).await?;
            for (i, seen) in [with, without].into_iter().enumerate() {
                failed[i] += seen.failed;
                last[i].push(seen.last_failure_ms);
            }
        }
        let [last_on, last_off] = last;
        println!(
            "fault outlier kind={kind} replicas=2 cycles={cycles} failed_calls_after_fault={} \
             last_failure_p99_ms={:.1} baseline_failed_calls_after_fault={} baseline_last_failure_p99_ms={:.1}",
            failed[0],
            percentile(last_on, 0.99),
            failed[1],
            percentile(last_off, 0.99),
        );
    }
    Ok(())
}
