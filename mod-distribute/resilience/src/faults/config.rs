//! `[faults]`: how often the monitor looks, what it does about each kind.

use std::collections::BTreeMap;
use std::time::Duration;

use mod_api::config::{duration, Section};
use mod_api::Result;
use serde::{Deserialize, Serialize};

use super::classify::FaultKind;

/// The fault monitor's configuration.
///
/// ```toml
/// [faults]
/// interval = "250ms"
/// migratable = ["shop.Orders"]
/// alert_command = "logger -t modkit"
/// escalate_to = "/usr/local/bin/page-oncall"
///
/// [faults.report_to]
/// orders = "/usr/local/bin/tell-orders-team"
///
/// [[faults.rule]]
/// kind = "service"
/// report = true
/// repair = { step = "restart", expected = "3s" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// How often every replica is probed and the agents' reports read.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Deadline of the monitor's probe of one replica.
    #[serde(with = "duration")]
    pub probe_timeout: Duration,
    /// Rounds in a row with the same verdict before the monitor acts on a
    /// fault or on a recovery, so one lost probe does nothing.
    pub confirm_rounds: u32,
    /// The most instances of one service cordoned (`Draining`) at once, in
    /// percent of its instances.
    pub max_cordoned_percent: u8,
    /// Failed repairs of one replica before it is marked `Down` and escalated.
    pub max_repairs: u32,
    /// A repair expected to take longer than this migrates the replica's
    /// migratable services to a healthy host first.
    #[serde(with = "duration")]
    pub migrate_after: Duration,
    /// Services that may be started on another host (a process migrates
    /// when all its services are listed).
    pub migratable: Vec<String>,
    /// What to do about each kind (the defaults: [`Rule::defaults`]).
    #[serde(rename = "rule")]
    pub rules: Vec<Rule>,
    /// Run with `sh -c` for every alert, the alert as JSON on its stdin:
    /// the report target of every node.
    pub alert_command: Option<String>,
    /// Report targets per process (the deployment file's name): a command
    /// run, besides `alert_command`, for the alerts about its replicas.
    pub report_to: BTreeMap<String, String>,
    /// The escalation target: a command run, besides the others, for
    /// [`Escalated`](mod_distribute::topology::Alert::Escalated) alerts.
    pub escalate_to: Option<String>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            interval: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(200),
            confirm_rounds: 2,
            max_cordoned_percent: 49,
            max_repairs: 3,
            migrate_after: Duration::from_secs(5),
            migratable: Vec::new(),
            rules: Rule::defaults(),
            alert_command: None,
            report_to: BTreeMap::new(),
            escalate_to: None,
        }
    }
}

impl FaultConfig {
    /// The rule for `kind` (a kind without one is reported only).
    pub fn rule(&self, kind: FaultKind) -> Rule {
        self.rules
            .iter()
            .find(|r| r.kind == kind)
            .cloned()
            .unwrap_or(Rule {
                kind,
                report: true,
                repair: None,
            })
    }

    /// How many of `total` instances of a service may be cordoned at once.
    pub fn max_cordoned(&self, total: usize) -> usize {
        total * usize::from(self.max_cordoned_percent.min(100)) / 100
    }

    /// Whether a process hosting `services` may be started elsewhere.
    pub fn migratable(&self, services: &[String]) -> bool {
        !services.is_empty() && services.iter().all(|s| self.migratable.contains(s))
    }
}

impl Section for FaultConfig {
    const NAME: &'static str = "faults";

    fn apply_env(&mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(command) = var("MODKIT_FAULTS_ALERT_COMMAND") {
            self.alert_command = Some(command).filter(|c| !c.is_empty());
        }
        Ok(())
    }
}

/// What the monitor does about one kind of fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The kind it applies to.
    pub kind: FaultKind,
    /// Raise an [`InstanceFault`](mod_distribute::topology::Alert::InstanceFault) alert.
    #[serde(default = "yes")]
    pub report: bool,
    /// The repair flow, if any.
    #[serde(default)]
    pub repair: Option<Repair>,
}

fn yes() -> bool {
    true
}

impl Rule {
    /// Service faults: restart the process (3 s expected). Network and host
    /// faults: wait for them to pass (30 s and 60 s expected, so migratable
    /// services move at once).
    pub fn defaults() -> Vec<Rule> {
        let rule = |kind, step, secs| Rule {
            kind,
            report: true,
            repair: Some(Repair {
                step,
                expected: Duration::from_secs(secs),
            }),
        };
        vec![
            rule(FaultKind::Service, Step::Restart, 3),
            rule(FaultKind::Network, Step::Wait, 30),
            rule(FaultKind::Host, Step::Wait, 60),
        ]
    }
}

/// A repair flow: one step and how long it is expected to take (after that,
/// a replica still faulty counts as a failed repair).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repair {
    /// What to do.
    pub step: Step,
    /// How long it should take.
    #[serde(with = "duration")]
    pub expected: Duration,
}

/// A built-in repair step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The host agent kills the process and starts it again.
    Restart,
    /// Run a command (`sh -c`, the replica's node id in `MODKIT_FAULT_NODE`).
    Command(String),
    /// Nothing: the fault is expected to pass (a network or host outage).
    Wait,
}

impl Step {
    /// The step's name in alerts and histories.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Restart => "restart",
            Step::Command(_) => "command",
            Step::Wait => "wait",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules_and_keeps_defaults() {
        let config: FaultConfig = toml::from_str(
            r#"
            interval = "100ms"
            migratable = ["shop.Orders"]
            [[rule]]
            kind = "service"
            repair = { step = { command = "echo fix" }, expected = "1s" }
            "#,
        )
        .unwrap();
        assert_eq!(config.interval, Duration::from_millis(100));
        let service = config.rule(FaultKind::Service);
        assert!(service.report);
        assert_eq!(
            service.repair.unwrap().step,
            Step::Command("echo fix".into())
        );
        // Rules given replace the defaults: network is then reported only.
        assert_eq!(config.rule(FaultKind::Network).repair, None);
        assert!(config.migratable(&["shop.Orders".into()]));
        assert!(!config.migratable(&["shop.Orders".into(), "shop.Auth".into()]));
        assert!(toml::from_str::<FaultConfig>("intervall = \"1s\"").is_err());
    }

    #[test]
    fn cordon_share() {
        let c = FaultConfig::default();
        assert_eq!(
            [1, 2, 3, 4, 5, 10].map(|n| c.max_cordoned(n)),
            [0, 0, 1, 1, 2, 4]
        );
    }
}
