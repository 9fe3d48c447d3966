//! A stateful service moving between processes, as a readable timeline:
//!
//! ```sh
//! cargo run --example takeover --features distribute
//! ```
//!
//! `demo.Leaderboard` keeps its scores in memory and implements `Stateful`,
//! so modkit checkpoints them to Redis every 200 ms and keeps one owner at a
//! time among the processes that host the service, under an owner epoch and
//! a lease of 1 s. The example starts its own `redis-server`, two node
//! processes through the library's deployer (this binary again, in its
//! serving role: `node-0`, then `node-1` as a standby), and in this process
//! a client that adds points, pausing 5 ms between updates, and records
//! every answer. Then:
//!
//! 1. a planned takeover (`request_takeover`: "node-0 is at risk"): the
//!    owner stops taking calls, lets those in flight finish, writes a final
//!    checkpoint and hands over; the client's calls wait and none fails, and
//!    the board read from the new owner holds every acknowledged update (the
//!    example exits with an error if it does not);
//! 2. a crash (`kill -9` of the new owner): once its lease has run out the
//!    other node takes over from the last periodic checkpoint; the updates
//!    acknowledged after that checkpoint are lost (at most about one
//!    period's worth), and counted.
//!
//! Every update carries an id and the board keeps the ids it applied (so a
//! retried update counts once), which lets the example tell exactly which
//! acknowledged updates the state holds. Needs `redis-server` on the PATH
//! (or `MODKIT_REDIS_SERVER`). `RUST_LOG=info` shows the logs on standard
//! error, the nodes' lines prefixed with their node.

mod client;
mod service;
mod timeline;

use std::collections::BTreeSet;
use std::future::{ready, Future};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use modkit::distribute::deploy::{self, Deployment, DeploymentFile, Launcher};
use modkit::distribute::state::StateStore;
use modkit::distribute::{Distributed, RedisServer};
use modkit::prelude::*;

use client::{failures, first_answer, last_answer, read_board, runs, send_updates, Log, Read};
use service::{serve, Leaderboard};
use timeline::{watch_owner, Timeline};

/// The stateful service.
const SERVICE: &str = "demo.Leaderboard";
/// Checkpoint period: about what a crash may lose.
const PERIOD: Duration = Duration::from_millis(200);
/// The owner's lease: a crashed owner holds the service this long.
const LEASE: Duration = Duration::from_secs(1);
/// The client's pause between updates.
const EVERY: Duration = Duration::from_millis(5);
/// Who gets the points.
const PLAYERS: [&str; 4] = ["ada", "grace", "linus", "margaret"];
/// The first owner and the standby.
const NODES: [&str; 2] = ["node-0", "node-1"];
/// The deployment: `node-0` starts with it, `node-1` is added later; a
/// killed node stays dead.
const DEPLOYMENT: &str = r#"
[[process]]
name = "node"
services = ["demo.Leaderboard"]
restart = "never"
"#;

