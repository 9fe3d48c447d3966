//! Metrics and the status page on a real deployment: a distributed node
//! (its own redis-server) serving a service over RPC to itself, with
//! `[metrics] listen`; its `/metrics` is read over HTTP and its `/status`
//! rendered in headless Chromium, whose screenshot is kept at
//! `<target>/artifacts/status.png`.

mod browser;
#[path = "../examples/shop/scrape.rs"]
mod scrape;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use modkit::distribute::{RedisConfig, RedisServer};
use modkit::prelude::*;
use scrape::value;

#[service(name = "test.Echo")]
pub trait Echo {
    /// The text back; an empty one is the method's own error.
    async fn echo(&self, text: String) -> Result<String, Error>;
    /// Waits `ms` milliseconds.
    async fn nap(&self, ms: u64) -> Result<(), Error>;
}

struct Parrot;

#[async_trait]
impl Echo for Parrot {
    async fn echo(&self, text: String) -> Result<String, Error> {
        match text.is_empty() {
            true => Err(Error::invalid_input("nothing to echo")),
            false => Ok(text),
        }
    }

    async fn nap(&self, ms: u64) -> Result<(), Error> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    }
}

/// A distributed node on `redis` that calls its own services over RPC.
fn node(redis: &RedisServer, node_id: &str) -> Config {
    let mut config = Config {
        mode: Some("distribute".into()),
        node_id: Some(node_id.into()),
        ..Config::default()
    }
    .with_section(&RedisConfig {
        url: redis.url(),
        prefix: format!("observe-{}", std::process::id()),
        ..RedisConfig::default()
    });
    config.invoke.host = Some(vec!["*".into()]);
    // Through the network, so that both sides of each call are measured.
    config.invoke.colocate = false;
    config.metrics.listen = Some("127.0.0.1:0".into());
    config
}

fn labels<'a>(method: &'a str, side: &'a str) -> [(&'a str, &'a str); 3] {
    [("service", "test.Echo"), ("method", method), ("side", side)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_node_serves_metrics_and_a_live_status_page() {
    browser::chromium(); // fail first, and clearly, when it is missing
    let redis = RedisServer::start().unwrap();
    let app = App::start(node(&redis, "observed-1")).await.unwrap();
    let addr = app.metrics_address().expect("serving metrics").to_string();
    app.provide::<dyn Echo>(Arc::new(Parrot)).await.unwrap();
    app.ready().unwrap();

    let echo = app.get::<dyn Echo>().unwrap();
    for i in 0..5 {
        assert_eq!(
            echo.echo(format!("hi {i}")).await.unwrap(),
            format!("hi {i}")
        );
    }
    for _ in 0..2 {
        let e = echo.echo(String::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    let late = echo
        .with_timeout(Duration::from_millis(50))
        .nap(2_000)
        .await;
    assert_eq!(late.unwrap_err().kind(), ErrorKind::Timeout);
    // The server drops the nap at the same deadline; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = scrape::get(&addr, "/metrics").await.unwrap();
    let at = |name: &str, labels: &[(&str, &str)]| value(&text, name, labels).unwrap_or(-1.0);
    for side in ["client", "server"] {
        assert_eq!(
            at("modkit_calls_total", &labels("echo", side)),
            7.0,
            "{side}\n{text}"
        );
        assert_eq!(
            at("modkit_calls_total", &labels("nap", side)),
            1.0,
            "{side}\n{text}"
        );
        let app_errors = [labels("echo", side).as_slice(), &[("kind", "application")]].concat();
        assert_eq!(at("modkit_call_errors_total", &app_errors), 2.0, "{text}");
        assert_eq!(
            at("modkit_call_seconds_count", &labels("echo", side)),
            7.0,
            "{text}"
        );
        let fast = [labels("echo", side).as_slice(), &[("le", "10")]].concat();
        assert_eq!(at("modkit_call_seconds_bucket", &fast), 7.0, "{text}");
        let sent = [labels("echo", side).as_slice(), &[("direction", "sent")]].concat();
        assert!(at("modkit_call_bytes_total", &sent) > 0.0, "{text}");
        assert!(
            at("modkit_rpc_connections", &[("side", side)]) >= 1.0,
            "{text}"
        );
    }
    let timeout = [labels("nap", "client").as_slice(), &[("kind", "timeout")]].concat();
    assert_eq!(at("modkit_call_errors_total", &timeout), 1.0, "{text}");
    let dropped = [labels("nap", "server").as_slice(), &[("kind", "cancelled")]].concat();
    assert_eq!(at("modkit_call_errors_total", &dropped), 1.0, "{text}");
    assert!(at("modkit_redis_connections", &[]) >= 1.0, "{text}");
    assert!(
        text.contains("le=\"0.00005\""),
        "buckets from 50 µs: {text}"
    );

    let json = scrape::get(&addr, "/status.json").await.unwrap();
    for needle in [
        "\"test.Echo\"",
        "\"observed-1\"",
        "\"package\":\"distribute\"",
        "\"answers\":true",
    ] {
        assert!(json.contains(needle), "{needle} in {json}");
    }

    // The page as a browser renders it, once its script has fetched the data.
    let url = format!("http://{addr}/status");
    let dom = browser::chromium_async(url.clone(), vec!["--dump-dom".into()]).await;
    assert!(
        dom.contains("<h3 class=\"service\">test.Echo</h3>"),
        "{dom}"
    );
    assert!(
        dom.contains("<tr class=\"instance\"><td>observed-1</td>"),
        "{dom}"
    );
    let row =
        "<tr class=\"method\"><td>test.Echo</td><td>echo</td><td>client</td><td class=\"n\">7</td>";
    assert!(dom.contains(row), "{dom}");
    assert!(dom.contains("observed-1 (distribute)"), "{dom}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("artifacts/status.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    browser::chromium_async(url, vec![format!("--screenshot={}", shot.display())]).await;
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "no screenshot at {}", shot.display());
    println!("screenshot: {}", shot.display());
    app.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_app_reuses_the_recorder_and_a_taken_address_fails_the_start() {
    let redis = RedisServer::start().unwrap();
    let first = App::start(node(&redis, "first")).await.unwrap();
    let taken = first.metrics_address().unwrap().to_string();
    let second = App::start(node(&redis, "second")).await.unwrap();
    let other = second.metrics_address().unwrap().to_string();
    assert_ne!(taken, other);
    for addr in [&taken, &other] {
        scrape::get(addr, "/metrics").await.unwrap();
    }

    let mut clash = node(&redis, "third");
    clash.metrics.listen = Some(taken.clone());
    let e = App::start(clash).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains(&taken), "names the address: {e}");

    let mut malformed = node(&redis, "fourth");
    malformed.metrics.listen = Some("no port here".into());
    let e = App::start(malformed).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");

    // Dropped with its last clone, the server stops answering.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(scrape::get(&taken, "/metrics").await.is_err());
}
