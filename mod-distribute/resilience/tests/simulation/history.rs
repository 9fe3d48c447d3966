//! The clients' history (each write: invoke, execution on a node,
//! completion, acknowledged or not) and a trace of the last events, shown
//! when an invariant fails.

use std::collections::{HashMap, HashSet, VecDeque};

use super::redis_model::Node;
use super::world::{Ev, World};
use super::Time;

/// One write's life.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub client: usize,
    pub node: usize,
    pub epoch: u64,
    pub invoked: Time,
    /// `(node, stint, time)` of the `SET`'s execution.
    pub executed: Option<(usize, u64, Time)>,
    pub completed: Option<Time>,
    pub acked: bool,
}

impl Record {
    pub fn describe(&self) -> String {
        format!(
            "client {} → node {} (epoch {}), invoked {} ms, executed {:?}, completed {:?}, acked {}",
            self.client, self.node, self.epoch, self.invoked, self.executed, self.completed, self.acked
        )
    }
}

#[derive(Default)]
pub struct History {
    pub next_key: u64,
    pub records: HashMap<u64, Record>,
    pub acked: HashSet<u64>,
    /// Per `(node, stint)`: first and last execution time of acked writes.
    pub stints: HashMap<(usize, u64), (Time, Time)>,
    pub writes: u64,
    pub lost: u64,
    pub destroyed: u64,
}

impl History {
    pub fn invoke(&mut self, client: usize, node: usize, epoch: u64, now: Time) -> u64 {
        self.next_key += 1;
        self.writes += 1;
        let record = Record {
            client,
            node,
            epoch,
            invoked: now,
            ..Record::default()
        };
        self.records.insert(self.next_key, record);
        self.next_key
    }

    pub fn executed(&mut self, key: u64, node: usize, stint: u64, now: Time) {
        if let Some(r) = self.records.get_mut(&key) {
            r.executed = Some((node, stint, now));
        }
    }

    /// Completes `key`; `acked`: `OK` and `WAIT 1` ≥ 1 within the client's
    /// timeout. Returns a violation if two nodes acknowledged writes in
    /// overlapping periods.
    pub fn complete(&mut self, key: u64, acked: bool, now: Time) -> Option<String> {
        let r = self.records.get_mut(&key)?;
        r.completed = Some(now);
        r.acked = acked;
        if !acked {
            return None;
        }
        let what = r.describe();
        self.acked.insert(key);
        let (node, stint, at) = r.executed?;
        let span = self.stints.entry((node, stint)).or_insert((at, at));
        span.0 = span.0.min(at);
        span.1 = span.1.max(at);
        let span = *span;
        self.stints
            .iter()
            .find(|((n, _), s)| *n != node && s.0 <= span.1 && span.0 <= s.1)
            .map(|((n, st), s)| {
                format!(
                    "two primaries acknowledged WAIT-ed writes in overlapping time: node {node} (stint {stint}) {}..{} ms and node {n} (stint {st}) {}..{} ms (write {key}: {what})",
                    span.0, span.1, s.0, s.1
                )
            })
    }

    /// The acknowledged keys of `old` that no node in `nodes` holds.
    pub fn vanished(&self, old: &[(u64, Time)], nodes: &[Node]) -> Vec<u64> {
        let candidates: Vec<u64> = old
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| self.acked.contains(k))
            .collect();
        if candidates.is_empty() {
            return candidates;
        }
        let held: HashSet<u64> = nodes
            .iter()
            .flat_map(|n| n.data.iter().map(|(k, _)| *k))
            .collect();
        candidates
            .into_iter()
            .filter(|k| !held.contains(k))
            .collect()
    }
}

/// The last events (kept cheaply, rendered only on failure).
#[derive(Default)]
pub struct Trace {
    events: VecDeque<(Time, Ev)>,
    notes: VecDeque<(Time, String, u32)>,
}

const KEEP: usize = 80;

impl Trace {
    pub fn event(&mut self, at: Time, ev: &Ev) {
        if matches!(ev, Ev::Pump(_) | Ev::NodeCron(_) | Ev::ClientPoll(_)) {
            return;
        }
        if self.events.len() == KEEP {
            self.events.pop_front();
        }
        self.events.push_back((at, ev.clone()));
    }

    /// A controller action or fault (kept longer than events).
    /// A controller action or fault (a repeated pair of notes is counted).
    pub fn note(&mut self, at: Time, what: String) {
        let n = self.notes.len();
        if n >= 2 && self.notes[n - 2].1 == what {
            self.notes[n - 2].2 += 1;
            self.notes.swap(n - 2, n - 1);
            return;
        }
        if n == KEEP {
            self.notes.pop_front();
        }
        self.notes.push_back((at, what, 1));
    }

    pub fn last_notes(&self, n: usize) -> Vec<String> {
        let skip = self.notes.len().saturating_sub(n);
        self.notes
            .iter()
            .skip(skip)
            .map(|(t, w, c)| format!("{t} ms {w} (x{c})"))
            .collect()
    }

    pub fn render(&self, world: &World) -> String {
        let mut out = String::from("  controller actions and faults:\n");
        for (t, n, count) in &self.notes {
            let times = if *count > 1 {
                format!(" (x{count}, first at {t} ms)")
            } else {
                String::new()
            };
            out += &format!("  {t:>6} ms  {n}{times}\n");
        }
        out += "  last events:\n";
        for (t, e) in self
            .events
            .iter()
            .skip(self.events.len().saturating_sub(30))
        {
            out += &format!("  {t:>6} ms  {e:?}\n");
        }
        out += "  nodes now:\n";
        for (i, n) in world.nodes.iter().enumerate() {
            out += &format!(
                "  node {i} {}: alive={} stopped={} primary={} master={:?} link={} replid={} replid2={} off={} min={} good={} slaves={:?}\n",
                world.addrs[i], n.alive, n.stopped, n.primary, n.master, n.link_up, n.replid,
                n.replid2, n.offset(), n.min_replicas, n.good,
                n.slaves.iter().map(|s| (s.node, s.ack_off)).collect::<Vec<_>>()
            );
        }
        out
    }
}
