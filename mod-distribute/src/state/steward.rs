//! [`Steward`]: one process's side of a stateful service — owner or standby.
//!
//! Every [`POLL`] it reads the service's [`Ownership`](super::store::Ownership):
//!
//! - **owner**: renews its lease every quarter lease (the gate stays open
//!   until three quarters of a lease after the renewal was *sent*, so it
//!   closes before Redis can give the lease to anyone else), writes a
//!   checkpoint every period, and on a takeover request quiesces (gate
//!   closed, calls in flight finished), writes the final checkpoint and
//!   releases the service reserved for the target. It stays registered,
//!   refusing calls with `Moved`, until the new owner is registered, so
//!   callers always find an instance that either serves or sends them on.
//!   Whenever the store shows another owner, it is fenced: the gate closes
//!   and it deregisters.
//! - **standby**: heartbeats (`standbys`), claims the service when a
//!   takeover reserved it for this node, or — nobody reserved it, and the
//!   owner released it or its lease ran out — when it is the standby a
//!   takeover would choose; then restores the last checkpoint, opens the
//!   gate and registers `Up` with metadata `state_epoch`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mod_api::state::{CheckpointInfo, Gate, Role, StateCell, StateConfig, StateControl};
use mod_api::{BoxFuture, DispatchTable, Error, ErrorKind, Lease, Result, Status};

use super::store::{token, Claim, StateStore};
use super::takeover::choose_target;
use crate::invoke::RpcHosting;

/// How often a steward reads the ownership of its service.
pub const POLL: Duration = Duration::from_millis(50);
/// How often a standby says it is one.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Stateful services this process owns now (a standby's load).
static OWNED: AtomicU64 = AtomicU64::new(0);

