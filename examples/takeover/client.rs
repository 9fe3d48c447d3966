//! The client: the updates it sends, its record of the answers, and what
//! that record tells (who answered when, what failed, what the board lacks).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use modkit::prelude::*;

use crate::service::{player, points, Answer, Leaderboard};
use crate::{lock, EVERY};

/// One update the client sent: its id, when the call returned, and who
/// applied it or why it failed.
pub struct Sent {
    /// The update's id.
    pub id: u64,
    /// When the call returned.
    pub at: Instant,
    /// Who applied it, or why the call failed.
    pub answer: Result<Answer, Error>,
}

/// The client's record of its updates, shared with its task.
pub type Log = Arc<Mutex<Vec<Sent>>>;

/// The client: one update after another, [`EVERY`] apart (ten times that
/// after a failure), each recorded in `log`, until aborted.
pub async fn send_updates(board: Arc<dyn Leaderboard>, log: Log) {
    for id in 0u64.. {
        let answer = board.add(id, player(id).into(), points(id)).await;
        let pause = if answer.is_ok() { EVERY } else { EVERY * 10 };
        lock(&log).push(Sent {
            id,
            at: Instant::now(),
            answer,
        });
        tokio::time::sleep(pause).await;
    }
}

/// When `node` first answered an update that returned after `since`, and under which epoch.
pub fn first_answer(log: &Log, node: &str, since: Instant) -> Option<(Instant, u64)> {
    lock(log).iter().find_map(|s| match &s.answer {
        Ok(a) if a.node == node && s.at > since => Some((s.at, a.epoch)),
        _ => None,
    })
}

/// When `node` last answered an update, and under which epoch.
pub fn last_answer(log: &Log, node: &str) -> Option<(Instant, u64)> {
    lock(log).iter().rev().find_map(|s| match &s.answer {
        Ok(a) if a.node == node => Some((s.at, a.epoch)),
        _ => None,
    })
}

/// The calls that failed from `since` to `until`: how many, and as text
/// with their error kinds.
pub fn failures(log: &Log, since: Instant, until: Instant) -> (usize, String) {
    let log = lock(log);
    let window = log.iter().filter(|s| s.at >= since && s.at < until);
    let failed: Vec<&Error> = window.filter_map(|s| s.answer.as_ref().err()).collect();
    let kinds: BTreeSet<String> = failed.iter().map(|e| format!("{:?}", e.kind())).collect();
    let text = match failed.len() {
        0 => "no call failed".to_owned(),
        n => format!("{n} calls failed ({})", Vec::from_iter(kinds).join(", ")),
    };
    (failed.len(), text)
}

/// The owners that answered, in the order they did: node, epoch and how
/// many updates, one entry per run.
pub fn runs(log: &Log) -> Vec<(String, u64, usize)> {
    let mut runs: Vec<(String, u64, usize)> = Vec::new();
    for answer in lock(log).iter().filter_map(|s| s.answer.as_ref().ok()) {
        match runs.last_mut() {
            Some((node, epoch, n)) if *node == answer.node && *epoch == answer.epoch => *n += 1,
            _ => runs.push((answer.node.clone(), answer.epoch, 1)),
        }
    }
    runs
}

/// What reading the board from its owner showed.
pub struct Read {
    /// Who answered.
    pub owner: Answer,
    /// Updates acknowledged before the read.
    pub acked: usize,
    /// Those the board lacks: id and when it was acknowledged.
    pub lost: Vec<(u64, Instant)>,
    /// Whether the points match the updates applied.
    pub consistent: bool,
}

/// Reads the board from its owner and compares it with the updates
/// acknowledged before the read.
pub async fn read_board(board: &dyn Leaderboard, log: &Log) -> modkit::Result<Read> {
    let acked: Vec<(u64, Instant)> = lock(log)
        .iter()
        .filter(|s| s.answer.is_ok())
        .map(|s| (s.id, s.at))
        .collect();
    let (owner, scores) = board.scores().await?;
    Ok(Read {
        owner,
        acked: acked.len(),
        lost: acked
            .into_iter()
            .filter(|(id, _)| !scores.applied.contains(id))
            .collect(),
        consistent: scores.consistent(),
    })
}
