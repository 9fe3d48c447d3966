//! The RPC server's resource bounds, over real sockets to a real `RpcServer`:
//! reply backpressure, calls per connection, idle connections and keepalive,
//! the connection cap, half-sent frames, and the client's size check.
//!
//! The tests of this file run one at a time (see `serial`): the reply flood
//! measures the process's memory, which the others would disturb.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_api::{async_trait, service, DispatchTable, Error, ErrorKind};
use mod_distribute::rpc::{not_sent, RpcClient, RpcServer, RpcTransport};
use mod_distribute::RpcConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// The test service.
#[service(crate = mod_api, name = "test.Limits")]
pub trait Limited {
    /// A reply of `len` bytes.
    async fn blob(&self, len: u32) -> Result<String, Error>;
    /// Waits for a permit of the gate.
    async fn gated(&self) -> Result<(), Error>;
    async fn echo(&self, text: String) -> Result<String, Error>;
    async fn sleep(&self, ms: u64) -> Result<(), Error>;
}

struct Impl {
    gate: Arc<Semaphore>,
}

#[async_trait]
impl Limited for Impl {
    async fn blob(&self, len: u32) -> Result<String, Error> {
        Ok("x".repeat(len as usize))
    }

    async fn gated(&self) -> Result<(), Error> {
        self.gate
            .acquire()
            .await
            .map_err(|_| Error::unavailable("gate closed"))?
            .forget();
        Ok(())
    }

    async fn echo(&self, text: String) -> Result<String, Error> {
        Ok(text)
    }

    async fn sleep(&self, ms: u64) -> Result<(), Error> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    }
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serve(config: &RpcConfig) -> (RpcServer, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let svc = Arc::new(Impl { gate: gate.clone() });
    let services = DispatchTable::new();
    services.serve::<dyn Limited>(svc);
    (RpcServer::bind(config, services).await.unwrap(), gate)
}

fn addr(server: &RpcServer) -> String {
    server.local_addr().to_string()
}

fn client(c: &RpcClient) -> LimitedClient {
    LimitedClient::new(Arc::new(RpcTransport::new(c.clone(), FIVE)))
}

const FIVE: Duration = Duration::from_secs(5);

async fn eventually(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A request frame for `test.Limits::<method>` with encoded `args`.
fn request(id: u64, method: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![1u8, 2];
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&5000u32.to_be_bytes());
    for s in ["test.Limits", method] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(payload);
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    f
}

/// Opens a raw connection and completes the handshake.
async fn raw_session(addr: &str) -> TcpStream {
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let mut hello = 10u32.to_be_bytes().to_vec();
    hello.extend_from_slice(&[1, 1]);
    hello.extend_from_slice(&0u64.to_be_bytes());
    raw.write_all(&hello).await.unwrap();
    let (id, status, _) = read_response(&mut raw).await.unwrap();
    assert_eq!((id, status), (0, 0), "HELLO accepted");
    raw
}

