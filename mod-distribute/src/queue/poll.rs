//! The batched polls of a queue.
//!
//! A poll must hand out expired deliveries (and dead-letter the worn-out ones)
//! before new entries, which the poll script does. But that script costs Redis
//! far more than a plain `XREADGROUP`: every entry read is converted to Lua and
//! back. So the script also tells which groups have no delivery that can expire
//! within the next half visibility timeout (`XPENDING … IDLE`), and until then
//! polls of those groups read with a plain `XREADGROUP COUNT n` (a group that
//! vanished meanwhile sends them back to the script, which makes it again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{join, join_all};
use mod_api::{Consumer, Result};
use redis::Value as Reply;
use tokio::time::Instant;

use super::batch::Batch;
use super::ops::{array, integer, text, unexpected, Core, Raw};
use super::scripts::POLL_SCRIPT;
use crate::redis::redis_error;
use crate::redis::script::{evalsha, run};

/// Longest time a group is taken to stay calm (keeps `Instant`s in range).
const MAX_HORIZON_MS: u64 = 3_600_000;

/// Polls: consumer → ids dead-lettered on the way, and the entry delivered.
pub(super) struct Polls {
    core: Arc<Core>,
    /// How long a group found without deliveries near expiry stays so.
    horizon: Duration,
    /// `horizon` below the visibility timeout (ms): the script's `IDLE` of
    /// deliveries that could expire within the horizon.
    soon_ms: u64,
    /// Per group: until when no delivery of it can expire.
    calm: Mutex<HashMap<String, Instant>>,
}

impl Polls {
    /// The polls of the queue `core`.
    pub(super) fn new(core: Arc<Core>) -> Self {
        let horizon_ms = (core.visibility_ms / 2).min(MAX_HORIZON_MS);
        Polls {
            soon_ms: core.visibility_ms - horizon_ms,
            horizon: Duration::from_millis(horizon_ms),
            calm: Mutex::new(HashMap::new()),
            core,
        }
    }

    fn calm(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.calm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads up to `n` new entries of `group` under `consumer` with a plain
    /// `XREADGROUP`; `None` when the group does not exist (any more).
    async fn read(&self, group: &str, consumer: &str, n: usize) -> Result<Option<Vec<Raw>>> {
        let core = &*self.core;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(n)
            .arg("STREAMS")
            .arg(&core.key)
            .arg(">");
        match cmd.query_async::<Reply>(&mut core.redis.conn()).await {
            Ok(reply) => parse_entries(reply).map(Some),
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::debug!(queue = %core.name, group, "consumer group gone: polled by the script");
                self.calm().remove(group);
                Ok(None)
            }
            Err(e) => Err(redis_error(e)),
        }
    }

    /// Answers the polls `which` (indices into `reqs`) with the script, into `out`.
    async fn script_for(
        &self,
        reqs: &[Consumer],
        which: &[usize],
        out: &mut [Option<(Vec<String>, Option<Raw>)>],
    ) -> Result<()> {
        if which.is_empty() {
            return Ok(());
        }
        let polls: Vec<&Consumer> = which.iter().map(|&i| &reqs[i]).collect();
        for (&i, answer) in which.iter().zip(self.script(&polls).await?) {
            out[i] = Some(answer);
        }
        Ok(())
    }

    /// Runs the poll script for `reqs`, noting the groups it found calm.
    async fn script(&self, reqs: &[&Consumer]) -> Result<Vec<(Vec<String>, Option<Raw>)>> {
        let core = &*self.core;
        let bytes = core.key.len()
            + core.dead_letter_key.len()
            + 64
            + reqs
                .iter()
                .map(|c| c.group.len() + c.name.len())
                .sum::<usize>();
        let mut cmd = evalsha(&POLL_SCRIPT, 2, 5 + 2 * reqs.len(), bytes);
        cmd.arg(&core.key)
            .arg(&core.dead_letter_key)
            .arg(core.visibility_ms)
            .arg(core.max_deliveries)
            .arg(self.soon_ms);
        for consumer in reqs {
            cmd.arg(&consumer.group).arg(&consumer.name);
        }
        let sent = Instant::now();
        let reply: Reply = run(&mut core.redis.conn(), &POLL_SCRIPT, &cmd).await?;
        let mut items = array(reply, "poll")?.into_iter();
        let answers = (0..reqs.len())
            .map(|_| parse_polled(&mut items))
            .collect::<Result<Vec<_>>>()?;
        // Then the calm groups: count, names.
        if items.next().is_some() && !self.horizon.is_zero() {
            let until = sent + self.horizon;
            let mut calm = self.calm();
            for group in items.filter_map(text) {
                calm.insert(group, until);
            }
        }
        Ok(answers)
    }
}