/// Locks `mutex`, also after a panic elsewhere.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running scenario: the node processes, this process's node, the
/// client and what it recorded, the timeline.
struct Demo {
    /// What happened when.
    timeline: Timeline,
    /// The node processes (and their supervisors).
    deployment: Deployment,
    /// This process's node: calls the service, asks for the takeover.
    operator: Distributed,
    /// The service's ownership and checkpoints in Redis, as an operator sees them.
    store: StateStore,
    /// The client of the service (through the registry).
    board: Arc<dyn Leaderboard>,
    /// What the client sent and got.
    log: Log,
    /// The owner watcher and the client.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What a takeover came to.
struct Moved {
    /// The node that owns the service afterwards.
    to: String,
    /// When it first answered an update.
    at: Instant,
    /// The board read from it then.
    read: Read,
    /// Calls that failed during the takeover.
    failed: usize,
}

impl Demo {
    /// Starts `node-0` on `redis`, waits until it owns the service, adds
    /// `node-1` as a standby, and starts the client.
    async fn start(redis: &RedisServer, timeline: Timeline) -> modkit::Result<Demo> {
        let [first, second] = NODES;
        let mut config = Config::from_toml(&format!("[redis]\nurl = \"{}\"\n", redis.url()))?;
        let deployment = Launcher::new(&DeploymentFile::parse(DEPLOYMENT)?).launch(&mut config)?;
        // This process's node: a pure caller (the launcher hosts nothing) and the operator.
        let operator = Distributed::start(config).await?;
        let store = StateStore::new(operator.redis().clone(), SERVICE);
        let watcher = tokio::spawn(watch_owner(store.clone(), timeline.clone()));
        let mut demo = Demo {
            board: operator.container().get::<dyn Leaderboard>()?,
            timeline,
            deployment,
            operator,
            store,
            log: Log::default(),
            tasks: vec![watcher],
        };
        demo.started(first);
        demo.wait_for(
            &format!("{first} owning {SERVICE}"),
            Duration::from_secs(20),
            |store| async move { store.ownership().await.ok()?.owner.map(|_| ()) },
        )
        .await?;

        demo.deployment.start_replica("node", second)?;
        demo.started(second);
        demo.wait_for(
            &format!("{second} standing by"),
            Duration::from_secs(20),
            |store| async move {
                let standbys = store.standbys().await.ok()?;
                standbys
                    .iter()
                    .any(|(node, _)| node == second)
                    .then_some(())
            },
        )
        .await?;
        let note = format!("{second} stands by: it refuses calls (Moved) and heartbeats");
        demo.timeline.note(Instant::now(), note);

        let started = Instant::now();
        demo.tasks.push(tokio::spawn(send_updates(
            demo.board.clone(),
            demo.log.clone(),
        )));
        let note =
            "client: adds points, 5 ms between updates, one id per update; records every answer";
        demo.timeline.note(started, note);
        Ok(demo)
    }

    /// Notes that replica `node` started.
    fn started(&self, node: &str) {
        let pid = self
            .deployment
            .process(node)
            .and_then(|p| p.pid)
            .unwrap_or_default();
        let note = format!("{node} started (pid {pid}), hosting {SERVICE}");
        self.timeline.note(Instant::now(), note);
    }

