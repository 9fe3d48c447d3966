//! `cargo bench -p modkit-benches --bench takeover [-- --quick] [--cycles N] [--only planned|crash|fresh_start]`
//!
//! Stateful services moving between processes (`mod_distribute::state`),
//! measured with real processes on a real `redis-server` (a free port). The
//! service, `bench.Ledger`, owns about 10 MiB of state: a 10 MiB `Vec<u8>`
//! pad and the `Vec<u64>` of the ids of the updates it applied. Its nodes
//! are this binary re-executed in node role (killed when the bench exits,
//! panics included: kill on drop, and `PR_SET_PDEATHSIG` through
//! `spawn_tied`). A client node in the bench process (it hosts nothing)
//! sends non-idempotent updates `apply(id)` one after the other (ids
//! 1, 2, …, a 1 ms pause between calls, 5 s deadline) and logs which were
//! acknowledged, when, and which failed. State config: period 200 ms,
//! lease 1 s, quiesce timeout 5 s (printed in the `takeover config` line).
//!
//! ```text
//! takeover config state_bytes=… pad_bytes=… period_ms=200 lease_ms=1000 quiesce_timeout_ms=5000 client_deadline_ms=5000 cycles=N
//! takeover planned state_mb=10 cycles=N p50_ms=… p99_ms=… failed_calls=… lost_updates=… duplicate_updates=…
//! takeover crash state_mb=10 cycles=N p50_ms=… p99_ms=… rpo_ms_p99=… lost_updates=… period_ms=200 rpo_ms_p50=… failed_calls=…
//! takeover fresh_start state_mb=10 cycles=N p50_ms=… p99_ms=… unrestored=… restart_p50_ms=… restart_p99_ms=…
//! ```
//!
//! - **planned**: an owner and a standby under the client's load;
//!   `request_takeover(service, Some(standby))` each cycle, back and forth.
//!   Time: from just before the request (the "alert") to the first call
//!   answered by the target (a probe calling `whoami` every 2 ms; a call
//!   refused by the quiescing owner with `Moved` waits in the proxy and is
//!   answered by the target). `failed_calls`: client updates that returned
//!   an error, over the whole scenario; `lost_updates`: acknowledged update
//!   ids missing from the final state read from the owner at the end;
//!   `duplicate_updates`: ids applied more than once. 500 ms under load
//!   between cycles.
//! - **crash**: the same two nodes; each cycle `kill -9` of the owner. Time:
//!   from the kill to the first call answered by the standby (which waits
//!   for the owner's lease to run out, claims the service, and restores the
//!   last periodic checkpoint).
//!   `lost_updates`: update ids acknowledged (to the client, before the
//!   state was read back) missing from the new owner's state, summed over
//!   the cycles. **`rpo_ms`** of a cycle: how much acknowledged history the
//!   crash lost — the time of the kill minus the acknowledgement time of the
//!   oldest lost update (0 when none was lost); so the restored state is the
//!   state as acknowledged `rpo_ms` before the kill. The target is at most
//!   one checkpoint period (`period_ms`); a checkpoint of 10 MiB takes time
//!   to encode and write, which adds to it. The killed node is started
//!   again as the new standby for the next cycle. `failed_calls`: client
//!   updates that failed (all of them during the outages).
//! - **fresh_start** (baseline): no standby. Each cycle the owner stops
//!   gracefully (final checkpoint, ownership released), the service is
//!   reserved for a new node (`request_takeover(service, Some(new))`, as a
//!   deployer restarting it would), and a fresh process of the same service
//!   is started. Time: from the spawn to the first call it answers (process
//!   start, Redis connection, its own empty 10 MiB pad, claim, load and
//!   decode of the checkpoint, restore, registration, seen by the client).
//!   `unrestored`: cycles whose new owner did not hold the state written
//!   before (it must). `restart_…`: from the start of the old owner's
//!   graceful stop (quiesce, final checkpoint, exit) to the new process
//!   answering — a restart in place, comparable with `planned`, whose time
//!   includes the final checkpoint; `p50_ms` excludes it.
//!
//! A time that never came is `inf`. `--quick`: 5 cycles each (under a
//! minute); default 20 (a few minutes). `RUST_LOG=info,mod_distribute=debug`
//! shows the steward logs of every node (on stderr).

mod cluster;
#[path = "../node_config.rs"]
mod node_config;
mod scenarios;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use modkit::distribute::{Distributed, RedisServer};
use modkit::state::{StateConfig, Stateful};
use modkit::{async_trait, Backend, Config, Error};
use serde::{Deserialize, Serialize};

/// The environment variable that puts this binary in node role: `node@prefix@url`.
const ROLE: &str = "MODKIT_BENCH_TAKEOVER_NODE";
/// The stateful service's name.
const SERVICE: &str = "bench.Ledger";
/// Bytes of the state's pad.
const PAD_BYTES: usize = 10 * 1024 * 1024;
/// The checkpoint period.
const PERIOD: Duration = Duration::from_millis(200);
/// The owner's lease.
const LEASE: Duration = Duration::from_secs(1);
/// How long a planned move waits for calls in flight.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(5);
/// The client's call deadline.
const DEADLINE: Duration = Duration::from_secs(5);

/// What a node answers to `whoami`: its id, its pad's length, and how many
/// updates its state holds.
pub type Answer = (String, u64, u64);

