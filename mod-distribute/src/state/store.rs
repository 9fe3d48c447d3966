//! [`StateStore`]: a stateful service's ownership and checkpoints in Redis.
//!
//! Keys, under `<prefix>:state:<service>:`
//!
//! | key | what |
//! |---|---|
//! | `epoch` | the owner epoch counter (`INCR` at every claim; never reset) |
//! | `owner` | `"<epoch> <node>"`, the owner's lease (`PX` lease; renewed by the owner) |
//! | `handover` | the node a takeover chose (`PX`): only it may claim while set |
//! | `request` | a takeover request to the owner: quiesce, checkpoint, release |
//! | `ckpt` | hash of the last checkpoint: `epoch`, `version`, `gen`, `chunks`, `bytes`, `at_ms` |
//! | `chunk:<gen>:<i>` | the checkpoint's bytes, 1 MiB per chunk |
//! | `standbys` | zset node → last heartbeat (ms, server time); `load` hash node → load |
//!
//! Every change of ownership is one script, so it is atomic: two claims
//! cannot both win, and a checkpoint commits only while the writer's token
//! (`"<epoch> <node>"`) is still the owner — a stale owner (one whose lease
//! ran out while it was paused or cut off) is refused, whatever it believes.
//! The commit goes out with `WAIT` when `[redis] wait_replicas` is set, so a
//! failover of Redis cannot lose an acknowledged checkpoint.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};

use crate::redis::script::{evalsha, now_ms, run, run_acked};
use crate::redis::{redis_error, Redis};
use mod_api::{Error, ErrorKind, Result};

/// Bytes per chunk of a checkpoint.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// A standby is a candidate for a takeover while its heartbeat is younger than this.
pub const STANDBY_FRESH: Duration = Duration::from_millis(1500);

static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local h = redis.call('GET', KEYS[3])
if h and h ~= ARGV[1] then return {0, 'reserved for ' .. h} end
if (not h) and ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  return {0, 'no takeover chose this node'}
end
local e = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], e .. ' ' .. ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
return {e, ''}
"#,
    )
});

static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
return 1
"#,
    )
});

static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {{-1, ''}} end
local old = redis.call('HMGET', KEYS[2], 'gen', 'chunks')
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'version', ARGV[3], 'gen', ARGV[4],
  'chunks', ARGV[5], 'bytes', ARGV[6], 'at_ms', now)
return {{tonumber(old[2] or 0), old[1] or ''}}
"#,
        now_ms!()
    ))
});

static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{}
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
return 1
"#,
        now_ms!()
    ))
});

static STANDBYS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{}
local nodes = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
local out = {{}}
for _, n in ipairs(nodes) do
  table.insert(out, n)
  table.insert(out, redis.call('HGET', KEYS[2], n) or '0')
end
return out
"#,
        now_ms!()
    ))
});

/// What a poll of the store shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// The owner's token `"<epoch> <node>"`, while its lease runs.
    pub owner: Option<String>,
    /// The node a takeover reserved the service for.
    pub handover: Option<String>,
    /// A takeover request to the owner (the chosen target).
    pub request: Option<String>,
}

/// The last committed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Epoch of the owner that wrote it.
    pub epoch: u64,
    /// The state's format version.
    pub version: u32,
    /// The encoded state.
    pub state: Vec<u8>,
    /// When it was committed (Redis server time, ms since the epoch).
    pub at_ms: u64,
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node owns the service from now on, under this epoch.
    Won(u64),
    /// Not now: why (the owner's token, or whom it is reserved for).
    Refused(String),
}

/// One stateful service's keys in Redis.
#[derive(Clone)]
pub struct StateStore {
    redis: Redis,
    service: String,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("service", &self.service)
            .finish()
    }
}

/// The owner token of `node` under `epoch`.
pub fn token(epoch: u64, node: &str) -> String {
    format!("{epoch} {node}")
}

