//! Measurement: a comparison runs its two sides interleaved (A, B, B, A, A, B …)
//! for several rounds in the same runtime, and reports the median throughput of
//! each side and the ratio of the medians.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A boxed, spawnable future.
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One side of a comparison: runs its operation for about the given time and
/// returns how many operations completed and how long that took.
pub type Side = Arc<dyn Fn(Duration) -> BoxFut<(u64, Duration)> + Send + Sync>;

/// Wraps a closure as a [`Side`].
pub fn side<F>(f: F) -> Side
where
    F: Fn(Duration) -> BoxFut<(u64, Duration)> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// Runs `$body` (one operation, an expression that may `.await`) repeatedly for
/// `$dur`, reading the clock once per `$batch` operations so the clock does not
/// dominate very cheap operations. Evaluates to `(operations, elapsed)`.
#[macro_export]
macro_rules! timed_loop {
    ($dur:expr, $batch:expr, $body:expr) => {{
        let start = std::time::Instant::now();
        let deadline = start + $dur;
        let mut ops: u64 = 0;
        loop {
            for _ in 0..$batch {
                $body;
            }
            ops += $batch as u64;
            let now = std::time::Instant::now();
            if now >= deadline {
                break (ops, now - start);
            }
        }
    }};
}

/// Runs `workers` copies of a loop concurrently (each its own task, so they
/// spread over the runtime's workers) for `dur`; the total of operations, and
/// the wall time until the last one finished.
pub async fn concurrent<F, Fut>(workers: usize, dur: Duration, make: F) -> (u64, Duration)
where
    F: Fn(usize, Duration) -> Fut,
    Fut: Future<Output = (u64, Duration)> + Send + 'static,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..workers).map(|i| tokio::spawn(make(i, dur))).collect();
    let mut total = 0;
    for handle in handles {
        total += handle.await.expect("bench worker panicked").0;
    }
    (total, start.elapsed())
}

/// How long and how often each side runs.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Measured rounds per side.
    pub rounds: usize,
    /// Length of one round of one side.
    pub slice: Duration,
    /// Length of the unmeasured warm-up run of each side.
    pub warmup: Duration,
    /// Run only one side of each comparison (`--only modkit|peer`, for profilers).
    pub only: Option<Only>,
}

/// Which side `--only` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    Modkit,
    Peer,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                rounds: 15,
                slice: Duration::from_millis(150),
                warmup: Duration::from_millis(200),
                only: None,
            }
        } else {
            Plan {
                rounds: 31,
                slice: Duration::from_millis(400),
                warmup: Duration::from_millis(500),
                only: None,
            }
        }
    }
}

impl Plan {
    /// One tiny round: for `cargo test -p modkit-benches --benches`.
    pub fn smoke() -> Plan {
        Plan {
            rounds: 1,
            slice: Duration::from_millis(20),
            warmup: Duration::from_millis(10),
            only: None,
        }
    }
}

/// Median, min and max of the rounds of one side, in operations per second.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// For modkit's side: the median of the per-round ratios modkit/peer (each
    /// round's pair ran back to back, so this cancels slow drift of the machine).
    pub paired: Option<f64>,
}

impl Stats {
    pub fn of(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = if n % 2 == 1 {
            samples[n / 2]
        } else {
            (samples[n / 2 - 1] + samples[n / 2]) / 2.0
        };
        Stats {
            median,
            min: samples[0],
            max: samples[n - 1],
            paired: None,
        }
    }

    /// Mean time per operation of the median, in µs (for sequential sides).
    pub fn micros(&self) -> f64 {
        1e6 / self.median
    }
}

/// Runs `modkit` and `peer` interleaved and returns their stats. Each round
/// alternates which side goes first, so slow drift of the machine hits both.
pub async fn measure(plan: Plan, modkit: &Side, peer: &Side) -> (Stats, Stats) {
    let (run_a, run_b) = (
        plan.only != Some(Only::Peer),
        plan.only != Some(Only::Modkit),
    );
    let side = |on: bool, side: &Side, dur: Duration| {
        let fut = on.then(|| tokio::spawn(side(dur)));
        async move {
            match fut {
                Some(handle) => {
                    let (ops, elapsed) = handle.await.expect("bench side panicked");
                    ops as f64 / elapsed.as_secs_f64()
                }
                None => f64::NAN,
            }
        }
    };
    side(run_a, modkit, plan.warmup).await;
    side(run_b, peer, plan.warmup).await;
    let mut a = Vec::with_capacity(plan.rounds);
    let mut b = Vec::with_capacity(plan.rounds);
    for round in 0..plan.rounds {
        if round % 2 == 0 {
            a.push(side(run_a, modkit, plan.slice).await);
            b.push(side(run_b, peer, plan.slice).await);
        } else {
            b.push(side(run_b, peer, plan.slice).await);
            a.push(side(run_a, modkit, plan.slice).await);
        }
    }
    let ratios = a.iter().zip(&b).map(|(a, b)| a / b).collect();
    let mut modkit = Stats::of(a);
    modkit.paired = Some(Stats::of(ratios).median);
    (modkit, Stats::of(b))
}

/// Formats a rate: integer ops/s.
fn rate(x: f64) -> String {
    format!("{x:.0}")
}

/// The line tools read: `compare <name> modkit=<ops/s> peer=<peer>:<ops/s> ratio=<r>`,
/// then the spreads (and any `extra` fields).
pub fn report(name: &str, peer_name: &str, modkit: Stats, peer: Stats, extra: &str) {
    if modkit.median.is_nan() || peer.median.is_nan() {
        // `--only`: not a comparison, so not a `compare` line.
        let (who, s) = if peer.median.is_nan() {
            ("modkit", modkit)
        } else {
            (peer_name, peer)
        };
        let (med, min, max) = (rate(s.median), rate(s.min), rate(s.max));
        println!("only {name} {who}={med} spread={min}-{max}");
        return;
    }
    let ratio = modkit.median / peer.median;
    let mut line = format!(
        "compare {name} modkit={} peer={peer_name}:{} ratio={ratio:.3} spread_modkit={}-{} spread_peer={}-{}",
        rate(modkit.median),
        rate(peer.median),
        rate(modkit.min),
        rate(modkit.max),
        rate(peer.min),
        rate(peer.max),
    );
    if let Some(paired) = modkit.paired {
        line.push_str(&format!(" ratio_paired={paired:.3}"));
    }
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    println!("{line}");
}

/// Measures and reports one comparison, and returns the stats.
pub async fn compare(
    plan: Plan,
    name: &str,
    peer_name: &str,
    modkit: Side,
    peer: Side,
) -> (Stats, Stats) {
    let (a, b) = measure(plan, &modkit, &peer).await;
    report(name, peer_name, a, b, "");
    (a, b)
}

/// The `q`-quantile (0..=1) of sorted `samples`, nearest rank.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