/// The stateful service.
#[modkit::service(name = "bench.Ledger")]
pub trait Ledger {
    /// Applies update `id` (not idempotent: never retried once sent);
    /// returns the node that applied it.
    async fn apply(&self, id: u64) -> Result<String, Error>;
    /// Which node answers, with its pad length and its number of updates.
    #[idempotent]
    async fn whoami(&self) -> Result<Answer, Error>;
    /// The ids of all applied updates, in order, as little-endian `u64`s.
    /// Bytes, not a `Vec<u64>`: the codec's bounded decode counts 8 bytes
    /// per `u64` against a limit sized from the input, where a small id
    /// takes 1 to 3, so a long `Vec<u64>` reply fails with `LimitExceeded`.
    #[idempotent]
    async fn applied(&self) -> Result<Vec<u8>, Error>;
}

/// The state of a [`Book`]: what is checkpointed and restored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerState {
    /// Bulk of the state (10 MiB).
    pad: Vec<u8>,
    /// The ids of the applied updates, in order.
    applied: Vec<u64>,
}

impl LedgerState {
    /// A new node's state: a full pad (built here, as a service would build
    /// its tables at start), no updates.
    fn fresh() -> LedgerState {
        LedgerState {
            pad: (0..PAD_BYTES)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
                .collect(),
            applied: Vec::new(),
        }
    }
}

/// The implementation of [`Ledger`] in node role.
pub struct Book {
    /// This node's id.
    node: String,
    /// The state, under one lock (so a checkpoint is consistent).
    state: Mutex<LedgerState>,
}

#[async_trait]
impl Ledger for Book {
    async fn apply(&self, id: u64) -> Result<String, Error> {
        self.state.lock().unwrap().applied.push(id);
        Ok(self.node.clone())
    }
    async fn whoami(&self) -> Result<Answer, Error> {
        let state = self.state.lock().unwrap();
        Ok((
            self.node.clone(),
            state.pad.len() as u64,
            state.applied.len() as u64,
        ))
    }
    async fn applied(&self) -> Result<Vec<u8>, Error> {
        let state = self.state.lock().unwrap();
        Ok(state
            .applied
            .iter()
            .flat_map(|id| id.to_le_bytes())
            .collect())
    }
}

impl Stateful for Book {
    type State = LedgerState;
    async fn checkpoint(&self) -> modkit::Result<LedgerState> {
        Ok(self.state.lock().unwrap().clone())
    }
    async fn restore(&self, state: LedgerState) -> modkit::Result<()> {
        *self.state.lock().unwrap() = state;
        Ok(())
    }
}

/// The state configuration every node uses.
fn state_config() -> StateConfig {
    StateConfig::new()
        .period(PERIOD)
        .lease(LEASE)
        .quiesce_timeout(QUIESCE_TIMEOUT)
}

/// A node's (or, with `host` empty, the client's) configuration.
fn config(url: &str, prefix: &str, node: &str, host: &[&str]) -> Config {
    let mut config = node_config::node_config(url, prefix, node, host);
    config.invoke.timeout = DEADLINE;
    config
}

/// The node role: hosts [`Ledger`] as a stateful service (owner or
/// standby) until killed or its stdin closes (then shuts down gracefully:
/// an owner hands the service over).
async fn node(spec: String) -> modkit::Result<()> {
    let (node, rest) = spec.split_once('@').expect("node@prefix@url");
    let (prefix, url) = rest.split_once('@').expect("node@prefix@url");
    let app = Distributed::start(config(url, prefix, node, &[SERVICE])).await?;
    let book = Arc::new(Book {
        node: node.to_owned(),
        state: Mutex::new(LedgerState::fresh()),
    });
    app.provide_stateful::<dyn Ledger, _>(book.clone(), book, state_config())
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

/// The state's size in MiB, rounded (what the result lines print).
fn state_mb() -> u64 {
    (PAD_BYTES as f64 / (1024.0 * 1024.0)).round() as u64
}

/// Node role when [`ROLE`] is set; else runs the scenarios and prints
/// their lines.
#[tokio::main]
async fn main() -> modkit::Result<()> {
    let filter =
        || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .init();
    if let Ok(spec) = std::env::var(ROLE) {
        return node(spec).await;
    }
    let args: Vec<String> = std::env::args().collect();
    let cycles = match args.iter().position(|a| a == "--cycles") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::config("--cycles needs a number"))?,
        None if args.iter().any(|a| a == "--quick") => 5,
        None => 20,
    };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let state_bytes = modkit::codec::encode(&LedgerState::fresh())?.len();
    println!(
        "takeover config state_bytes={state_bytes} pad_bytes={PAD_BYTES} period_ms={} lease_ms={} \
         quiesce_timeout_ms={} client_deadline_ms={} cycles={cycles}",
        PERIOD.as_millis(),
        LEASE.as_millis(),
        QUIESCE_TIMEOUT.as_millis(),
        DEADLINE.as_millis(),
    );
    let redis = RedisServer::start()?;
    let url = redis.url();
    if runs("planned") {
        scenarios::planned(&url, cycles).await?;
    }
    if runs("crash") {
        scenarios::crash(&url, cycles).await?;
    }
    if runs("fresh_start") {
        scenarios::fresh_start(&url, cycles).await?;
    }
    Ok(())
}
