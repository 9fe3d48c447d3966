//! The batched operations of a queue (offer, poll, ack) and the parsing of
//! what their scripts answer.

use mod_api::{Consumer, Error, MessageId, Offered, Result};
use redis::Value as Reply;

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
        let mut call = OFFER_SCRIPT.prepare_invoke();
        call.key(&core.key).arg(core.capacity).arg(core.policy);
        for bytes in reqs {
            call.arg(bytes.as_slice());
        }
        let reply: Vec<Vec<String>> = call
            .invoke_async(&mut core.redis.conn())
            .await
            .map_err(redis_error)?;
        Ok(reply.into_iter().map(parse_offered).collect())
    }
}

fn parse_offered(reply: Vec<String>) -> Result<Option<Offered>> {
    match reply.as_slice() {
        [tag, id] if tag == "enqueued" => Ok(Some(Offered::Enqueued(MessageId(id.clone())))),
        [tag, id, dropped] if tag == "displaced" => {
            tracing::debug!(%dropped, "oldest message dropped");
            Ok(Some(Offered::DisplacedOldest {
                id: MessageId(id.clone()),
                dropped: MessageId(dropped.clone()),
            }))
        }
        [tag] if tag == "discarded" => {
            tracing::debug!("queue full, message discarded");
            Ok(Some(Offered::Discarded))
        }
        [tag] if tag == "full" => Ok(None),
        [tag, message] if tag == "error" => {
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
        let mut call = POLL_SCRIPT.prepare_invoke();
        call.key(&core.key)
            .key(&core.dead_letter_key)
            .arg(core.visibility_ms)
            .arg(core.max_deliveries);
        for consumer in reqs {
            call.arg(&consumer.group).arg(&consumer.name);
        }
        let reply: Vec<Reply> = call
            .invoke_async(&mut core.redis.conn())
            .await
            .map_err(redis_error)?;
        reply.into_iter().map(parse_polled).collect()
    }
}

/// `{dead_ids}` | `{dead_ids, id, bytes-or-nil, count}`.
fn parse_polled(reply: Reply) -> Result<(Vec<String>, Option<Raw>)> {
    let Reply::Array(mut parts) = reply else {
        return Err(unexpected("poll", &reply));
    };
    let dead = match parts.first() {
        Some(Reply::Array(dead)) => dead.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    if parts.len() < 4 {
        return Ok((dead, None));
    }
    let count = parts.pop().as_ref().and_then(integer);
    let bytes = match parts.pop() {
        Some(Reply::BulkString(b)) => Some(b),
        _ => None,
    };
    match (parts.pop().as_ref().and_then(text), count) {
        (Some(id), Some(count)) => Ok((
            dead,
            Some(Raw {
                id,
                bytes,
                count: u32::try_from(count).unwrap_or(u32::MAX),
            }),
        )),
        _ => Err(unexpected("poll", &parts)),
    }
}

impl Batch for Acks {
    type Req = (String, String);
    type Resp = bool;

    async fn run(&self, reqs: &[(String, String)]) -> Result<Vec<bool>> {
        let core = &*self.0;
        let mut call = ACK_SCRIPT.prepare_invoke();
        call.key(&core.key);
        for (group, id) in reqs {
            call.arg(group).arg(id);
        }
        let reply: Vec<i64> = call
            .invoke_async(&mut core.redis.conn())
            .await
            .map_err(redis_error)?;
        Ok(reply.into_iter().map(|n| n == 1).collect())
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

fn text(v: &Reply) -> Option<String> {
    match v {
        Reply::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Reply::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn integer(v: &Reply) -> Option<i64> {
    match v {
        Reply::Int(n) => Some(*n),
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
    let Some(id) = entry.next().as_ref().and_then(text) else {
        return Err(unexpected("XREADGROUP", &"entry without id"));
    };
    let bytes = match entry.next() {
        Some(Reply::Array(fields)) => {
            let mut fields = fields.into_iter();
            let mut found = None;
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                if let (Some("m"), Reply::BulkString(b)) = (text(&name).as_deref(), value) {
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