/// One stateful service in this process.
pub struct Steward {
    service: &'static str,
    node: String,
    cell: Arc<dyn StateCell>,
    store: StateStore,
    gate: Arc<Gate>,
    config: StateConfig,
    hosting: Arc<RpcHosting>,
    table: DispatchTable,
    role: Mutex<Role>,
    own: tokio::sync::Mutex<Own>,
    stopped: AtomicBool,
    seq: AtomicU64,
    /// The poll and the periodic checkpoints.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What the steward knows about its ownership (under one lock: renewals,
/// checkpoints and hand-overs never interleave).
#[derive(Default)]
struct Own {
    /// Epoch and token while this process owns the service.
    token: Option<(u64, String)>,
    registration: Option<Lease>,
    renewed: Option<Instant>,
    heartbeat: Option<Instant>,
}

impl Steward {
    /// Starts the steward of `service` on `node`; its first poll decides
    /// whether it becomes the owner (nobody owned the service) or a standby.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        service: &'static str,
        cell: Arc<dyn StateCell>,
        store: StateStore,
        gate: Arc<Gate>,
        config: StateConfig,
        hosting: Arc<RpcHosting>,
        table: DispatchTable,
    ) -> Arc<Steward> {
        let steward = Arc::new(Steward {
            service,
            node: hosting.node_id().to_owned(),
            cell,
            store,
            gate,
            config,
            hosting,
            table,
            role: Mutex::new(Role::Standby),
            own: tokio::sync::Mutex::new(Own::default()),
            stopped: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let poll = every(&steward, POLL, move |steward| async move {
            if let Err(e) = steward.step().await {
                tracing::debug!(service, error = %e, "state steward: poll failed");
            }
        });
        // Checkpoints start every period (not a period after the last one
        // ended), so a crash loses at most a period and one write.
        let period = steward.config.period;
        let checkpoints = every(&steward, period, |steward| async move {
            steward.periodic().await;
        });
        steward
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([poll, checkpoints]);
        steward
    }

    fn set_role(&self, role: Role) {
        *self.role.lock().unwrap_or_else(|e| e.into_inner()) = role;
    }

    /// One poll.
    async fn step(&self) -> Result<()> {
        let seen = self.store.ownership().await?;
        let mut own = self.own.lock().await;
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some((_, mine)) = own.token.clone() else {
            return self.standby_step(&mut own, seen).await;
        };
        if seen.owner.as_deref() != Some(mine.as_str()) {
            self.fence(&mut own, seen.owner.as_deref()).await;
            return Ok(());
        }
        if let Some(to) = seen.request.filter(|to| *to != self.node) {
            return self.hand_over(&mut own, Some(&to)).await;
        }
        let lease = self.config.lease;
        if own.renewed.is_none_or(|at| at.elapsed() >= lease / 4) {
            let sent = Instant::now();
            if self.store.renew(&mine, lease).await? {
                self.gate.open_until(sent + lease * 3 / 4);
                own.renewed = Some(sent);
            } else {
                self.fence(&mut own, None).await;
                return Ok(());
            }
            if own.registration.is_none() {
                let epoch = own.token.as_ref().map_or(0, |(e, _)| *e);
                self.register(&mut own, epoch).await;
            }
        }
        Ok(())
    }

    /// Registers this owner `Up` (metadata `state_epoch`); a failure is
    /// retried at the next renewal.
    async fn register(&self, own: &mut Own, epoch: u64) {
        let metadata = [("state_epoch", epoch.to_string())];
        match self
            .hosting
            .register(self.service, &self.table, &metadata)
            .await
        {
            Ok(registration) => own.registration = Some(registration),
            Err(e) => {
                tracing::warn!(service = self.service, error = %e, "owner not registered; retried at the next renewal")
            }
        }
    }

    /// One periodic checkpoint, when this process owns the service.
    async fn periodic(&self) {
        let mut own = self.own.lock().await;
        if own.token.is_none() || self.stopped.load(Ordering::SeqCst) {
            return;
        }
        match self.write_checkpoint(&mut own).await {
            Err(e) if e.kind() == ErrorKind::Moved => self.fence(&mut own, None).await,
            Err(e) => {
                tracing::warn!(service = self.service, error = %e, "periodic checkpoint failed")
            }
            Ok(_) => {}
        }
    }

    async fn standby_step(&self, own: &mut Own, seen: super::store::Ownership) -> Result<()> {
        if own.heartbeat.is_none_or(|at| at.elapsed() >= HEARTBEAT) {
            self.store.heartbeat(&self.node, load()).await?;
            own.heartbeat = Some(Instant::now());
        }
        if seen.owner.is_some() {
            return Ok(());
        }
        // Nobody owns the service: its owner released it, or its lease ran
        // out (the old owner's gate closed a quarter lease before that).
        match seen.handover.as_deref() {
            Some(node) if node == self.node => self.claim(own, false).await,
            Some(_) => Ok(()),
            None => {
                // Nobody chose a successor: every standby makes the same
                // choice, and only the chosen one claims.
                let registry = self.hosting.registry();
                let choice = choose_target(&self.store, &**registry, &[]).await?;
                match choice.as_deref() == Some(self.node.as_str()) {
                    true => self.claim(own, true).await,
                    false => Ok(()),
                }
            }
        }
    }

    /// Claims the service; on success restores it, opens the gate and registers.
    async fn claim(&self, own: &mut Own, orphaned: bool) -> Result<()> {
        let (service, lease) = (self.service, self.config.lease);
        let sent = Instant::now();
        let epoch = match self.store.claim(&self.node, lease, orphaned).await? {
            Claim::Won(epoch) => epoch,
            Claim::Refused(why) => {
                tracing::debug!(service, why, "claim refused");
                return Ok(());
            }
        };
        let mine = token(epoch, &self.node);
        own.token = Some((epoch, mine.clone()));
        own.renewed = Some(sent);
        OWNED.fetch_add(1, Ordering::Relaxed);
        let restored = match self.store.load().await {
            Ok(Some(stored)) => {
                let bytes = stored.state.len();
                match self.cell.restore(stored.version, &stored.state).await {
                    Ok(()) => Some((bytes, stored.epoch)),
                    Err(e) => return self.abandon(own, &mine, e).await,
                }
            }
            Ok(None) => None,
            Err(e) => return self.abandon(own, &mine, e).await,
        };
        self.gate.open_until(sent + lease * 3 / 4);
        self.register(own, epoch).await;
        self.set_role(Role::Owner { epoch });
        count("modkit_state_owned_total", service);
        match restored {
            Some((bytes, from)) => {
                tracing::info!(service, node = %self.node, epoch, bytes, checkpoint_epoch = from, "owner of the service: state restored")
            }
            None => {
                tracing::info!(service, node = %self.node, epoch, "owner of the service: no checkpoint yet, starting empty")
            }
        }
        Ok(())
    }

    /// Gives a claimed service up again: its checkpoint could not be restored.
    async fn abandon(&self, own: &mut Own, mine: &str, e: Error) -> Result<()> {
        tracing::error!(service = self.service, error = %e, "checkpoint cannot be restored here; service released");
        own.token = None;
        OWNED.fetch_sub(1, Ordering::Relaxed);
        self.store.release(mine, None, self.config.lease).await?;
        Err(e)
    }

    /// Quiesces, writes the final checkpoint and releases the service to `to`.
    async fn hand_over(&self, own: &mut Own, to: Option<&str>) -> Result<()> {
        let Some((epoch, mine)) = own.token.clone() else {
            return Ok(());
        };
        let service = self.service;
        let started = Instant::now();
        self.gate.close();
        if !self.quiesce(&mine).await? {
            self.fence(own, None).await;
            return Ok(());
        }
        match self.write_checkpoint(own).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Moved => {
                self.fence(own, None).await;
                return Ok(());
            }
            Err(e) => {
                // Without its final checkpoint the state stays here.
                if let Some(at) = own.renewed {
                    self.gate.open_until(at + self.config.lease * 3 / 4);
                }
                tracing::warn!(service, error = %e, "final checkpoint failed: hand-over abandoned, still the owner");
                return Err(e);
            }
        }
        self.store.release(&mine, to, self.config.lease * 2).await?;
        own.token = None;
        OWNED.fetch_sub(1, Ordering::Relaxed);
        self.set_role(Role::Standby);
        if let Some(registration) = own.registration.take() {
            tokio::spawn(deregister_after_successor(
                self.hosting.clone(),
                service,
                self.node.clone(),
                registration,
                self.config.lease * 2,
            ));
        }
        let quiesced_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            service,
            epoch,
            to,
            quiesced_ms,
            "service handed over: final checkpoint written, ownership released"
        );
        Ok(())
    }

