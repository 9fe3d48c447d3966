//! `[redis] controllers`: a handle follows the primary that the controllers'
//! topology names, moves only to a strictly higher epoch, and survives a dead
//! controller in its list. The controller side here is the real
//! [`Publisher`] a controller runs; the nodes are real `redis-server`s.

use std::time::{Duration, Instant};

use mod_distribute::topology::{Alert, Publisher, Topology};
use mod_distribute::{Redis, RedisConfig, RedisServer};

fn topology(epoch: u64, primary: &RedisServer) -> Topology {
    Topology {
        group: "main".into(),
        epoch,
        primary: Some(primary.addr()),
        ..Topology::default()
    }
}

async fn get(server: &RedisServer, key: &str) -> Option<String> {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn set(redis: &Redis, key: &str, value: &str) {
    let mut conn = redis.conn();
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
        .unwrap();
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_follows_only_higher_epochs() {
    let (a, b) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let publisher = Publisher::bind("127.0.0.1:0").await.unwrap();
    publisher.publish(topology(1, &a));
    // A dead controller first in the list: the live one is enough.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = RedisConfig {
        url: "redis://127.0.0.1:1".into(),
        prefix: "follow".into(),
        controllers: vec![dead.to_string(), publisher.local_addr().to_string()],
        ..RedisConfig::default()
    };
    let redis = Redis::connect_with(&config).await.unwrap();
    assert_eq!(redis.topology_epoch(), 1);
    set(&redis, "k", "on-a").await;
    assert_eq!(get(&a, "k").await.as_deref(), Some("on-a"));

    let follower = redis.follower().expect("a following handle").clone();
    let mut alerts = follower.alerts();
    publisher.publish(topology(2, &b));
    let port = b.port().to_string();
    until("the switch to epoch 2", || redis.url().contains(&port)).await;
    assert_eq!(redis.topology_epoch(), 2);
    set(&redis, "k", "on-b").await;
    assert_eq!(get(&b, "k").await.as_deref(), Some("on-b"));
    assert_eq!(
        get(&a, "k").await.as_deref(),
        Some("on-a"),
        "the old primary saw nothing"
    );

    // A stale topology (a partitioned controller that missed the commit)
    // must not move the handle back.
    publisher.publish(topology(1, &a));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(redis.url().contains(&port), "moved back to {}", redis.url());
    assert_eq!(follower.topology().epoch, 2);

    let alert = Alert::GroupUnhealthy {
        group: "main".into(),
        available: 1,
        total: 3,
    };
    publisher.alert(alert.clone());
    let got = tokio::time::timeout(Duration::from_secs(2), alerts.recv()).await;
    assert_eq!(got.unwrap().unwrap(), alert);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_controller_is_a_clear_unavailable_error() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = RedisConfig {
        controllers: vec![dead.to_string()],
        ..RedisConfig::default()
    };
    let err = Redis::connect_with(&config).await.unwrap_err();
    assert_eq!(err.kind(), mod_api::ErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert!(err.to_string().contains("controller"), "{err}");
}
