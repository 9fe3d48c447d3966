//! A fuzz runner on stable Rust: random and mutated inputs for the code that
//! decodes bytes from outside the process.
//!
//! ```text
//! cargo run --release --example fuzz -- <target|all> <inputs per target> [seed]
//! ```
//!
//! Targets: `codec` (`codec::decode` of the types RPC and the blocks decode,
//! with every codec of the build), `frame` (the RPC frame decoder), `handshake`
//! (one real TCP connection per input to a real `RpcServer` with a secret:
//! HELLO, then whatever frames follow), `spill` (recovery of a monolith
//! queue's spill segment). Inputs are mutations of valid seeds (bit flips,
//! length prefixes claiming 2^40 bytes, truncation, insertion) or random
//! bytes, from a seeded PRNG: a run is reproducible.
//!
//! Prints one line per target —
//! `fuzz <target> inputs=N ok=A refused=B panics=P secs=S rate=R/s` — then
//! `fuzz peak_rss_mb=M` and exits non-zero if any input panicked. An abort
//! (say, a failed allocation) ends the process, and the run fails with it.

mod mutate;
mod targets;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::FutureExt;
use mutate::Rng;
use targets::Outcome;

/// Panics anywhere in the process, server tasks included.
static PANICS: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
struct Tally {
    ok: u64,
    refused: u64,
}

impl Tally {
    fn add(&mut self, outcome: Option<Outcome>) {
        match outcome {
            Some(Outcome::Ok) => self.ok += 1,
            Some(Outcome::Refused) => self.refused += 1,
            // A panic: counted by the hook.
            None => {}
        }
    }
}

const TARGETS: &[&str] = &["codec", "frame", "handshake", "spill"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fuzz <codec|frame|handshake|spill|all> <inputs per target> [seed]";
    let (Some(which), Some(count)) = (args.first(), args.get(1).and_then(|n| n.parse().ok()))
    else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let chosen: Vec<&str> = match which.as_str() {
        "all" => TARGETS.to_vec(),
        t if TARGETS.contains(&t) => vec![t],
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Report the first few; count all.
        if PANICS.fetch_add(1, Ordering::SeqCst) < 3 {
            default_hook(info);
        }
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut failed = false;
    for target in chosen {
        let before = PANICS.load(Ordering::SeqCst);
        let start = Instant::now();
        let tally = rt.block_on(run(target, count, seed));
        let panics = PANICS.load(Ordering::SeqCst) - before;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "fuzz {target} inputs={count} ok={} refused={} panics={panics} secs={secs:.1} rate={:.0}/s",
            tally.ok,
            tally.refused,
            count as f64 / secs.max(1e-9)
        );
        failed |= panics > 0;
    }
    println!("fuzz peak_rss_mb={}", peak_rss_mb());
    if failed {
        eprintln!("fuzz: some inputs panicked (the first ones are printed above)");
        std::process::exit(1);
    }
}

async fn run(target: &str, count: u64, seed: u64) -> Tally {
    let mut rng = Rng::new(seed ^ target.len() as u64);
    let mut tally = Tally::default();
    match target {
        "codec" | "frame" => {
            let (seeds, check): (_, fn(&[u8]) -> Outcome) = if target == "codec" {
                (targets::codec_seeds(), targets::codec)
            } else {
                (targets::frame_seeds(), targets::frame)
            };
            for _ in 0..count {
                let input = mutate::input(&mut rng, &seeds);
                tally.add(std::panic::catch_unwind(|| check(&input)).ok());
            }
        }
        "handshake" => {
            let server = targets::handshake_server().await;
            let addr = server.local_addr().to_string();
            let seeds = targets::handshake_seeds();
            for _ in 0..count {
                let input = mutate::input(&mut rng, &seeds);
                let call = AssertUnwindSafe(targets::handshake(&addr, &input)).catch_unwind();
                tally.add(call.await.ok());
            }
            // The server lives on and still completes a good handshake.
            assert!(matches!(
                targets::handshake(&addr, &seeds[0]).await,
                Outcome::Ok
            ));
        }
        "spill" => {
            let dir = tempfile::tempdir().expect("temp dir");
            let seeds = targets::spill_seeds(dir.path()).await;
            for _ in 0..count {
                let input = mutate::input(&mut rng, &seeds);
                let call = AssertUnwindSafe(targets::spill(dir.path(), &input)).catch_unwind();
                tally.add(call.await.ok());
            }
        }
        _ => unreachable!("targets are checked in main"),
    }
    tally
}

/// The process's peak resident memory (`VmHWM`), in MiB.
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}
