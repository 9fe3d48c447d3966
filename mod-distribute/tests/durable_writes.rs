//! `[redis] wait_replicas`: against a real primary and a real replica, every
//! write modkit acknowledges (queue offer and ack, session create, update,
//! rotate and destroy, registry register) is on the replica when the call
//! returns; with the replica frozen (SIGSTOP) such a write fails with a
//! retryable `Timeout` after `wait_timeout`, while the asynchronous default
//! goes on acknowledging.

use std::process::Command;
use std::time::{Duration, Instant};

use mod_api::{
    Consumer, ErrorKind, Instance, Queue, QueueConfig, Registry, SessionConfig, SessionStore,
};
use mod_distribute::{Redis, RedisConfig, RedisQueue, RedisRegistry, RedisServer, RedisSessions};

async fn cmd<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> T {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(&mut conn).await.unwrap()
}

fn signal(server: &RedisServer, sig: &str) {
    let pid = server.pid().expect("pid").to_string();
    let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(ok.success());
}

async fn connect(primary: &RedisServer, wait_replicas: u32) -> Redis {
    Redis::connect_with(&RedisConfig {
        url: primary.url(),
        prefix: "durable".into(),
        wait_replicas,
        wait_timeout: Duration::from_millis(300),
        ..RedisConfig::default()
    })
    .await
    .unwrap()
}

/// Whether the replica has `key`, read straight after an acknowledged write.
async fn replica_has(replica: &RedisServer, key: &str) -> bool {
    let n: i64 = cmd(&replica.url(), &["EXISTS", key]).await;
    n == 1
}

/// The replica's key of session `id`, if it has one.
async fn session_key(replica: &RedisServer, id: &str) -> Option<String> {
    let keys: Vec<String> = cmd(&replica.url(), &["KEYS", "durable:*"]).await;
    keys.into_iter().find(|k| k.ends_with(id))
}

/// How many messages of group `g` the replica has pending.
async fn pending(replica: &RedisServer, stream: &str) -> Option<redis::Value> {
    let p: Vec<redis::Value> = cmd(&replica.url(), &["XPENDING", stream, "g"]).await;
    p.first().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_are_on_the_replica_and_time_out_without_it() {
    let primary = RedisServer::start().unwrap();
    let replica = RedisServer::start_replica_of(primary.port()).unwrap();
    let redis = connect(&primary, 1).await;

    // Queue: the message an offer acknowledged is on the replica, and so is
    // the ack that removed it from the pending list.
    let q = RedisQueue::<String>::open(redis.clone(), "jobs", QueueConfig::default()).unwrap();
    let stream = redis.key(&["queue", "jobs"]);
    for i in 1..=20 {
        q.offer(format!("m{i}")).await.unwrap();
        let len: i64 = cmd(&replica.url(), &["XLEN", &stream]).await;
        assert_eq!(len, i, "offer {i} acknowledged but not on the replica");
    }
    let consumer = Consumer::new("g", "c1");
    let d = q.poll(&consumer).await.unwrap().expect("a message");
    assert_eq!(pending(&replica, &stream).await, Some(redis::Value::Int(1)));
    assert!(q.ack("g", &d.id).await.unwrap());
    assert_eq!(
        pending(&replica, &stream).await,
        Some(redis::Value::Int(0)),
        "the ack is not on the replica"
    );
    // Session: create, update, rotate and destroy are each on the replica.
    let sessions = RedisSessions::<String>::new(redis.clone(), "web", SessionConfig::default());
    let s = sessions.create("alice", "v1".into()).await.unwrap();
    assert!(
        session_key(&replica, s.id.as_str()).await.is_some(),
        "created session not on the replica"
    );
    let s = sessions
        .update(&s.id, s.version, "v2".into())
        .await
        .unwrap();
    let key = session_key(&replica, s.id.as_str()).await.unwrap();
    let record: Vec<u8> = cmd(&replica.url(), &["GET", &key]).await;
    assert!(
        record.windows(2).any(|w| w == b"v2"),
        "updated data not on the replica"
    );
    let rotated = sessions.rotate(&s.id).await.unwrap();
    assert!(
        !replica_has(&replica, &key).await,
        "rotated-away id still on the replica"
    );
    assert!(session_key(&replica, rotated.id.as_str()).await.is_some());
    assert!(sessions.destroy(&rotated.id).await.unwrap());
    assert!(
        session_key(&replica, rotated.id.as_str()).await.is_none(),
        "destroyed session on the replica"
    );
    // Registry: a registered instance is on the replica.
    let registry = RedisRegistry::start(redis.clone(), Duration::from_secs(1))
        .await
        .unwrap();
    registry
        .register(
            Instance::new("orders", "i1", "127.0.0.1:1"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let keys: Vec<String> = cmd(&replica.url(), &["KEYS", "durable:*orders*"]).await;
    assert!(!keys.is_empty(), "registered instance not on the replica");

    // The replica freezes: acknowledged writes time out, retryably, in about
    // wait_timeout; the asynchronous default still acknowledges at once.
    signal(&replica, "-STOP");
    let started = Instant::now();
    let e = q.offer("unconfirmed".to_owned()).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let e = sessions.create("bob", "x".into()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let async_redis = connect(&primary, 0).await;
    let fast = RedisQueue::<String>::open(async_redis, "jobs", QueueConfig::default()).unwrap();
    fast.offer("unreplicated".to_owned()).await.unwrap();
    signal(&replica, "-CONT");
    // Back: acknowledged writes go through again.
    q.offer("after".to_owned()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_timeout_that_cannot_work_is_refused_at_connect() {
    let primary = RedisServer::start().unwrap();
    let e = Redis::connect_with(&RedisConfig {
        url: primary.url(),
        wait_replicas: 1,
        wait_timeout: Duration::from_secs(30),
        ..RedisConfig::default()
    })
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("wait_timeout"), "{e}");
}
