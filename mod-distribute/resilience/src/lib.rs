//! # mod-resilience: modkit's resilience layer
//!
//! The controller group that keeps a Redis primary/replica group available
//! without Sentinel: voters probe every node, agree through [`Consensus`]
//! that the primary is down, fence it, promote the replica with the highest
//! offset, and publish the new [`Topology`](mod_distribute::topology::Topology)
//! (a higher epoch) to every modkit process and to the stable-endpoint proxy.
//!
//! Beside it, fault handling of service instances: [`host`] agents that
//! supervise each host's replicas and report on them, and the
//! [`faults`] monitor that classifies what fails (host, network, service)
//! and reports, cordons, repairs, migrates or escalates by rule.
//!
//! Business code does not name this crate: it enables the facade's
//! `resilience` feature and sets `[redis] controllers`.
#![warn(missing_docs)]

pub mod admin;
pub mod agent;
pub mod alert;
pub mod config;
pub mod consensus;
pub mod controller;
pub mod faults;
pub mod host;
pub mod probe;
pub mod proxy;
#[cfg(feature = "raft")]
pub mod raft;
pub mod rules;

pub use agent::NodeAgent;
pub use config::HaConfig;
pub use consensus::{Command, Consensus, GroupState, Solo, VoterId};
pub use controller::Controller;
pub use proxy::Proxy;

use std::sync::Arc;

/// The consensus engine `config` asks for: [`Solo`] for one voter, openraft
/// (feature `raft`) for three or five.
pub async fn consensus_for(config: &HaConfig) -> mod_api::Result<Arc<dyn Consensus>> {
    if config.voters.len() <= 1 {
        return Ok(Arc::new(Solo::new(config.voter, GroupState::default())));
    }
    #[cfg(feature = "raft")]
    {
        let listen = &config.voters[(config.voter - 1) as usize];
        let voter = raft::RaftVoter::start(config.voter, listen, config.voter_ids()).await?;
        Ok(Arc::new(voter))
    }
    #[cfg(not(feature = "raft"))]
    Err(mod_api::Error::config(
        "[ha] voters: a group of several voters needs mod-resilience's `raft` feature",
    ))
}
