//! `cargo bench -p modkit-benches --bench compare [-- --quick] [OPTIONS] [FILTER]`
//!
//! Compares each building block of modkit, on both backends, with the peer it
//! replaces, and prints one line per comparison:
//!
//! ```text
//! compare <name> modkit=<ops/s> peer=<peer-name>:<ops/s> ratio=<modkit/peer> spread_modkit=<min>-<max> spread_peer=<min>-<max> ratio_paired=<r>
//! ```
//!
//! (`registry.watch.redis` prints `p50_us=… p99_us=…` instead.) Both sides of a
//! comparison run interleaved (A B, B A, …), several rounds each, in the same
//! process and tokio runtime; the figures are medians of the rounds, the
//! spreads their min and max, `ratio_paired` the median of the per-round
//! ratios. It starts a private `redis-server` on a free port (killed at exit,
//! also on error, panic or Ctrl-C), unless `MODKIT_REDIS_URL` names one; keys
//! go under a prefix of the run's own. `--quick` takes about 75 s on 2 cores;
//! the full run about 6.5 min.
//!
//! - FILTER (a substring) runs only the groups whose comparisons contain it
//!   (`cache`, `invoke.remote`, `invoke.remote.tls`, `queue.monolith`, …).
//! - `--threads N`: tokio worker threads (default 2).
//! - `--rounds N`, `--slice-ms M`: override the plan.
//! - `--only modkit|peer`: run one side of each comparison, for a profiler
//!   (prints `only …` lines, not `compare` lines).
//! - `--metrics`: install the Prometheus recorder and turn modkit's metrics on
//!   before the run (`modkit::observe::install_prometheus`), to compare the
//!   same targets with metrics on and off (the header says which).
//! - Without `--bench` (as `cargo test -p modkit-benches --benches` runs it): one tiny round of
//!   everything, a smoke test whose numbers mean nothing.

mod cache;
mod fixtures;
mod floor;
mod harness;
mod invoke;
mod queue;
mod registry;
mod session;
mod tls;

use std::process::ExitCode;
use std::time::Instant;

use harness::{Only, Plan};
use mod_distribute::RedisServer;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type BenchResult = Result<(), BoxError>;

struct Args {
    quick: bool,
    /// Run by `cargo test -p modkit-benches --benches` (no `--bench` flag): a short smoke run.
    smoke: bool,
    threads: usize,
    /// `--rounds N`, `--slice-ms M`: override the plan.
    rounds: Option<usize>,
    slice_ms: Option<u64>,
    /// `--only modkit|peer`: run one side of each comparison (for profilers).
    only: Option<Only>,
    /// `--metrics`: record modkit's metrics (Prometheus recorder) during the run.
    metrics: bool,
    filter: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        quick: false,
        smoke: true,
        threads: 2,
        rounds: None,
        slice_ms: None,
        only: None,
        metrics: false,
        filter: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--metrics" => args.metrics = true,
            "--bench" => args.smoke = false,
            "--threads" => {
                args.threads = it.next().and_then(|n| n.parse().ok()).unwrap_or(2).max(1);
            }
            "--rounds" => args.rounds = it.next().and_then(|n| n.parse().ok()),
            "--only" => {
                args.only = match it.next().as_deref() {
                    Some("modkit") => Some(Only::Modkit),
                    Some("peer") => Some(Only::Peer),
                    _ => None,
                }
            }
            "--slice-ms" => args.slice_ms = it.next().and_then(|n| n.parse().ok()),
            // `cargo bench` passes `--bench`; ignore other flags too.
            s if s.starts_with('-') => {}
            s => args.filter = Some(s.to_owned()),
        }
    }
    args
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn redis_version() -> String {
    std::process::Command::new(mod_distribute::redis_server::redis_server_binary())
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> ExitCode {
    let args = args();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: nproc={nproc} cpu=\"{}\"", cpu_model());
    println!(
        "runtime: tokio multi_thread worker_threads={} (one runtime for both sides of every comparison)",
        args.threads
    );
    if args.metrics {
        if let Err(e) = modkit::observe::install_prometheus() {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "metrics: {}",
        match modkit::layer::metrics_enabled() {
            true => "on (--metrics: Prometheus recorder installed, enable_metrics called)",
            false => "off (no recorder; pass --metrics to turn them on)",
        }
    );
    let mut plan = if args.smoke {
        Plan::smoke()
    } else {
        Plan::new(args.quick)
    };
    if let Some(rounds) = args.rounds {
        plan.rounds = rounds.max(1);
    }
    plan.only = args.only;
    if let Some(ms) = args.slice_ms {
        plan.slice = std::time::Duration::from_millis(ms.max(1));
    }
    let samples = match (args.smoke, args.quick) {
        (true, _) => 5,
        (false, true) => 50,
        (false, false) => 200,
    };
    println!(
        "plan: {} rounds={} slice_ms={} warmup_ms={} payload_bytes={} watch_samples={samples}{}",
        match (args.smoke, args.quick) {
            (true, _) => "smoke (no --bench flag: a test run, numbers mean nothing)",
            (false, true) => "quick",
            (false, false) => "full",
        },
        plan.rounds,
        plan.slice.as_millis(),
        plan.warmup.as_millis(),
        fixtures::PAYLOAD,
        if cfg!(debug_assertions) {
            " WARNING: debug build, numbers are meaningless"
        } else {
            ""
        }
    );

    // Declared before the runtime, so it is dropped after it: the server
    // outlives every connection, and dies with this process's `main` whatever
    // happens (error, panic unwinding, Ctrl-C below).
    let (server, url) = match std::env::var("MODKIT_REDIS_URL") {
        Ok(url) => {
            println!("redis: {url} (MODKIT_REDIS_URL)");
            (None, url)
        }
        Err(_) => match RedisServer::start() {
            Ok(server) => {
                let url = server.url();
                println!("redis: own redis-server at {url} ({})", redis_version());
                (Some(server), url)
            }
            Err(e) => {
                eprintln!("error: cannot start redis-server: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot build the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = run(plan, samples, args.filter.as_deref(), &url) => r,
            s = interrupted() => Err(format!("stopped by {s}").into()),
        }
    });
    // Stop every task (and connection) first, then the server.
    drop(runtime);
    drop(server);
    match outcome {
        Ok(()) => {
            println!("done in {:.1}s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run(plan: Plan, samples: usize, filter: Option<&str>, url: &str) -> BenchResult {
    // Keys of this run start with a prefix of its own (matters with MODKIT_REDIS_URL).
    let prefix = format!("modkit-bench-{}", std::process::id());
    let p = prefix.as_str();
    let on = |group: &str| filter.is_none_or(|f| group.contains(f));
    if on("invoke.monolith") {
        invoke::monolith(plan).await?;
    }
    if on("invoke.remote tcp.echo invoke.remote.tls.seq") {
        invoke::remote(plan, url, &format!("{p}-invoke")).await?;
    }
    if on("cache.monolith") {
        cache::monolith(plan).await?;
    }
    if on("cache.redis cache.near") {
        cache::redis(plan, url, &format!("{p}-cache")).await?;
    }
    if on("queue.monolith") {
        queue::monolith(plan).await?;
    }
    if on("queue.redis") {
        queue::redis(plan, url, &format!("{p}-queue")).await?;
    }
    if on("session.validate.monolith") {
        session::monolith(plan).await?;
    }
    if on("session.validate.redis") {
        session::redis(plan, url, &format!("{p}-session")).await?;
    }
    if on("registry.watch.redis") {
        registry::watch(samples, url, &format!("{p}-registry")).await?;
    }
    Ok(())
}
