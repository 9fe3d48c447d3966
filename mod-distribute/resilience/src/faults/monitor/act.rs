//! What the monitor does about a confirmed fault: cordon, report, repair,
//! migrate, escalate, and lifting it all on recovery.

use std::time::Instant;

use mod_api::{Instance, Status};
use mod_distribute::state;
use mod_distribute::topology::Alert;

use super::{State, Tracked, View};
use crate::faults::classify::FaultKind;
use crate::faults::config::Step;
use crate::faults::report::{inbox_key, Instruction, ProcessReport};

impl State {
    /// The first action on a confirmed fault: cordon, report, repair, migrate.
    pub(super) async fn act(&mut self, node: &str, insts: &[&Instance], why: &str, view: &View) {
        let kind = self.tracked[node].kind;
        let rule = self.config.rule(kind);
        let mut actions = Vec::new();
        let mut cordoned = Vec::new();
        // A stateful service's owner is not cordoned but moved: a standby
        // takes it over (the owner, if it still can, hands it over cleanly).
        let (owners, plain): (Vec<&&Instance>, Vec<&&Instance>) = insts
            .iter()
            .partition(|i| i.metadata.contains_key("state_epoch"));
        for i in owners {
            match state::move_away(&self.redis, &*self.registry, &i.service, node).await {
                Ok(to) => actions.push(format!("takeover:{}:{to}", i.service)),
                Err(e) => {
                    tracing::warn!(node, service = %i.service, error = %e, "no takeover of the stateful service")
                }
            }
        }
        // Every fault here failed the monitor's probe: impact high, cordon.
        for i in plain.into_iter().filter(|i| i.status == Status::Up) {
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
    pub(super) async fn repair(&mut self, node: &str) {
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
    pub(super) async fn follow_up(&mut self, node: &str, insts: &[&Instance], view: &View) {
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
    pub(super) fn migration_target(&self, node: &str, view: &View) -> Option<(String, String)> {
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
    pub(super) async fn migrate(&mut self, node: &str, process: String, target: String) {
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
    pub(super) fn restarted(&self, host: &str, p: &ProcessReport) {
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

    pub(super) async fn recovered(&mut self, node: &str, t: Tracked) {
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
    pub(super) fn raise(&self, node: &str, alert: Alert) {
        self.raise_with(node, alert, None);
    }

    /// [`raise`](Self::raise), and to `extra` too.
    pub(super) fn raise_with(&self, node: &str, alert: Alert, extra: Option<&str>) {
        let process = self.placed.get(node).map(|p| p.process.as_str());
        let target = process.and_then(|p| self.config.report_to.get(p));
        let targets: Vec<&str> = target
            .map(String::as_str)
            .into_iter()
            .chain(extra)
            .collect();
        self.alerts.raise_also(alert, &targets);
    }

    pub(super) async fn instruct(&self, host: &str, instruction: &Instruction) {
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

    pub(super) fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}
