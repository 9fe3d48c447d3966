//! A deterministic, seeded discrete-event simulation of the controller
//! group failing a Redis primary/replica group over, checking the
//! invariants after every event.
//!
//! Each seed draws a world (1, 3 or 5 voters; 3 or 4 nodes; two `SET` +
//! `WAIT 1` writers) and a schedule of faults (kills, SIGSTOP, partitions,
//! slow links), runs 45–65 simulated seconds on a simulated clock, heals
//! everything and lets the group settle. The voters' decisions are the
//! crate's real `rules` and `GroupState::apply`; the node model is
//! `redis_model.rs`, the controller model `controller.rs` and
//! `controller_failover.rs` (step by step as `controller/mod.rs` and
//! `controller/failover.rs`).
//!
//! Invariants (a failure names the seed, the faults and the last events):
//! - never two nodes able to acknowledge a `WAIT 1` write at once
//!   (primary, running, not paused, enough good replicas, a linked replica);
//! - never two nodes that acknowledged `WAIT`-ed writes in overlapping time;
//! - committed epochs never go back on any voter; every voter holds a
//!   prefix of the one committed log;
//! - no `REPLICAOF NO ONE` without a committed intent for its epoch;
//! - no acknowledged write vanishes from every node unless faults destroyed
//!   every copy (kills restart nodes empty), and after healing the final
//!   primary holds every acknowledged write still held anywhere.
//!
//! The test command runs 300 seeds (`MODKIT_SIM_SEEDS` sets another count,
//! `MODKIT_SIM_SEED=n` replays one with its trace); the long run is the
//! bench runner over the same files: `cargo bench -p mod-resilience --bench
//! simulation [-- --quick | --seeds N]`.

mod clients;
mod consensus_model;
mod controller;
mod controller_failover;
mod faults;
mod history;
mod redis_model;
mod replication;
mod rng;
mod world;

use std::collections::HashSet;
use std::time::Instant;

use mod_distribute::topology::Topology;
use mod_resilience::consensus::{Command, GroupState};
use mod_resilience::rules::{self, Candidate};

use controller::{Policy, Seen, Voter};
use redis_model::Node;
use world::{Ev, Party, World};

/// Simulated milliseconds.
pub type Time = u64;

impl World {
    /// Epoch 1 committed: node 0 primary, the others its replicas.
    fn setup(&mut self) {
        for n in 0..self.cfg.nodes {
            let replid = self.new_replid();
            let mut node = Node::new(replid, n == 0, (n != 0).then_some(0));
            node.min_replicas = self.cfg.min_replicas_to_write;
            node.max_lag_s = self.cfg.max_lag_s;
            self.nodes.push(node);
            if n != 0 {
                self.schedule(1, Ev::Handshake(n));
            }
            let at = self.rng.range(0, 999);
            self.schedule(at, Ev::NodeCron(n));
        }
        for v in 0..self.cfg.voters {
            let next_tick = self.rng.range(0, self.cfg.probe_every - 1);
            self.voters.push(Voter {
                id: v as u64 + 1,
                state: GroupState::default(),
                seen: vec![Seen::default(); self.cfg.nodes],
                min_set: None,
                script: Default::default(),
                next_tick,
                seen_applied: 0,
                wake_at: None,
                busy: false,
                last_epoch: 0,
                step_failed: false,
                fence_gone: false,
                fence_silent: false,
            });
        }
        for c in 0..self.cfg.clients {
            self.clients.push(clients::Client {
                epoch: 1,
                primary: Some(0),
                op: None,
            });
            let at = self.rng.range(200, 400);
            self.schedule(at, Ev::ClientWake(c));
            let at = self.rng.range(0, 499);
            self.schedule(at, Ev::ClientPoll(c));
        }
        self.log.push(Command::Commit(Topology {
            group: "main".into(),
            epoch: 1,
            primary: Some(self.addr(0)),
            replicas: (1..self.cfg.nodes).map(|n| self.addr(n)).collect(),
            fenced: Vec::new(),
        }));
        self.sync_voters();
        self.draw_faults();
    }

