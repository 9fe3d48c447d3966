//! The client side of Redis high availability: the topology a controller
//! group commits (which node is the primary, in which epoch), the alerts it
//! raises, the line protocol it serves them on, and [`follow`], which keeps a
//! [`Redis`](crate::Redis) handle on the primary of the highest epoch.
//!
//! The controller group itself (consensus, probing, failover) is the
//! `mod-resilience` crate; this module only reads what it publishes, so a
//! plain `distribute` build compiles no consensus stack.
//!
//! Wire: each controller serves newline-delimited JSON on a TCP port
//! ([`Update`] per line): the committed topology on connect, again on every
//! commit and at least every [`HEARTBEAT`] (so a silent, partitioned
//! controller is noticed), and alerts as they are raised. A line longer than
//! [`MAX_LINE`] is refused (typed error, WARN) and the connection dropped.

mod follow;
mod publish;
mod wire;

pub use follow::{follow, Follower};
pub use publish::Publisher;
pub use wire::{read_update, write_update, MAX_LINE};

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often a controller repeats the topology on an idle subscription.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// The committed layout of one Redis group. Only a strictly higher `epoch`
/// replaces a topology a client holds; the epoch only grows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The group's name.
    pub group: String,
    /// Grows by one with every committed change of primary.
    pub epoch: u64,
    /// `host:port` of the writable primary (`None` before the first commit).
    pub primary: Option<String>,
    /// `host:port` of the replicas that follow it.
    pub replicas: Vec<String>,
    /// Nodes that must not take writes (a failed primary until it rejoins).
    pub fenced: Vec<String>,
}

/// A typed alert of the resilience layer: a `tracing` event where it is
/// raised, a line on every topology subscription, and the JSON on stdin of
/// the configured command hook.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "alert", rename_all = "snake_case")]
pub enum Alert {
    /// A majority of voters could not reach the primary for `down_after`.
    PrimaryDown {
        /// The group.
        group: String,
        /// The primary's address.
        node: String,
        /// How many voters report it down.
        voters_down: usize,
    },
    /// A failover was committed (the intent), from `from`.
    FailoverStarted {
        /// The group.
        group: String,
        /// The epoch the failover will commit.
        epoch: u64,
        /// The failed primary.
        from: String,
    },
    /// The new topology is committed.
    FailoverDone {
        /// The group.
        group: String,
        /// The committed epoch.
        epoch: u64,
        /// The new primary.
        primary: String,
        /// From the intent to the commit.
        took_ms: u64,
    },
    /// A planned switchover (an operator's command) is committed.
    SwitchoverDone {
        /// The group.
        group: String,
        /// The committed epoch.
        epoch: u64,
        /// The primary that handed over (a replica now).
        from: String,
        /// The new primary.
        to: String,
        /// How long the old primary's writes were paused.
        paused_ms: u64,
    },
    /// No replica may be promoted without losing acknowledged writes (or
    /// none answers): the group stays without a primary, by design.
    NoPromotableReplica {
        /// The group.
        group: String,
        /// Why.
        reason: String,
    },
    /// A returning node had accepted writes the new primary never saw;
    /// they are discarded by its resync.
    Divergence {
        /// The group.
        group: String,
        /// The returning node.
        node: String,
        /// Replication-stream bytes it held beyond the promotion point.
        bytes: u64,
    },
    /// Available/total nodes at or below the group's ratio threshold.
    GroupUnhealthy {
        /// The group.
        group: String,
        /// Nodes answering.
        available: usize,
        /// Nodes in the group.
        total: usize,
    },
    /// A site's available/total nodes stayed at or below its threshold for
    /// `rounds` probe rounds in a row (seed 000's first alert, when it holds
    /// the primary).
    SiteDown {
        /// The group.
        group: String,
        /// The site (`[ha.sites]`).
        site: String,
        /// Its nodes answering.
        available: usize,
        /// Its nodes.
        total: usize,
        /// The rounds in a row it was at or below the threshold.
        rounds: u32,
        /// Whether it holds the group's primary.
        primary: bool,
    },
    /// A site that was down stayed above its threshold for `rounds` probe
    /// rounds in a row.
    SiteUp {
        /// The group.
        group: String,
        /// The site.
        site: String,
        /// Its nodes answering.
        available: usize,
        /// Its nodes.
        total: usize,
    },
    /// The site holding the primary went down and no other site can take
    /// it (seed 000's second alert): nothing was switched.
    NoBackupSite {
        /// The group.
        group: String,
        /// The site that went down.
        site: String,
        /// Why no other site can take the primary.
        reason: String,
    },
    /// This voter cannot reach a majority: no decision can be committed.
    QuorumLost {
        /// The group.
        group: String,
        /// The voter reporting it.
        voter: u64,
    },
    /// The fault monitor found a service instance faulty (the kinds and the
    /// decision table: `mod_resilience::faults`).
    InstanceFault {
        /// The replica's node id.
        node: String,
        /// The host its agent reports it on (`None`: no agent knows it).
        host: Option<String>,
        /// `host`, `network` or `service`.
        kind: String,
        /// What the evidence was.
        detail: String,
        /// What the rules do about it (`report`, `cordon`, `repair:<flow>`, `migrate`).
        actions: Vec<String>,
    },
    /// A faulty instance is not cordoned: that would take more than the
    /// allowed share of its service's instances out at once.
    CordonHeldBack {
        /// The service.
        service: String,
        /// The replica's node id.
        node: String,
        /// Instances of the service not `Up` already.
        cordoned: usize,
        /// Instances of the service.
        total: usize,
    },
    /// A faulty instance answers again and is back in service.
    InstanceRecovered {
        /// The replica's node id.
        node: String,
        /// How long it was faulty.
        after_ms: u64,
    },
    /// Repairs of a node kept failing: it is marked `Down` and needs a person.
    Escalated {
        /// The replica's node id.
        node: String,
        /// The repairs tried, oldest first (`flow: outcome`).
        history: Vec<String>,
    },
    /// The migratable services of a faulty node were started on another host.
    Migrated {
        /// The faulty replica's node id.
        from: String,
        /// The new replica's node id.
        to: String,
        /// The host it runs on.
        host: String,
    },
}

