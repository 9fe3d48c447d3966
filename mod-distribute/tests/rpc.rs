//! The RPC transport over real TCP on 127.0.0.1: a `#[service]` served by
//! `RpcServer`, called through its generated client over `RpcTransport`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mod_api::{async_trait, service, CallContext, DispatchTable, Error, ErrorKind};
use mod_distribute::rpc::{not_sent, RpcClient, RpcConnections, RpcServer, RpcTransport};
use mod_distribute::RpcConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The test service.
#[service(crate = mod_api, name = "test.Lab")]
pub trait Lab {
    async fn echo(&self, text: String) -> Result<String, Error>;
    /// Sleeps, then sets `finished`.
    async fn sleep(&self, ms: u64) -> Result<(), Error>;
    /// Sets `started`, then waits forever; sets `dropped` when its future is dropped.
    async fn hold(&self) -> Result<(), Error>;
    async fn boom(&self) -> Result<(), Error>;
    async fn size(&self, blob: Vec<u8>) -> Result<usize, Error>;
}

#[derive(Default)]
struct Flags {
    finished: AtomicBool,
    started: AtomicBool,
    dropped: AtomicBool,
}

struct SetOnDrop(Arc<Flags>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.dropped.store(true, Ordering::SeqCst);
    }
}

struct LabImpl(Arc<Flags>);

#[async_trait]
impl Lab for LabImpl {
    async fn echo(&self, text: String) -> Result<String, Error> {
        Ok(text)
    }

    async fn sleep(&self, ms: u64) -> Result<(), Error> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.0.finished.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn hold(&self) -> Result<(), Error> {
        let _guard = SetOnDrop(self.0.clone());
        self.0.started.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
        Ok(())
    }

    async fn boom(&self) -> Result<(), Error> {
        panic!("boom (expected by the test)")
    }

    async fn size(&self, blob: Vec<u8>) -> Result<usize, Error> {
        Ok(blob.len())
    }
}

fn config() -> RpcConfig {
    RpcConfig::default()
}

async fn serve(config: &RpcConfig) -> (RpcServer, Arc<Flags>) {
    let flags = Arc::new(Flags::default());
    let services = DispatchTable::new();
    services.serve::<dyn Lab>(Arc::new(LabImpl(flags.clone())));
    (RpcServer::bind(config, services).await.unwrap(), flags)
}

fn addr(server: &RpcServer) -> String {
    server.local_addr().to_string()
}

