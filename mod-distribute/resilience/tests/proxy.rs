//! `modkit-ha proxy`'s engine: a plain Redis client (no modkit) on the
//! proxy's fixed address reaches the primary, is disconnected when a
//! failover commits a new epoch, lands on the new primary when it
//! reconnects, and is refused once no controller is heard.

use std::time::{Duration, Instant};

use mod_distribute::topology::Follower;
use mod_resilience::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

/// One inline command over a raw connection; the reply's first line, or
/// `None` when the connection is closed.
async fn ask(conn: &mut TcpStream, command: &str) -> Option<String> {
    conn.write_all(format!("{command}\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    (n > 0).then(|| {
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    })
}

/// The `tcp_port` of the server behind the proxy, on a new connection.
async fn port_via(proxy: &Proxy) -> Option<String> {
    let mut conn = TcpStream::connect(proxy.local_addr()).await.ok()?;
    conn.write_all(b"INFO server\r\n").await.ok()?;
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("tcp_port:"))
        .map(|p| p.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_follows_the_primary_and_stops_without_controllers() {
    let mut nodes = common::group(1);
    let controller = common::solo(common::ha_over(&nodes)).await;
    let (a, b) = nodes.split_at_mut(1);
    let (a, b) = (&mut a[0], &b[0]);
    let controllers = vec![controller.local_addr().to_string()];
    let follower = Follower::subscribe(&controllers, Duration::from_secs(10))
        .await
        .unwrap();
    let proxy = Proxy::start("127.0.0.1:0", follower).await.unwrap();

    assert_eq!(port_via(&proxy).await, Some(a.port().to_string()));
    let mut held = TcpStream::connect(proxy.local_addr()).await.unwrap();
    assert_eq!(ask(&mut held, "SET k 1").await.as_deref(), Some("+OK"));

    a.kill();
    let start = Instant::now();
    loop {
        if port_via(&proxy).await == Some(b.port().to_string()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the proxy never reached the new primary"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the failover was closed by the proxy.
    assert_eq!(
        ask(&mut held, "PING").await,
        None,
        "a pre-failover connection stayed open"
    );
    let mut fresh = TcpStream::connect(proxy.local_addr()).await.unwrap();
    assert_eq!(ask(&mut fresh, "SET k 2").await.as_deref(), Some("+OK"));

    // No controller: after three silent heartbeats nothing is forwarded.
    drop(controller);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ask(&mut fresh, "PING").await,
        None,
        "forwarding went on without controllers"
    );
    let mut late = TcpStream::connect(proxy.local_addr()).await.unwrap();
    assert_eq!(
        ask(&mut late, "PING").await,
        None,
        "a new connection was forwarded"
    );
}
