//! The one way modkit runs its Lua scripts: `EVALSHA`, and on `NOSCRIPT`
//! (first use, a restarted or failed-over server) `SCRIPT LOAD` then the same
//! `EVALSHA` again. Cache, session, queue and registry all call [`run`], so
//! whatever the connection must learn from a script's failure (a failover's
//! `READONLY`, say) is handled in one place.
//!
//! [`run_acked`] is the same for the writes modkit acknowledges to its caller:
//! with `[redis] wait_replicas` set, the script and a `WAIT` go out together.
//!
//! Commands are built by hand ([`evalsha`]) rather than with
//! `Script::prepare_invoke`, which copies every key and argument once more
//! before writing them into the command; the bytes on the wire are the same.

use std::time::Duration;

use redis::{Cmd, FromRedisValue, Pipeline, Script};

use super::{redis_error, Conn, Redis};
use mod_api::{Error, Result};

/// Server time in ms as Lua (`local now = …`), prepended by the cache and
/// session scripts: one clock (Redis's) for the whole deployment.
macro_rules! now_ms {
    () => {
        "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    };
}
pub(crate) use now_ms;

/// `EVALSHA <sha of script> <numkeys>`, with room for `args` more arguments
/// (keys included) of `bytes` bytes in all: push the keys, then the arguments.
pub(crate) fn evalsha(script: &Script, numkeys: usize, args: usize, bytes: usize) -> Cmd {
    // 64: `EVALSHA`, the 40 hex digits of the hash and `numkeys`.
    let mut cmd = Cmd::with_capacity(3 + args, 64 + bytes);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(numkeys);
    cmd
}

/// Runs `cmd` (from [`evalsha`] of `script`) on `conn`; loads `script` once if
/// the server does not know it and runs `cmd` again. Errors map as
/// [`redis_error`] says.
pub(crate) async fn run<T: FromRedisValue>(
    conn: &mut Conn,
    script: &Script,
    cmd: &Cmd,
) -> Result<T> {
    match cmd.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(conn).await.map_err(redis_error)?;
            cmd.query_async(conn).await.map_err(redis_error)
        }
        other => other.map_err(redis_error),
    }
}

/// `[redis] wait_replicas` and `wait_timeout`, as `WAIT` takes them.
#[derive(Debug, Clone)]
pub(crate) struct Wait {
    pub(crate) replicas: u32,
    timeout_ms: u64,
}

impl Wait {
    /// `None` for 0 replicas: writes are acknowledged without waiting.
    pub(crate) fn new(replicas: u32, timeout: Duration) -> Option<Wait> {
        (replicas > 0).then(|| Wait {
            replicas,
            timeout_ms: timeout.as_millis().max(1) as u64,
        })
    }
}

/// [`run`] for a write modkit acknowledges to its caller: with
/// `wait_replicas` set, `WAIT n timeout` follows the script in one pipeline on
/// one connection — so it waits for exactly this connection's writes up to and
/// including the script's (a reconnect in between, which would make `WAIT`
/// count replicas of an empty connection, cannot happen). Fewer confirmations
/// than asked is a retryable [`Timeout`](mod_api::ErrorKind::Timeout): the
/// write is on the primary but not known to be on a replica.
pub(crate) async fn run_acked<T: FromRedisValue>(
    redis: &Redis,
    script: &Script,
    cmd: &Cmd,
) -> Result<T> {
    let Some(wait) = redis.wait() else {
        return run(&mut redis.conn(), script, cmd).await;
    };
    let mut pipe = Pipeline::with_capacity(2);
    pipe.add_command(cmd.clone())
        .cmd("WAIT")
        .arg(wait.replicas)
        .arg(wait.timeout_ms);
    let mut conn = redis.conn();
    let (value, acked): (T, u32) = match pipe.query_async(&mut conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(&mut conn).await.map_err(redis_error)?;
            pipe.query_async(&mut conn).await.map_err(redis_error)?
        }
        other => other.map_err(redis_error)?,
    };
    if acked < wait.replicas {
        // DEBUG: the observe layer reports the failed operation at WARN.
        tracing::debug!(
            acked,
            wanted = wait.replicas,
            timeout_ms = wait.timeout_ms,
            "write not confirmed by enough replicas"
        );
        return Err(Error::timeout(format!(
            "write applied on the primary but confirmed by {acked} of {} replicas within {} ms",
            wait.replicas, wait.timeout_ms
        ))
        .with_context("acked", acked.to_string()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::keys::Joined;
    use crate::redis::Redis;
    use crate::RedisServer;
    use mod_api::ErrorKind;

    #[test]
    fn the_command_is_what_prepare_invoke_sends() {
        // The bytes redis-rs's own `Script::key("dummy").arg("x")` writes.
        let script = Script::new("return KEYS[1]");
        let mut cmd = evalsha(&script, 1, 2, 6);
        cmd.arg(Joined("dum", "my")).arg("x");
        let expected = "*5\r\n$7\r\nEVALSHA\r\n$40\r\n4a2267357833227dd98abdedb8cf24b15a986445\r\n\
            $1\r\n1\r\n$5\r\ndummy\r\n$1\r\nx\r\n";
        assert_eq!(
            String::from_utf8(cmd.get_packed_command()).unwrap(),
            expected
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_script_the_server_forgot_is_loaded_and_errors_keep_their_kind() {
        let server = RedisServer::start().expect("redis-server");
        let redis = Redis::connect(&server.url(), "t").await.expect("connect");
        let echo = Script::new("return {KEYS[1], ARGV[1]}");
        for _ in 0..2 {
            // As after a restart or a failover: the server knows no script.
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut redis.conn())
                .await
                .unwrap();
            let mut cmd = evalsha(&echo, 1, 2, 8);
            cmd.arg("k").arg("v");
            let got: (String, String) = run(&mut redis.conn(), &echo, &cmd).await.unwrap();
            assert_eq!(got, ("k".to_owned(), "v".to_owned()));
        }
        let bad = Script::new("return redis.error_reply('corrupt session record')");
        let err = run::<()>(&mut redis.conn(), &bad, &evalsha(&bad, 0, 0, 0))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    }
}
