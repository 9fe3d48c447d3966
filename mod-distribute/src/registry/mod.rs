//! The Redis registry: instances under leases, shared by every node, with
//! watches fed by Redis pub/sub.
//!
//! Every change of a service (register, deregister, status, expiry) is one Lua
//! script that writes the instance, bumps the service's version and publishes
//! `"<service> <version>"`, atomically. Each [`RedisRegistry`] has one pub/sub
//! connection; a notification makes it fetch the service's snapshot (version and
//! instances in one script call) and fan it out to its local watchers. Every
//! `sweep` each node also expires run-out leases (whichever node comes first does
//! the work) and re-reads the versions of the services it watches, which covers
//! lost notifications and reconnects.
//!
//! # Keys
//!
//! | key | type | content |
//! |---|---|---|
//! | `<prefix>:reg:inst:<service>` | hash | instance id → encoded [`Instance`] |
//! | `<prefix>:reg:ttl:<service>` | hash | instance id → lease TTL in ms |
//! | `<prefix>:reg:leases` | sorted set | `"<service> <id>"` scored by lease deadline (Redis `TIME`, ms) |
//! | `<prefix>:reg:versions` | hash | service → version (never goes back; kept when empty) |
//! | `<prefix>:reg:services` | set | services with at least one instance |
//! | `<prefix>:reg:consumers:<service>` | set | consumer ids of the service |
//! | `<prefix>:reg:events` | pub/sub channel | `"<service> <version>"` after each change |
//!
//! Scripts build the per-service keys themselves (the sweep only learns them
//! from lease members), so the registry needs a non-cluster Redis.

mod background;
mod scripts;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use mod_api::codec::{decode, encode};
use mod_api::registry::checks;
use mod_api::registry::{ConsumerInfo, Instance, Registry, Snapshot, Status, Watch};
use mod_api::{Error, ErrorKind, Result};
use redis::Value;

use crate::redis::keys::join;
use crate::redis::script::{evalsha, run, run_acked};
use crate::redis::{redis_error, Redis};
use scripts::Scripts;
use watch::Watched;

/// How many times `set_status` re-reads an instance that changed under it.
const STATUS_ATTEMPTS: usize = 16;
/// Longest lease TTL kept (~139 years): deadlines stay exact in Lua's doubles.
const MAX_TTL_MS: u128 = 1 << 42;

/// The distributed [`Registry`] on Redis (see the module docs for the key layout).
pub struct RedisRegistry {
    redis: Redis,
    /// `<prefix>:reg`, the base of every key.
    base: String,
    /// The pub/sub channel of change notifications.
    channel: String,
    scripts: Scripts,
    /// Services watched in this process, with their local watchers.
    watched: Mutex<HashMap<String, Watched>>,
    /// For background tasks spawned from `&self` (refreshes).
    me: Weak<RedisRegistry>,
    /// Dropped with the registry: wakes the background tasks so they end.
    _shutdown: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("base", &self.base)
            .field("watched", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl RedisRegistry {
    /// Subscribes to change notifications and starts the background tasks:
    /// the listener and the sweeper, which runs every `sweep` (at least 1 ms).
    ///
    /// Fails (`Unavailable`) when Redis cannot be reached. The tasks hold only a
    /// [`Weak`] and end when the registry is dropped; watches then end too.
    #[tracing::instrument(level = "debug", skip_all, fields(prefix = %redis.prefix()))]
    pub async fn start(redis: Redis, sweep: Duration) -> Result<Arc<RedisRegistry>> {
        let base = redis.key(&["reg"]);
        let channel = join(&base, &["events"]);
        let scripts = Scripts::new();
        // Subscribe before returning, so no change after `start` goes unnoticed.
        let pubsub = background::subscribe(&redis, &channel).await?;
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(());
        let registry = Arc::new_cyclic(|me| RedisRegistry {
            redis,
            base,
            channel,
            scripts,
            watched: Mutex::new(HashMap::new()),
            me: me.clone(),
            _shutdown: shutdown,
        });
        let sweep = sweep.max(Duration::from_millis(1));
        let weak = Arc::downgrade(&registry);
        let epoch = registry.redis.epoch();
        tokio::spawn(background::listener(
            weak.clone(),
            pubsub,
            epoch,
            shutdown_rx.clone(),
            sweep,
        ));
        tokio::spawn(background::sweeper(weak, sweep, shutdown_rx));
        tracing::debug!(base = %registry.base, ?sweep, "redis registry started");
        Ok(registry)
    }

    /// The state of watched services, even if a thread panicked holding it
    /// (every update under it is a few map operations).
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Watched>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn service_key(&self, kind: &str, service: &str) -> String {
        join(&self.base, &[kind, service])
    }

    /// Runs `script` with the key base and `args`; an `acked` write waits for
    /// `[redis] wait_replicas` (see `run_acked`).
    async fn run<T: redis::FromRedisValue>(
        &self,
        acked: bool,
        script: &redis::Script,
        args: &[&[u8]],
    ) -> Result<T> {
        let bytes = self.base.len() + args.iter().map(|a| a.len()).sum::<usize>();
        let mut cmd = evalsha(script, 0, 1 + args.len(), bytes);
        cmd.arg(&self.base);
        for arg in args {
            cmd.arg(*arg);
        }
        if acked {
            run_acked(&self.redis, script, &cmd).await
        } else {
            run(&mut self.redis.conn(), script, &cmd).await
        }
    }

    /// The live instances and version of `service`, in one round trip; the
    /// version is raised to at least `min` (see `watch.rs`).
    async fn fetch(&self, service: &str, min: u64) -> Result<Snapshot> {
        let min = min.to_string();
        let reply: Value = self
            .run(
                false,
                &self.scripts.snapshot,
                &[service.as_bytes(), min.as_bytes()],
            )
            .await?;
        parse_snapshot(service, reply)
    }
}

/// `[version, encoded instance…]` → a snapshot sorted by id; instances that
/// do not decode are left out (logged at WARN).
fn parse_snapshot(service: &str, reply: Value) -> Result<Snapshot> {
    let bad = |what: &str| {
        tracing::warn!(%service, what, "unexpected registry snapshot reply");
        Error::internal(format!("unexpected registry snapshot reply: {what}"))
    };
    let Value::Array(items) = reply else {
        return Err(bad("not an array"));
    };
    let mut items = items.into_iter();
    let version = match items.next() {
        Some(Value::Int(v)) => u64::try_from(v).map_err(|_| bad("negative version"))?,
        _ => return Err(bad("no version")),
    };
    let mut instances = Vec::with_capacity(items.len());
    for item in items {
        let Value::BulkString(bytes) = item else {
            return Err(bad("instance is not a string"));
        };
        // One bad entry (another build's format, a hand edit) must not hide
        // every good instance of the service: skip it, loudly. Its lease still
        // expires, and the sweep removes it then.
        match decode::<Instance>(&bytes) {
            Ok(instance) => instances.push(instance),
            Err(e) => tracing::warn!(
                %service, error = %e.to_detached(), len = bytes.len(),
                "undecodable registry instance skipped"
            ),
        }
    }
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Snapshot {
        service: service.to_owned(),
        version,
        instances,
    })
}

#[async_trait]
impl Registry for RedisRegistry {
    async fn register(&self, instance: Instance, ttl: Duration) -> Result<()> {
        let ttl_ms = ttl.as_millis().clamp(1, MAX_TTL_MS).to_string();
        let value = encode(&instance)?;
        let version: u64 = self
            .run(
                true,
                &self.scripts.register,
                &[
                    instance.service.as_bytes(),
                    instance.id.as_bytes(),
                    &value,
                    ttl_ms.as_bytes(),
                ],
            )
            .await?;
        tracing::debug!(version, "instance registered");
        Ok(())
    }

