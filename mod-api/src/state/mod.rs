//! State that moves: services that own in-memory state (a counter, a session
//! table, a game room, an aggregation window) and the checkpoints that carry
//! it to another process.
//!
//! A service with state implements [`Stateful`] beside its service trait:
//! [`checkpoint`](Stateful::checkpoint) returns the state as a value,
//! [`restore`](Stateful::restore) puts one back. The framework does the rest:
//!
//! - **quiesce**: before a final checkpoint it stops taking new calls (they
//!   fail with [`ErrorKind::Moved`](crate::ErrorKind::Moved): they did not
//!   run, callers retry them on the new owner) and waits for the calls in
//!   flight to finish, so the checkpoint holds every update that was answered;
//! - **periodic checkpoints** every [`StateConfig::period`], so a crash loses
//!   at most one period;
//! - **restore** at start (the monolith: from `data_dir`, a warm restart) or
//!   when this process becomes the owner (the distributed package: from
//!   Redis, under a higher owner epoch, the old owner fenced).
//!
//! The backend is given both handles — the service object and its state —
//! with `provide_stateful` (the facade's `App::provide_stateful`), and returns
//! a [`StateHandle`].

mod cell;
mod gate;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::Value;

pub use cell::{StateCell, TypedCell};
pub use gate::{Gate, GateLayer, Permit};

/// A service's in-memory state that can be saved and put back.
///
/// `checkpoint` must return a consistent state: every update it returns
/// answered, none half-applied (take the service's own lock). It runs beside
/// calls for periodic checkpoints, and with no call running for the final
/// one of a planned move.
///
/// ```
/// use std::sync::Mutex;
/// use mod_api::state::Stateful;
///
/// #[derive(Default)]
/// struct Counter {
///     total: Mutex<u64>,
/// }
///
/// impl Stateful for Counter {
///     type State = u64;
///     async fn checkpoint(&self) -> mod_api::Result<u64> {
///         Ok(*self.total.lock().unwrap())
///     }
///     async fn restore(&self, state: u64) -> mod_api::Result<()> {
///         *self.total.lock().unwrap() = state;
///         Ok(())
///     }
/// }
/// ```
pub trait Stateful: Send + Sync + 'static {
    /// The state as it is saved (encoded with the default codec).
    type State: Value;

    /// The format of [`State`](Self::State): written with each checkpoint.
    /// A checkpoint of another version is refused at restore with
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) naming both versions;
    /// bump it when the state's shape changes.
    const VERSION: u32 = 1;

    /// The current state.
    fn checkpoint(&self) -> impl Future<Output = Result<Self::State>> + Send;

    /// Replaces the current state with `state` (from a checkpoint).
    fn restore(&self, state: Self::State) -> impl Future<Output = Result<()>> + Send;
}

/// How a backend keeps a service's state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateConfig {
    /// Period of the periodic checkpoints: at most this much of the state's
    /// history is lost in a crash. Default 1 s.
    pub period: Duration,
    /// The owner's lease (distributed package): an owner that cannot renew
    /// it stops serving when it ends, and only then may another process
    /// take over after a crash. Default 2 s.
    pub lease: Duration,
    /// How long a planned move waits for the calls in flight to finish
    /// before taking the final checkpoint anyway. Default 5 s.
    pub quiesce_timeout: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            period: Duration::from_secs(1),
            lease: Duration::from_secs(2),
            quiesce_timeout: Duration::from_secs(5),
        }
    }
}

impl StateConfig {
    /// The defaults (period 1 s, lease 2 s, quiesce timeout 5 s).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`period`](Self::period).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// Sets [`lease`](Self::lease).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets [`quiesce_timeout`](Self::quiesce_timeout).
    pub fn quiesce_timeout(mut self, timeout: Duration) -> Self {
        self.quiesce_timeout = timeout;
        self
    }
}

/// What this process is for a stateful service now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// It serves the service and owns its state, under owner epoch `epoch`
    /// (the monolith: always, epoch 0).
    Owner {
        /// The owner epoch: every takeover raises it; a checkpoint from an
        /// older epoch is refused.
        epoch: u64,
    },
    /// It hosts the service but another process owns it; it takes over
    /// when told to or when the owner's lease ends.
    Standby,
    /// Stopped: it neither serves nor takes over.
    Stopped,
}

/// What one checkpoint wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The owner epoch it was written under.
    pub epoch: u64,
    /// The state's format ([`Stateful::VERSION`]).
    pub version: u32,
    /// Encoded size in bytes.
    pub bytes: usize,
}

/// What a backend does for one stateful service: the seam behind [`StateHandle`].
pub trait StateControl: Send + Sync {
    /// The service's name.
    fn service(&self) -> &'static str;

    /// This process's role now.
    fn role(&self) -> Role;

    /// Writes a checkpoint now (only the owner can).
    fn checkpoint_now(&self) -> crate::BoxFuture<'_, Result<CheckpointInfo>>;

    /// Stops: the owner quiesces and writes a final checkpoint (the
    /// distributed package then gives the service up); periodic
    /// checkpoints end.
    fn stop(&self) -> crate::BoxFuture<'_, Result<()>>;
}

/// The handle of one stateful service, from `provide_stateful`. Cheap to clone.
#[derive(Clone)]
pub struct StateHandle {
    control: Arc<dyn StateControl>,
}

impl std::fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateHandle")
            .field("service", &self.control.service())
            .field("role", &self.control.role())
            .finish()
    }
}

impl StateHandle {
    /// The handle over a backend's `control`.
    pub fn new(control: Arc<dyn StateControl>) -> Self {
        StateHandle { control }
    }

    /// The service's name.
    pub fn service(&self) -> &'static str {
        self.control.service()
    }

    /// This process's role now.
    pub fn role(&self) -> Role {
        self.control.role()
    }

    /// Writes a checkpoint now. Not the owner: [`ErrorKind::Moved`](crate::ErrorKind::Moved).
    pub async fn checkpoint_now(&self) -> Result<CheckpointInfo> {
        self.control.checkpoint_now().await
    }

    /// Stops serving the service's state: quiesces, writes a final
    /// checkpoint and (distributed) releases the ownership so a standby can
    /// take over at once.
    pub async fn stop(&self) -> Result<()> {
        self.control.stop().await
    }
}
