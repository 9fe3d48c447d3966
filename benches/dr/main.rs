//! `cargo bench -p modkit-benches --bench dr [-- --quick] [--cycles N] [--minutes M]`
//!
//! Site loss on one HA group that spans two sites: six `redis-server`s on
//! loopback (site a: three, site b: three; `[ha.sites]`, `site_ratio` 1/2,
//! `site_rounds` 3), one controller voter (probes every 200 ms, `down_after`
//! 1 s), a writer running `SET` + `WAIT 3` every 2 ms through a modkit handle
//! that follows the controller, and three more subscribed handles. Prints
//!
//! ```text
//! dr site_down cycles=N alert_p99_ms=… push_p99_ms=… rto_p50_ms=… rto_p99_ms=… lost_acked=0
//! dr flapping minutes=M false_switches=0
//! ```
//!
//! Each `site_down` cycle freezes (SIGSTOP) every node of the site holding
//! the primary. `alert`: the freeze to the `site_down` alert; `push`: the
//! controller's commit of the new topology to the last subscribed handle on
//! it; `rto`: the freeze to the writer's first write the new primary took;
//! `lost_acked`: writes `WAIT 3` acknowledged (so on a replica of the other
//! site too) missing on the final primary.
//! The site is then thawed, rejoins as replicas, and the next cycle freezes
//! the other one. The flapping soak then freezes and thaws one replica of
//! the primary's site at random (100–1500 ms each way) for M minutes under the
//! writer: `false_switches` counts `site_down` alerts and topologies
//! committed meanwhile. `--quick`: 3 cycles and half a minute; default 20
//! cycles and 30 minutes.

mod cluster;

use std::time::{Duration, Instant};

use cluster::Cluster;
use modkit_benches::percentile;

struct Args {
    cycles: usize,
    minutes: f64,
}

fn args() -> Args {
    let mut args = Args {
        cycles: 20,
        minutes: 30.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {
                args.cycles = 3;
                args.minutes = 0.5;
            }
            "--cycles" => {
                args.cycles = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(args.cycles)
            }
            "--minutes" => {
                args.minutes = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(args.minutes)
            }
            _ => {} // --bench, filters
        }
    }
    args
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let cluster = Cluster::start().await;
    let (mut alert, mut push, mut rto) = (Vec::new(), Vec::new(), Vec::new());
    for cycle in 0..args.cycles {
        let took = cluster.lose_primary_site().await;
        eprintln!(
            "cycle {cycle}: site {} lost; alert {:.0} ms, commit {:.0} ms, push {:.0} ms, rto {:.0} ms",
            took.site, took.alert_ms, took.commit_ms, took.push_ms, took.rto_ms
        );
        alert.push(took.alert_ms);
        push.push(took.push_ms);
        rto.push(took.rto_ms);
    }
    let lost = cluster.lost_acked().await;
    println!(
        "dr site_down cycles={} alert_p99_ms={:.0} push_p99_ms={:.0} rto_p50_ms={:.0} rto_p99_ms={:.0} lost_acked={lost}",
        args.cycles,
        percentile(&mut alert, 99.0),
        percentile(&mut push, 99.0),
        percentile(&mut rto, 50.0),
        percentile(&mut rto, 99.0),
    );
    let start = Instant::now();
    let false_switches = cluster
        .flap(Duration::from_secs_f64(args.minutes * 60.0))
        .await;
    println!(
        "dr flapping minutes={:.1} false_switches={false_switches}",
        start.elapsed().as_secs_f64() / 60.0
    );
}
