//! modkit's other two scenarios on the same group: a planned switchover
//! (the write gap it costs) and a frozen primary (a zombie: what it takes
//! once it wakes).

use std::process::Command as Process;
use std::time::{Duration, Instant};

use super::ModkitGroup;
use crate::workload::keys_on;

/// What one switchover cycle measured.
pub struct Switchover {
    /// The longest time between two acknowledged writes of the cycle.
    pub gap_ms: f64,
    pub lost: usize,
    pub spurious: usize,
    pub dual_ms: u64,
}

/// What one zombie cycle measured.
pub struct Zombie {
    /// From the freeze to the first acknowledged write on the new primary.
    pub took_ms: f64,
    /// Writes the woken zombie took (it must take none).
    pub accepted: usize,
    pub lost: usize,
}

impl ModkitGroup {
    /// `Controller::switchover` to the best replica under the writer.
    pub async fn switchover_cycle(&mut self, n: u64) -> Switchover {
        let from = self.begin(n).await;
        let started = Instant::now();
        let to = match self.controller.switchover(None).await {
            Ok(t) => t.primary,
            Err(e) => {
                eprintln!("cycle {n} switchover refused: {e}");
                None
            }
        };
        if let Some(to) = &to {
            self.first_write(to, started).await;
        }
        // Writes on both sides of the gap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let gap_ms = self.history.longest_gap(n).as_secs_f64() * 1000.0;
        let (lost, spurious, dual_ms) = self.finish(n, &from, to, started).await;
        Switchover {
            gap_ms,
            lost,
            spurious,
            dual_ms,
        }
    }

    /// SIGSTOP of the primary until the failover commits, then SIGCONT: the
    /// writes it holds queued and any that reach it must all be refused.
    pub async fn zombie_cycle(&mut self, n: u64) -> Zombie {
        let frozen = self.begin(n).await;
        let epoch = self.state().topology.epoch;
        let pid = self.nodes[self.position(&frozen)]
            .pid()
            .expect("running")
            .to_string();
        let signal = |sig: &str| {
            let ok = Process::new("kill").args([sig, &pid]).status();
            assert!(ok.is_ok_and(|s| s.success()), "kill {sig} {pid}");
        };
        let last_before = self.history.last_key();
        let frozen_at = Instant::now();
        signal("-STOP");
        let (committed, _) = self.commit_after(epoch).await;
        let primary = committed.and_then(|t| t.primary);
        let took_ms = match &primary {
            Some(p) => self.first_write(p, frozen_at).await,
            None => 20_000.0,
        };
        signal("-CONT");
        // Right after waking (before the controller demotes it): a client
        // that still takes it for the primary writes, and the keys it holds
        // from after the freeze that the new primary does not hold.
        let stale_write = stale_client_write(&frozen).await;
        let on_zombie = keys_on(&frozen, n).await;
        let on_new = match &primary {
            Some(p) => keys_on(p, n).await,
            None => Vec::new(),
        };
        let accepted = on_zombie
            .iter()
            .filter(|k| last_before.is_none_or(|last| **k > last) && !on_new.contains(k))
            .count()
            + self.history.accepted_on(&frozen, frozen_at)
            + usize::from(stale_write);
        let (lost, _, _) = self.finish(n, &frozen, primary, frozen_at).await;
        Zombie {
            took_ms,
            accepted,
            lost,
        }
    }
}

/// Whether the node at `addr` takes a `SET` from a new connection.
async fn stale_client_write(addr: &str) -> bool {
    let Ok(mut conn) = crate::workload::connect(addr).await else {
        return false;
    };
    redis::cmd("SET")
        .arg("zombie:stale")
        .arg(1)
        .query_async::<()>(&mut conn)
        .await
        .is_ok()
}