fn lab(client: &RpcClient, timeout: Duration) -> LabClient {
    LabClient::new(Arc::new(RpcTransport::new(client.clone(), timeout)))
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const SECOND: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_on_one_connection() {
    let (server, _) = serve(&config()).await;
    let client = RpcClient::connect(&addr(&server), &config()).await.unwrap();
    let lab = lab(&client, SECOND);
    let calls = (0..500).map(|i| {
        let lab = lab.clone();
        async move { (i, lab.echo(format!("call {i}")).await) }
    });
    for (i, reply) in join_all(calls).await {
        assert_eq!(reply.unwrap(), format!("call {i}"));
    }
    // Different sizes interleaved on the same connection.
    let big = (0..20).map(|i| {
        let lab = lab.clone();
        async move { (i, lab.size(vec![7u8; i * 10_000]).await) }
    });
    for (i, reply) in join_all(big).await {
        assert_eq!(reply.unwrap(), i * 10_000);
    }
    // Frames larger than the read buffer, both ways, interleaved with small ones.
    let mixed = (0..16).map(|i| {
        let lab = lab.clone();
        let text = if i % 2 == 0 {
            "y".repeat(300_000 + i)
        } else {
            format!("small {i}")
        };
        async move { (text.clone(), lab.echo(text).await) }
    });
    for (sent, reply) in join_all(mixed).await {
        assert_eq!(reply.unwrap(), sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_is_enforced_and_server_work_stops() {
    let (server, flags) = serve(&config()).await;
    let client = RpcClient::connect(&addr(&server), &config()).await.unwrap();
    let start = Instant::now();
    let err = lab(&client, Duration::from_millis(100))
        .sleep(400)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(350),
        "{:?}",
        start.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !flags.finished.load(Ordering::SeqCst),
        "the method ran past its deadline"
    );
    assert_eq!(server.inflight(), 0);
    // The connection is still fine.
    assert_eq!(
        lab(&client, SECOND).echo("after".into()).await.unwrap(),
        "after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_cancels_it_on_the_server() {
    let (server, flags) = serve(&config()).await;
    let client = RpcClient::connect(&addr(&server), &config()).await.unwrap();
    let held = lab(&client, Duration::from_secs(60));
    let call = tokio::spawn(async move { held.hold().await });
    eventually("the method to start", || {
        flags.started.load(Ordering::SeqCst)
    })
    .await;
    assert!(!flags.dropped.load(Ordering::SeqCst));
    call.abort();
    eventually("the server to drop the method", || {
        flags.dropped.load(Ordering::SeqCst)
    })
    .await;
    eventually("no call in flight", || server.inflight() == 0).await;
    assert_eq!(
        lab(&client, SECOND).echo("next".into()).await.unwrap(),
        "next"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_that_call_only() {
    let (server, _) = serve(&config()).await;
    let client = RpcClient::connect(&addr(&server), &config()).await.unwrap();
    let lab = lab(&client, SECOND);
    let err = lab.boom().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
    assert_eq!(lab.echo("still here".into()).await.unwrap(), "still here");
    assert!(!client.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_not_found() {
    let (server, _) = serve(&config()).await;
    let client = RpcClient::connect(&addr(&server), &config()).await.unwrap();
    let call = mod_api::Call {
        service: "nobody",
        method: "nothing",
        idempotent: false,
        payload: Vec::new(),
        context: CallContext::new(),
    };
    let err = client.call(call, SECOND).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secret_is_required() {
    let secured = RpcConfig {
        secret: Some("open sesame".into()),
        ..config()
    };
    let (server, _) = serve(&secured).await;
    let client = RpcClient::connect(&addr(&server), &secured).await.unwrap();
    assert_eq!(lab(&client, SECOND).echo("in".into()).await.unwrap(), "in");

    let wrong = RpcConfig {
        secret: Some("open sesamE".into()),
        ..config()
    };
    let err = RpcClient::connect(&addr(&server), &wrong)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    let err = RpcClient::connect(&addr(&server), &config())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    // A raw connection that skips HELLO is closed too.
    let mut raw = TcpStream::connect(addr(&server)).await.unwrap();
    raw.write_all(&request_frame(1)).await.unwrap();
    expect_closed(&mut raw).await;
}

/// A HELLO without secret.
fn hello() -> Vec<u8> {
    let mut f = 10u32.to_be_bytes().to_vec();
    f.extend_from_slice(&[1, 1]);
    f.extend_from_slice(&0u64.to_be_bytes());
    f
}

/// A well-formed request of `echo("x")` for `test.Lab`.
fn request_frame(id: u64) -> Vec<u8> {
    let payload = mod_api::codec::encode(&("x".to_string(),)).unwrap();
    let mut body = vec![1u8, 2];
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&5000u32.to_be_bytes());
    for s in ["test.Lab", "echo"] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(&payload);
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    f
}

/// Opens a raw connection and completes the handshake.
async fn raw_session(addr: &str) -> TcpStream {
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&hello()).await.unwrap();
    // An OK response whose data is the server's idle timeout (u32, ms).
    let mut ack = [0u8; 19];
    raw.read_exact(&mut ack).await.unwrap();
    assert_eq!(
        &ack[..6],
        &[0, 0, 0, 15, 1, 3],
        "HELLO answered by an OK response"
    );
    assert_eq!(ack[14], 0);
    raw
}

/// The server closes the connection: reads end with EOF (or a reset, when the
/// server closed with our bytes still unread).
async fn expect_closed(raw: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let closed = async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("unexpected read error {e}"),
            }
        }
    };
    tokio::time::timeout(SECOND, closed)
        .await
        .expect("the server should close the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_close_only_their_connection() {
    let (server, _) = serve(&config()).await;
    let addr = addr(&server);
    let client = RpcClient::connect(&addr, &config()).await.unwrap();
    let lab = lab(&client, SECOND);

    // Garbage instead of HELLO.
    let mut raw = TcpStream::connect(&addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    expect_closed(&mut raw).await;

    // Garbage after a good handshake: a frame of another version.
    let mut raw = raw_session(&addr).await;
    raw.write_all(&[0, 0, 0, 12, 9, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0])
        .await
        .unwrap();
    expect_closed(&mut raw).await;

    // A request with a service length pointing past the frame.
    let mut raw = raw_session(&addr).await;
    let mut bad = request_frame(1);
    bad[18] = 0xff;
    raw.write_all(&bad).await.unwrap();
    expect_closed(&mut raw).await;

    // A truncated frame: the length promises more than arrives before EOF.
    let mut raw = raw_session(&addr).await;
    let frame = request_frame(1);
    raw.write_all(&frame[..frame.len() - 3]).await.unwrap();
    raw.shutdown().await.unwrap();
    expect_closed(&mut raw).await;

    // An oversized length prefix.
    let mut raw = raw_session(&addr).await;
    raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    expect_closed(&mut raw).await;

    // A raw request that is fine gets its answer.
    let mut raw = raw_session(&addr).await;
    raw.write_all(&request_frame(42)).await.unwrap();
    let mut head = [0u8; 15];
    raw.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[4..14], &[1, 3, 0, 0, 0, 0, 0, 0, 0, 42]);
    assert_eq!(head[14], 0, "status OK");

    // The server and the other connection are unaffected.
    assert_eq!(lab.echo("fine".into()).await.unwrap(), "fine");
    let other = RpcClient::connect(&addr, &config()).await.unwrap();
    assert_eq!(
        self::lab(&other, SECOND).echo("new".into()).await.unwrap(),
        "new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_payload_too_large_and_connection_survives() {
    let (server, _) = serve(&config()).await;
    let small = RpcConfig {
        max_frame_bytes: 1024,
        ..config()
    };
    let client = RpcClient::connect(&addr(&server), &small).await.unwrap();
    let lab = lab(&client, SECOND);
    let err = lab.size(vec![0u8; 4096]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    assert!(!client.is_closed());
    assert_eq!(lab.size(vec![0u8; 100]).await.unwrap(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_the_server_limit_closes_that_connection() {
    let small = RpcConfig {
        max_frame_bytes: 1024,
        ..config()
    };
    let (server, _) = serve(&small).await;
    let client = RpcClient::connect(&addr(&server), &config()).await.unwrap();
    let err = lab(&client, SECOND)
        .size(vec![0u8; 4096])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    eventually("the client to notice", || client.is_closed()).await;
    let fresh = RpcClient::connect(&addr(&server), &config()).await.unwrap();
    assert_eq!(lab(&fresh, SECOND).size(vec![0u8; 100]).await.unwrap(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_calls_in_flight_finish() {
    let (server, flags) = serve(&config()).await;
    let client = RpcClient::connect(&addr(&server), &config()).await.unwrap();
    let slow = lab(&client, SECOND);
    let call = tokio::spawn(async move { slow.sleep(300).await });
    eventually("the call to start", || server.inflight() == 1).await;
    let start = Instant::now();
    server.shutdown(SECOND).await;
    assert!(start.elapsed() < Duration::from_secs(2));
    call.await.unwrap().expect("the call in flight finishes");
    assert!(flags.finished.load(Ordering::SeqCst));
    eventually("the client to see GOAWAY", || client.is_closed()).await;
    let err = lab(&client, SECOND).echo("late".into()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(not_sent(&err));
    let err = RpcClient::connect(&addr(&server), &config())
        .await
        .unwrap_err();
    assert!(not_sent(&err), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_the_wait() {
    let (server, flags) = serve(&config()).await;
    let client = RpcClient::connect(&addr(&server), &config()).await.unwrap();
    let held = lab(&client, Duration::from_secs(60));
    let call = tokio::spawn(async move { held.hold().await });
    eventually("the call to start", || flags.started.load(Ordering::SeqCst)).await;
    let start = Instant::now();
    server.shutdown(Duration::from_millis(200)).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    eventually("the method to be dropped", || {
        flags.dropped.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_server_fails_pending_calls_as_unavailable() {
    let (server, flags) = serve(&config()).await;
    let client = RpcClient::connect(&addr(&server), &config()).await.unwrap();
    let held = lab(&client, Duration::from_secs(60));
    let call = tokio::spawn(async move { held.hold().await });
    eventually("the call to start", || flags.started.load(Ordering::SeqCst)).await;
    drop(server);
    let err = tokio::time::timeout(SECOND, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(!not_sent(&err), "that request did leave the client");
    assert!(client.is_closed());
    let err = lab(&client, SECOND).echo("x".into()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(not_sent(&err), "a call on a dead connection never leaves");
    eventually("the method to be dropped", || {
        flags.dropped.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_cached_and_replaced_when_closed() {
    let (server, _) = serve(&config()).await;
    let addr = addr(&server);
    let pool = RpcConnections::new(config());
    let a = pool.get(&addr).await.unwrap();
    let b = pool.get(&addr).await.unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    drop(server);
    eventually("the connection to close", || a.is_closed()).await;
    // A new server on the same address: the pool reconnects.
    let start = Instant::now();
    let server = loop {
        let listen = RpcConfig {
            listen: addr.clone(),
            ..config()
        };
        let flags = Arc::new(Flags::default());
        let services = DispatchTable::new();
        services.serve::<dyn Lab>(Arc::new(LabImpl(flags)));
        match RpcServer::bind(&listen, services).await {
            Ok(s) => break s,
            Err(e) if start.elapsed() < SECOND => {
                tracing::debug!(error = %e, "port not free yet");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("rebind: {e}"),
        }
    };
    let c = pool.get(&addr).await.unwrap();
    assert!(!c.is_closed());
    assert_eq!(lab(&c, SECOND).echo("again".into()).await.unwrap(), "again");
    drop(server);
}

#[tokio::test]
async fn every_server_answers_the_health_probe() {
    let (server, _) = serve(&config()).await;
    let pool = RpcConnections::new(config());
    let timeout = Duration::from_millis(500);
    let held = lab(&pool.get(&addr(&server)).await.unwrap(), timeout);
    let holding = tokio::spawn(async move { held.hold().await });
    eventually("the held call runs", || server.inflight() == 1).await;

    let report = mod_distribute::rpc::probe(&pool, &addr(&server), timeout)
        .await
        .expect("probe");
    assert_eq!(report.services, ["test.Lab"]);
    assert_eq!((report.in_flight, report.shutting_down), (1, false));
    assert!(report.connections >= 1, "{report:?}");
    holding.abort();

    // Nobody at the address: an Unavailable error naming it, within the deadline.
    let gone = addr(&server);
    drop(server);
    let start = Instant::now();
    let err = mod_distribute::rpc::probe(&RpcConnections::new(config()), &gone, timeout)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(start.elapsed() < timeout + Duration::from_millis(200));
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_fails_the_probe_in_time() {
    // A listener that takes the connection and never speaks: what a frozen process looks like.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = silent.local_addr().unwrap().to_string();
    let start = Instant::now();
    let err = mod_distribute::rpc::probe(
        &RpcConnections::new(config()),
        &at,
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(1),
        "{took:?}"
    );
    drop(silent);
}