impl Alert {
    /// The alert's kind, as its JSON `alert` field says it.
    pub fn kind(&self) -> &'static str {
        match self {
            Alert::PrimaryDown { .. } => "primary_down",
            Alert::FailoverStarted { .. } => "failover_started",
            Alert::FailoverDone { .. } => "failover_done",
            Alert::SwitchoverDone { .. } => "switchover_done",
            Alert::NoPromotableReplica { .. } => "no_promotable_replica",
            Alert::Divergence { .. } => "divergence",
            Alert::GroupUnhealthy { .. } => "group_unhealthy",
            Alert::SiteDown { .. } => "site_down",
            Alert::SiteUp { .. } => "site_up",
            Alert::NoBackupSite { .. } => "no_backup_site",
            Alert::QuorumLost { .. } => "quorum_lost",
            Alert::InstanceFault { .. } => "instance_fault",
            Alert::CordonHeldBack { .. } => "cordon_held_back",
            Alert::InstanceRecovered { .. } => "instance_recovered",
            Alert::Escalated { .. } => "escalated",
            Alert::Migrated { .. } => "migrated",
        }
    }
}

/// One line of a topology subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Update {
    /// The committed topology (repeated as a heartbeat).
    Topology(Topology),
    /// An alert.
    Alert(Alert),
}

/// `url` with its `host:port` replaced by `addr`, keeping scheme, user,
/// password and database: how a client configured for one node reaches another.
pub fn url_for(url: &str, addr: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (auth, hostpath) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let path = hostpath.find(['/', '?']).map_or("", |i| &hostpath[i..]);
    format!("{scheme}://{auth}{addr}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_for_keeps_credentials_and_database() {
        assert_eq!(
            url_for("redis://127.0.0.1:6379", "10.0.0.2:7000"),
            "redis://10.0.0.2:7000"
        );
        assert_eq!(url_for("redis://:pw@h:1/3", "n:2"), "redis://:pw@n:2/3");
        assert_eq!(
            url_for("rediss://u:p@h:1?x=1", "n:2"),
            "rediss://u:p@n:2?x=1"
        );
    }

    #[test]
    fn alerts_are_tagged_json() {
        let alert = Alert::GroupUnhealthy {
            group: "g".into(),
            available: 1,
            total: 3,
        };
        let json = serde_json::to_string(&Update::Alert(alert.clone())).unwrap();
        assert!(json.contains(r#""alert":"group_unhealthy""#), "{json}");
        assert_eq!(alert.kind(), "group_unhealthy");
        let back: Update = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Update::Alert(alert));
        let site = Alert::SiteDown {
            group: "g".into(),
            site: "a".into(),
            available: 1,
            total: 3,
            rounds: 3,
            primary: true,
        };
        let json = serde_json::to_string(&site).unwrap();
        assert!(json.contains(r#""alert":"site_down""#), "{json}");
        assert!(json.contains(r#""available":1,"total":3"#), "{json}");
        assert_eq!(serde_json::from_str::<Alert>(&json).unwrap(), site);
    }
}
