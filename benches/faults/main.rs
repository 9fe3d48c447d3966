//! `cargo bench -p modkit-benches --bench faults [-- --quick] [--cycles N]`
//!
//! Faults injected for real into service processes, and what callers see.
//! Today it measures outlier ejection (`[invoke.outlier]`) against the
//! behaviour without it (`consecutive_failures = 0`), in the same run: each
//! cycle starts two replica processes of a service (this binary, re-executed
//! in replica role) on one `redis-server`, runs 8 callers of a
//! non-idempotent method through each of two client nodes (ejection on, and
//! off), injects the fault into one replica and keeps calling for 3 s:
//!
//! - `kill`: `kill -9` of the replica;
//! - `hang`: `SIGSTOP` of the replica (woken and stopped after the cycle).
//!
//! Calls have a 250 ms deadline; the registry lease is the default 10 s, so
//! without ejection a frozen replica is chosen until its lease runs out.
//! Prints one line per fault kind:
//!
//! ```text
//! fault outlier kind=kill replicas=2 cycles=N failed_calls_after_fault=… last_failure_p99_ms=… baseline_failed_calls_after_fault=… baseline_last_failure_p99_ms=…
//! fault outlier kind=hang replicas=2 cycles=N failed_calls_after_fault=… last_failure_p99_ms=… baseline_failed_calls_after_fault=… baseline_last_failure_p99_ms=…
//! ```
//!
//! `failed_calls_after_fault`: calls that failed from the fault on, summed
//! over the cycles; `last_failure_p99_ms`: per cycle, the time from the fault
//! to the last failed call (0 when none failed), p99 over the cycles.
//! `baseline_…`: the same with ejection off. `--quick`: 3 cycles; default 20.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modkit::config::{InvokeConfig, OutlierConfig};
use modkit::distribute::redis_server::spawn_tied;
use modkit::distribute::{Distributed, RedisConfig, RedisServer};
use modkit::{async_trait, Backend, Config, Error, Status};

const ROLE: &str = "MODKIT_BENCH_FAULTS_REPLICA";
const CALLERS: usize = 8;
const DEADLINE: Duration = Duration::from_millis(250);
const AFTER_FAULT: Duration = Duration::from_secs(3);

/// The service the replicas serve.
#[modkit::service(name = "bench.Work")]
pub trait Work {
    /// Echoes `seq`; not idempotent, so a call that was sent is never retried.
    async fn work(&self, seq: u64) -> Result<u64, Error>;
}

struct Worker;

#[async_trait]
impl Work for Worker {
    async fn work(&self, seq: u64) -> Result<u64, Error> {
        Ok(seq)
    }
}

fn config(url: &str, prefix: &str, node: &str, host: &[&str]) -> Config {
    Config {
        node_id: Some(node.into()),
        invoke: InvokeConfig {
            timeout: DEADLINE,
            host: Some(host.iter().map(|s| s.to_string()).collect()),
            colocate: false,
            ..InvokeConfig::default()
        },
        ..Config::default()
    }
    .with_section(&RedisConfig {
        url: url.into(),
        prefix: prefix.into(),
        ..RedisConfig::default()
    })
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

/// A replica process; killed (woken first) and reaped when dropped.
struct Replica(Child);

impl Replica {
    fn spawn(url: &str, prefix: &str, node: &str) -> std::io::Result<Replica> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(ROLE, format!("{node}@{prefix}@{url}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        spawn_tied(cmd).map(Replica)
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one client node saw after the fault.
#[derive(Default)]
struct Seen {
    failed: usize,
    last_failure_ms: f64,
}

/// Runs [`CALLERS`] loops on `client` until `stop`; failures after `fault`
/// (set when it happens) are counted.
async fn load(
    client: Arc<dyn Work>,
    stop: Arc<AtomicBool>,
    fault: Arc<Mutex<Option<Instant>>>,
) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (client, stop, fault, seen) =
                (client.clone(), stop.clone(), fault.clone(), seen.clone());
            tokio::spawn(async move {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    if client.work(seq).await.is_ok() {
                        continue;
                    }
                    let Some(at) = *fault.lock().unwrap() else {
                        continue;
                    };
                    let mut seen = seen.lock().unwrap();
                    seen.failed += 1;
                    seen.last_failure_ms = at.elapsed().as_secs_f64() * 1e3;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    Arc::try_unwrap(seen)
        .ok()
        .expect("tasks ended")
        .into_inner()
        .unwrap()
}

async fn wait_up(app: &Distributed, n: usize) -> modkit::Result<()> {
    let registry = app.registry();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = registry.lookup("bench.Work").await?;
        if up.iter().filter(|i| i.status == Status::Up).count() >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::timeout("replicas did not register in 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One cycle of fault `kind`: what the ejecting and the baseline client saw.
async fn cycle(url: &str, kind: &str, n: usize) -> modkit::Result<(Seen, Seen)> {
    // A namespace per cycle: no instance of an earlier cycle is in view.
    let prefix = format!("faults-{}-{kind}-{n}", std::process::id());
    let faulty = Replica::spawn(url, &prefix, "replica-a")?;
    let _healthy = Replica::spawn(url, &prefix, "replica-b")?;
    let node = |name: &str, outlier: OutlierConfig| {
        let mut c = config(url, &prefix, name, &[]);
        c.invoke.outlier = outlier;
        Distributed::start(c)
    };
    let on = node("caller-on", OutlierConfig::default()).await?;
    let off = node(
        "caller-off",
        OutlierConfig {
            consecutive_failures: 0,
            ..OutlierConfig::default()
        },
    )
    .await?;
    wait_up(&on, 2).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let fault = Arc::new(Mutex::new(None));
    let run = |app: &Distributed| {
        let client = app.container().get::<dyn Work>().expect("client");
        tokio::spawn(load(client, stop.clone(), fault.clone()))
    };
    let (with, without) = (run(&on), run(&off));
    tokio::time::sleep(Duration::from_millis(300)).await;
    *fault.lock().unwrap() = Some(Instant::now());
    match kind {
        "kill" => faulty.signal("-KILL"),
        _ => faulty.signal("-STOP"),
    }
    tokio::time::sleep(AFTER_FAULT).await;
    stop.store(true, Ordering::Relaxed);
    let seen = (with.await.expect("load"), without.await.expect("load"));
    on.shutdown(Duration::from_millis(100)).await;
    off.shutdown(Duration::from_millis(100)).await;
    Ok(seen)
}

fn p99(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((0.99 * (values.len().max(1) - 1) as f64).round()) as usize;
    values.get(rank).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> modkit::Result<()> {
    if let Ok(spec) = std::env::var(ROLE) {
        return replica(spec).await;
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
    let redis = RedisServer::start()?;
    for kind in ["kill", "hang"] {
        let (mut failed, mut last) = ([0, 0], [Vec::new(), Vec::new()]);
        for n in 0..cycles {
            let (with, without) = cycle(&redis.url(), kind, n).await?;
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
            p99(last_on),
            failed[1],
            p99(last_off),
        );
    }
    Ok(())
}
