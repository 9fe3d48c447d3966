//! Supervising one replica: a thread that notices when its process exits and
//! starts it again per the process's [`Restart`] policy, with a backoff.
//!
//! The child lives in a [`Slot`] behind a mutex, and only a holder of that
//! lock reaps it (`try_wait`) or signals it, so a signal never reaches a
//! reaped child's recycled pid. Stopping sets `stopping` under the same lock
//! first: from then on the supervisor starts nothing and returns.
//!
//! A slot's supervisor runs for one `generation`: starting a stopped or
//! given-up replica again (`control.rs`) bumps it and starts a new
//! supervisor, and an old one that is still winding down returns at its next
//! look. A replica started by someone else while its supervisor waits out a
//! backoff (`Deployment::restart`) is taken as the restart.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mod_api::{Error, Result};
use tokio::sync::broadcast;

use super::logs::{self, Sink};
use super::{Event, Restart, Role};

/// How often a supervisor looks whether its child exited.
const POLL: Duration = Duration::from_millis(25);

/// Restart delays: `initial`, doubled after every restart up to `max`, back
/// to `initial` once a replica ran `reset_after` without exiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first restart.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A replica that ran this long before it exited restarts after `initial` again.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s, reset after 10 s of running.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(10),
        }
    }
}

/// What starting one replica takes.
pub(super) struct Recipe {
    pub(super) role: Role,
    pub(super) restart: Restart,
    pub(super) program: PathBuf,
    pub(super) args: Vec<OsString>,
    pub(super) env: Vec<(String, String)>,
}

impl Recipe {
    /// Spawns the replica (tied to this process: it dies with it) and starts
    /// forwarding its output.
    pub(super) fn spawn(&self, sink: &Sink) -> Result<Child> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: a Ctrl-C at the terminal reaches the
        // launcher only, which stops the replicas in order (no restart race).
        // Only where the kernel also kills a replica with its launcher: a
        // launcher killed by that Ctrl-C leaves no replica behind.
        #[cfg(target_os = "linux")]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let node = &self.role.node;
        let mut child = crate::redis_server::spawn_tied(cmd).map_err(|e| {
            Error::unavailable(format!(
                "deployment: cannot start {node} ({})",
                self.program.display()
            ))
            .with_source(e)
        })?;
        if let Some(out) = child.stdout.take() {
            logs::forward(node, out, sink);
        }
        if let Some(err) = child.stderr.take() {
            logs::forward(node, err, sink);
        }
        tracing::info!(%node, pid = child.id(), services = %self.role.services.join(","), "deployment: process started");
        Ok(child)
    }
}

/// One replica's shared state.
pub(super) struct Slot {
    pub(super) recipe: Recipe,
    state: Mutex<State>,
    wake: Condvar,
}

/// What a slot knows about its replica.
#[derive(Default)]
pub(super) struct State {
    /// The running child (`None` between an exit and a restart, and after stop).
    pub(super) child: Option<Child>,
    /// Its pid while it runs.
    pub(super) pid: Option<u32>,
    /// How often it was started again.
    pub(super) restarts: u32,
    /// How its last process exited.
    pub(super) last_exit: Option<ExitStatus>,
    /// Whether it exited and its policy leaves it stopped.
    pub(super) given_up: bool,
    /// Set by stop (or drop): nothing is started any more.
    pub(super) stopping: bool,
    /// Stopped on purpose by `Deployment::stop_replica`.
    pub(super) held: bool,
    /// The generation of the supervisor that may act on this slot.
    pub(super) generation: u64,
    /// When its current process started.
    pub(super) started: Option<Instant>,
}