    /// Waits for the calls in flight (the gate is closed), up to the quiesce
    /// timeout, renewing the lease meanwhile so that it cannot run out
    /// before the final checkpoint; `false` when it was lost (fenced).
    async fn quiesce(&self, mine: &str) -> Result<bool> {
        let lease = self.config.lease;
        let until = Instant::now() + self.config.quiesce_timeout;
        loop {
            let slice = (lease / 4).min(until.saturating_duration_since(Instant::now()));
            let drained = self.gate.drain(slice).await;
            if !self.store.renew(mine, lease).await? {
                return Ok(false);
            }
            if drained {
                return Ok(true);
            }
            if Instant::now() >= until {
                tracing::warn!(
                    service = self.service,
                    in_flight = self.gate.in_flight(),
                    "quiesce timed out; checkpointing with calls still running"
                );
                return Ok(true);
            }
        }
    }

    /// Another process owns the service: stop serving it at once.
    async fn fence(&self, own: &mut Own, now_owned_by: Option<&str>) {
        self.gate.close();
        if own.token.take().is_some() {
            OWNED.fetch_sub(1, Ordering::Relaxed);
        }
        self.set_role(Role::Standby);
        count("modkit_state_fenced_total", self.service);
        tracing::warn!(service = self.service, node = %self.node, owner = now_owned_by, "fenced: this process no longer owns the service (its lease ran out or another took it)");
        if let Some(registration) = own.registration.take() {
            if let Err(e) = registration.deregister().await {
                tracing::debug!(service = self.service, error = %e, "deregister after fencing failed; the lease expires");
            }
        }
    }

    async fn write_checkpoint(&self, own: &mut Own) -> Result<CheckpointInfo> {
        let Some((epoch, mine)) = own.token.clone() else {
            return Err(not_owner(self.service));
        };
        let state = self.cell.checkpoint().await?;
        let version = self.cell.version();
        let gen = format!("{epoch}-{}", self.seq.fetch_add(1, Ordering::Relaxed));
        self.store
            .commit(&mine, epoch, version, &gen, &state)
            .await?;
        count("modkit_state_checkpoints_total", self.service);
        tracing::debug!(
            service = self.service,
            epoch,
            bytes = state.len(),
            "checkpoint committed"
        );
        Ok(CheckpointInfo {
            epoch,
            version,
            bytes: state.len(),
        })
    }
}

/// Runs `f` on the steward every `period` (a late tick is skipped, not
/// made up) until it is stopped or dropped.
fn every<F, Fut>(steward: &Arc<Steward>, period: Duration, f: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Arc<Steward>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(steward);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let Some(steward) = weak.upgrade() else {
                return;
            };
            if steward.stopped.load(Ordering::SeqCst) {
                return;
            }
            f(steward).await;
        }
    })
}

fn not_owner(service: &str) -> Error {
    Error::new(
        ErrorKind::Moved,
        format!("this process does not own service {service}"),
    )
}

/// `counter{service}` + 1, when metrics are on.
fn count(counter: &'static str, service: &'static str) {
    if mod_api::layer::metrics_enabled() {
        metrics::counter!(counter, "service" => service).increment(1);
    }
}

/// A standby's load: services it owns (then the host's load average).
fn load() -> u64 {
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    OWNED.load(Ordering::Relaxed) * 1_000_000 + (loadavg * 100.0) as u64
}

/// Keeps the old owner's registration (its gate refusing with `Moved`)
/// until a successor is registered `Up`, so callers always find one.
async fn deregister_after_successor(
    hosting: Arc<RpcHosting>,
    service: &'static str,
    node: String,
    registration: Lease,
    longest: Duration,
) {
    let until = Instant::now() + longest;
    while Instant::now() < until {
        let instances = hosting.registry().lookup(service).await.unwrap_or_default();
        if instances
            .iter()
            .any(|i| i.id != node && i.status == Status::Up)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Err(e) = registration.deregister().await {
        tracing::debug!(service, error = %e, "old owner's deregistration failed; its lease expires");
    }
}

impl StateControl for Steward {
    fn service(&self) -> &'static str {
        self.service
    }

    fn role(&self) -> Role {
        *self.role.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn checkpoint_now(&self) -> BoxFuture<'_, Result<CheckpointInfo>> {
        Box::pin(async move {
            let mut own = self.own.lock().await;
            self.write_checkpoint(&mut own).await
        })
    }

    fn stop(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.stopped.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            let mut own = self.own.lock().await;
            let outcome = if own.token.is_some() {
                let me = [self.node.as_str()];
                let to = choose_target(&self.store, &**self.hosting.registry(), &me)
                    .await
                    .unwrap_or(None);
                self.hand_over(&mut own, to.as_deref()).await
            } else {
                self.store.leave(&self.node).await
            };
            self.set_role(Role::Stopped);
            for task in self
                .tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
            {
                task.abort();
            }
            outcome
        })
    }
}
