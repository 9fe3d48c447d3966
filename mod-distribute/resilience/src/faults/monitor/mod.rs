//! The monitor's loop: one round every `interval` (see the module docs);
//! what it does about a confirmed fault is in act.rs.

mod act;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::join_all;
use mod_api::{Instance, Registry, Result};
use mod_distribute::redis::redis_error;
use mod_distribute::rpc::{probe, RpcConnections};
use mod_distribute::topology::Alert;
use mod_distribute::{Redis, RpcConfig};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::classify::{classify, AgentView, FaultKind, Probed, Verdict};
use super::config::FaultConfig;
use super::report::{report_key, HostReport, ProcessReport};
use crate::alert::Alerts;

/// Watches a deployment's replicas and acts on their faults (module docs).
pub struct FaultMonitor {
    alerts: Alerts,
    faulty: Arc<Mutex<BTreeMap<String, FaultKind>>>,
    task: JoinHandle<()>,
}

impl FaultMonitor {
    /// Starts watching the replicas in `registry`, reading the host agents'
    /// reports from `redis` (the deployment's, same prefix), probing with
    /// `rpc`'s client settings (secret, TLS).
    pub fn start(
        config: FaultConfig,
        redis: Redis,
        registry: Arc<dyn Registry>,
        rpc: RpcConfig,
    ) -> FaultMonitor {
        let alerts = Alerts::without_publisher(config.alert_command.clone());
        let faulty = Arc::new(Mutex::new(BTreeMap::new()));
        let mut state = State {
            pool: RpcConnections::new(rpc),
            config,
            redis,
            registry,
            alerts: alerts.clone(),
            faulty: faulty.clone(),
            tracked: HashMap::new(),
            placed: HashMap::new(),
            onset: HashMap::new(),
            next_id: unix_ms(),
        };
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = state.round().await {
                    tracing::warn!(error = %e, "fault monitor round failed; next round");
                }
            }
        });
        FaultMonitor {
            alerts,
            faulty,
            task,
        }
    }

    /// The alerts it raises from now on.
    pub fn alerts(&self) -> broadcast::Receiver<Alert> {
        self.alerts.subscribe()
    }

    /// The replicas it holds faulty now (node id → kind), acted on or not.
    pub fn faulty(&self) -> BTreeMap<String, FaultKind> {
        self.faulty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for FaultMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a replica was last reported.
#[derive(Clone)]
struct Placement {
    host: String,
    process: String,
    services: Vec<String>,
    /// Its agent's restart count, last report.
    restarts: u32,
}

/// What the monitor remembers of one faulty (or recovering) replica.
struct Tracked {
    kind: FaultKind,
    /// Rounds in a row with this kind.
    streak: u32,
    /// Healthy rounds in a row since.
    healthy: u32,
    since: Instant,
    acted: bool,
    /// (service, instance id) it set `Draining`.
    cordoned: Vec<(String, String)>,
    /// The running repair's step and when it should be done.
    repair: Option<(String, Instant)>,
    history: Vec<String>,
    escalated: bool,
    migrated_to: Option<String>,
}

struct State {
    config: FaultConfig,
    redis: Redis,
    registry: Arc<dyn Registry>,
    pool: RpcConnections,
    alerts: Alerts,
    faulty: Arc<Mutex<BTreeMap<String, FaultKind>>>,
    tracked: HashMap<String, Tracked>,
    placed: HashMap<String, Placement>,
    /// When each replica first failed the monitor's probe in a row (Unix ms).
    onset: HashMap<String, u64>,
    next_id: u64,
}

/// One round's view: every instance, and the fresh reports by host.
struct View {
    instances: Vec<Instance>,
    reports: HashMap<String, HostReport>,
}

impl View {
    /// `node`'s process in a fresh report, and when that report was written.
    fn process(&self, node: &str) -> Option<(&ProcessReport, u64)> {
        self.reports
            .values()
            .flat_map(|r| r.processes.iter().map(|p| (p, r.at_ms)))
            .find(|(p, _)| p.node == node)
    }

    fn of_service<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.iter().filter(move |i| i.service == service)
    }
}