/// The node and epoch of an owner token.
pub fn parse_token(token: &str) -> Option<(u64, &str)> {
    let (epoch, node) = token.split_once(' ')?;
    Some((epoch.parse().ok()?, node))
}

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl StateStore {
    /// The keys of `service`.
    pub fn new(redis: Redis, service: &str) -> Self {
        StateStore {
            redis,
            service: service.to_owned(),
        }
    }

    fn key(&self, part: &str) -> String {
        self.redis.key(&["state", &self.service, part])
    }

    fn chunk(&self, gen: &str, i: usize) -> String {
        self.redis
            .key(&["state", &self.service, "chunk", gen, &i.to_string()])
    }

    /// Who owns the service, and what a takeover asked for.
    pub async fn ownership(&self) -> Result<Ownership> {
        let (owner, handover, request): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("MGET")
                .arg(self.key("owner"))
                .arg(self.key("handover"))
                .arg(self.key("request"))
                .query_async(&mut self.redis.conn())
                .await
                .map_err(redis_error)?;
        Ok(Ownership {
            owner,
            handover,
            request,
        })
    }

    /// Claims the service for `node` with a lease of `lease`: when nobody
    /// owns it and a takeover reserved it for `node`, or nobody reserved it
    /// and either it never had an owner or `orphaned` (the caller has waited
    /// out the old owner's lease).
    pub async fn claim(&self, node: &str, lease: Duration, orphaned: bool) -> Result<Claim> {
        let mut cmd = evalsha(&CLAIM, 4, 7, 128);
        cmd.arg(self.key("owner"))
            .arg(self.key("epoch"))
            .arg(self.key("handover"))
            .arg(self.key("standbys"))
            .arg(node)
            .arg(ms(lease))
            .arg(if orphaned { "1" } else { "0" });
        let (epoch, why): (u64, String) = run(&mut self.redis.conn(), &CLAIM, &cmd).await?;
        Ok(match epoch {
            0 => Claim::Refused(why),
            e => Claim::Won(e),
        })
    }

    /// Extends the lease of `token`; `false` when it is not the owner any more.
    pub async fn renew(&self, token: &str, lease: Duration) -> Result<bool> {
        let mut cmd = evalsha(&RENEW, 1, 3, 64);
        cmd.arg(self.key("owner")).arg(token).arg(ms(lease));
        let renewed: i64 = run(&mut self.redis.conn(), &RENEW, &cmd).await?;
        Ok(renewed == 1)
    }

    /// Gives the service up (`token` must own it), reserving it for `to`
    /// (for `hold`) when given; `false` when `token` did not own it.
    pub async fn release(&self, token: &str, to: Option<&str>, hold: Duration) -> Result<bool> {
        let mut cmd = evalsha(&RELEASE, 3, 6, 128);
        cmd.arg(self.key("owner"))
            .arg(self.key("handover"))
            .arg(self.key("request"))
            .arg(token)
            .arg(to.unwrap_or(""))
            .arg(ms(hold));
        let released: i64 = run(&mut self.redis.conn(), &RELEASE, &cmd).await?;
        Ok(released == 1)
    }

    /// Asks the owner to hand the service to `to`, and reserves it for `to`
    /// for `hold` (so that, if the owner is dead, `to` claims it once the
    /// owner's lease has run out).
    pub async fn request(&self, to: &str, hold: Duration) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.key("handover"))
            .arg(to)
            .arg("PX")
            .arg(ms(hold))
            .ignore()
            .cmd("SET")
            .arg(self.key("request"))
            .arg(to)
            .arg("PX")
            .arg(ms(hold))
            .ignore();
        pipe.query_async::<()>(&mut self.redis.conn())
            .await
            .map_err(redis_error)
    }

    /// Writes a checkpoint of `state` (format `version`) as the owner
    /// `token` of `epoch`, under a generation `gen` of its own. Refused with
    /// [`ErrorKind::Moved`] when `token` is no longer the owner (its chunks
    /// are removed again); the previous checkpoint's chunks are removed once
    /// this one is committed.
    pub async fn commit(
        &self,
        token: &str,
        epoch: u64,
        version: u32,
        gen: &str,
        state: &[u8],
    ) -> Result<()> {
        let chunks: Vec<&[u8]> = state.chunks(CHUNK_BYTES).collect();
        let keys: Vec<String> = (0..chunks.len()).map(|i| self.chunk(gen, i)).collect();
        if !chunks.is_empty() {
            let mut pipe = redis::pipe();
            for (key, bytes) in keys.iter().zip(&chunks) {
                pipe.cmd("SET").arg(key).arg(*bytes).ignore();
            }
            pipe.query_async::<()>(&mut self.redis.conn())
                .await
                .map_err(redis_error)?;
        }
        let mut cmd = evalsha(&COMMIT, 2, 8, 128);
        cmd.arg(self.key("owner"))
            .arg(self.key("ckpt"))
            .arg(token)
            .arg(epoch)
            .arg(version)
            .arg(gen)
            .arg(chunks.len())
            .arg(state.len());
        let (old_chunks, old_gen): (i64, String) = run_acked(&self.redis, &COMMIT, &cmd).await?;
        if old_chunks < 0 {
            self.remove_chunks(keys).await;
            return Err(Error::new(
                ErrorKind::Moved,
                format!(
                    "checkpoint of service {} refused: {token:?} is no longer its owner (fenced)",
                    self.service
                ),
            ));
        }
        if !old_gen.is_empty() && old_gen != gen {
            let old = (0..old_chunks as usize)
                .map(|i| self.chunk(&old_gen, i))
                .collect();
            self.remove_chunks(old).await;
        }
        Ok(())
    }

    async fn remove_chunks(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let removed: Result<i64> = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(redis_error);
        if let Err(e) = removed {
            tracing::debug!(service = %self.service, error = %e, "old checkpoint chunks not removed");
        }
    }

    /// The last committed checkpoint, if any. Chunks missing or of the wrong
    /// total length are a [`Codec`](ErrorKind::Codec) error.
    pub async fn load(&self) -> Result<Option<Stored>> {
        let meta: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key("ckpt"))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(redis_error)?;
        if meta.is_empty() {
            return Ok(None);
        }
        let field = |name: &str| -> Result<u64> {
            meta.get(name)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::codec(format!("checkpoint record without a valid {name}")))
        };
        let (epoch, version, chunks, bytes) = (
            field("epoch")?,
            field("version")?,
            field("chunks")?,
            field("bytes")?,
        );
        let at_ms = field("at_ms")?;
        let gen = meta.get("gen").cloned().unwrap_or_default();
        let mut state = Vec::with_capacity(bytes as usize);
        if chunks > 0 {
            let keys: Vec<String> = (0..chunks as usize).map(|i| self.chunk(&gen, i)).collect();
            let parts: Vec<Value> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut self.redis.conn())
                .await
                .map_err(redis_error)?;
            for part in parts {
                match part {
                    Value::BulkString(b) => state.extend_from_slice(&b),
                    _ => return Err(Error::codec("a checkpoint chunk is missing")),
                }
            }
        }
        if state.len() as u64 != bytes {
            return Err(Error::codec(format!(
                "checkpoint of {} bytes has {} (damaged)",
                bytes,
                state.len()
            )));
        }
        Ok(Some(Stored {
            epoch,
            version: version as u32,
            state,
            at_ms,
        }))
    }

    /// Marks `node` a standby of the service now, with `load` (lower is
    /// preferred by a takeover).
    pub async fn heartbeat(&self, node: &str, load: u64) -> Result<()> {
        let mut cmd = evalsha(&HEARTBEAT, 2, 4, 96);
        cmd.arg(self.key("standbys"))
            .arg(self.key("load"))
            .arg(node)
            .arg(load);
        run::<i64>(&mut self.redis.conn(), &HEARTBEAT, &cmd).await?;
        Ok(())
    }

    /// Stops counting `node` as a standby.
    pub async fn leave(&self, node: &str) -> Result<()> {
        redis::cmd("ZREM")
            .arg(self.key("standbys"))
            .arg(node)
            .query_async::<()>(&mut self.redis.conn())
            .await
            .map_err(redis_error)
    }

    /// The standbys with a fresh heartbeat, with their load.
    pub async fn standbys(&self) -> Result<Vec<(String, u64)>> {
        let mut cmd = evalsha(&STANDBYS, 2, 3, 96);
        cmd.arg(self.key("standbys"))
            .arg(self.key("load"))
            .arg(ms(STANDBY_FRESH));
        let flat: Vec<String> = run(&mut self.redis.conn(), &STANDBYS, &cmd).await?;
        Ok(flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [node, load] => Some((node.clone(), load.parse().unwrap_or(0))),
                _ => None,
            })
            .collect())
    }
}
