//! `cargo bench -p modkit-benches --bench failover [-- --quick] [--cycles N]`
//!
//! Starts everything itself: a modkit group (three `redis-server`s, one
//! controller voter with `down_after` 1 s, a following modkit handle) and a
//! Sentinel group (three `redis-server`s, three sentinels, quorum 2,
//! `down-after-milliseconds 1000`, `failover-timeout 3000`, a client that
//! follows them by the guidelines). Cycles alternate between the two: the
//! primary is killed (`kill -9`) while a writer runs `SET` + `WAIT 1` every
//! 2 ms, and the time from the kill to the first acknowledged write on the
//! new primary is measured; the killed node comes back as a replica (the
//! node agent's rule). Prints
//!
//! ```text
//! failover kill9 cycles=N p50_ms=… p99_ms=… lost_acked=… spurious=… dual_primary_ms=… sentinel_p50_ms=… sentinel_p99_ms=… sentinel_lost_acked=… sentinel_spurious=… sentinel_dual_primary_ms=… sentinel_unsettled=… ratio_p50=… lost_unwaited=…
//! failover converge cycles=N client_switch_p50_ms=… client_switch_p99_ms=…
//! failover switchover cycles=N write_gap_p50_ms=… write_gap_p99_ms=… lost_acked=… spurious=… dual_primary_ms=…
//! failover zombie cycles=M p50_ms=… p99_ms=… accepted_after_fence=… lost_acked=…
//! ```
//!
//! Then, on modkit's group only: N planned switchovers
//! (`Controller::switchover`) under the same writer — `write_gap`: the
//! longest time between two acknowledged writes of the cycle — and M
//! (N/5, at least 2) zombie cycles: the primary is frozen (SIGSTOP) until
//! the failover commits, then woken; `accepted_after_fence` counts the writes
//! sent to it after the commit that it took — one queued on it while frozen
//! and one sent right after it woke, by a client that still takes it for the
//! primary — which must be 0.
//!
//! `lost_acked`: `WAIT`-acknowledged writes missing on the new primary;
//! `lost_unwaited`: writes of a second modkit writer, plain `SET` every 2 ms
//! without `WAIT`, acknowledged and missing after (what asynchronous
//! replication loses);
//! `spurious`: failovers of a primary that was not killed; `dual_primary_ms`:
//! sampled time (20 ms steps) with two nodes answering as writable primaries;
//! `sentinel_unsettled`: Sentinel cycles skipped because its group did not
//! settle within 30 s (a fresh Sentinel group is started for the next).
//! `--quick`: 5 cycles each (about a minute); default 200 each. `--only
//! kill9|switchover|zombie` runs one scenario (kill9 prints the converge
//! line too).

mod modkit;
mod sentinel;
mod workload;

use std::time::Duration;

use workload::percentile;

/// What one cycle measured.
pub struct Cycle {
    pub took_ms: f64,
    pub lost: usize,
    /// Plain `SET`s (no `WAIT`) acknowledged and missing after (modkit).
    pub lost_unwaited: Option<usize>,
    pub spurious: usize,
    pub dual_ms: u64,
    /// From the topology commit to the handle on the new primary (modkit).
    pub switch_ms: Option<f64>,
}

/// How many replicas the primary at `addr` counts online.
pub async fn online_replicas(addr: &str) -> usize {
    let Ok(mut conn) = workload::connect(addr).await else {
        return 0;
    };
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !info.contains("role:master") {
        return 0;
    }
    info.matches("state=online").count()
}

/// Waits until the primary at `addr` counts `n` replicas online.
pub async fn wait_online(addr: &str, n: usize) {
    for _ in 0..500 {
        if online_replicas(addr).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} never counted {n} replicas online");
}

/// Counts the acknowledged keys of `cycle` missing on the new primary, and
/// says which (with where and when they were written) on stderr.
pub fn report_lost(
    side: &str,
    history: &workload::History,
    cycle: u64,
    acked: &[u64],
    on_new: &[u64],
    killed_at: std::time::Instant,
) -> usize {
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|k| !on_new.contains(k))
        .collect();
    if !lost.is_empty() {
        let writes = history.writes.lock().unwrap();
        for w in writes
            .iter()
            .filter(|w| w.cycle == cycle && lost.contains(&w.key))
            .take(5)
        {
            let at =
                w.at.checked_duration_since(killed_at)
                    .map(|d| format!("+{d:?}"))
                    .unwrap_or_else(|| format!("-{:?}", killed_at - w.at));
            eprintln!(
                "lost {side} cycle={cycle} key={} node={} at={at} (from the kill)",
                w.key, w.node
            );
        }
    }
    lost.len()
}

struct Totals {
    took: Vec<f64>,
    lost: usize,
    lost_unwaited: usize,
    spurious: usize,
    dual_ms: u64,
    switch: Vec<f64>,
}

impl Totals {
    fn new() -> Totals {
        Totals {
            took: Vec::new(),
            lost: 0,
            lost_unwaited: 0,
            spurious: 0,
            dual_ms: 0,
            switch: Vec::new(),
        }
    }

    fn add(&mut self, c: Cycle) {
        self.took.push(c.took_ms);
        self.lost += c.lost;
        self.lost_unwaited += c.lost_unwaited.unwrap_or(0);
        self.spurious += c.spurious;
        self.dual_ms += c.dual_ms;
        self.switch.extend(c.switch_ms);
    }
}