impl Slot {
    pub(super) fn new(recipe: Recipe, child: Child) -> Slot {
        Slot {
            recipe,
            state: Mutex::new(State {
                pid: Some(child.id()),
                child: Some(child),
                started: Some(Instant::now()),
                ..State::default()
            }),
            wake: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the slot stopping and wakes its supervisor; returns the guard.
    pub(super) fn stopping(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        state.stopping = true;
        self.wake.notify_all();
        state
    }

    /// Wakes the supervisor (to look at a changed state).
    pub(super) fn wake(&self) {
        self.wake.notify_all();
    }

    /// Sleeps up to `delay` or until stopped; `false` when stopped (or a
    /// supervisor of a later generation took over).
    fn sleep(&self, delay: Duration, generation: u64) -> bool {
        let deadline = Instant::now() + delay;
        let mut state = self.lock();
        loop {
            if state.stopping || state.generation != generation {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            state = self
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until the child exits (and reaps it) or the slot is stopped
    /// (`None`). Returns the status and how long that process ran; when the
    /// policy leaves it stopped, marks it given up (under the same lock, so
    /// whoever starts it again sees that no supervisor runs for it).
    fn wait_exit(&self, generation: u64) -> Option<(ExitStatus, Duration)> {
        let mut state = self.lock();
        loop {
            if state.stopping || state.generation != generation {
                return None;
            }
            let exited = match state.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status),
                Some(Ok(None)) => None,
                Some(Err(e)) => {
                    // Cannot happen for a child we own; do not spin on it.
                    tracing::warn!(node = %self.recipe.role.node, error = %e, "deployment: cannot wait for the process");
                    None
                }
                None => return None,
            };
            if let Some(status) = exited {
                state.child = None;
                state.pid = None;
                state.last_exit = Some(status);
                state.given_up = !self.recipe.restart.restarts(status.success());
                let ran = state.started.map_or(Duration::ZERO, |t| t.elapsed());
                return Some((status, ran));
            }
            state = self
                .wake
                .wait_timeout(state, POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Starts the supervisor thread of `slot`, for its current generation.
pub(super) fn supervise(
    slot: Arc<Slot>,
    backoff: Backoff,
    sink: Sink,
    events: broadcast::Sender<Event>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let generation = slot.lock().generation;
    std::thread::Builder::new()
        .name(format!("modkit-supervise-{}", slot.recipe.role.node))
        .spawn(move || run(&slot, generation, backoff, &sink, &events))
}

fn run(
    slot: &Slot,
    generation: u64,
    backoff: Backoff,
    sink: &Sink,
    events: &broadcast::Sender<Event>,
) {
    let node = slot.recipe.role.node.clone();
    let policy = slot.recipe.restart;
    let mut delay = backoff.initial;
    while let Some((status, ran)) = slot.wait_exit(generation) {
        if !policy.restarts(status.success()) {
            if status.success() {
                tracing::info!(%node, %status, restart = policy.name(), "deployment: process exited; not restarted");
            } else {
                tracing::warn!(%node, %status, restart = policy.name(), "deployment: process failed; not restarted");
            }
            let _ = events.send(Event::Exited {
                node: node.clone(),
                status,
                restart_in: None,
            });
            return;
        }
        if ran >= backoff.reset_after {
            delay = backoff.initial;
        }
        // Start it again, after the backoff; a failed start counts as a failed run.
        loop {
            let restarts = slot.lock().restarts + 1;
            tracing::warn!(%node, %status, restarts, delay_ms = delay.as_millis() as u64, "deployment: process exited unexpectedly; restarting it");
            let _ = events.send(Event::Exited {
                node: node.clone(),
                status,
                restart_in: Some(delay),
            });
            if !slot.sleep(delay, generation) {
                return;
            }
            delay = (delay * 2).min(backoff.max);
            if slot.lock().child.is_some() {
                break; // started meanwhile (Deployment::restart)
            }
            match slot.recipe.spawn(sink) {
                Ok(mut child) => {
                    let pid = child.id();
                    let mut state = slot.lock();
                    let ours = !state.stopping && state.generation == generation;
                    if !ours || state.child.is_some() {
                        // Stopped, or started by someone else, while
                        // starting: this one is ours to end.
                        let _ = child.kill();
                        let _ = child.wait();
                        if ours {
                            break;
                        }
                        return;
                    }
                    state.restarts += 1;
                    let restarts = state.restarts;
                    state.child = Some(child);
                    state.pid = Some(pid);
                    state.started = Some(Instant::now());
                    drop(state);
                    let _ = events.send(Event::Started {
                        node: node.clone(),
                        pid,
                        restarts,
                    });
                    break;
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "deployment: restart failed");
                    slot.lock().restarts += 1;
                }
            }
        }
    }
}

/// Asks `child` to stop (SIGTERM; elsewhere than Unix: kill).
pub(super) fn terminate(child: &mut Child) {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return;
        };
        // SAFETY: kill(2) with a pid of our own unreaped child (the caller
        // holds the slot's lock, the only place it is reaped) and a valid signal.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
}
