//! Takeover of a stateful service between real processes (this test binary
//! re-run in "node" role) sharing a real `redis-server`: planned under load,
//! after `kill -9`, against a stale owner woken from SIGSTOP, never to a
//! cordoned node; and racing claims at the store.
//!
//! Every reply of the service says which node and owner epoch answered, so
//! each test checks the recorded history of acknowledged updates: nothing
//! acknowledged is missing from the final state (or, after a crash, only
//! what the last period did), nothing ran twice, and the epochs never go
//! back.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mod_api::config::{InvokeConfig, RegistryConfig};
use mod_api::state::{Role, StateConfig, StateHandle, Stateful};
use mod_api::{async_trait, service, Backend, Config, Error, ErrorKind, Service, Status};
use mod_distribute::rpc::{RpcConnections, RpcTransport};
use mod_distribute::state::store::{Claim, StateStore};
use mod_distribute::{Distributed, Redis, RedisConfig, RedisServer, RpcConfig};

mod common;
use common::RoleProcess;

const SERVICE: &str = "test.Ledger";
const ROLE: &str = "MODKIT_TEST_ROLE";
const PERIOD: Duration = Duration::from_millis(200);
const LEASE: Duration = Duration::from_secs(1);

/// A ledger of update ids: what a stateful service owns.
#[service(crate = mod_api, name = "test.Ledger")]
pub trait Ledger {
    /// Applies update `id` (not idempotent); the node and owner epoch that applied it.
    async fn apply(&self, id: u64) -> Result<(String, u64), Error>;
    /// The node, its epoch and every update applied, in order.
    #[idempotent]
    async fn applied(&self) -> Result<(String, u64, Vec<u64>), Error>;
}

/// A plain service beside it, so that each node has a registry instance to cordon.
#[service(crate = mod_api, name = "test.Ping")]
pub trait Ping {
    /// Pong.
    #[idempotent]
    async fn ping(&self) -> Result<(), Error>;
}

struct Book {
    node: String,
    applied: Mutex<Vec<u64>>,
    handle: OnceLock<StateHandle>,
}

impl Book {
    fn epoch(&self) -> u64 {
        match self.handle.get().map(StateHandle::role) {
            Some(Role::Owner { epoch }) => epoch,
            _ => 0,
        }
    }
}

#[async_trait]
impl Ledger for Book {
    async fn apply(&self, id: u64) -> Result<(String, u64), Error> {
        self.applied.lock().unwrap().push(id);
        Ok((self.node.clone(), self.epoch()))
    }
    async fn applied(&self) -> Result<(String, u64, Vec<u64>), Error> {
        let applied = self.applied.lock().unwrap().clone();
        Ok((self.node.clone(), self.epoch(), applied))
    }
}

impl Stateful for Book {
    type State = Vec<u64>;
    async fn checkpoint(&self) -> mod_api::Result<Vec<u64>> {
        Ok(self.applied.lock().unwrap().clone())
    }
    async fn restore(&self, state: Vec<u64>) -> mod_api::Result<()> {
        *self.applied.lock().unwrap() = state;
        Ok(())
    }
}

struct Pong;

#[async_trait]
impl Ping for Pong {
    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}

fn config(redis_url: &str, node: &str, host: &[&str]) -> Config {
    Config {
        node_id: Some(node.into()),
        registry: RegistryConfig {
            ttl: Duration::from_secs(2),
            sweep: Duration::from_millis(100),
        },
        invoke: InvokeConfig {
            timeout: Duration::from_secs(3),
            host: Some(host.iter().map(|s| s.to_string()).collect()),
            ..InvokeConfig::default()
        },
        ..Config::default()
    }
    .with_section(&RedisConfig {
        url: redis_url.into(),
        prefix: "takeover".into(),
        ..RedisConfig::default()
    })
}

