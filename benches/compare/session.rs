//! Session validate: the monolith store against a raw moka `get` of the same
//! session value; the Redis store against a raw `GET` of the same record.

use std::hint::black_box;
use std::sync::Arc;

use mod_distribute::Distributed;
use mod_monolith::Monolith;
use modkit::{Backend, Config, Session, SessionConfig, SessionId, SessionStore};

use crate::cache::raw_get;
use crate::fixtures::{node_config, payload};
use crate::harness::{compare, side, Plan, Side};
use crate::{timed_loop, BenchResult};

/// Live sessions each comparison cycles through.
const SESSIONS: usize = 1024;

async fn create(store: &Arc<dyn SessionStore<Vec<u8>>>) -> modkit::Result<Vec<Session<Vec<u8>>>> {
    let mut all = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        all.push(store.create(&format!("user-{i:04}"), payload()).await?);
    }
    Ok(all)
}

fn validate_side(
    store: &Arc<dyn SessionStore<Vec<u8>>>,
    ids: Arc<Vec<SessionId>>,
    batch: u32,
) -> Side {
    let store = store.clone();
    side(move |dur| {
        let (store, ids) = (store.clone(), ids.clone());
        Box::pin(async move {
            let mut i = 0usize;
            timed_loop!(dur, batch, {
                let id = &ids[i % SESSIONS];
                i += 1;
                black_box(store.validate(id).await.unwrap().unwrap());
            })
        })
    })
}

/// `session.validate.monolith` vs moka: the peer holds the very `Session`
/// values (id, principal, 64-byte data, times, version) and clones one out per
/// `get`, as the monolith's validate does; it does not slide any expiry.
pub async fn monolith(plan: Plan) -> BenchResult {
    let mono = Monolith::new(Config::default())?;
    let store = mono.sessions::<Vec<u8>>("bench", SessionConfig::default())?;
    let sessions = create(&store).await?;
    let moka: moka::future::Cache<String, Session<Vec<u8>>> = moka::future::Cache::builder()
        .max_capacity(100_000)
        .time_to_idle(SessionConfig::default().idle_timeout)
        .build();
    for s in &sessions {
        moka.insert(s.id.as_str().to_owned(), s.clone()).await;
    }
    let ids: Arc<Vec<SessionId>> = Arc::new(sessions.iter().map(|s| s.id.clone()).collect());
    let modkit = validate_side(&store, ids.clone(), 256);
    let peer = side(move |dur| {
        let (moka, ids) = (moka.clone(), ids.clone());
        Box::pin(async move {
            let mut i = 0usize;
            timed_loop!(dur, 256, {
                let id = &ids[i % SESSIONS];
                i += 1;
                black_box(moka.get(id.as_str()).await.unwrap());
            })
        })
    });
    compare(plan, "session.validate.monolith", "moka", modkit, peer).await;
    Ok(())
}

/// `session.validate.redis.seq` vs raw redis-rs `GET` of the session's own
/// record (key layout in mod-distribute's session docs): the same bytes come
/// back; modkit's validate also slides the idle expiry (one script call).
pub async fn redis(plan: Plan, url: &str, prefix: &str) -> BenchResult {
    let node = Distributed::start(node_config(url, prefix, "session", &[])).await?;
    let store = node.sessions::<Vec<u8>>("bench", SessionConfig::default())?;
    let sessions = create(&store).await?;
    let keys: Arc<Vec<String>> = Arc::new(
        sessions
            .iter()
            .map(|s| format!("{prefix}:sess:bench:s:{}", s.id.as_str()))
            .collect(),
    );
    let conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let probe: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn.clone())
        .await?;
    if probe.is_none() {
        return Err("session key layout changed: the raw side would read nothing".into());
    }
    let ids: Arc<Vec<SessionId>> = Arc::new(sessions.iter().map(|s| s.id.clone()).collect());
    let modkit = validate_side(&store, ids, 1);
    let peer = raw_get(&conn, keys, 1);
    compare(plan, "session.validate.redis.seq", "redis-rs", modkit, peer).await;
    Ok(())
}
