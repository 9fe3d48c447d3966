//! The Redis session store: sessions shared by every node, with sliding idle
//! and absolute expiry enforced by Redis itself.
//!
//! # Keys
//!
//! `<n>` is the store name with `%` and `:` escaped (`%25`, `%3A`).
//!
//! | key | type | what |
//! |-----|------|------|
//! | `<prefix>:sess:<n>:s:<id>` | string | one session (layout in `session/record.rs`): created ms, last seen ms, version (zero-padded ASCII, 15/15/20 digits), principal length (5 digits), principal, data (codec bytes). Its expiry (`PXAT`) is min(last seen + idle, created + absolute), so Redis deletes a session the moment it ends |
//! | `<prefix>:sess:<n>:p:<principal>` | set | ids of the principal's sessions; may hold ids of ended sessions (pruned a few at a time by `create`); expires with the last absolute end of its sessions |
//!
//! # Time
//!
//! Every timestamp comes from Redis's clock (`TIME` inside the scripts), the
//! clock Redis also uses to expire keys; so nodes with skewed clocks still
//! agree on when a session ends, and `created_ms`/`last_seen_ms` are Redis
//! time (an application comparing them with its own clock sees the skew).
//!
//! # Atomicity
//!
//! Since a session lives exactly as long as its key, "live" is "the key
//! exists". `get` is one `GET` (no script). `validate` rewrites the idle
//! timer only when it is at least min(1 s, idle / 1000) old, so a burst of
//! requests of one user costs one write; a session may so end up to that
//! much earlier than `idle_timeout` after its last validate. So `validate`
//! first reads: one `GET` (with a `TIME` in the same pipeline at most once a
//! second per store: an upper bound of the Redis clock is kept in between,
//! see `session/clock.rs`); when the session is live and its timer fresh,
//! that is all (a read, as atomic as `get`). Otherwise (about once a second per busy session, or always when
//! the idle timeout is under 1 s) it runs the validate script, which reads
//! again and slides the expiry atomically. `create`, `update`, `rotate`,
//! `destroy` and `destroy_principal` are each one Lua script, so each is
//! atomic and one round trip: `update` compares the version, writes, bumps
//! it; `rotate` renames the key, bumps the version and swaps the id in the
//! principal index; `destroy_principal` deletes every listed session and
//! counts those that were live.
//!
//! # Records that do not decode
//!
//! A stored session whose header does not parse or whose data does not decode
//! as `D` makes `get`, `validate`, `update` and `rotate` fail with
//! `ErrorKind::Codec` (not retryable, logged at WARN), never a panic, and never
//! a silent "not found": a bad record is news for the operator, not a logout.
//! An `update` with a good header replaces the bad data; `destroy` and
//! `destroy_principal` remove bad records like any other; and the key still
//! expires by itself (a failed `validate` does not slide it).
//!
//! `rotate` and `destroy` find the principal index from the stored principal,
//! inside the script (a key not passed in `KEYS`): fine on one Redis, to be
//! revisited for Redis Cluster.

mod clock;
pub(crate) mod record;
mod scripts;

use std::marker::PhantomData;
use std::time::Duration;

use mod_api::{async_trait, Error, ErrorKind, Result, Session, SessionConfig, SessionId};
use mod_api::{SessionStore, Value};

use crate::redis::codec::{decode_value, encode_value};
use crate::redis::keys::{segment, Joined};
use crate::redis::script::{evalsha, run, run_acked};
use crate::redis::{redis_error, Redis};
use clock::RedisClock;
use scripts::{CREATE, DESTROY, DESTROY_PRINCIPAL, ROTATE, UPDATE, VALIDATE};

/// Longest timeout sent to Redis (100 years).
const MAX_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// `validate` skips rewriting the idle timer when it was refreshed less than
/// min(1 s, idle / 1000) ago (a repeat request of one page load): a session may
/// so end up to that much before `idle_timeout` after its last validate.
const MAX_REFRESH_LAG_MS: u64 = 1000;

fn millis(d: Duration) -> u64 {
    d.as_millis().min(MAX_MS as u128) as u64
}

/// A session from a parsed record.
fn from_record<D: Value>(id: SessionId, r: &record::Record<'_>) -> Result<Session<D>> {
    Ok(Session {
        id,
        principal: r.principal.to_owned(),
        data: decode_value(r.data)?,
        version: r.version,
        created_ms: r.created_ms,
        last_seen_ms: r.last_seen_ms,
    })
}

/// A Redis [`SessionStore`] (see the [module docs](self)).
pub struct RedisSessions<D> {
    redis: Redis,
    name: String,
    /// The timeouts in ms as script arguments.
    idle_arg: String,
    abs_arg: String,
    /// Least time between two idle-timer refreshes by `validate`, ms.
    refresh_arg: String,
    /// The same three as numbers, for `validate`'s read-only path.
    idle_ms: u64,
    abs_ms: u64,
    refresh_ms: u64,
    /// Bounds the Redis clock for `validate`'s read-only path.
    clock: RedisClock,
    /// `<prefix>:sess:<n>:s:` — a session's key is this plus its id.
    session_base: String,
    /// `<prefix>:sess:<n>:p:` — a principal's index is this plus the principal.
    principal_base: String,
    _data: PhantomData<fn() -> D>,
}