/// Zombie cycles wait out the fencing window (about 3 s each): a fifth as
/// many as the others, at least two.
fn zombie_cycles(cycles: u64) -> u64 {
    cycles.div_ceil(5).max(2)
}

fn main() {
    // RUST_LOG=info shows the controller's and the client's side of each cycle.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let bench = args.iter().any(|a| a == "--bench");
    let cycles: u64 = args
        .iter()
        .position(|a| a == "--cycles")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick {
            5
        } else if bench {
            200
        } else {
            1
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);
    runtime.block_on(async {
        let mut modkit_group = modkit::ModkitGroup::start().await;
        if runs("kill9") {
            kill9(&mut modkit_group, cycles).await;
        }
        if runs("switchover") {
            switchover(&mut modkit_group, cycles).await;
        }
        if runs("zombie") {
            zombie(&mut modkit_group, zombie_cycles(cycles)).await;
        }
    });
}

/// The kill -9 cycles, alternating with Sentinel's; the kill9 and converge lines.
async fn kill9(modkit_group: &mut modkit::ModkitGroup, cycles: u64) {
    let mut sentinel_group = sentinel::SentinelGroup::start().await;
    let (mut ours, mut theirs) = (Totals::new(), Totals::new());
    let mut resets = 0;
    for n in 0..cycles {
        let c = modkit_group.cycle(n).await;
        eprintln!(
            "cycle {n} modkit took_ms={:.0} lost={} spurious={} dual_ms={}",
            c.took_ms, c.lost, c.spurious, c.dual_ms
        );
        ours.add(c);
        let Some(c) = sentinel_group.cycle(n).await else {
            eprintln!("cycle {n} sentinel: the group did not settle in 30 s; starting a fresh one");
            resets += 1;
            drop(sentinel_group);
            sentinel_group = sentinel::SentinelGroup::start().await;
            continue;
        };
        eprintln!(
            "cycle {n} sentinel took_ms={:.0} lost={} spurious={} dual_ms={}",
            c.took_ms, c.lost, c.spurious, c.dual_ms
        );
        theirs.add(c);
    }
    let (p50, p99) = (
        percentile(&mut ours.took, 50.0),
        percentile(&mut ours.took, 99.0),
    );
    let (s50, s99) = (
        percentile(&mut theirs.took, 50.0),
        percentile(&mut theirs.took, 99.0),
    );
    println!(
            "failover kill9 cycles={cycles} p50_ms={p50:.0} p99_ms={p99:.0} lost_acked={} spurious={} dual_primary_ms={} sentinel_p50_ms={s50:.0} sentinel_p99_ms={s99:.0} sentinel_lost_acked={} sentinel_spurious={} sentinel_dual_primary_ms={} sentinel_unsettled={resets} ratio_p50={:.2} lost_unwaited={}",
            ours.lost, ours.spurious, ours.dual_ms, theirs.lost, theirs.spurious, theirs.dual_ms, p50 / s50, ours.lost_unwaited
        );
    println!(
        "failover converge cycles={cycles} client_switch_p50_ms={:.1} client_switch_p99_ms={:.1}",
        percentile(&mut ours.switch, 50.0),
        percentile(&mut ours.switch, 99.0)
    );
}

/// Planned switchovers on modkit's group; the switchover line.
async fn switchover(modkit_group: &mut modkit::ModkitGroup, cycles: u64) {
    let (mut gaps, mut lost, mut spurious, mut dual) = (Vec::new(), 0, 0, 0);
    for n in 0..cycles {
        let c = modkit_group.switchover_cycle(1_000_000 + n).await;
        eprintln!(
            "cycle {n} switchover gap_ms={:.1} lost={} spurious={} dual_ms={}",
            c.gap_ms, c.lost, c.spurious, c.dual_ms
        );
        gaps.push(c.gap_ms);
        (lost, spurious, dual) = (lost + c.lost, spurious + c.spurious, dual + c.dual_ms);
    }
    println!(
            "failover switchover cycles={cycles} write_gap_p50_ms={:.1} write_gap_p99_ms={:.1} lost_acked={lost} spurious={spurious} dual_primary_ms={dual}",
            percentile(&mut gaps, 50.0),
            percentile(&mut gaps, 99.0)
        );
}

/// Frozen-primary failovers on modkit's group; the zombie line.
async fn zombie(modkit_group: &mut modkit::ModkitGroup, zombies: u64) {
    let (mut took, mut accepted, mut lost) = (Vec::new(), 0, 0);
    for n in 0..zombies {
        let c = modkit_group.zombie_cycle(2_000_000 + n).await;
        eprintln!(
            "cycle {n} zombie took_ms={:.0} accepted={} lost={}",
            c.took_ms, c.accepted, c.lost
        );
        took.push(c.took_ms);
        (accepted, lost) = (accepted + c.accepted, lost + c.lost);
    }
    println!(
            "failover zombie cycles={zombies} p50_ms={:.0} p99_ms={:.0} accepted_after_fence={accepted} lost_acked={lost}",
            percentile(&mut took, 50.0),
            percentile(&mut took, 99.0)
        );
}