    /// Polls `probe` (given the store) every 5 ms until it finds something,
    /// for up to `within`.
    async fn wait_for<T, F, Fut>(
        &self,
        what: &str,
        within: Duration,
        mut probe: F,
    ) -> modkit::Result<T>
    where
        F: FnMut(StateStore) -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let until = Instant::now() + within;
        loop {
            if let Some(found) = probe(self.store.clone()).await {
                return Ok(found);
            }
            if Instant::now() >= until {
                return Err(Error::timeout(format!("{what}: not within {within:?}")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (up to `within`) for the first update answered by `node` after
    /// `since`, notes it with the calls that failed meanwhile, and reads the
    /// board.
    async fn answered_by(
        &self,
        node: &str,
        since: Instant,
        within: Duration,
        after: &str,
    ) -> modkit::Result<Moved> {
        let log = &self.log;
        let (at, epoch) = self
            .wait_for(&format!("{node} answering"), within, |_| {
                ready(first_answer(log, node, since))
            })
            .await?;
        let (failed, failures) = failures(log, since, at);
        let waited = (at - since).as_millis();
        let note = format!("first update answered by {node} (epoch {epoch}), {waited} ms after {after}; {failures}");
        self.timeline.note(at, note);
        let read = read_board(&*self.board, log).await?;
        let note = format!(
            "board read from {} (epoch {}): {} acknowledged updates, {} missing; points match the ids: {}",
            read.owner.node,
            read.owner.epoch,
            read.acked,
            read.lost.len(),
            read.consistent
        );
        self.timeline.note(Instant::now(), note);
        Ok(Moved {
            to: node.to_owned(),
            at,
            read,
            failed,
        })
    }

    /// The planned takeover: asks for the service to leave `node-0`.
    async fn planned_takeover(&self) -> modkit::Result<Moved> {
        let first = NODES[0];
        let asked = Instant::now();
        let target = self.operator.request_takeover(SERVICE, None).await?;
        let note = format!("takeover requested: {first} is at risk; the standby chosen: {target}");
        self.timeline.note(asked, note);
        let moved = self
            .answered_by(&target, asked, Duration::from_secs(10), "the request")
            .await?;
        if let Some((at, epoch)) = last_answer(&self.log, first) {
            self.timeline.note(
                at,
                format!("last update answered by {first} (epoch {epoch})"),
            );
        }
        Ok(moved)
    }

    /// The crash: `kill -9` of the owner `victim`; the other node takes over.
    async fn crash(&self, victim: &str) -> modkit::Result<(Instant, Moved)> {
        let pid = self
            .deployment
            .process(victim)
            .and_then(|p| p.pid)
            .ok_or_else(|| Error::unavailable(format!("{victim} is not running")))?;
        let killed = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        if !status.success() {
            return Err(Error::internal(format!("kill -9 {pid} failed: {status}")));
        }
        self.timeline
            .note(killed, format!("kill -9 {victim} (pid {pid}), the owner"));
        let survivor = NODES.into_iter().find(|n| *n != victim).unwrap_or(NODES[0]);
        let moved = self
            .answered_by(survivor, killed, Duration::from_secs(20), "the kill")
            .await?;
        Ok((killed, moved))
    }

    /// Stops the client, this process's node, and the node processes.
    async fn stop(self) {
        let Demo {
            deployment,
            operator,
            board,
            tasks,
            ..
        } = self;
        for task in tasks {
            task.abort();
        }
        drop(board);
        operator.shutdown(Duration::from_secs(1)).await;
        drop(operator);
        // Let this node's background tasks end before Redis goes away.
        tokio::time::sleep(Duration::from_millis(50)).await;
        deployment.stop(Duration::from_secs(5)).await;
    }
}

#[tokio::main]
async fn main() -> modkit::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if deploy::role().is_some() {
        return serve().await;
    }
    let timeline = Timeline::new();
    let redis = RedisServer::start()?;
    timeline.note(Instant::now(), format!("redis-server on {}", redis.addr()));
    let demo = Demo::start(&redis, timeline.clone()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (node, epoch, n) in runs(&demo.log) {
        timeline.note(
            Instant::now(),
            format!("updates flowing: {n} acknowledged by {node} (epoch {epoch})"),
        );
    }
    timeline.print();

    println!("-- planned takeover");
    let planned = demo.planned_takeover().await?;
    // Half a period off the rhythm of the new owner's checkpoints: a crash
    // at an average moment.
    tokio::time::sleep(Duration::from_secs(1) + PERIOD / 2).await;
    timeline.print();

    println!("-- crash");
    let (killed, crash) = demo.crash(&planned.to).await?;
    // Lost in the planned takeover: missing at its own read, or missing at
    // the last read though acknowledged before the new owner answered.
    let before_move = crash.read.lost.iter().filter(|(_, at)| *at <= planned.at);
    let lost_planned: BTreeSet<u64> = planned
        .read
        .lost
        .iter()
        .chain(before_move)
        .map(|(id, _)| *id)
        .collect();
    // Lost in the crash: the others missing at the last read.
    let lost_crash: Vec<Instant> = crash
        .read
        .lost
        .iter()
        .filter(|(id, _)| !lost_planned.contains(id))
        .map(|(_, at)| *at)
        .collect();
    if let Some(oldest) = lost_crash.iter().min() {
        let note = format!(
            "the {} updates lost were acknowledged in the last {} ms before the kill (period {} ms)",
            lost_crash.len(),
            killed.saturating_duration_since(*oldest).as_millis(),
            PERIOD.as_millis()
        );
        timeline.note(Instant::now(), note);
    }
    timeline.print();

    let runs = runs(&demo.log);
    let epochs_rise = runs.windows(2).all(|w| w[1].1 > w[0].1);
    let (total, failed) = {
        let log = lock(&demo.log);
        let failed = log.iter().filter(|s| s.answer.is_err()).count();
        (log.len() - failed, failed)
    };
    let answers: Vec<String> = runs
        .iter()
        .map(|(node, epoch, n)| format!("{n} by {node} (epoch {epoch})"))
        .collect();
    println!();
    println!("answers, in order: {}", answers.join(", then "));
    println!(
        "summary: {total} updates acknowledged, {failed} calls failed ({} in the planned takeover, {} in the crash); \
         acknowledged updates lost: {} in the planned takeover, {} in the crash",
        planned.failed,
        crash.failed,
        lost_planned.len(),
        lost_crash.len(),
    );
    demo.stop().await;
    drop(redis);
    if !lost_planned.is_empty() {
        let lost = Vec::from_iter(lost_planned);
        return Err(Error::internal(format!(
            "the planned takeover lost acknowledged updates {lost:?}"
        )));
    }
    if !epochs_rise || !planned.read.consistent || !crash.read.consistent {
        return Err(Error::internal(
            "an older owner answered after a newer one, or the points do not match the ids",
        ));
    }
    Ok(())
}