    async fn heartbeat(&self, service: &str, id: &str) -> Result<()> {
        let renewed: i64 = self
            .run(
                false,
                &self.scripts.heartbeat,
                &[service.as_bytes(), id.as_bytes()],
            )
            .await?;
        if renewed == 1 {
            Ok(())
        } else {
            Err(checks::not_found(service, id))
        }
    }

    async fn deregister(&self, service: &str, id: &str) -> Result<bool> {
        let removed: i64 = self
            .run(
                false,
                &self.scripts.deregister,
                &[service.as_bytes(), id.as_bytes()],
            )
            .await?;
        Ok(removed == 1)
    }

    async fn set_status(&self, service: &str, id: &str, status: Status) -> Result<()> {
        // The instance is stored encoded, so Lua cannot edit it: read, change,
        // and write back only if nobody changed it meanwhile (compare and set).
        for _ in 0..STATUS_ATTEMPTS {
            let current: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(self.service_key("inst", service))
                .arg(id)
                .query_async(&mut self.redis.conn())
                .await
                .map_err(redis_error)?;
            let Some(current) = current else {
                return Err(checks::not_found(service, id));
            };
            let mut instance: Instance = decode(&current)?;
            instance.status = status;
            let updated = encode(&instance)?;
            let done: i64 = self
                .run(
                    false,
                    &self.scripts.set_status,
                    &[service.as_bytes(), id.as_bytes(), &current, &updated],
                )
                .await?;
            match done {
                1 => return Ok(()),
                -1 => return Err(checks::not_found(service, id)),
                _ => tracing::debug!("instance changed during set_status; reading again"),
            }
        }
        tracing::warn!("set_status kept losing to concurrent changes");
        Err(Error::new(
            ErrorKind::Conflict,
            format!("instance {id} of service {service} keeps changing"),
        ))
    }

    async fn lookup(&self, service: &str) -> Result<Vec<Instance>> {
        Ok(self.fetch(service, 0).await?.instances)
    }

    async fn services(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{}:services", self.base))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(redis_error)?;
        names.sort_unstable();
        Ok(names)
    }

    async fn watch(&self, service: &str) -> Result<Watch> {
        self.open_watch(service).await
    }

    async fn register_consumer(&self, consumer: ConsumerInfo) -> Result<()> {
        let _: i64 = redis::cmd("SADD")
            .arg(self.service_key("consumers", &consumer.service))
            .arg(&consumer.consumer)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn deregister_consumer(&self, consumer: &ConsumerInfo) -> Result<bool> {
        let removed: i64 = redis::cmd("SREM")
            .arg(self.service_key("consumers", &consumer.service))
            .arg(&consumer.consumer)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(redis_error)?;
        Ok(removed == 1)
    }

    async fn consumers(&self, service: &str) -> Result<Vec<ConsumerInfo>> {
        let mut ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.service_key("consumers", service))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(redis_error)?;
        ids.sort_unstable();
        Ok(ids
            .into_iter()
            .map(|consumer| ConsumerInfo {
                service: service.to_owned(),
                consumer,
            })
            .collect())
    }
}
