//! The web example on the distributed package only: several nodes on one
//! Redis, and Redis going away under a logged-in user.

#[path = "../examples/web/app.rs"]
#[allow(dead_code)]
mod app;
#[path = "../examples/web/greeter.rs"]
mod greeter;
#[path = "../examples/web/pages.rs"]
mod pages;
mod web_support;

use std::time::{Duration, Instant};

use modkit::distribute::RedisServer;
use modkit::prelude::*;
use modkit::web::CookieConfig;
use web_support::{distributed_node, is_logged_out, no_extra, serve_config};

/// Two processes' worth of nodes on one Redis: a login on one is a login on
/// the other, and a logout on either ends it for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_nodes_share_logins_and_logouts() {
    let redis =
        RedisServer::start().expect("redis-server (install it: apt-get install redis-server)");
    let node = |id: &str| {
        let config = distributed_node(&redis.url(), id);
        serve_config(
            config,
            SessionConfig::default(),
            CookieConfig::default(),
            no_extra,
        )
    };
    let (a, b) = (node("web-a").await, node("web-b").await);

    let cookie = a.logged_in("ada").await;
    let on_b = b.get("/hello", Some(&cookie)).await;
    assert!(on_b.body.contains("hello, ada (visit 1)"), "{on_b:?}");
    let on_a = a.get("/hello", Some(&cookie)).await;
    assert!(on_a.body.contains("hello, ada (visit 2)"), "{on_a:?}");

    assert!(is_logged_out(&b.post("/logout", Some(&cookie), "").await));
    assert!(is_logged_out(&a.get("/hello", Some(&cookie)).await));
    drop((a, b));
}

/// The session store down (Redis killed): a 503 with `Retry-After`, never a
/// 500 or a logout, and logins work again once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_is_a_503_with_retry_after() {
    let mut redis =
        RedisServer::start().expect("redis-server (install it: apt-get install redis-server)");
    let port = redis.port();
    let config = distributed_node(&redis.url(), "web-down");
    let server = serve_config(
        config,
        SessionConfig::default(),
        CookieConfig::default(),
        no_extra,
    )
    .await;
    let cookie = server.logged_in("ada").await;

    redis.kill();
    let start = Instant::now();
    let down = server.get("/hello", Some(&cookie)).await;
    assert_eq!(down.status, 503, "{down:?}");
    assert_eq!(down.headers["retry-after"], "1");
    assert_eq!(
        down.set_cookie(),
        None,
        "the cookie is kept while the store is down"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );

    // Back (empty: no persistence here): the lost session is no session, and
    // a new login works, once the client has reconnected.
    let _back = RedisServer::start_on_port(port, &[]).expect("redis restarts");
    let deadline = Instant::now() + Duration::from_secs(15);
    let reply = loop {
        let reply = server.get("/hello", Some(&cookie)).await;
        if reply.status != 503 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(is_logged_out(&reply), "{reply:?}");
    let again = server.logged_in("ada").await;
    assert_eq!(server.get("/hello", Some(&again)).await.status, 200);
}