impl State {
    async fn round(&mut self) -> Result<()> {
        let view = View {
            instances: self.instances().await?,
            reports: self.reports().await?,
        };
        for report in view.reports.values() {
            for p in &report.processes {
                let placement = Placement {
                    host: report.host.clone(),
                    process: p.process.clone(),
                    services: p.services.clone(),
                    restarts: p.restarts,
                };
                let before = self.placed.insert(p.node.clone(), placement);
                if before.is_some_and(|b| b.restarts < p.restarts) {
                    self.restarted(&report.host, p);
                }
            }
        }
        let mut nodes: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
        for i in &view.instances {
            nodes.entry(i.id.as_str()).or_default().push(i);
        }
        let probes = join_all(nodes.values().map(|insts| self.probe(&insts[0].address))).await;
        let now = unix_ms();
        // A report is evidence about a failure when written after it began,
        // late enough for its agent's probe to have seen it.
        let settle = self.config.probe_timeout.as_millis() as u64 + 50;
        for ((node, insts), probed) in nodes.iter().zip(probes) {
            let onset = match probed {
                Probed::Ok(_) => {
                    self.onset.remove(*node);
                    now
                }
                _ => *self.onset.entry(node.to_string()).or_insert(now),
            };
            let agent = match (view.process(node), self.placed.get(*node)) {
                (Some((_, at)), _) if at < onset + settle => AgentView::Stale,
                (Some((p, _)), _) => AgentView::Reports(p),
                (None, Some(at)) if !view.reports.contains_key(&at.host) => AgentView::Silent,
                _ => AgentView::Unmanaged,
            };
            let verdict = classify(&probed, agent);
            self.judge(node, insts, verdict, &view).await;
        }
        self.tracked
            .retain(|node, _| nodes.contains_key(node.as_str()));
        self.onset
            .retain(|node, _| nodes.contains_key(node.as_str()));
        let faulty = self
            .tracked
            .iter()
            .map(|(n, t)| (n.clone(), t.kind))
            .collect();
        *self.faulty.lock().unwrap_or_else(|e| e.into_inner()) = faulty;
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<Instance>> {
        let mut all = Vec::new();
        for service in self.registry.services().await? {
            all.extend(self.registry.lookup(&service).await?);
        }
        Ok(all)
    }

    /// The fresh host reports (an expired one is simply absent).
    async fn reports(&self) -> Result<HashMap<String, HostReport>> {
        let pattern = report_key(self.redis.prefix(), "*");
        let (mut keys, mut cursor) = (Vec::new(), 0u64);
        loop {
            // SCAN, not KEYS: a large database is never blocked for a round.
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.redis.conn())
                .await
                .map_err(redis_error)?;
            keys.extend(batch.into_iter().filter(|k| !k.ends_with(":inbox")));
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(redis_error)?;
        let mut reports = HashMap::new();
        for json in values.into_iter().flatten() {
            match serde_json::from_str::<HostReport>(&json) {
                Ok(r) => {
                    reports.insert(r.host.clone(), r);
                }
                Err(e) => tracing::warn!(error = %e, "undecodable host report skipped"),
            }
        }
        Ok(reports)
    }

    async fn probe(&self, address: &str) -> Probed {
        let start = Instant::now();
        match probe(&self.pool, address, self.config.probe_timeout).await {
            Ok(_) => Probed::Ok(start.elapsed()),
            Err(e) if e.kind() == mod_api::ErrorKind::Timeout => Probed::Timeout,
            Err(e) => Probed::Failed(e.to_string()),
        }
    }

    /// Updates what is known of `node` with this round's verdict and acts.
    async fn judge(&mut self, node: &str, insts: &[&Instance], verdict: Verdict, view: &View) {
        let confirm = self.config.confirm_rounds.max(1);
        let (kind, why) = match verdict {
            Verdict::Healthy => {
                if let Some(t) = self.tracked.get_mut(node) {
                    t.healthy += 1;
                    if t.healthy >= confirm {
                        let t = self.tracked.remove(node).expect("tracked");
                        self.recovered(node, t).await;
                    }
                }
                return;
            }
            Verdict::Unexplained(why) => {
                tracing::debug!(node, why, "replica unreachable, cause unknown");
                return;
            }
            Verdict::Fault { kind, why } => (kind, why),
        };
        let t = self
            .tracked
            .entry(node.to_owned())
            .or_insert_with(|| Tracked {
                kind,
                streak: 0,
                healthy: 0,
                since: Instant::now(),
                acted: false,
                cordoned: Vec::new(),
                repair: None,
                history: Vec::new(),
                escalated: false,
                migrated_to: None,
            });
        t.healthy = 0;
        if t.kind == kind {
            t.streak += 1;
        } else if !t.acted {
            (t.kind, t.streak) = (kind, 1);
        }
        if t.streak < confirm || t.escalated {
            return;
        }
        if !t.acted {
            t.acted = true;
            self.act(node, insts, &why, view).await;
            return;
        }
        self.follow_up(node, insts, view).await;
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
