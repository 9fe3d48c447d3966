//! Fault handling of service instances (seed 002): find faulty replicas,
//! tell what kind of fault it is, and act on it by rule.
//!
//! The [`FaultMonitor`] runs beside a deployment (in the launcher, a
//! controller, or a process of its own). Every `interval` it
//!
//! 1. lists the registry's instances and probes each replica's advertised
//!    address with the RPC server's built-in health probe
//!    ([`mod_distribute::rpc::probe`]);
//! 2. reads the host agents' reports ([`report`], written by
//!    [`HostAgent`](crate::host::HostAgent)s to Redis): which replicas run
//!    where, their process state, and each agent's own probe of them from
//!    inside the host;
//! 3. classifies each replica ([`classify()`], the decision table) and, once the
//!    same verdict held `confirm_rounds` rounds, acts by the [`Rule`] of its
//!    kind:
//!    - **report**: an [`InstanceFault`](mod_distribute::topology::Alert::InstanceFault) alert (a
//!      `tracing` event, [`FaultMonitor::alerts`], the `alert_command` hook);
//!    - **cordon** when the impact is medium or more: its instances become
//!      `Draining` (callers send them nothing new), never more than
//!      `max_cordoned_percent` of a service's instances at once — a replica
//!      the cap holds back raises [`CordonHeldBack`](mod_distribute::topology::Alert::CordonHeldBack);
//!    - **repair** by the rule's flow (restart through its host agent, a
//!      command, or wait); a replica still faulty when the flow's expected
//!      time is up counts a failed repair, and after `max_repairs` it is
//!      marked `Down` and [`Escalated`](mod_distribute::topology::Alert::Escalated) with its history;
//!    - **migrate** when the flow is expected to take longer than
//!      `migrate_after` and all the replica's services are `migratable`: the
//!      least loaded healthy host's agent starts a new replica of its process
//!      ([`Migrated`](mod_distribute::topology::Alert::Migrated)); once it is `Up`, the faulty one is
//!      marked `Down`;
//! 4. a replica whose process exited and that its agent's supervisor
//!    restarted (its report's restart count grew) is a service fault,
//!    already repaired: reported;
//! 5. a replica healthy again for `confirm_rounds` rounds is set `Up` again
//!    if the monitor had cordoned it ([`InstanceRecovered`](mod_distribute::topology::Alert::InstanceRecovered)).
//!
//! Not yet: the error rate of calls as a fault signal (the monitor sees
//! probes and reports, not callers' errors), restarting one service inside
//! a process, and re-registration as a repair step.

pub mod classify;
pub mod config;
mod monitor;
pub mod report;

pub use classify::{classify, AgentView, FaultKind, Probed, Verdict};
pub use config::{FaultConfig, Repair, Rule, Step};
pub use monitor::FaultMonitor;