/// The node role: hosts the ledger (owner or standby) and `Ping` until
/// killed or until stdin closes; prints `READY <addr>`, then `ROLE <role>`
/// at every change of its role.
#[test]
fn node_main() {
    let Ok(node) = std::env::var(ROLE) else {
        return; // a normal test run: nothing to do
    };
    let url = std::env::var("MODKIT_REDIS_URL").expect("MODKIT_REDIS_URL");
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let app = Distributed::start(config(&url, &node, &[SERVICE, "test.Ping"]))
            .await
            .expect("node start");
        let book = Arc::new(Book {
            node: node.clone(),
            applied: Mutex::new(Vec::new()),
            handle: OnceLock::new(),
        });
        let state = StateConfig::new().period(PERIOD).lease(LEASE);
        let handle = app
            .provide_stateful::<dyn Ledger, _>(book.clone(), book.clone(), state)
            .await
            .expect("provide the ledger");
        book.handle.set(handle.clone()).ok();
        app.container()
            .provide::<dyn Ping>(Arc::new(Pong))
            .await
            .expect("provide ping");
        println!("READY {}", app.rpc_address().await.expect("listening"));
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let role = handle.role();
                if last != Some(role) {
                    println!("ROLE {role:?}");
                    last = Some(role);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await
        .ok();
        app.shutdown(Duration::from_secs(1)).await;
    });
}

/// A node process (the `node_main` role): its address and the roles it
/// reported; killed when dropped.
struct NodeProcess {
    process: RoleProcess,
    addr: String,
    roles: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    fn spawn(url: &str, node: &str) -> NodeProcess {
        let roles = Arc::new(Mutex::new(Vec::new()));
        let seen = roles.clone();
        let env = [(ROLE, node), ("MODKIT_REDIS_URL", url)];
        let (process, addr) = RoleProcess::spawn("node_main", &env, move |line| {
            if let Some(role) = line.strip_prefix("ROLE ") {
                seen.lock().unwrap().push(role.to_owned());
            }
        });
        NodeProcess {
            process,
            addr,
            roles,
        }
    }

    fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    fn kill(&mut self) {
        self.process.kill();
    }

    fn last_role(&self) -> Option<String> {
        self.roles.lock().unwrap().last().cloned()
    }

