//! The monitor's loop: one round every `interval` (see the module docs).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::join_all;
use mod_api::{Instance, Registry, Result, Status};
use mod_distribute::redis::redis_error;
use mod_distribute::rpc::{probe, RpcConnections};
use mod_distribute::topology::Alert;
use mod_distribute::{Redis, RpcConfig};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::classify::{classify, AgentView, FaultKind, Probed, Verdict};
use super::config::{FaultConfig, Step};
use super::report::{inbox_key, report_key, HostReport, Instruction, ProcessReport};
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

    /// The first action on a confirmed fault: cordon, report, repair, migrate.
    async fn act(&mut self, node: &str, insts: &[&Instance], why: &str, view: &View) {
        let kind = self.tracked[node].kind;
        let rule = self.config.rule(kind);
        let mut actions = Vec::new();
        let mut cordoned = Vec::new();
        // Every fault here failed the monitor's probe: impact high, cordon.
        for i in insts.iter().filter(|i| i.status == Status::Up) {
            let total = view.of_service(&i.service).count();
            let out = view
                .of_service(&i.service)
                .filter(|o| o.status != Status::Up);
            let out = out.count() + cordoned.iter().filter(|(s, _)| s == &i.service).count();
            if out + 1 > self.config.max_cordoned(total) {
                self.raise(
                    node,
                    Alert::CordonHeldBack {
                        service: i.service.clone(),
                        node: node.to_owned(),
                        cordoned: out,
                        total,
                    },
                );
                continue;
            }
            match self
                .registry
                .set_status(&i.service, &i.id, Status::Draining)
                .await
            {
                Ok(()) => cordoned.push((i.service.clone(), i.id.clone())),
                Err(e) => tracing::warn!(node, error = %e, "cannot cordon"),
            }
        }
        if !cordoned.is_empty() {
            actions.push("cordon".to_owned());
        }
        let mut migration = None;
        if let Some(repair) = &rule.repair {
            actions.push(format!("repair:{}", repair.step.name()));
            if repair.expected > self.config.migrate_after {
                migration = self.migration_target(node, view);
            }
        }
        if migration.is_some() {
            actions.push("migrate".to_owned());
        }
        let host = self.placed.get(node).map(|p| p.host.clone());
        if rule.report {
            actions.insert(0, "report".to_owned());
            self.raise(
                node,
                Alert::InstanceFault {
                    node: node.to_owned(),
                    host,
                    kind: kind.as_str().to_owned(),
                    detail: why.to_owned(),
                    actions,
                },
            );
        }
        let t = self.tracked.get_mut(node).expect("tracked");
        t.cordoned = cordoned;
        if let Some((process, host)) = migration {
            self.migrate(node, process, host).await;
        }
        self.repair(node).await;
    }

    /// Starts (again) the repair flow of `node`'s rule.
    async fn repair(&mut self, node: &str) {
        let kind = self.tracked[node].kind;
        let Some(repair) = self.config.rule(kind).repair else {
            return;
        };
        match &repair.step {
            Step::Restart => match self.placed.get(node).cloned() {
                Some(at) => {
                    let id = self.id();
                    let node = node.to_owned();
                    self.instruct(&at.host, &Instruction::Restart { id, node })
                        .await;
                }
                None => tracing::warn!(node, "restart repair: no host agent supervises it"),
            },
            Step::Command(command) => {
                let child = tokio::process::Command::new("sh")
                    .args(["-c", command])
                    .env("MODKIT_FAULT_NODE", node)
                    .kill_on_drop(false)
                    .spawn();
                if let Err(e) = child {
                    tracing::warn!(node, error = %e, "repair command cannot start");
                }
            }
            Step::Wait => {}
        }
        let until = Instant::now() + repair.expected;
        let t = self.tracked.get_mut(node).expect("tracked");
        t.repair = Some((repair.step.name().to_owned(), until));
    }

    /// Later rounds of an acted-on fault: a repair past its expected time
    /// failed (retry or escalate); a migrated replica that is `Up` retires
    /// the faulty one.
    async fn follow_up(&mut self, node: &str, insts: &[&Instance], view: &View) {
        let t = self.tracked.get_mut(node).expect("tracked");
        if let Some(to) = &t.migrated_to {
            let up = view
                .instances
                .iter()
                .any(|i| &i.id == to && i.status == Status::Up);
            if up {
                for i in insts.iter().filter(|i| i.status != Status::Down) {
                    let _ = self
                        .registry
                        .set_status(&i.service, &i.id, Status::Down)
                        .await;
                }
            }
        }
        let Some((step, until)) = t.repair.clone() else {
            return;
        };
        if Instant::now() < until {
            return;
        }
        let secs = t.since.elapsed().as_secs_f64();
        t.history
            .push(format!("{step}: still faulty after {secs:.1} s"));
        if t.history.len() < self.config.max_repairs as usize {
            tracing::warn!(
                node,
                attempt = t.history.len(),
                "repair failed; trying again"
            );
            self.repair(node).await;
            return;
        }
        t.escalated = true;
        t.repair = None;
        let history = t.history.clone();
        for i in insts {
            let _ = self
                .registry
                .set_status(&i.service, &i.id, Status::Down)
                .await;
        }
        let escalated = Alert::Escalated {
            node: node.to_owned(),
            history,
        };
        let escalate_to = self.config.escalate_to.clone();
        self.raise_with(node, escalated, escalate_to.as_deref());
    }

    /// Where `node` would migrate: its process and the least loaded healthy
    /// other host, when all its services are migratable.
    fn migration_target(&self, node: &str, view: &View) -> Option<(String, String)> {
        let from = self.placed.get(node)?;
        if !self.config.migratable(&from.services) {
            return None;
        }
        let sick: Vec<&str> = self
            .tracked
            .keys()
            .filter_map(|n| self.placed.get(n).map(|p| p.host.as_str()))
            .collect();
        let target = view
            .reports
            .values()
            .filter(|r| r.host != from.host && !sick.contains(&r.host.as_str()))
            .min_by(|a, b| {
                (a.processes.len(), a.load1)
                    .partial_cmp(&(b.processes.len(), b.load1))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
        if target.is_none() {
            tracing::warn!(node, "no healthy host to migrate to");
        }
        Some((from.process.clone(), target?.host.clone()))
    }

    /// Starts a new replica of `node`'s `process` on `target`'s agent.
    async fn migrate(&mut self, node: &str, process: String, target: String) {
        let id = self.id();
        let to = format!("{process}-m{}", id % 100_000);
        let start = Instruction::Start {
            id,
            process,
            node: to.clone(),
        };
        self.instruct(&target, &start).await;
        self.raise(
            node,
            Alert::Migrated {
                from: node.to_owned(),
                to: to.clone(),
                host: target,
            },
        );
        self.tracked.get_mut(node).expect("tracked").migrated_to = Some(to);
    }

    /// A replica whose process died and that its agent's supervisor already
    /// started again (often before a probe noticed): a service fault,
    /// repaired; reported when the rule says so.
    fn restarted(&self, host: &str, p: &ProcessReport) {
        if self.config.rule(FaultKind::Service).report {
            self.raise(
                &p.node,
                Alert::InstanceFault {
                    node: p.node.clone(),
                    host: Some(host.to_owned()),
                    kind: FaultKind::Service.as_str().to_owned(),
                    detail: format!(
                        "its process exited; its host agent restarted it (restart {})",
                        p.restarts
                    ),
                    actions: vec!["report".to_owned(), "repair:restart".to_owned()],
                },
            );
        }
    }

    async fn recovered(&mut self, node: &str, t: Tracked) {
        for (service, id) in &t.cordoned {
            if let Err(e) = self.registry.set_status(service, id, Status::Up).await {
                tracing::warn!(node, error = %e, "cannot lift the cordon");
            }
        }
        if t.acted {
            self.raise(
                node,
                Alert::InstanceRecovered {
                    node: node.to_owned(),
                    after_ms: t.since.elapsed().as_millis() as u64,
                },
            );
        }
    }

    /// Raises `alert` about replica `node`: also to its process's report
    /// target, if one is configured.
    fn raise(&self, node: &str, alert: Alert) {
        self.raise_with(node, alert, None);
    }

    /// [`raise`](Self::raise), and to `extra` too.
    fn raise_with(&self, node: &str, alert: Alert, extra: Option<&str>) {
        let process = self.placed.get(node).map(|p| p.process.as_str());
        let target = process.and_then(|p| self.config.report_to.get(p));
        let targets: Vec<&str> = target
            .map(String::as_str)
            .into_iter()
            .chain(extra)
            .collect();
        self.alerts.raise_also(alert, &targets);
    }

    async fn instruct(&self, host: &str, instruction: &Instruction) {
        let json = serde_json::to_string(instruction).unwrap_or_default();
        let sent: std::result::Result<(), _> = redis::cmd("RPUSH")
            .arg(inbox_key(self.redis.prefix(), host))
            .arg(json)
            .query_async(&mut self.redis.conn())
            .await;
        match sent {
            Ok(()) => tracing::info!(host, ?instruction, "instruction sent to the host agent"),
            Err(e) => tracing::warn!(host, error = %e, "cannot send an instruction"),
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
