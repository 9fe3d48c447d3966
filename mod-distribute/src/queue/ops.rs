//! The batched operations of a queue (offer, poll, ack) and the parsing of
//! what their scripts answer.

use mod_api::{Consumer, Error, MessageId, Offered, Result};
use redis::{Cmd, ErrorKind, Script, ServerErrorKind, Value as Reply};

use super::batch::Batch;
use super::scripts::{ACK_SCRIPT, OFFER_SCRIPT, POLL_SCRIPT};
use crate::redis_conn::{redis_error, Redis};

/// What every operation of one queue needs.
pub(super) struct Core {
    pub name: String,
    pub redis: Redis,
    pub key: String,
    pub dead_letter_key: String,
    pub capacity: usize,
    /// The backlog policy as the offer script spells it.
    pub policy: &'static str,
    /// The visibility timeout in whole milliseconds (the scripts' `IDLE`).
    pub visibility_ms: u64,
    pub max_deliveries: u32,
}

/// A stream entry handed to a consumer, not yet decoded.
pub(super) struct Raw {
    pub id: String,
    pub bytes: Option<Vec<u8>>,
    pub count: u32,
}

/// Offers: encoded message → `None` when the queue is full (reject or block).
pub(super) struct Offers(pub std::sync::Arc<Core>);

/// Polls: consumer → ids dead-lettered on the way, and the entry delivered.
pub(super) struct Polls(pub std::sync::Arc<Core>);

/// Acks: (group, canonical id) → whether it was pending in the group.
pub(super) struct Acks(pub std::sync::Arc<Core>);

impl Batch for Offers {
    type Req = Vec<u8>;
    /// Per offer, so one refused append fails only its own caller.
    type Resp = Result<Option<Offered>>;

    fn size(req: &Vec<u8>) -> usize {
        req.len()
    }

    async fn run(&self, reqs: &[Vec<u8>]) -> Result<Vec<Self::Resp>> {
        let core = &*self.0;
        let mut cmd = evalsha(&OFFER_SCRIPT, &[&core.key], 2 + reqs.len());
        cmd.arg(core.capacity).arg(core.policy);
        for bytes in reqs {
            cmd.arg(bytes.as_slice());
        }
        let reply = eval(&core.redis, &OFFER_SCRIPT, &cmd).await?;
        let mut items = array(reply, "offer")?.into_iter();
        let mut out = Vec::with_capacity(reqs.len());
        while let (Some(tag), Some(a), Some(b)) = (items.next(), items.next(), items.next()) {
            out.push(parse_offered(tag, a, b));
        }
        Ok(out)
    }
}

/// One offer's `tag, a, b` (see the offer script).
fn parse_offered(tag: Reply, a: Reply, b: Reply) -> Result<Option<Offered>> {
    let tag = match &tag {
        Reply::BulkString(t) => t.as_slice(),
        Reply::SimpleString(t) => t.as_bytes(),
        _ => b"",
    };
    match (tag, text(a), text(b)) {
        (b"enqueued", Some(id), _) => Ok(Some(Offered::Enqueued(MessageId(id)))),
        (b"displaced", Some(id), Some(dropped)) => {
            tracing::debug!(%dropped, "oldest message dropped");
            Ok(Some(Offered::DisplacedOldest {
                id: MessageId(id),
                dropped: MessageId(dropped),
            }))
        }
        (b"discarded", _, _) => {
            tracing::debug!("queue full, message discarded");
            Ok(Some(Offered::Discarded))
        }
        (b"full", _, _) => Ok(None),
        (b"error", Some(message), _) => {
            tracing::warn!(%message, "redis refused an offered message");
            Err(Error::unavailable(format!(
                "redis refused the message: {message}"
            )))
        }
        other => Err(unexpected("offer", &other)),
    }
}

impl Batch for Polls {
    type Req = Consumer;
    type Resp = (Vec<String>, Option<Raw>);