impl Batch for Polls {
    type Req = Consumer;
    type Resp = (Vec<String>, Option<Raw>);

    async fn run(&self, reqs: &[Consumer]) -> Result<Vec<Self::Resp>> {
        // Polls of calm groups by group (first consumer, indices); the others.
        let mut calm: Vec<(&Consumer, Vec<usize>)> = Vec::new();
        let mut others = Vec::new();
        {
            let now = Instant::now();
            let known = self.calm();
            for (i, consumer) in reqs.iter().enumerate() {
                if known.get(&consumer.group).is_none_or(|&until| now >= until) {
                    others.push(i);
                } else if let Some((_, polls)) =
                    calm.iter_mut().find(|(c, _)| c.group == consumer.group)
                {
                    polls.push(i);
                } else {
                    calm.push((consumer, vec![i]));
                }
            }
        }
        let mut out: Vec<Option<Self::Resp>> = (0..reqs.len()).map(|_| None).collect();
        // The reads and the script go out together (different groups).
        let reads = join_all(
            calm.iter()
                .map(|(c, polls)| self.read(&c.group, &c.name, polls.len())),
        );
        let (reads, answered) = join(reads, self.script_for(reqs, &others, &mut out)).await;
        answered?;
        let mut lost = Vec::new();
        for ((_, polls), read) in calm.into_iter().zip(reads) {
            match read? {
                Some(entries) => {
                    let mut entries = entries.into_iter();
                    for i in polls {
                        out[i] = Some((Vec::new(), entries.next()));
                    }
                }
                None => lost.extend(polls),
            }
        }
        // Groups gone meanwhile: the script makes them again.
        lost.sort_unstable();
        self.script_for(reqs, &lost, &mut out).await?;
        Ok(out.into_iter().flatten().collect())
    }
}

/// One poll's answer, read off the flat reply of the poll script: the number
/// of ids dead-lettered, those ids, the delivery count, then (count not 0) the
/// entry's id and bytes.
fn parse_polled(items: &mut impl Iterator<Item = Reply>) -> Result<(Vec<String>, Option<Raw>)> {
    let n_dead = items.next().and_then(integer).unwrap_or(-1);
    let n_dead = usize::try_from(n_dead).map_err(|_| unexpected("poll", &n_dead))?;
    let dead = items.take(n_dead).filter_map(text).collect();
    let count = match items.next().and_then(integer) {
        Some(0) => return Ok((dead, None)),
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
        None => return Err(unexpected("poll", &"missing delivery count")),
    };
    let Some(id) = items.next().and_then(text) else {
        return Err(unexpected("poll", &"entry without id"));
    };
    let bytes = match items.next() {
        Some(Reply::BulkString(b)) => Some(b),
        _ => None,
    };
    Ok((dead, Some(Raw { id, bytes, count })))
}

/// The entries of an `XREADGROUP` reply of one stream (RESP2 array or RESP3
/// map), each delivered for the first time.
pub(super) fn parse_entries(reply: Reply) -> Result<Vec<Raw>> {
    let stream = match reply {
        Reply::Nil => return Ok(Vec::new()),
        Reply::Array(streams) => streams.into_iter().find_map(|s| match s {
            Reply::Array(mut kv) if kv.len() == 2 => kv.pop(),
            _ => None,
        }),
        Reply::Map(streams) => streams.into_iter().map(|(_, v)| v).next(),
        other => return Err(unexpected("XREADGROUP", &other)),
    };
    let Some(Reply::Array(entries)) = stream else {
        return Ok(Vec::new());
    };
    entries.into_iter().map(parse_entry).collect()
}

/// `[id, [field, value, …]]`: the id and field `m`.
fn parse_entry(entry: Reply) -> Result<Raw> {
    let Reply::Array(entry) = entry else {
        return Err(unexpected("XREADGROUP", &entry));
    };
    let mut entry = entry.into_iter();
    let Some(id) = entry.next().and_then(text) else {
        return Err(unexpected("XREADGROUP", &"entry without id"));
    };
    let mut bytes = None;
    if let Some(Reply::Array(fields)) = entry.next() {
        let mut fields = fields.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            if let (Reply::BulkString(name), Reply::BulkString(b)) = (name, value) {
                if name == b"m" {
                    bytes = Some(b);
                    break;
                }
            }
        }
    }
    Ok(Raw {
        id,
        bytes,
        count: 1,
    })
}
