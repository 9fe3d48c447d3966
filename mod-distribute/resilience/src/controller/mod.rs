//! One voter of the controller group: probes every node, reports what it
//! sees through [`Consensus`], publishes the committed topology, and — while
//! it leads — fails the primary over and keeps the group in shape.
//!
//! Detection: a voter reports a node down after it stayed unreachable for
//! `down_after`, and up again on its first answer. The primary is failed
//! when a majority of voters report it down; only the leader acts, and only
//! after the intent is committed (the order and its reasons: `failover.rs`).

mod failover;
mod sites;
mod switchover;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use mod_api::Result;
use mod_distribute::topology::{Alert, Publisher, Topology};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::alert::Alerts;
use crate::config::HaConfig;
use crate::consensus::{Command, Consensus, GroupState};
use crate::probe::{Node, Probe, Replication};
use crate::rules::{self, SiteHealth};

/// A running voter; dropping it stops it.
pub struct Controller {
    addr: std::net::SocketAddr,
    alerts: Alerts,
    state: watch::Receiver<GroupState>,
    commands: Commands,
    admin: Option<std::net::SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

/// A switchover to the node (or the best replica), and where to answer.
type Request = (Option<String>, oneshot::Sender<Result<Topology>>);

/// Sends operator commands to the voter's loop (which owns the nodes).
#[derive(Clone)]
pub(crate) struct Commands(mpsc::Sender<Request>);

impl Commands {
    pub(crate) async fn switchover(&self, to: Option<String>) -> Result<Topology> {
        let (reply, answer) = oneshot::channel();
        let stopped = || mod_api::Error::unavailable("the controller has stopped");
        self.0.send((to, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Controller {
    /// Starts the voter `config.voter` on `consensus`: the subscription
    /// listener on `config.listen`, the probes, and the leader's duties.
    pub async fn start(config: HaConfig, consensus: Arc<dyn Consensus>) -> Result<Controller> {
        config.validate()?;
        let publisher = Arc::new(Publisher::bind(&config.listen).await?);
        let addr = publisher.local_addr();
        let alerts = Alerts::new(publisher.clone(), config.alert_command.clone());
        let state = consensus.state();
        let publish = tokio::spawn(publish(state.clone(), publisher.clone()));
        let quorum = tokio::spawn(serve_in_quorum(
            consensus.clone(),
            publisher,
            config.probe_every,
        ));
        let nodes = config
            .nodes
            .iter()
            .map(|addr| Node::new(&config.url, addr, config.probe_every))
            .collect::<Result<Vec<_>>>()?;
        let (requests, inbox) = mpsc::channel(4);
        let voter = Voter {
            inbox,
            seen: HashMap::new(),
            nodes,
            consensus,
            alerts: alerts.clone(),
            unhealthy: false,
            sites: config
                .sites
                .keys()
                .map(|s| (s.clone(), SiteHealth::default()))
                .collect(),
            site_switch: None,
            quorum_lost: false,
            step_failed: false,
            min_replicas_set: None,
            config,
        };
        tracing::info!(voter = voter.config.voter, listen = %addr, group = %voter.config.group, "controller started");
        let commands = Commands(requests);
        let mut tasks = vec![publish, quorum];
        let mut admin = None;
        if let Some(listen) = &voter.config.admin {
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                mod_api::Error::config(format!("[ha] admin: cannot listen on {listen}"))
                    .with_source(e)
            })?;
            admin = Some(listener.local_addr()?);
            let serve = crate::admin::serve(listener, commands.clone(), voter.consensus.clone());
            tasks.push(tokio::spawn(serve));
        }
        tasks.push(tokio::spawn(voter.run()));
        Ok(Controller {
            addr,
            alerts,
            state,
            commands,
            admin,
            tasks,
        })
    }

    /// Where subscribers connect (`[redis] controllers`).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The replicated state as this voter applied it.
    pub fn state(&self) -> watch::Receiver<GroupState> {
        self.state.clone()
    }

    /// A planned switchover of the primary to `to` (a replica in sync; `None`:
    /// the replica with the highest offset). Writes pause for the time the
    /// target takes to catch up; no acknowledged write is lost. Only the
    /// leader does it (another voter answers a retryable `Unavailable`);
    /// returns the committed topology. A target that cannot catch up
    /// within 2 s leaves everything as it was (a `Timeout` error).
    pub async fn switchover(&self, to: Option<String>) -> Result<Topology> {
        self.commands.switchover(to).await
    }

    /// Where operator commands are taken (`[ha] admin`), if anywhere.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin
    }

    /// The alerts this voter raises from now on.
    pub fn alerts(&self) -> broadcast::Receiver<Alert> {
        self.alerts.subscribe()
    }
}

/// Publishes every committed topology to the subscribers.
async fn publish(mut state: watch::Receiver<GroupState>, publisher: Arc<Publisher>) {
    loop {
        let topology = state.borrow_and_update().topology.clone();
        if topology.epoch > 0 {
            publisher.publish(topology);
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// Serves subscriptions only while this voter is part of a majority.
async fn serve_in_quorum(
    consensus: Arc<dyn Consensus>,
    publisher: Arc<Publisher>,
    every: std::time::Duration,
) {
    let mut serving = true;
    loop {
        let in_quorum = consensus.in_quorum();
        if in_quorum != serving {
            if in_quorum {
                tracing::info!("back in a majority: serving topology subscriptions again");
            } else {
                tracing::warn!("outside a majority: closing topology subscriptions");
            }
            serving = in_quorum;
            publisher.set_serving(serving);
        }
        tokio::time::sleep(every).await;
    }
}

/// What this voter saw of one node.
#[derive(Default)]
struct Seen {
    last: Option<Replication>,
    /// The last answer: `down_after` counts from it, as Sentinel's
    /// `down-after-milliseconds` does.
    last_ok: Option<Instant>,
    unreachable_since: Option<Instant>,
    /// When the first failed probe of the current outage ended: the node
    /// was cut off (or frozen) before it, so it heard its replicas last
    /// before it too (what the fencing window counts from).
    silent_since: Option<Instant>,
    refused: bool,
    reported_down: bool,
}

struct Voter {
    config: HaConfig,
    inbox: mpsc::Receiver<Request>,
    consensus: Arc<dyn Consensus>,
    alerts: Alerts,
    nodes: Vec<Node>,
    seen: HashMap<String, Seen>,
    unhealthy: bool,
    /// Each configured site's health over the probe rounds.
    sites: BTreeMap<String, SiteHealth>,
    /// A site that went down holding the primary: the leader moves the
    /// primary to another site's replica (`sites.rs`).
    site_switch: Option<String>,
    quorum_lost: bool,
    /// The last step failed: wait for the next probe to retry.
    step_failed: bool,
    /// `(primary, value)` of the last `min-replicas-to-write` set.
    min_replicas_set: Option<(String, u32)>,
}

impl Voter {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.config.probe_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = self.consensus.state();
        loop {
            // Probe on the tick; act also as soon as another voter's report
            // is applied (not a tick later: that is failover time).
            let probed = tokio::select! {
                _ = tick.tick() => true,
                request = self.inbox.recv() => {
                    let Some((to, reply)) = request else { return };
                    let _ = reply.send(self.switchover(to).await);
                    continue;
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    false
                }
            };
            if probed {
                self.probe_all().await;
                self.report().await;
                self.check_health();
            }
            if !self.consensus.is_leader() {
                continue;
            }
            if probed && self.switch_site().await {
                continue;
            }
            let state = changes.borrow_and_update().clone();
            if !probed
                && (self.step_failed
                    || state
                        .topology
                        .primary
                        .as_ref()
                        .is_none_or(|p| !self.primary_failed(&state, p)))
            {
                // Between probes only a failover is urgent, and only one
                // that did not just fail: a retry waits for the next probe
                // (its own proposals change the state, and would wake it).
                continue;
            }
            let result = match &state.topology.primary {
                None => self.bootstrap().await,
                Some(primary) if self.primary_failed(&state, primary) => {
                    self.failover(&state.topology).await
                }
                Some(_) => self.reconcile(&state.topology).await,
            };
            self.step_failed = result.is_err();
            if let Err(e) = result {
                tracing::warn!(error = %e, "controller step failed; retrying next probe");
            }
        }
    }

    fn primary_failed(&self, state: &GroupState, primary: &str) -> bool {
        rules::primary_failed(state.voters_down(primary), self.consensus.voters())
    }

    async fn probe_all(&mut self) {
        let probes = join_all(
            self.nodes
                .iter_mut()
                .map(|n| async { (n.addr.clone(), n.probe().await) }),
        )
        .await;
        let now = Instant::now();
        for (addr, probe) in probes {
            let seen = self.seen.entry(addr).or_default();
            match probe {
                Probe::Up(replication) => {
                    seen.last = Some(replication);
                    seen.last_ok = Some(now);
                    seen.unreachable_since = None;
                    seen.silent_since = None;
                    seen.refused = false;
                }
                Probe::Refused | Probe::Silent => {
                    seen.unreachable_since
                        .get_or_insert(seen.last_ok.unwrap_or(now));
                    seen.silent_since.get_or_insert(now);
                    seen.refused = probe == Probe::Refused;
                }
            }
        }
    }

    /// Proposes a report for every node whose down/up view changed.
    async fn report(&mut self) {
        let down_after = self.config.down_after;
        let changes: Vec<(String, bool)> = self
            .seen
            .iter()
            .filter_map(|(addr, seen)| {
                let down = seen
                    .unreachable_since
                    .is_some_and(|t| t.elapsed() >= down_after);
                (down != seen.reported_down).then(|| (addr.clone(), down))
            })
            .collect();
        for (node, down) in changes {
            let command = Command::Report {
                voter: self.consensus.id(),
                node: node.clone(),
                down,
            };
            match self.consensus.propose(command).await {
                Ok(()) => {
                    if self.quorum_lost {
                        self.quorum_lost = false;
                        tracing::info!("controller quorum regained");
                    }
                    if let Some(seen) = self.seen.get_mut(&node) {
                        seen.reported_down = down;
                    }
                    tracing::info!(%node, down, voter = self.consensus.id(), "node reported");
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "cannot report to the controller group");
                    if !self.quorum_lost {
                        self.quorum_lost = true;
                        self.alerts.raise(Alert::QuorumLost {
                            group: self.config.group.clone(),
                            voter: self.consensus.id(),
                        });
                    }
                    return;
                }
            }
        }
    }

    /// Seed 000's rule: unhealthy when available/total ≤ the ratio.
    fn check_health(&mut self) {
        let total = self.nodes.len();
        let available = self
            .seen
            .values()
            .filter(|s| s.unreachable_since.is_none())
            .count();
        let unhealthy = rules::unhealthy(available, total, self.config.unhealthy_ratio);
        if unhealthy && !self.unhealthy {
            self.alerts.raise(Alert::GroupUnhealthy {
                group: self.config.group.clone(),
                available,
                total,
            });
        }
        self.unhealthy = unhealthy;
        self.check_sites();
    }

    /// The node `addr`, if configured.
    fn node(&mut self, addr: &str) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.addr == addr)
    }