    /// Able to acknowledge a `WAIT 1` write now.
    fn ack_capable(&self, n: usize) -> bool {
        let node = &self.nodes[n];
        node.writable(self.now)
            && node.slaves.iter().any(|s| {
                let r = &self.nodes[s.node];
                r.running()
                    && r.master == Some(n)
                    && r.link_up
                    && self.reachable(Party::Node(n), Party::Node(s.node))
            })
    }

    fn check_step(&mut self) {
        let now = self.now;
        for v in 0..self.voters.len() {
            let epoch = self.voters[v].state.topology.epoch;
            if epoch < self.voters[v].last_epoch {
                self.fail(format!(
                    "voter {} went back from epoch {} to {epoch}",
                    v + 1,
                    self.voters[v].last_epoch
                ));
            }
            self.voters[v].last_epoch = epoch;
            let state = &self.voters[v].state;
            let applied = state.applied as usize;
            let same = applied <= self.log.len()
                && state
                    .log
                    .back()
                    .is_none_or(|d| d.command == self.log[d.index as usize - 1]);
            if !same {
                self.fail(format!(
                    "voter {} applied a log that is not the committed one",
                    v + 1
                ));
            }
        }
        let capable: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.ack_capable(n))
            .collect();
        if capable.len() > 1 {
            self.fail(format!(
                "dual primary: nodes {capable:?} can both acknowledge WAIT 1 writes"
            ));
        }
        let writable = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].writable(now))
            .count();
        if writable > 1 {
            self.dual_writable_ms += now - self.last_check;
        }
        self.last_check = now;
        let dead = self.nodes.iter().filter(|n| !n.alive).count();
        self.max_dead = self.max_dead.max(dead);
    }

    fn check_end(&mut self) {
        for v in 0..self.voters.len() {
            let bad = self.voters[v]
                .state
                .log
                .iter()
                .any(|d| self.log.get(d.index as usize - 1) != Some(&d.command));
            if bad {
                self.fail(format!(
                    "voter {}'s decision log differs from the committed log",
                    v + 1
                ));
            }
        }
        let Some(p) = self.committed().1 else { return };
        if !(self.nodes[p].running() && self.nodes[p].primary) {
            return; // stuck: counted by the caller
        }
        let on_primary: HashSet<u64> = self.nodes[p].data.iter().map(|(k, _)| *k).collect();
        let mut missing: Vec<u64> = self
            .hist
            .acked
            .iter()
            .copied()
            .filter(|k| !on_primary.contains(k))
            .collect();
        missing.sort_unstable();
        if let Some(k) = missing.first() {
            let holders: Vec<usize> = (0..self.nodes.len())
                .filter(|&n| self.nodes[n].holds(*k))
                .collect();
            self.fail(format!(
                "{} acknowledged writes (first: {k}, on nodes {holders:?}) are not on the final primary node {p}",
                missing.len()
            ));
        }
    }
}

/// What one run of many seeds counted.
#[derive(Default, Debug)]
struct Summary {
    seeds: u64,
    failovers: u64,
    writes: u64,
    acked: u64,
    destroyed: u64,
    no_promotable: u64,
    dual_writable_ms: u64,
    max_epoch: u64,
    /// `(seed, last controller notes, two nodes were down at once)`.
    stuck: Vec<(u64, Vec<String>, bool)>,
    failures: Vec<String>,
}

fn run_seed(seed: u64, policy: Policy, sum: &mut Summary) {
    let mut world = World::new(seed, policy);
    let result = world.run();
    sum.seeds += 1;
    sum.failovers += world.stats_failovers;
    sum.writes += world.hist.writes;
    sum.acked += world.hist.records.values().filter(|r| r.acked).count() as u64;
    sum.destroyed += world.hist.destroyed;
    sum.no_promotable += world.stats_no_promotable;
    sum.dual_writable_ms += world.dual_writable_ms;
    sum.max_epoch = sum.max_epoch.max(world.committed().0);
    let (_, p) = world.committed();
    if p.is_none_or(|p| !(world.nodes[p].running() && world.nodes[p].primary)) {
        sum.stuck
            .push((seed, world.trace.last_notes(3), world.max_dead >= 2));
    }
    if let Err(e) = result {
        sum.failures.push(e);
    }
}