impl<D: Value> RedisSessions<D> {
    /// The store `name` with `config`'s timeouts.
    pub fn new(redis: Redis, name: &str, config: SessionConfig) -> Self {
        let n = segment(name);
        let (idle_ms, abs_ms) = (
            millis(config.idle_timeout),
            millis(config.absolute_lifetime),
        );
        let refresh_ms = (idle_ms / 1000).min(MAX_REFRESH_LAG_MS);
        RedisSessions {
            session_base: redis.key(&["sess", &n, "s", ""]),
            principal_base: redis.key(&["sess", &n, "p", ""]),
            redis,
            name: name.to_owned(),
            idle_arg: idle_ms.to_string(),
            abs_arg: abs_ms.to_string(),
            refresh_arg: refresh_ms.to_string(),
            idle_ms,
            abs_ms,
            refresh_ms,
            clock: RedisClock::new(),
            _data: PhantomData,
        }
    }

    /// A session from a stored record.
    fn session(&self, id: SessionId, bytes: &[u8]) -> Result<Session<D>> {
        from_record(id, &record::parse(&self.name, bytes)?)
    }

    fn not_found(&self) -> Error {
        tracing::debug!(store = %self.name, "session not found or ended");
        Error::not_found("session not found or expired")
    }

    /// `validate` by the script: reads, checks and slides the idle timer atomically.
    async fn validate_script(&self, id: &SessionId) -> Result<Option<Session<D>>> {
        let (idle, abs, every) = (&self.idle_arg, &self.abs_arg, &self.refresh_arg);
        let args: [&[u8]; 3] = [idle.as_bytes(), abs.as_bytes(), every.as_bytes()];
        let got: Option<(Vec<u8>, u64)> = self.session_script(false, &VALIDATE, id, &args).await?;
        let Some((bytes, last_seen_ms)) = got else {
            return Ok(None);
        };
        let mut session = self.session(id.clone(), &bytes)?;
        session.last_seen_ms = last_seen_ms;
        Ok(Some(session))
    }

    /// Runs a script with the session key of `id` as its first key; an
    /// `acked` write waits for `[redis] wait_replicas` (see `run_acked`).
    async fn session_script<T: redis::FromRedisValue>(
        &self,
        acked: bool,
        script: &redis::Script,
        id: &SessionId,
        args: &[&[u8]],
    ) -> Result<T> {
        let len = self.session_base.len()
            + id.as_str().len()
            + args.iter().map(|a| a.len()).sum::<usize>();
        let mut cmd = evalsha(script, 1, 1 + args.len(), len);
        cmd.arg(Joined(&self.session_base, id.as_str()));
        for arg in args {
            cmd.arg(*arg);
        }
        if acked {
            run_acked(&self.redis, script, &cmd).await
        } else {
            run(&mut self.redis.conn(), script, &cmd).await
        }
    }
}

#[async_trait]
impl<D: Value> SessionStore<D> for RedisSessions<D> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn create(&self, principal: &str, data: D) -> Result<Session<D>> {
        let body = record::body(principal, &encode_value(&data)?)?;
        let (idle, abs) = (&self.idle_arg, &self.abs_arg);
        // 256 random bits never collide in practice; the script still refuses an
        // existing id rather than overwrite it, and we draw again.
        for _ in 0..3 {
            let id = SessionId::generate()?;
            let mut cmd = evalsha(
                &CREATE,
                2,
                7,
                body.len() + 2 * self.session_base.len() + principal.len() + 128,
            );
            cmd.arg(Joined(&self.session_base, id.as_str()))
                .arg(Joined(&self.principal_base, principal))
                .arg(&body)
                .arg(idle)
                .arg(abs)
                .arg(id.as_str())
                .arg(&self.session_base);
            let now: Option<u64> = run_acked(&self.redis, &CREATE, &cmd).await?;
            if let Some(now) = now {
                return Ok(Session {
                    id,
                    principal: principal.to_owned(),
                    data,
                    version: 1,
                    created_ms: now,
                    last_seen_ms: now,
                });
            }
            tracing::warn!(store = %self.name, "session id collision: drawing again");
        }
        Err(Error::internal("could not draw an unused session id"))
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session<D>>> {
        let mut cmd = redis::Cmd::with_capacity(2, self.session_base.len() + 48);
        cmd.arg("GET").arg(Joined(&self.session_base, id.as_str()));
        let got: Option<Vec<u8>> = cmd
            .query_async(&mut self.redis.conn())
            .await
            .map_err(redis_error)?;
        got.map(|bytes| self.session(id.clone(), &bytes))
            .transpose()
    }

