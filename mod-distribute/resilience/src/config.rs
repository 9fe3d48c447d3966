//! The `[ha]` section: one Redis group, the voters that watch it, and the
//! rules they fail it over by.
//!
//! ```toml
//! [ha]
//! group = "main"
//! nodes = ["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"]
//! url = "redis://:secret@127.0.0.1"   # scheme and credentials for the nodes
//! listen = "0.0.0.0:7070"              # topology subscriptions ([redis] controllers)
//! voter = 1                            # this voter: its position in voters, from 1
//! voters = ["10.0.0.1:7170", "10.0.0.2:7170", "10.0.0.3:7170"]
//! probe_every = "200ms"
//! down_after = "1s"
//! unhealthy_ratio = 0.5
//! min_replicas_to_write = 1
//! min_replicas_max_lag = "1s"
//! wait_replicas = 0                    # the k of writers' WAIT k
//! alert_command = "/usr/local/bin/page-oncall"   # gets each alert as JSON on stdin
//! admin = "127.0.0.1:7071"             # operator commands (modkit-ha switchover); off if unset
//! site_ratio = 0.5                     # a site is down when available/total ≤ this …
//! site_rounds = 3                      # … for this many probe rounds in a row
//!
//! [ha.sites]                           # optional: where each node runs (alerts site_down / site_up)
//! a = ["10.0.0.1:6379", "10.0.0.2:6379"]
//! b = ["10.0.0.3:6379"]
//! ```
//!
//! One voter (`voters` empty or naming only this one) decides alone: for
//! development. Three or five agree through openraft (feature `raft`, on by
//! default).

use std::collections::BTreeMap;
use std::time::Duration;

use mod_api::config::Section;
use mod_api::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::consensus::VoterId;

/// The `[ha]` section (see the module docs for the file form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaConfig {
    /// The group's name (in the topology and the alerts).
    pub group: String,
    /// `host:port` of every Redis node of the group, the first the initial
    /// primary when none is a primary yet.
    pub nodes: Vec<String>,
    /// Scheme, credentials and database used to reach each node.
    pub url: String,
    /// Where subscribers (`[redis] controllers`, the proxy) connect.
    pub listen: String,
    /// This voter's id: its position in `voters`, from 1.
    pub voter: VoterId,
    /// Every voter's consensus address, in id order (empty: this voter alone).
    pub voters: Vec<String>,
    /// How often every node is probed.
    #[serde(with = "mod_api::config::duration")]
    pub probe_every: Duration,
    /// How long a node must stay unreachable before a voter reports it down.
    #[serde(with = "mod_api::config::duration")]
    pub down_after: Duration,
    /// The group is unhealthy when available/total nodes ≤ this (seed 000).
    pub unhealthy_ratio: f64,
    /// Kept on the primary once it has that many good replicas: a primary
    /// cut off from its replicas stops taking writes (`NOREPLICAS`).
    pub min_replicas_to_write: u32,
    /// Redis's `min-replicas-max-lag` (whole seconds); with a margin, how
    /// long an unreachable old primary may still take writes.
    #[serde(with = "mod_api::config::duration")]
    pub min_replicas_max_lag: Duration,
    /// The `k` of the writers' `WAIT k` (`[redis] wait_replicas`): a failover
    /// needs the offsets of at least R−k+1 of the R replicas.
    pub wait_replicas: u32,
    /// A command (run by `sh -c`) that receives each alert as JSON on stdin.
    pub alert_command: Option<String>,
    /// Where operator commands (`modkit-ha switchover`) are taken; none when
    /// unset. Not authenticated: bind it to loopback or a private network.
    pub admin: Option<String>,
    /// The sites the nodes run in, by name (`[ha.sites]`; empty: none). A
    /// site's health is watched by seed 000's ratio rule and alerted
    /// (`site_down`, `site_up`); each node is in one site at most.
    pub sites: BTreeMap<String, Vec<String>>,
    /// A site is down when available/total of its nodes ≤ this …
    pub site_ratio: f64,
    /// … for this many probe rounds in a row (and up again after as many
    /// above it), so that one flapping node never moves a site.
    pub site_rounds: u32,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            group: "main".into(),
            nodes: Vec::new(),
            url: "redis://127.0.0.1".into(),
            listen: "127.0.0.1:7070".into(),
            voter: 1,
            voters: Vec::new(),
            probe_every: Duration::from_millis(200),
            down_after: Duration::from_secs(1),
            unhealthy_ratio: 0.5,
            min_replicas_to_write: 1,
            min_replicas_max_lag: Duration::from_secs(1),
            wait_replicas: 0,
            alert_command: None,
            admin: None,
            sites: BTreeMap::new(),
            site_ratio: 0.5,
            site_rounds: 3,
        }
    }
}