    async fn run(&self, reqs: &[Consumer]) -> Result<Vec<Self::Resp>> {
        let core = &*self.0;
        let keys = [core.key.as_str(), core.dead_letter_key.as_str()];
        let mut cmd = evalsha(&POLL_SCRIPT, &keys, 2 + 2 * reqs.len());
        cmd.arg(core.visibility_ms).arg(core.max_deliveries);
        for consumer in reqs {
            cmd.arg(&consumer.group).arg(&consumer.name);
        }
        let reply = eval(&core.redis, &POLL_SCRIPT, &cmd).await?;
        let mut items = array(reply, "poll")?.into_iter();
        (0..reqs.len()).map(|_| parse_polled(&mut items)).collect()
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

impl Batch for Acks {
    type Req = (String, String);
    type Resp = bool;

    async fn run(&self, reqs: &[(String, String)]) -> Result<Vec<bool>> {
        let core = &*self.0;
        let mut cmd = evalsha(&ACK_SCRIPT, &[&core.key], 2 * reqs.len());
        for (group, id) in reqs {
            cmd.arg(group).arg(id);
        }
        let reply = eval(&core.redis, &ACK_SCRIPT, &cmd).await?;
        Ok(array(reply, "ack")?
            .into_iter()
            .map(|n| integer(n) == Some(1))
            .collect())
    }
}

/// `EVALSHA <script> <keys…>`, room made for `args` more arguments. Built by
/// hand rather than with `Script::prepare_invoke`, which copies every argument
/// once more.
pub(super) fn evalsha(script: &Script, keys: &[&str], args: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(3 + keys.len() + args, 64 * (keys.len() + args));
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
}

/// Runs `cmd` (from [`evalsha`]) on the shared connection, loading `script`
/// first when Redis does not know it (first use, restart, failover).
pub(super) async fn eval(redis: &Redis, script: &Script, cmd: &Cmd) -> Result<Reply> {
    let mut conn = redis.conn();
    match cmd.query_async(&mut conn).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load_async(&mut conn).await.map_err(redis_error)?;
            cmd.query_async(&mut conn).await.map_err(redis_error)
        }
        reply => reply.map_err(redis_error),
    }
}

/// The items of an array reply.
fn array(reply: Reply, what: &str) -> Result<Vec<Reply>> {
    match reply {
        Reply::Array(items) => Ok(items),
        other => Err(unexpected(what, &other)),
    }
}

/// `id` as Redis spells a stream id, or `None` when it cannot be one of ours.
pub(super) fn canonical_id(id: &MessageId) -> Option<String> {
    let (ms, seq) = id.0.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    Some(format!(
        "{}-{}",
        ms.parse::<u64>().ok()?,
        seq.parse::<u64>().ok()?
    ))
}

/// A string reply as text, `None` for anything else (nil, `false`).
fn text(v: Reply) -> Option<String> {
    match v {
        Reply::BulkString(b) => String::from_utf8(b).ok(),
        Reply::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn integer(v: Reply) -> Option<i64> {
    match v {
        Reply::Int(n) => Some(n),
        other => text(other)?.parse().ok(),
    }
}

/// An error for a reply of a shape the code does not expect.
fn unexpected(what: &str, reply: &dyn std::fmt::Debug) -> Error {
    tracing::error!(?reply, "unexpected reply from redis to {what}");
    Error::internal(format!("unexpected reply from redis to {what}"))
}

/// The first entry of an `XREADGROUP` reply (RESP2 array or RESP3 map).
pub(super) fn parse_read(reply: Reply) -> Result<Option<Raw>> {
    let streams = match reply {
        Reply::Nil => return Ok(None),
        Reply::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Reply::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect::<Vec<_>>(),
        Reply::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        other => return Err(unexpected("XREADGROUP", &other)),
    };
    let Some(Reply::Array(entries)) = streams.into_iter().next() else {
        return Ok(None);
    };
    let Some(Reply::Array(entry)) = entries.into_iter().next() else {
        return Ok(None);
    };
    let mut entry = entry.into_iter();
    let Some(id) = entry.next().and_then(text) else {
        return Err(unexpected("XREADGROUP", &"entry without id"));
    };
    let bytes = match entry.next() {
        Some(Reply::Array(fields)) => {
            let mut fields = fields.into_iter();
            let mut found = None;
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                if let (Some("m"), Reply::BulkString(b)) = (text(name).as_deref(), value) {
                    found = Some(b);
                    break;
                }
            }
            found
        }
        _ => None,
    };
    Ok(Some(Raw {
        id,
        bytes,
        count: 1,
    }))
}
