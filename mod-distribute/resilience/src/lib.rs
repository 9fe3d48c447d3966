//! # mod-resilience: modkit's resilience layer
//!
//! The controller group that keeps a Redis primary/replica group available
//! without Sentinel: voters probe every node, agree through [`Consensus`]
//! that the primary is down, fence it, promote the replica with the highest
//! offset, and publish the new [`Topology`](mod_distribute::topology::Topology)
//! (a higher epoch) to every modkit process and to the stable-endpoint proxy.
//!
//! Business code does not name this crate: it enables the facade's
//! `resilience` feature and sets `[redis] controllers`.
#![warn(missing_docs)]

pub mod alert;
pub mod config;
pub mod consensus;
pub mod controller;
pub mod probe;

pub use config::HaConfig;
pub use consensus::{Command, Consensus, GroupState, Solo, VoterId};
pub use controller::Controller;
