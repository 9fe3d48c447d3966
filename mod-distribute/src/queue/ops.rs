//! The batched offers and acks of a queue, the parsing of what Redis answers,
//! and what every operation shares.

use mod_api::{Error, MessageId, Offered, Result};
use redis::Value as Reply;

use super::batch::Batch;
use super::scripts::{ACK_SCRIPT, OFFER_SCRIPT};
use crate::redis::script::{evalsha, run_acked};
use crate::redis::Redis;

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
        // 20: the digits of `capacity`.
        let bytes =
            core.key.len() + 20 + core.policy.len() + reqs.iter().map(Vec::len).sum::<usize>();
        let mut cmd = evalsha(&OFFER_SCRIPT, 1, 3 + reqs.len(), bytes);
        cmd.arg(&core.key).arg(core.capacity).arg(core.policy);
        for bytes in reqs {
            cmd.arg(bytes.as_slice());
        }
        let reply: Reply = run_acked(&core.redis, &OFFER_SCRIPT, &cmd).await?;
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

impl Batch for Acks {
    type Req = (String, String);
    type Resp = bool;

    async fn run(&self, reqs: &[(String, String)]) -> Result<Vec<bool>> {
        let core = &*self.0;
        let bytes = core.key.len() + reqs.iter().map(|(g, id)| g.len() + id.len()).sum::<usize>();
        let mut cmd = evalsha(&ACK_SCRIPT, 1, 1 + 2 * reqs.len(), bytes);
        cmd.arg(&core.key);
        for (group, id) in reqs {
            cmd.arg(group).arg(id);
        }
        let reply: Reply = run_acked(&core.redis, &ACK_SCRIPT, &cmd).await?;
        Ok(array(reply, "ack")?
            .into_iter()
            .map(|n| integer(n) == Some(1))
            .collect())
    }
}

/// The items of an array reply.
pub(super) fn array(reply: Reply, what: &str) -> Result<Vec<Reply>> {
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
pub(super) fn text(v: Reply) -> Option<String> {
    match v {
        Reply::BulkString(b) => String::from_utf8(b).ok(),
        Reply::SimpleString(s) => Some(s),
        _ => None,
    }
}

pub(super) fn integer(v: Reply) -> Option<i64> {
    match v {
        Reply::Int(n) => Some(n),
        other => text(other)?.parse().ok(),
    }
}

/// An error for a reply of a shape the code does not expect.
pub(super) fn unexpected(what: &str, reply: &dyn std::fmt::Debug) -> Error {
    tracing::error!(?reply, "unexpected reply from redis to {what}");
    Error::internal(format!("unexpected reply from redis to {what}"))
}