    async fn wait_role(&self, what: &str, prefix: &str, within: Duration) {
        let until = Instant::now() + within;
        while !self.last_role().is_some_and(|r| r.starts_with(prefix)) {
            assert!(
                Instant::now() < until,
                "{what}: role {:?}, expected {prefix}…",
                self.roles.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A client of the ledger on exactly one node's address (not through the registry).
async fn direct(addr: &str) -> Arc<dyn Ledger> {
    let pool = RpcConnections::new(RpcConfig::default());
    let client = pool.get(addr).await.expect("connect");
    <dyn Ledger as Service>::client(Arc::new(RpcTransport::new(client, Duration::from_secs(2))))
}

/// One acknowledged update: its id, who applied it, when.
#[derive(Debug, Clone)]
struct Ack {
    id: u64,
    node: String,
    epoch: u64,
    at: Instant,
}

/// Sends updates `ids` one after another; the acknowledged ones and the failures.
async fn send(
    ledger: &Arc<dyn Ledger>,
    ids: std::ops::Range<u64>,
) -> (Vec<Ack>, Vec<(u64, Error)>) {
    let (mut acks, mut failed) = (Vec::new(), Vec::new());
    for id in ids {
        match ledger.apply(id).await {
            Ok((node, epoch)) => acks.push(Ack {
                id,
                node,
                epoch,
                at: Instant::now(),
            }),
            Err(e) => failed.push((id, e)),
        }
    }
    (acks, failed)
}

/// The history checks every test makes: epochs never go back, and once a
/// newer epoch answered no older one does (never two owners acting).
fn check_epochs(acks: &[Ack]) {
    for pair in acks.windows(2) {
        assert!(
            pair[1].epoch >= pair[0].epoch && pair[1].epoch > 0,
            "epochs went back or an update was applied by a non-owner: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// The ledger as its owner holds it.
async fn final_state(ledger: &Arc<dyn Ledger>) -> (String, u64, Vec<u64>) {
    ledger.applied().await.expect("read the ledger")
}

async fn client(url: &str) -> (Distributed, Arc<dyn Ledger>) {
    let caller = Distributed::start(config(url, "caller", &[]))
        .await
        .expect("caller");
    let ledger = caller.container().get::<dyn Ledger>().expect("proxy");
    (caller, ledger)
}

/// A redis-server, node-a owning the ledger (epoch 1), node-b its standby,
/// and a caller with its client of the ledger.
async fn owner_and_standby() -> (
    RedisServer,
    NodeProcess,
    NodeProcess,
    Distributed,
    Arc<dyn Ledger>,
) {
    let redis = RedisServer::start().expect("redis-server");
    let a = NodeProcess::spawn(&redis.url(), "node-a");
    a.wait_role("first owner", "Owner { epoch: 1 }", Duration::from_secs(10))
        .await;
    let b = NodeProcess::spawn(&redis.url(), "node-b");
    b.wait_role("standby", "Standby", Duration::from_secs(5))
        .await;
    let (caller, ledger) = client(&redis.url()).await;
    (redis, a, b, caller, ledger)
}

fn is_test_run() -> bool {
    std::env::var(ROLE).is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_takeover_under_load_fails_no_call_and_loses_no_update() {
    if !is_test_run() {
        return;
    }
    let (_redis, a, b, caller, ledger) = owner_and_standby().await;

    let (mut acks, mut failed) = send(&ledger, 0..200).await;
    // The takeover runs while the updates keep coming.
    let moving = {
        let caller = caller.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let asked = Instant::now();
            let to = caller.request_takeover(SERVICE, None).await;
            (asked, to)
        })
    };
    // Updates keep coming until the new owner has answered a good many of
    // them (a fast machine sends 500 before the move is done).
    let mut next = 200;
    let deadline = Instant::now() + Duration::from_secs(10);
    while acks.iter().filter(|a| a.node == "node-b").count() < 100 && Instant::now() < deadline {
        let (more, more_failed) = send(&ledger, next..next + 100).await;
        acks.extend(more);
        failed.extend(more_failed);
        next += 100;
    }
    let (asked, to) = moving.await.unwrap();
    assert_eq!(to.expect("a standby to move to"), "node-b");
    assert!(
        failed.is_empty(),
        "calls failed during a planned takeover: {failed:?}"
    );
    check_epochs(&acks);
    let first_b = acks
        .iter()
        .find(|a| a.node == "node-b")
        .expect("node-b answered");
    assert_eq!(first_b.epoch, 2);
    assert!(
        acks.iter()
            .skip_while(|a| a.node != "node-b")
            .all(|a| a.node == "node-b"),
        "node-a answered after node-b took over"
    );
    let moved_ms = first_b.at.saturating_duration_since(asked).as_millis();
    assert!(
        moved_ms < 1000,
        "request to the new owner answering took {moved_ms} ms"
    );

    let (node, epoch, applied) = final_state(&ledger).await;
    assert_eq!((node.as_str(), epoch), ("node-b", 2));
    let expected: Vec<u64> = (0..next).collect();
    assert_eq!(
        applied, expected,
        "lost or repeated updates across the takeover"
    );
    b.wait_role("new owner", "Owner { epoch: 2 }", Duration::from_secs(1))
        .await;
    a.wait_role("old owner", "Standby", Duration::from_secs(1))
        .await;
    println!("planned takeover: request → node-b answering in {moved_ms} ms, {next} updates, 0 failed, 0 lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_standby_restores_the_last_periodic_checkpoint() {
    if !is_test_run() {
        return;
    }
    let (_redis, mut a, _b, _caller, ledger) = owner_and_standby().await;

    // Updates over about 1.5 s (several periods), so that most were
    // checkpointed before the kill and the bound below means something.
    let mut acks = Vec::new();
    for id in 0..300 {
        let (ok, failed) = send(&ledger, id..id + 1).await;
        assert!(failed.is_empty(), "{failed:?}");
        acks.extend(ok);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = Instant::now();
    a.kill();
    // Calls fail until node-b owns the service (lease + a lease of waiting).
    let mut id = 300;
    let mut failed_after_kill = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while acks.last().is_none_or(|a| a.node != "node-b") {
        assert!(Instant::now() < until, "node-b never took over");
        let (ok, failed) = send(&ledger, id..id + 1).await;
        failed_after_kill += failed.len();
        acks.extend(ok);
        id += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken_ms = acks.last().unwrap().at.duration_since(killed).as_millis();
    check_epochs(&acks);

    let (node, epoch, applied) = final_state(&ledger).await;
    assert_eq!((node.as_str(), epoch), ("node-b", 2));
    let kept: std::collections::HashSet<u64> = applied.iter().copied().collect();
    assert_eq!(kept.len(), applied.len(), "an update was applied twice");
    let lost: Vec<&Ack> = acks.iter().filter(|a| !kept.contains(&a.id)).collect();
    assert!(
        lost.len() < 150,
        "{} of 300 lost: more than the last period",
        lost.len()
    );
    // What the crash may lose: the updates since the last checkpoint, at
    // most one period (and the commit's own time) before the kill.
    let bound = PERIOD + Duration::from_millis(150);
    for ack in &lost {
        assert!(
            ack.node == "node-a" && killed.duration_since(ack.at) <= bound,
            "update {} acknowledged {} ms before the kill was lost (bound {} ms)",
            ack.id,
            killed.duration_since(ack.at).as_millis(),
            bound.as_millis()
        );
    }
    println!(
        "crash takeover: node-b answering {taken_ms} ms after kill -9; {} acknowledged updates lost (bound: one period, {} ms); {failed_after_kill} calls failed meanwhile",
        lost.len(),
        PERIOD.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_woken_from_sigstop_neither_serves_nor_writes() {
    if !is_test_run() {
        return;
    }
    let (redis, a, b, caller, ledger) = owner_and_standby().await;
    let (acks, _) = send(&ledger, 0..50).await;
    assert!(acks.iter().all(|a| a.node == "node-a"));
    let to_a = direct(&a.addr).await;
    // Checkpointed before the freeze (a freeze loses at most the last period, as a crash).
    tokio::time::sleep(PERIOD * 2).await;

    a.signal("-STOP");
    // The fault monitor's move: node-b is chosen while node-a cannot answer.
    let to = caller
        .request_takeover(SERVICE, None)
        .await
        .expect("takeover");
    assert_eq!(to, "node-b");
    b.wait_role("new owner", "Owner { epoch: 2 }", Duration::from_secs(5))
        .await;
    // The frozen node-a's registration runs out (the fault monitor would
    // have cordoned it at once); until then a call could still go to it.
    // `lookup` hides an expired lease at once; the caller's proxy follows
    // the registry's sweep (every 100 ms), hence the pause after it.
    let registry = caller.registry();
    mod_api::testkit::eventually("node-a's registration gone", Duration::from_secs(5), || {
        let registry = registry.clone();
        async move {
            registry
                .lookup(SERVICE)
                .await
                .is_ok_and(|l| l.iter().all(|i| i.id == "node-b"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, failed) = send(&ledger, 50..100).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(after.iter().all(|a| a.node == "node-b" && a.epoch == 2));

    a.signal("-CONT");
    // Woken, node-a still believes it owns the service until its next poll;
    // its gate closed when its lease ran out, so a call straight to it is refused.
    let refused = to_a
        .apply(1_000)
        .await
        .expect_err("a stale owner served a call");
    assert_eq!(refused.kind(), ErrorKind::Moved, "{refused}");
    a.wait_role("stale owner fenced", "Standby", Duration::from_secs(3))
        .await;
    // Its periodic checkpoint was refused: the stored one is node-b's.
    let store = StateStore::new(
        Redis::connect(&redis.url(), "takeover").await.unwrap(),
        SERVICE,
    );
    tokio::time::sleep(PERIOD * 2).await;
    let stored = store.load().await.unwrap().expect("a checkpoint");
    assert_eq!(
        stored.epoch, 2,
        "a checkpoint from the stale epoch was accepted"
    );
    let (_, _, applied) = final_state(&ledger).await;
    assert_eq!(
        applied,
        (0..100).collect::<Vec<u64>>(),
        "update 1000 must not exist anywhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_never_chooses_a_cordoned_node() {
    if !is_test_run() {
        return;
    }
    let redis = RedisServer::start().expect("redis-server");
    let a = NodeProcess::spawn(&redis.url(), "node-a");
    a.wait_role("first owner", "Owner { epoch: 1 }", Duration::from_secs(10))
        .await;
    // node-b would win every tie (same load, lower id than node-c).
    let b = NodeProcess::spawn(&redis.url(), "node-b");
    let c = NodeProcess::spawn(&redis.url(), "node-c");
    b.wait_role("standby", "Standby", Duration::from_secs(5))
        .await;
    c.wait_role("standby", "Standby", Duration::from_secs(5))
        .await;
    let (caller, _ledger) = client(&redis.url()).await;
    let registry = caller.registry();
    mod_api::testkit::eventually("every ping registered", Duration::from_secs(5), || {
        let registry = registry.clone();
        async move {
            registry
                .lookup("test.Ping")
                .await
                .map(|l| l.len() == 3)
                .unwrap_or(false)
        }
    })
    .await;
    registry
        .set_status("test.Ping", "node-b", Status::Draining)
        .await
        .expect("cordon node-b");
    tokio::time::sleep(Duration::from_millis(600)).await; // fresh heartbeats of both
    let to = caller
        .request_takeover(SERVICE, None)
        .await
        .expect("takeover");
    assert_eq!(to, "node-c", "the cordoned node-b was chosen");
    c.wait_role(
        "node-c owns it",
        "Owner { epoch: 2 }",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(b.last_role().as_deref(), Some("Standby"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_leave_exactly_one_owner_per_epoch() {
    if !is_test_run() {
        return;
    }
    let redis = RedisServer::start().expect("redis-server");
    let store = StateStore::new(
        Redis::connect(&redis.url(), "race").await.unwrap(),
        "race.Svc",
    );
    let mut history = Vec::new();
    for round in 1..=20u64 {
        let (x, y) = (store.clone(), store.clone());
        let (cx, cy) = tokio::join!(
            async move { x.claim("x", LEASE, true).await.unwrap() },
            async move { y.claim("y", LEASE, true).await.unwrap() },
        );
        let winners: Vec<(&str, u64)> = [("x", &cx), ("y", &cy)]
            .into_iter()
            .filter_map(|(n, c)| match c {
                Claim::Won(e) => Some((n, *e)),
                Claim::Refused(_) => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {cx:?} {cy:?}");
        let (winner, epoch) = winners[0];
        assert_eq!(epoch, round, "one epoch per claim that won");
        let token = mod_distribute::state::store::token(epoch, winner);
        let loser = if winner == "x" { "y" } else { "x" };
        // The loser cannot write or renew; the winner can.
        let stale = mod_distribute::state::store::token(epoch, loser);
        let refused = store
            .commit(&stale, epoch, 1, &format!("l{round}"), b"lost")
            .await;
        assert_eq!(refused.unwrap_err().kind(), ErrorKind::Moved);
        assert!(!store.renew(&stale, LEASE).await.unwrap());
        store
            .commit(&token, epoch, 1, &format!("w{round}"), winner.as_bytes())
            .await
            .unwrap();
        history.push((winner, epoch));
        assert!(store.release(&token, None, LEASE).await.unwrap());
    }
    let stored = store.load().await.unwrap().unwrap();
    let (last_winner, last_epoch) = *history.last().unwrap();
    assert_eq!(
        (stored.epoch, stored.state.as_slice()),
        (last_epoch, last_winner.as_bytes())
    );
}