impl HaConfig {
    /// Checks the values that would make the controller misbehave.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::config(format!("[ha] {what}")));
        if self.nodes.is_empty() {
            return bad("nodes: no Redis node".into());
        }
        if self.probe_every.is_zero() || self.down_after < self.probe_every {
            return bad("probe_every must be > 0 and down_after ≥ probe_every".into());
        }
        if !(0.0..1.0).contains(&self.unhealthy_ratio) {
            return bad(format!(
                "unhealthy_ratio {} is not in [0, 1)",
                self.unhealthy_ratio
            ));
        }
        if self.min_replicas_max_lag.as_secs() == 0 {
            return bad("min_replicas_max_lag is whole seconds, at least 1s".into());
        }
        if !(0.0..1.0).contains(&self.site_ratio) || self.site_rounds == 0 {
            return bad(format!(
                "site_ratio {} must be in [0, 1) and site_rounds ({}) at least 1",
                self.site_ratio, self.site_rounds
            ));
        }
        let mut placed = BTreeMap::new();
        for (site, nodes) in &self.sites {
            if nodes.is_empty() {
                return bad(format!("sites.{site}: no node"));
            }
            for node in nodes {
                if !self.nodes.contains(node) {
                    return bad(format!("sites.{site}: {node} is not one of nodes"));
                }
                if let Some(other) = placed.insert(node, site) {
                    return bad(format!("{node} is in both sites {other} and {site}"));
                }
            }
        }
        if !self.voters.is_empty() && !(1..=self.voters.len() as u64).contains(&self.voter) {
            return bad(format!("voter {} is not a position in voters", self.voter));
        }
        Ok(())
    }

    /// The site `node` is in (`[ha.sites]`), if any.
    pub fn site_of(&self, node: &str) -> Option<&str> {
        self.sites
            .iter()
            .find(|(_, nodes)| nodes.iter().any(|n| n == node))
            .map(|(site, _)| site.as_str())
    }

    /// How many voters a decision needs.
    pub fn majority(&self) -> usize {
        crate::rules::majority(self.voters.len())
    }

    /// The voters by id (empty: this voter alone).
    pub fn voter_ids(&self) -> BTreeMap<VoterId, String> {
        (1..).zip(self.voters.iter().cloned()).collect()
    }
}

impl Section for HaConfig {
    const NAME: &'static str = "ha";

    fn apply_env(&mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(v) = var("MODKIT_HA_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = var("MODKIT_HA_VOTER") {
            self.voter = v
                .trim()
                .parse()
                .map_err(|_| Error::config("MODKIT_HA_VOTER: not a number"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_section() {
        let doc = include_str!("config.rs");
        let toml: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let config = mod_api::Config::from_toml(&toml).unwrap();
        let ha: HaConfig = config.section().unwrap();
        ha.validate().unwrap();
        assert_eq!(ha.nodes.len(), 3);
        assert_eq!(ha.voters.len(), 3);
        assert_eq!(ha.majority(), 2);
        assert_eq!(ha.down_after, Duration::from_secs(1));
        assert_eq!(ha.sites["a"].len(), 2);
        assert_eq!((ha.site_ratio, ha.site_rounds), (0.5, 3));
    }

    #[test]
    fn refuses_what_cannot_work() {
        let ha = HaConfig {
            nodes: vec!["a:1".into()],
            down_after: Duration::from_millis(10),
            ..HaConfig::default()
        };
        assert!(ha
            .validate()
            .unwrap_err()
            .to_string()
            .contains("down_after"));
        assert!(HaConfig::default().validate().is_err(), "no nodes");
        let sites = |sites: &[(&str, &[&str])]| HaConfig {
            nodes: vec!["a:1".into(), "b:1".into()],
            sites: sites
                .iter()
                .map(|(s, n)| (s.to_string(), n.iter().map(|n| n.to_string()).collect()))
                .collect(),
            ..HaConfig::default()
        };
        assert!(sites(&[("x", &["a:1"]), ("y", &["b:1"])])
            .validate()
            .is_ok());
        let error = |c: HaConfig| c.validate().unwrap_err().to_string();
        assert!(error(sites(&[("x", &["c:1"])])).contains("not one of nodes"));
        assert!(error(sites(&[("x", &["a:1"]), ("y", &["a:1"])])).contains("both sites"));
        assert!(error(sites(&[("x", &[])])).contains("no node"));
    }
}