    async fn validate(&self, id: &SessionId) -> Result<Option<Session<D>>> {
        if self.refresh_ms == 0 {
            // Every validate refreshes (idle under 1 s): straight to the script.
            return self.validate_script(id).await;
        }
        // The hot path: one `GET`; most validates find the idle timer
        // refreshed recently and write nothing. "Now" is an upper bound of
        // the Redis clock ([`clock`]), from a `TIME` read at most once a second.
        let epoch = self.redis.epoch();
        let mut get = redis::Cmd::with_capacity(2, self.session_base.len() + 48);
        get.arg("GET").arg(Joined(&self.session_base, id.as_str()));
        let mut conn = self.redis.conn();
        let (got, now) = if self.clock.upper_bound_ms(epoch).is_some() {
            let got: Option<Vec<u8>> = get.query_async(&mut conn).await.map_err(redis_error)?;
            // Taken after the reply: at least the Redis clock when it read the record.
            (got, self.clock.upper_bound_ms(epoch))
        } else {
            let sent = self.clock.local_us();
            let mut pipe = redis::Pipeline::with_capacity(2);
            pipe.add_command(get).cmd("TIME");
            let (got, (secs, micros)): (Option<Vec<u8>>, (u64, u64)) =
                pipe.query_async(&mut conn).await.map_err(redis_error)?;
            self.clock.sample(sent, secs, micros, epoch);
            (got, Some(secs.saturating_mul(1000) + micros / 1000))
        };
        let Some(bytes) = got else {
            return Ok(None);
        };
        // (A sample that went stale during the read: let the script decide.)
        let now = now.unwrap_or(u64::MAX);
        let r = record::parse(&self.name, &bytes)?;
        let end = r
            .last_seen_ms
            .saturating_add(self.idle_ms)
            .min(r.created_ms.saturating_add(self.abs_ms));
        if end > now && now.saturating_sub(r.last_seen_ms) < self.refresh_ms {
            return from_record(id.clone(), &r).map(Some);
        }
        // Due for a refresh (or ended): the script re-reads and decides atomically.
        self.validate_script(id).await
    }

    async fn update(&self, id: &SessionId, expected_version: u64, data: D) -> Result<Session<D>> {
        let bytes = encode_value(&data)?;
        let expected = expected_version.to_string();
        let (idle, abs) = (&self.idle_arg, &self.abs_arg);
        let args: [&[u8]; 4] = [expected.as_bytes(), &bytes, idle.as_bytes(), abs.as_bytes()];
        // {0} ended; {1, stored version} conflict; {2, new record without data} done.
        let reply: (u8, redis::Value) = self.session_script(true, &UPDATE, id, &args).await?;
        match reply {
            (2, redis::Value::BulkString(head)) => {
                let r = record::parse(&self.name, &head)?;
                Ok(Session {
                    id: id.clone(),
                    principal: r.principal.to_owned(),
                    data,
                    version: r.version,
                    created_ms: r.created_ms,
                    last_seen_ms: r.last_seen_ms,
                })
            }
            (1, stored) => {
                tracing::debug!(store = %self.name, ?stored, "version conflict");
                let stored = match stored {
                    redis::Value::Int(v) => v.to_string(),
                    _ => "another".to_owned(),
                };
                Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "session is at version {stored}, not {expected_version}: re-read and retry"
                    ),
                ))
            }
            (0, _) => Err(self.not_found()),
            _ => Err(Error::internal(
                "unexpected reply from the session update script",
            )),
        }
    }

    async fn rotate(&self, id: &SessionId) -> Result<Session<D>> {
        let new_id = SessionId::generate()?;
        let (idle, abs) = (&self.idle_arg, &self.abs_arg);
        let mut cmd = evalsha(
            &ROTATE,
            2,
            7,
            2 * self.session_base.len() + self.principal_base.len() + 128,
        );
        cmd.arg(Joined(&self.session_base, id.as_str()))
            .arg(Joined(&self.session_base, new_id.as_str()))
            .arg(&self.principal_base)
            .arg(id.as_str())
            .arg(new_id.as_str())
            .arg(idle)
            .arg(abs);
        let got: Option<Vec<u8>> = run_acked(&self.redis, &ROTATE, &cmd).await?;
        match got {
            Some(bytes) => self.session(new_id, &bytes),
            None => Err(self.not_found()),
        }
    }

    async fn destroy(&self, id: &SessionId) -> Result<bool> {
        let args: [&[u8]; 2] = [self.principal_base.as_bytes(), id.as_str().as_bytes()];
        let n: i64 = self.session_script(true, &DESTROY, id, &args).await?;
        Ok(n > 0)
    }

    async fn destroy_principal(&self, principal: &str) -> Result<usize> {
        let mut cmd = evalsha(
            &DESTROY_PRINCIPAL,
            1,
            2,
            self.principal_base.len() + principal.len() + self.session_base.len(),
        );
        cmd.arg(Joined(&self.principal_base, principal))
            .arg(&self.session_base);
        let n: u64 = run_acked(&self.redis, &DESTROY_PRINCIPAL, &cmd).await?;
        tracing::debug!(store = %self.name, ended = n, "destroyed the principal's sessions");
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests;
