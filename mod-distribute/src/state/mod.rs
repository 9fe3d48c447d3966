//! Stateful services across processes: one owner at a time, standbys that
//! take over, checkpoints in Redis (see `mod_api::state` for the contract).
//!
//! Every process that hosts a stateful service runs a [`Steward`] for it;
//! exactly one of them owns it at a time, under an **owner epoch** that
//! every takeover raises:
//!
//! - The owner holds a lease in Redis and serves only while it holds it:
//!   its gate closes by itself three quarters of a lease after the last
//!   renewal it sent, before Redis can hand the lease to anyone else. A
//!   checkpoint commits only under the current owner's token, so a stale
//!   owner (paused, cut off) can neither serve nor write once another owns
//!   the service: two owners never both act.
//! - Standbys register nothing; callers (in their process too) reach the
//!   owner through the registry. A call refused by a non-owner did not run
//!   (`ErrorKind::Moved`) and the proxy sends it to the owner once the
//!   registry shows one.
//! - A planned takeover ([`request_takeover`], or the fault monitor of
//!   `mod-resilience` on an alert) quiesces the owner, writes a final
//!   checkpoint, and hands the service to the chosen standby: nothing that
//!   was answered is lost. After a crash the chosen standby claims the
//!   service when the lease runs out and restores the last periodic
//!   checkpoint: at most one period is lost.
//!
//! Storage: [`StateStore`] (keys and scripts in `store.rs`).

mod steward;
pub mod store;
pub mod takeover;

use std::sync::Arc;

use mod_api::state::{CheckpointInfo, Role, StateControl};
use mod_api::{BoxFuture, Error, ErrorKind, Result};

pub use steward::{Steward, POLL};
pub use store::StateStore;
pub use takeover::{choose_target, move_away, request_takeover, TAKEOVER_HOLD};

/// The control of a stateful service this process does not host.
pub(crate) struct Elsewhere(pub(crate) &'static str);

impl StateControl for Elsewhere {
    fn service(&self) -> &'static str {
        self.0
    }

    fn role(&self) -> Role {
        Role::Stopped
    }

    fn checkpoint_now(&self) -> BoxFuture<'_, Result<CheckpointInfo>> {
        let service = self.0;
        Box::pin(async move {
            Err(Error::new(
                ErrorKind::Moved,
                format!("service {service} is not hosted in this process"),
            ))
        })
    }

    fn stop(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// Shared with the backend: the stewards it started, stopped at shutdown.
pub(crate) type Stewards = std::sync::Mutex<Vec<Arc<Steward>>>;