/// Reads one response frame: call id, status, data length.
async fn read_response(raw: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(u64, u8, usize)> {
    let mut head = [0u8; 15];
    raw.read_exact(&mut head).await?;
    let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
    assert_eq!(head[5], 3, "a RESPONSE");
    let id = u64::from_be_bytes(head[6..14].try_into().unwrap());
    let mut data = vec![0u8; len - 11];
    raw.read_exact(&mut data).await?;
    Ok((id, head[14], data.len()))
}

/// Whether the server closed the connection (EOF or reset) within `within`.
async fn closed_within(raw: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let closed = async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(within, closed).await.is_ok()
}

/// This process's resident memory, in bytes (the server runs in it).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

const REPLY: u32 = 256 * 1024;
const FLOOD: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_held_to_the_reply_queue_limit() {
    let _one = SERIAL.lock().await;
    let config = RpcConfig::default();
    assert_eq!(
        config.max_queued_reply_bytes,
        8 << 20,
        "the default under test"
    );
    let (server, _) = serve(&config).await;
    let addr = addr(&server);
    let good = RpcClient::connect(&addr, &config).await.unwrap();
    // Warm up the allocator with one large reply before the baseline.
    assert_eq!(
        client(&good).blob(REPLY).await.unwrap().len(),
        REPLY as usize
    );
    let before = rss();

    // 1000 requests for 256 KiB each: 250 MiB owed, never read (for now).
    let flood = raw_session(&addr).await;
    let payload = mod_api::codec::encode(&(REPLY,)).unwrap();
    let frames: Vec<u8> = (1..=FLOOD)
        .flat_map(|id| request(id, "blob", &payload))
        .collect();
    let (mut rd, mut wr) = flood.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(&frames).await.unwrap();
        wr
    });
    let mut peak = before;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(rss());
    }
    // Meanwhile another client is served.
    assert_eq!(client(&good).echo("still".into()).await.unwrap(), "still");
    peak = peak.max(rss());
    let growth = peak.saturating_sub(before);
    eprintln!(
        "reply flood: RSS {} MiB before, peak {} MiB, growth {:.1} MiB (limit 8 MiB queued)",
        before >> 20,
        peak >> 20,
        growth as f64 / (1 << 20) as f64
    );
    assert!(
        growth < 64 << 20,
        "server memory grew by {growth} bytes with a reply queue limit of 8 MiB"
    );

    // The flooding client now reads: every reply it was owed arrives, in full.
    let mut seen = vec![false; FLOOD as usize + 1];
    for _ in 0..FLOOD {
        let (id, status, len) = tokio::time::timeout(FIVE, read_response(&mut rd))
            .await
            .expect("a reply")
            .unwrap();
        assert_eq!(status, 0, "call {id} succeeded");
        assert!(len > REPLY as usize, "call {id}: the whole reply");
        assert!(!seen[id as usize], "call {id} answered once");
        seen[id as usize] = true;
    }
    assert!(seen[1..].iter().all(|&s| s), "no accepted call was dropped");
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_reads_none_of_its_replies_is_closed_after_the_idle_timeout() {
    let _one = SERIAL.lock().await;
    let config = RpcConfig {
        idle_timeout: Duration::from_secs(1),
        ..RpcConfig::default()
    };
    let (server, _) = serve(&config).await;
    let addr = addr(&server);
    let good = RpcClient::connect(&addr, &config).await.unwrap();
    let mut stuck = raw_session(&addr).await;
    let opened = Instant::now();
    let payload = mod_api::codec::encode(&(REPLY,)).unwrap();
    let frames: Vec<u8> = (1..=200)
        .flat_map(|id| request(id, "blob", &payload))
        .collect();
    stuck.write_all(&frames).await.unwrap();
    // Not read from: reading would be progress.
    eventually("the server to close the stuck connection", FIVE, || {
        server.connections() == 1
    })
    .await;
    assert!(
        opened.elapsed() >= config.idle_timeout,
        "not before the timeout"
    );
    assert!(
        closed_within(&mut stuck, FIVE).await,
        "closed for the peer too"
    );
    // The other client, idle meanwhile but pinging, is served.
    assert_eq!(client(&good).echo("here".into()).await.unwrap(), "here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_per_connection_are_bounded_by_backpressure() {
    let _one = SERIAL.lock().await;
    let config = RpcConfig {
        max_calls_per_connection: 4,
        ..RpcConfig::default()
    };
    let (server, gate) = serve(&config).await;
    let mut raw = raw_session(&addr(&server)).await;
    let payload = mod_api::codec::encode(&()).unwrap();
    let frames: Vec<u8> = (1..=10)
        .flat_map(|id| request(id, "gated", &payload))
        .collect();
    raw.write_all(&frames).await.unwrap();
    eventually("4 calls to run", FIVE, || server.inflight() == 4).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.inflight(), 4, "no more than the limit run at once");
    gate.add_permits(10);
    let mut ids: Vec<u64> = Vec::new();
    for _ in 0..10 {
        let (id, status, _) = tokio::time::timeout(FIVE, read_response(&mut raw))
            .await
            .expect("a reply")
            .unwrap();
        assert_eq!(status, 0);
        ids.push(id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>(), "every call ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_keepalive_keeps_clients() {
    let _one = SERIAL.lock().await;
    let config = RpcConfig {
        idle_timeout: Duration::from_secs(1),
        ..RpcConfig::default()
    };
    let (server, _) = serve(&config).await;
    let addr = addr(&server);
    let pooled = RpcClient::connect(&addr, &config).await.unwrap();
    let mut idle = Vec::new();
    let before = rss();
    let opened = Instant::now();
    // About what once exhausted the descriptors and locked every client out.
    for _ in 0..1000 {
        idle.push(raw_session(&addr).await);
    }
    // Both ends live in this process: the server's share is at most this.
    let grown = rss().saturating_sub(before);
    eprintln!("1000 idle connections: RSS grew by {} KiB", grown / 1024);
    // Measured 14 MiB (a 4 KiB read buffer each; it grows only when busy).
    assert!(
        grown < 32 << 20,
        "1000 idle connections cost {} MiB",
        grown >> 20
    );
    for raw in &mut idle {
        assert!(
            closed_within(raw, FIVE).await,
            "an idle connection is closed by the server"
        );
    }
    assert!(
        opened.elapsed() >= config.idle_timeout,
        "not before the idle timeout"
    );
    eventually("the server to let them go", FIVE, || {
        server.connections() == 1
    })
    .await;
    // A raw connection that sends only PINGs is kept too.
    let mut pinger = raw_session(&addr).await;
    let ping = [0, 0, 0, 10, 1, 6, 0, 0, 0, 0, 0, 0, 0, 0];
    for _ in 0..10 {
        pinger.write_all(&ping).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Meanwhile the client's own pings kept its connection, idle for 2.5 timeouts.
    assert!(!pooled.is_closed());
    assert_eq!(client(&pooled).echo("alive".into()).await.unwrap(), "alive");
    assert_eq!(server.connections(), 2, "the same connections");
    let payload = mod_api::codec::encode(&("raw".to_string(),)).unwrap();
    pinger
        .write_all(&request(7, "echo", &payload))
        .await
        .unwrap();
    let (id, status, _) = read_response(&mut pinger).await.unwrap();
    assert_eq!((id, status), (7, 0), "the pinging connection still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_and_the_others_served() {
    let _one = SERIAL.lock().await;
    let config = RpcConfig {
        max_connections: 8,
        ..RpcConfig::default()
    };
    let (server, _) = serve(&config).await;
    let addr = addr(&server);
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(RpcClient::connect(&addr, &config).await.unwrap());
    }
    let err = RpcClient::connect(&addr, &config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(not_sent(&err));
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(
            client(c).echo(format!("{i}")).await.unwrap(),
            format!("{i}")
        );
    }
    // A slot freed is a slot usable again.
    clients.pop();
    eventually("the server to drop the closed connection", FIVE, || {
        server.connections() == 7
    })
    .await;
    let again = RpcClient::connect(&addr, &config).await.unwrap();
    assert_eq!(client(&again).echo("in".into()).await.unwrap(), "in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_sent_one_byte_at_a_time_is_cut_off() {
    let _one = SERIAL.lock().await;
    let config = RpcConfig {
        frame_timeout: Duration::from_millis(500),
        ..RpcConfig::default()
    };
    let (server, _) = serve(&config).await;
    let addr = addr(&server);
    let (mut rd, mut wr) = raw_session(&addr).await.into_split();
    // A header announcing 100 bytes of body, then the body 1 byte / 100 ms:
    // 10 s to finish it at that pace.
    let start = Instant::now();
    wr.write_all(&100u32.to_be_bytes()).await.unwrap();
    wr.write_all(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 1]).await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..90 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if wr.write_all(&[0]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 64];
    let end = tokio::time::timeout(FIVE, rd.read(&mut buf)).await;
    let after = start.elapsed();
    assert!(
        matches!(end, Ok(Ok(0)) | Ok(Err(_))),
        "the server closes the connection: {end:?}"
    );
    assert!(
        after >= Duration::from_millis(500),
        "not before the frame timeout"
    );
    trickle.abort();
    let good = RpcClient::connect(&addr, &config).await.unwrap();
    assert_eq!(client(&good).echo("fine".into()).await.unwrap(), "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_fails_alone_before_the_wire() {
    let _one = SERIAL.lock().await;
    let (server, _) = serve(&RpcConfig::default()).await;
    let small = RpcConfig {
        max_frame_bytes: 1024,
        ..RpcConfig::default()
    };
    let c = RpcClient::connect(&addr(&server), &small).await.unwrap();
    let svc = client(&c);
    let slow = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.sleep(200).await })
    };
    eventually("the slow call to run", FIVE, || server.inflight() == 1).await;
    let err = svc.echo("y".repeat(4096)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    assert!(!err.is_retryable(), "a retry would fail the same way");
    assert!(not_sent(&err), "the request never left the client");
    slow.await
        .unwrap()
        .expect("the call in flight is unaffected");
    assert!(!c.is_closed());
    assert_eq!(svc.echo("small".into()).await.unwrap(), "small");
}
