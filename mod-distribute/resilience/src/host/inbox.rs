//! The agent's inbox: the [`Instruction`]s the fault monitor `RPUSH`es to
//! [`inbox_key`](crate::faults::report::inbox_key), taken one at a time
//! with `BLPOP`, carried out through the [`Deployment`], and their
//! [`ActionResult`]s kept for the next reports.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use mod_distribute::deploy::Deployment;
use mod_distribute::Redis;
use tokio::sync::watch;

use crate::faults::report::{ActionResult, Instruction};

/// How many action results the reports carry.
pub const KEPT_ACTIONS: usize = 16;

/// How long `BLPOP` blocks before it looks whether the agent stops.
const BLOCK_SECONDS: u64 = 1;

/// The last [`KEPT_ACTIONS`] results, oldest first.
#[derive(Debug, Default)]
pub(super) struct Actions(Mutex<VecDeque<ActionResult>>);

impl Actions {
    pub(super) fn push(&self, result: ActionResult) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == KEPT_ACTIONS {
            kept.pop_front();
        }
        kept.push_back(result);
    }

    pub(super) fn snapshot(&self) -> Vec<ActionResult> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().cloned().collect()
    }
}

/// Decodes one inbox entry: `None` (and a WARN) for anything that is not an
/// [`Instruction`].
pub fn decode(host: &str, raw: &[u8]) -> Option<Instruction> {
    match serde_json::from_slice::<Instruction>(raw) {
        Ok(instruction) => Some(instruction),
        Err(e) => {
            let text = String::from_utf8_lossy(raw);
            let shown: String = text.chars().take(200).collect();
            tracing::warn!(%host, error = %e, entry = %shown, "host agent: not an instruction; skipped");
            None
        }
    }
}

/// What the inbox loop works with.
pub(super) struct Inbox {
    pub(super) host: String,
    pub(super) key: String,
    pub(super) redis: Redis,
    pub(super) deployment: Weak<Deployment>,
    pub(super) actions: Arc<Actions>,
    pub(super) stop_grace: Duration,
}

impl Inbox {
    /// Takes and carries out instructions until `stop` turns true.
    pub(super) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut conn = None;
        loop {
            if *stop.borrow() {
                return;
            }
            if conn.is_none() {
                match self.redis.dedicated().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(host = %self.host, error = %e, "host agent: cannot connect for the inbox; retrying");
                        if pause(&mut stop, Duration::from_millis(500)).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let mut blpop = redis::cmd("BLPOP");
            blpop.arg(&self.key).arg(BLOCK_SECONDS);
            let popped = tokio::select! {
                popped = blpop.query_async::<Option<(String, Vec<u8>)>>(c) => popped,
                _ = stop.changed() => return,
            };
            match popped {
                Ok(None) => {}
                Ok(Some((_, raw))) => {
                    if let Some(instruction) = decode(&self.host, &raw) {
                        self.carry_out(instruction).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(host = %self.host, error = %e, "host agent: reading the inbox failed; reconnecting");
                    conn = None;
                    if pause(&mut stop, Duration::from_millis(200)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Carries out `instruction` and records its result.
    pub(super) async fn carry_out(&self, instruction: Instruction) {
        let started = Instant::now();
        let (ok, detail) = match self.deployment.upgrade() {
            Some(deployment) => execute(deployment, &instruction, self.stop_grace).await,
            None => (false, "the agent is stopping".to_string()),
        };
        let took_ms = started.elapsed().as_millis() as u64;
        let node = match &instruction {
            Instruction::Restart { node, .. }
            | Instruction::Stop { node, .. }
            | Instruction::Start { node, .. } => node.clone(),
        };
        tracing::info!(host = %self.host, id = instruction.id(), ?instruction, ok, %detail, took_ms, "host agent: instruction carried out");
        self.actions.push(ActionResult {
            id: instruction.id(),
            node,
            ok,
            detail,
            took_ms,
        });
    }
}

/// Carries out one instruction on `deployment`: whether it did what it
/// says, and what happened.
async fn execute(
    deployment: Arc<Deployment>,
    instruction: &Instruction,
    grace: Duration,
) -> (bool, String) {
    let pid_of = |d: &Deployment, node: &str| d.process(node).and_then(|p| p.pid);
    match instruction.clone() {
        Instruction::Restart { node, .. } => {
            let before = pid_of(&deployment, &node);
            // SIGKILL and a fork/exec: short, but blocking.
            let done = tokio::task::spawn_blocking(move || {
                let result = deployment.restart(&node);
                (result, pid_of(&deployment, &node))
            })
            .await;
            match done {
                Ok((Ok(()), after)) => (
                    true,
                    format!("restarted: pid {} -> {}", show(before), show(after)),
                ),
                Ok((Err(e), _)) => (false, format!("restart failed: {e}")),
                Err(e) => (false, format!("restart failed: {e}")),
            }
        }
        Instruction::Stop { node, .. } => {
            let before = pid_of(&deployment, &node);
            match deployment.stop_replica(&node, grace).await {
                Ok(()) => {
                    let exit = deployment.process(&node).and_then(|p| p.last_exit);
                    let how = exit.map_or_else(|| "not running".into(), |s| s.to_string());
                    (true, format!("stopped pid {} ({how})", show(before)))
                }
                Err(e) => (false, format!("stop failed: {e}")),
            }
        }
        Instruction::Start { process, node, .. } => {
            let done = tokio::task::spawn_blocking(move || {
                let result = deployment.start_replica(&process, &node);
                (result, pid_of(&deployment, &node))
            })
            .await;
            match done {
                Ok((Ok(()), after)) => (true, format!("started: pid {}", show(after))),
                Ok((Err(e), _)) => (false, format!("start failed: {e}")),
                Err(e) => (false, format!("start failed: {e}")),
            }
        }
    }
}

fn show(pid: Option<u32>) -> String {
    pid.map_or_else(|| "-".into(), |p| p.to_string())
}

/// Waits `delay` or until `stop` turns true (then `true`).
pub(super) async fn pause(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_and_garbage() {
        let restart = decode("h", br#"{"do":"restart","id":1,"node":"a-0"}"#);
        assert_eq!(
            restart,
            Some(Instruction::Restart {
                id: 1,
                node: "a-0".into()
            })
        );
        let start = decode("h", br#"{"do":"start","id":2,"process":"a","node":"a-9"}"#);
        assert!(matches!(start, Some(Instruction::Start { id: 2, .. })));
        for garbage in [
            &b""[..],
            b"not json",
            b"{}",
            br#"{"do":"explode","id":3}"#,
            br#"{"do":"stop","id":-1,"node":"a-0"}"#,
            br#"{"do":"stop","node":"a-0"}"#,
            b"\xff\xfe\x00",
            b"[1,2,3]",
        ] {
            assert_eq!(decode("h", garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn the_last_sixteen_actions_are_kept() {
        let actions = Actions::default();
        for id in 0..20 {
            actions.push(ActionResult {
                id,
                node: "a-0".into(),
                ok: true,
                detail: String::new(),
                took_ms: 0,
            });
        }
        let kept: Vec<u64> = actions.snapshot().iter().map(|a| a.id).collect();
        assert_eq!(kept, (4..20).collect::<Vec<_>>());
    }
}
