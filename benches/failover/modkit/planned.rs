//! modkit's other two scenarios on the same group: a planned switchover
//! (the write gap it costs) and a frozen primary (a zombie: what it takes
//! once it wakes).

use std::process::Command as Process;
use std::time::{Duration, Instant};

use super::ModkitGroup;

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
    /// Writes sent to it after the fence that it took (it must take none).
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
        let judged = self.finish(n, &from, to, started).await;
        Switchover {
            gap_ms,
            lost: judged.lost,
            spurious: judged.spurious,
            dual_ms: judged.dual_ms,
        }
    }

    /// SIGSTOP of the primary until the failover commits, then SIGCONT: a
    /// write queued on it while frozen and one sent after it woke must both
    /// be refused.
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
        let frozen_at = Instant::now();
        signal("-STOP");
        let (committed, commit_at) = self.commit_after(epoch).await;
        let commit_ms = (commit_at - frozen_at).as_secs_f64() * 1000.0;
        let primary = committed.and_then(|t| t.primary);
        // After the fence, while it is frozen, a client that still takes it
        // for the primary sends a write (it waits in the socket), and
        // another one right after it wakes: it must refuse both.
        let queued = tokio::spawn(raw_set(frozen.clone(), "zombie:queued"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let took_ms = match &primary {
            Some(p) => self.first_write(p, frozen_at).await,
            None => 20_000.0,
        };
        signal("-CONT");
        let woken = raw_set(frozen.clone(), "zombie:woken").await;
        let queued = queued.await.unwrap_or(false);
        let accepted = usize::from(queued) + usize::from(woken);
        if accepted > 0 {
            eprintln!(
                "cycle {n} zombie took writes after the fence: queued={queued} woken={woken}"
            );
        }
        eprintln!("cycle {n} zombie commit_ms={commit_ms:.0}");
        let lost = self.finish(n, &frozen, primary, frozen_at).await.lost;
        Zombie {
            took_ms,
            accepted,
            lost,
        }
    }
}

/// Whether the node at `addr` takes `SET key 1` sent on a new raw
/// connection (the kernel accepts it even while the process is frozen; the
/// reply comes once it runs again).
async fn raw_set(addr: String, key: &'static str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
        let cmd = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\n1\r\n", key.len());
        stream.write_all(cmd.as_bytes()).await.ok()?;
        let mut reply = [0u8; 64];
        let n = stream.read(&mut reply).await.ok()?;
        Some(reply[..n].starts_with(b"+OK"))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
