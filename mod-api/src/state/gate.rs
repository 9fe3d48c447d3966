//! [`Gate`]: who may call a stateful service now.
//!
//! The owner's gate is open until its lease ends; a standby's, or a moving
//! owner's, is closed. A refused call did not run and fails with
//! [`ErrorKind::Moved`], which callers retry on the current owner. Closing
//! and then [`drain`](Gate::drain)ing is the quiesce of a planned move.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::error::{Error, ErrorKind, Result};
use crate::invoke::{Dispatch, MethodInfo};
use crate::layer::Layer;

/// Admits a stateful service's calls while this process owns it.
pub struct Gate {
    service: &'static str,
    open: AtomicBool,
    /// End of the owner's lease, in ms after `origin` (calls are refused
    /// from then on, whatever `open` says: an owner cut off from the store
    /// stops by itself).
    until_ms: AtomicU64,
    origin: Instant,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("service", &self.service)
            .field("open", &self.is_open())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Gate {
    /// A closed gate for `service`.
    pub fn new(service: &'static str) -> Arc<Gate> {
        Arc::new(Gate {
            service,
            open: AtomicBool::new(false),
            until_ms: AtomicU64::new(0),
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// Opens the gate until `until` (the owner's lease end); call again to
    /// extend it.
    pub fn open_until(&self, until: Instant) {
        self.until_ms.store(self.ms(until), SeqCst);
        self.open.store(true, SeqCst);
    }

    /// Opens the gate with no end (a process that owns its state for good:
    /// the monolith).
    pub fn open_for_good(&self) {
        self.until_ms.store(u64::MAX, SeqCst);
        self.open.store(true, SeqCst);
    }

    /// Closes the gate: calls from now on are refused.
    pub fn close(&self) {
        self.open.store(false, SeqCst);
    }

    /// Whether calls are admitted now.
    pub fn is_open(&self) -> bool {
        self.open.load(SeqCst) && self.ms(Instant::now()) < self.until_ms.load(SeqCst)
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }

    /// Admits one call (until the permit drops), or refuses it with
    /// [`ErrorKind::Moved`].
    pub fn admit(&self) -> Result<Permit<'_>> {
        // Counted before the check: a `close` that the check misses is
        // followed by a `drain` that sees this call.
        self.in_flight.fetch_add(1, SeqCst);
        let permit = Permit(self);
        if self.is_open() {
            return Ok(permit);
        }
        drop(permit);
        Err(Error::new(
            ErrorKind::Moved,
            format!(
                "this process does not own service {} now; the call did not run",
                self.service
            ),
        ))
    }

    /// Waits until no call is running, for up to `timeout`; whether none is.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }
}

/// One admitted call; dropping it ends the call for [`Gate::drain`].
pub struct Permit<'a>(&'a Gate);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Puts a service's dispatcher behind a [`Gate`].
pub struct GateLayer(pub Arc<Gate>);

struct Gated {
    gate: Arc<Gate>,
    inner: Arc<dyn Dispatch>,
}

impl Layer<dyn Dispatch> for GateLayer {
    fn layer(&self, inner: Arc<dyn Dispatch>) -> Arc<dyn Dispatch> {
        Arc::new(Gated {
            gate: self.0.clone(),
            inner,
        })
    }
}

#[async_trait]
impl Dispatch for Gated {
    fn service(&self) -> &'static str {
        self.inner.service()
    }

    fn methods(&self) -> &'static [MethodInfo] {
        self.inner.methods()
    }

    async fn dispatch(&self, method: &str, payload: &[u8]) -> Result<Vec<u8>> {
        let _permit = self.gate.admit()?;
        self.inner.dispatch(method, payload).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_or_expired_gate_refuses_and_drain_waits_for_running_calls() {
        let gate = Gate::new("t.Counter");
        assert_eq!(gate.admit().err().map(|e| e.kind()), Some(ErrorKind::Moved));
        gate.open_until(Instant::now() + Duration::from_secs(60));
        let running = gate.admit().expect("open");
        gate.close();
        assert!(gate.admit().is_err(), "closed: refused");
        assert!(
            !gate.drain(Duration::from_millis(30)).await,
            "a call still runs"
        );
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.drain(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(running);
        assert!(waiter.await.unwrap(), "drained once the call ended");
        gate.open_until(Instant::now() + Duration::from_millis(20));
        assert!(gate.admit().is_ok());
        tokio::time::sleep(Duration::from_millis(40)).await;
        let err = gate.admit().err().expect("the lease ended");
        assert!(
            err.is_retryable() && err.to_string().contains("did not run"),
            "{err}"
        );
    }
}