    /// The last answer of `addr`, if it answers now.
    fn up(&self, addr: &str) -> Option<&Replication> {
        let seen = self.seen.get(addr)?;
        seen.unreachable_since
            .is_none()
            .then_some(seen.last.as_ref())
            .flatten()
    }

    /// No topology yet: the answering primary with the most replicas (the
    /// first configured node when none is a primary) becomes epoch 1.
    async fn bootstrap(&mut self) -> Result<()> {
        let mut primaries: Vec<(usize, usize, String)> = self
            .config
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, addr)| {
                let r = self.up(addr)?;
                r.master
                    .then(|| (r.online_replicas.len(), usize::MAX - i, addr.clone()))
            })
            .collect();
        primaries.sort();
        let Some((_, _, primary)) = primaries.pop() else {
            return Err(mod_api::Error::unavailable(
                "no Redis node answers as a primary yet",
            ));
        };
        let replicas: Vec<String> = self
            .config
            .nodes
            .iter()
            .filter(|a| **a != primary)
            .cloned()
            .collect();
        for replica in &replicas {
            if self
                .up(replica)
                .is_some_and(|r| r.following.as_deref() != Some(&primary))
            {
                self.replicate(replica, &primary).await?;
            }
        }
        let topology = Topology {
            group: self.config.group.clone(),
            epoch: 1,
            primary: Some(primary.clone()),
            replicas,
            fenced: Vec::new(),
        };
        self.consensus.propose(Command::Commit(topology)).await?;
        tracing::info!(%primary, "initial topology committed (epoch 1)");
        Ok(())
    }

    /// `REPLICAOF primary` on `replica`.
    async fn replicate(&mut self, replica: &str, primary: &str) -> Result<()> {
        let (host, port) = primary.rsplit_once(':').unwrap_or((primary, "6379"));
        let cmd = redis::cmd("REPLICAOF").arg(host).arg(port).clone();
        let Some(node) = self.node(replica) else {
            return Ok(());
        };
        node.query::<()>(&cmd).await
    }
}