fn seed_count() -> u64 {
    std::env::var("MODKIT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

fn lost(sum: &Summary, what: &str) -> usize {
    let first = |f: &String| f.lines().next().unwrap_or_default().to_owned();
    sum.failures
        .iter()
        .filter(|f| first(f).contains(what))
        .count()
}

fn print(name: &str, sum: &Summary, took: std::time::Duration) {
    eprintln!(
        "{name} seeds={} failovers={} writes={} acked={} lost_acked={} dual_primary={} destroyed_acked={} no_promotable={} dual_writable_ms={} stuck={} failed_seeds={} max_epoch={} wall={:.1}s",
        sum.seeds, sum.failovers, sum.writes, sum.acked,
        lost(sum, "acknowledged write"), lost(sum, "dual primary") + lost(sum, "two primaries"), sum.destroyed, sum.no_promotable,
        sum.dual_writable_ms, sum.stuck.len(), sum.failures.len(), sum.max_epoch, took.as_secs_f64()
    );
}

/// Runs `seeds` seeds with the real rules, prints the summary (and the
/// first failures); whether no seed broke an invariant.
pub fn run(seeds: u64) -> bool {
    let started = Instant::now();
    let mut sum = Summary::default();
    for seed in 0..seeds {
        run_seed(seed, Policy::real(), &mut sum);
    }
    print("simulation", &sum, started.elapsed());
    let single: Vec<_> = sum.stuck.iter().filter(|s| !s.2).collect();
    eprintln!(
        "seeds without a serving primary at the end (liveness, not failed): {} after two nodes were down at once, {} otherwise",
        sum.stuck.len() - single.len(),
        single.len()
    );
    for (seed, notes, _) in single.iter().take(10) {
        eprintln!("  seed {seed}: {}", notes.join(" | "));
    }
    for f in sum.failures.iter().take(3) {
        eprintln!("{f}\n");
    }
    sum.failures.is_empty()
}

#[test]
fn seeds() {
    if let Some(seed) = std::env::var("MODKIT_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        // One seed, with its trace (to study a failure or a stuck group).
        let mut world = World::new(seed, Policy::real());
        let result = world.run();
        eprintln!("{}", world.describe(&format!("{result:?}")));
        return;
    }
    assert!(run(seed_count()), "a seed broke an invariant (first above)");
}

fn lowest_offset(answered: Vec<Candidate>, replicas: usize, k: usize) -> Result<Candidate, String> {
    let needed = rules::replicas_needed(replicas, k);
    if answered.len() < needed {
        return Err("too few".into());
    }
    answered
        .into_iter()
        .min_by_key(|c| (c.offset, c.position))
        .ok_or_else(|| "none".into())
}

/// The same simulation catches deliberately broken rules.
#[test]
fn the_checker_catches_broken_rules() {
    let broken = [
        (
            "choose the lowest offset",
            Policy {
                choose: lowest_offset,
                fence: true,
            },
        ),
        (
            "promote without fencing",
            Policy {
                choose: rules::choose,
                fence: false,
            },
        ),
    ];
    for (name, policy) in broken {
        let started = Instant::now();
        let mut sum = Summary::default();
        for seed in 0..seed_count().max(50) {
            run_seed(seed, policy, &mut sum);
            if !sum.failures.is_empty() {
                break;
            }
        }
        print(&format!("broken rule ({name}):"), &sum, started.elapsed());
        let first = sum
            .failures
            .first()
            .unwrap_or_else(|| panic!("{name}: no seed caught it"));
        eprintln!("caught: {}", first.lines().next().unwrap_or_default());
    }
}
