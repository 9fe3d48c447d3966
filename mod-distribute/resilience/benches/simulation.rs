//! `cargo bench -p mod-resilience --bench simulation [-- --quick | --seeds N]`:
//! the deterministic simulation of `tests/simulation` over many seeds
//! (20,000 by default, 1,000 with `--quick`), one summary line on stderr;
//! exits 1 when a seed broke an invariant.

#[path = "../tests/simulation/main.rs"]
#[allow(dead_code)] // the test-only parts (its broken rules) are unused here
mod simulation;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds = args
        .iter()
        .position(|a| a == "--seeds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if args.iter().any(|a| a == "--quick") {
            1_000
        } else {
            20_000
        });
    if !simulation::run(seeds) {
        std::process::exit(1);
    }
}
