//! Acting on one replica of a running deployment: restart it at once, stop
//! it for good, start a new one. This is what a host agent does on the fault
//! monitor's instructions (repair, migration).

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_api::{Error, ErrorKind, Result};

use super::supervise::{self, Recipe, Slot, State};
use super::{Deployment, Event};

impl Deployment {
    /// Kills replica `node` (SIGKILL) and starts it again at once, without
    /// the restart backoff; it counts as a restart ([`Event::Exited`] with a
    /// zero delay, then [`Event::Started`]). A replica that is not running
    /// (between restarts, given up, or stopped by
    /// [`stop_replica`](Deployment::stop_replica)) is started again and
    /// supervised from here on.
    ///
    /// Fails with [`NotFound`](ErrorKind::NotFound) for a node that is not a
    /// replica of this deployment, with
    /// [`Unavailable`](ErrorKind::Unavailable) when its process cannot be
    /// started (it is then left given up).
    pub fn restart(&self, node: &str) -> Result<()> {
        let slot = self.slot(node)?;
        let mut state = slot.lock();
        let old_pid = state.pid;
        if let Some(mut child) = state.child.take() {
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                state.last_exit = Some(status);
                let _ = self.events.send(Event::Exited {
                    node: node.into(),
                    status,
                    restart_in: Some(Duration::ZERO),
                });
            }
        }
        state.pid = None;
        state.restarts += 1;
        // `stopping` here comes from stop_replica: the deployment's own stop
        // takes it by value, so it cannot run while this borrow lives.
        let unsupervised = state.stopping || state.given_up;
        let child = match slot.recipe.spawn(&self.template.sink) {
            Ok(child) => child,
            Err(e) => {
                // No supervisor acts on it any more; a later restart may.
                state.given_up = true;
                state.generation += 1;
                slot.wake();
                return Err(e);
            }
        };
        let pid = child.id();
        state.child = Some(child);
        state.pid = Some(pid);
        state.started = Some(Instant::now());
        state.given_up = false;
        state.held = false;
        let restarts = state.restarts;
        if unsupervised {
            state.generation += 1;
            state.stopping = false;
        }
        drop(state);
        if unsupervised {
            self.start_supervisor(&slot)?;
        }
        tracing::info!(%node, ?old_pid, pid, restarts, "deployment: process restarted on request");
        let _ = self.events.send(Event::Started {
            node: node.into(),
            pid,
            restarts,
        });
        Ok(())
    }

    /// Stops replica `node` for good: SIGTERM, SIGKILL (with a WARN) if it
    /// is still there after `grace`; it is not restarted, whatever its
    /// policy, until [`restart`](Deployment::restart) or
    /// [`start_replica`](Deployment::start_replica) starts it again. Its
    /// [`ProcessInfo::stopped`](super::ProcessInfo::stopped) is set, and
    /// [`services`](Deployment::services) and
    /// [`wait_ready`](Deployment::wait_ready) leave it out. Stopping a
    /// replica that does not run only marks it so.
    ///
    /// Fails with [`NotFound`](ErrorKind::NotFound) for a node that is not a
    /// replica of this deployment.
    pub async fn stop_replica(&self, node: &str, grace: Duration) -> Result<()> {
        let slot = self.slot(node)?;
        let pid = {
            let mut state = slot.stopping();
            state.held = true;
            match state.child.as_mut() {
                Some(child) => {
                    supervise::terminate(child);
                    child.id()
                }
                None => return Ok(()),
            }
        };
        let deadline = Instant::now() + grace;
        loop {
            {
                let mut state = slot.lock();
                let Some(child) = state.child.as_mut().filter(|c| c.id() == pid) else {
                    return Ok(()); // reaped or replaced by someone else meanwhile
                };
                if let Ok(Some(status)) = child.try_wait() {
                    self.stopped_exit(node, &mut state, status);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut state = slot.lock();
        if let Some(child) = state.child.as_mut().filter(|c| c.id() == pid) {
            tracing::warn!(%node, ?grace, "deployment: process did not stop within the grace period; killing it");
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                self.stopped_exit(node, &mut state, status);
            }
        }
        Ok(())
    }

    /// Records the exit of a replica `stop_replica` stopped (under its lock).
    fn stopped_exit(&self, node: &str, state: &mut State, status: ExitStatus) {
        state.child = None;
        state.pid = None;
        state.last_exit = Some(status);
        tracing::info!(%node, %status, "deployment: process stopped on request");
        let _ = self.events.send(Event::Exited {
            node: node.into(),
            status,
            restart_in: None,
        });
    }

    /// Starts a new replica `node` of the deployment file's process
    /// `process` on this deployment (a migration target), supervised like
    /// the others (its process's restart policy); its host label is this
    /// deployment's ([`Launcher::host`](super::Launcher::host)). The
    /// [`Launcher::replica_env`](super::Launcher::replica_env) hook is not
    /// called for it (it ran at launch). Sends [`Event::Started`] with
    /// `restarts` 0. A replica `node` of `process` that is down (stopped or
    /// given up) is started again, as by [`restart`](Deployment::restart).
    ///
    /// Fails with [`NotFound`](ErrorKind::NotFound) for a process the file
    /// does not have, [`InvalidInput`](ErrorKind::InvalidInput) for a node id
    /// that is not one (letters, digits, `-`, `_`, `.`),
    /// [`AlreadyExists`](ErrorKind::AlreadyExists) when replica `node` runs
    /// (or is being restarted) or belongs to another process, and
    /// [`Unavailable`](ErrorKind::Unavailable) when it cannot be started.
    pub fn start_replica(&self, process: &str, node: &str) -> Result<()> {
        let file = &self.template.file;
        let Some(spec) = file.process.iter().find(|p| p.name == process) else {
            let names: Vec<&str> = file.process.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::not_found(format!(
                "deployment: no process `{process}` in the deployment file (processes: {})",
                names.join(", ")
            )));
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if node.is_empty() || !node.chars().all(valid) {
            return Err(Error::invalid_input(format!(
                "deployment: {node:?} is not a node id (letters, digits, `-`, `_`, `.`)"
            )));
        }
        if let Ok(slot) = self.slot(node) {
            let owner = &slot.recipe.role.process;
            if owner != process {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("deployment: node `{node}` is a replica of `{owner}`, not `{process}`"),
                ));
            }
            let down = {
                let state = slot.lock();
                state.held || state.given_up
            };
            if !down {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("deployment: replica `{node}` already runs here"),
                ));
            }
            return self.restart(node);
        }
        let replica = node
            .strip_prefix(process)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| {
                let slots = self.slots();
                slots
                    .iter()
                    .filter(|s| s.recipe.role.process == process)
                    .count()
            });
        let role = self.template.role(spec, replica, node.into());
        let slot = self.add_replica(self.template.recipe(spec, role, Vec::new()))?;
        let pid = slot.lock().pid.unwrap_or_default();
        let _ = self.events.send(Event::Started {
            node: node.into(),
            pid,
            restarts: 0,
        });
        Ok(())
    }

    /// Spawns `recipe`'s replica as a new slot, supervised. Refuses a node
    /// id that is taken.
    pub(super) fn add_replica(&self, recipe: Recipe) -> Result<Arc<Slot>> {
        let slot = {
            let mut slots = self.slots();
            let node = &recipe.role.node;
            if slots.iter().any(|s| s.recipe.role.node == *node) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("deployment: replica `{node}` already exists"),
                ));
            }
            let child = recipe.spawn(&self.template.sink)?;
            let slot = Arc::new(Slot::new(recipe, child));
            slots.push(slot.clone());
            slot
        };
        if let Err(e) = self.start_supervisor(&slot) {
            let mut state = slot.stopping();
            if let Some(mut child) = state.child.take() {
                let _ = child.kill();
                state.last_exit = child.wait().ok();
            }
            state.pid = None;
            state.given_up = true;
            return Err(e);
        }
        Ok(slot)
    }

    /// Starts a supervisor for `slot`'s current generation.
    fn start_supervisor(&self, slot: &Arc<Slot>) -> Result<()> {
        let supervisor = supervise::supervise(
            slot.clone(),
            self.template.backoff,
            self.template.sink.clone(),
            self.events.clone(),
        )
        .map_err(|e| {
            Error::unavailable("deployment: cannot start a supervisor thread").with_source(e)
        })?;
        self.supervisors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(supervisor);
        Ok(())
    }

    /// The slot of replica `node`.
    fn slot(&self, node: &str) -> Result<Arc<Slot>> {
        let slots = self.slots();
        if let Some(slot) = slots.iter().find(|s| s.recipe.role.node == node) {
            return Ok(slot.clone());
        }
        let nodes: Vec<&str> = slots.iter().map(|s| s.recipe.role.node.as_str()).collect();
        Err(Error::not_found(format!(
            "deployment: no replica `{node}` here (replicas: {})",
            nodes.join(", ")
        )))
    }
}
