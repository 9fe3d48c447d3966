//! A caller's per-call deadline (`handle.with_timeout(d)`) on the RPC path: it
//! is the `deadline_ms` of the request frame (read here by a fake server that
//! answers with what it received), the default applies without one, and a
//! real server drops a call past it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_api::{async_trait, service, DispatchTable, Error, ErrorKind, ServiceExt};
use mod_distribute::rpc::frame::{self, Frame, Status};
use mod_distribute::rpc::{RpcClient, RpcServer, RpcTransport};
use mod_distribute::RpcConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `probe` answers with the deadline its request carried (fake server);
/// `wait` sleeps (real server).
#[service(crate = mod_api, name = "test.Deadline")]
pub trait Deadline {
    async fn probe(&self) -> Result<u32, Error>;
    async fn wait(&self, ms: u64) -> Result<(), Error>;
}

/// The default deadline of the transport in these tests.
const DEFAULT: Duration = Duration::from_secs(7);

/// A server that accepts one connection and answers each request with its
/// `deadline_ms`, encoded as the method's `Ok(u32)`.
async fn echo_deadline_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        loop {
            let mut used_total = 0;
            while let Some((frame, used)) =
                frame::decode(&buf[used_total..], 1 << 20).expect("a valid frame")
            {
                match frame {
                    Frame::Hello { .. } => frame::encode_hello_ok(&mut out, 0),
                    Frame::Request(req) => {
                        let reply = mod_api::codec::encode(&Ok::<u32, Error>(req.deadline_ms))
                            .expect("encode");
                        frame::encode_response(&mut out, req.call_id, Status::Ok, &reply);
                    }
                    _ => {}
                }
                used_total += used;
            }
            buf.drain(..used_total);
            if !out.is_empty() {
                sock.write_all(&out).await.expect("write");
                out.clear();
            }
            if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        }
    });
    addr
}

fn client_of(client: &RpcClient) -> Arc<dyn Deadline> {
    <dyn Deadline as mod_api::Service>::client(Arc::new(RpcTransport::new(client.clone(), DEFAULT)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_deadline_is_the_request_frames_deadline() {
    let addr = echo_deadline_server().await;
    let client = RpcClient::connect(&addr, &RpcConfig::default())
        .await
        .expect("connect");
    let svc = client_of(&client);

    let sent = svc
        .with_timeout(Duration::from_millis(250))
        .probe()
        .await
        .expect("probe");
    assert!(
        (200..=250).contains(&sent),
        "deadline_ms on the wire: {sent}"
    );

    // Without one, the transport's default travels.
    let sent = svc.probe().await.expect("probe");
    let default = DEFAULT.as_millis() as u32;
    assert!(
        (default - 1_000..=default).contains(&sent),
        "deadline_ms on the wire: {sent}"
    );

    // The last context set wins, in both directions.
    let sent = svc
        .with_timeout(Duration::from_millis(100))
        .with_timeout(Duration::from_secs(20))
        .probe()
        .await
        .expect("probe");
    assert!((19_000..=20_000).contains(&sent), "deadline_ms: {sent}");
}

struct Sleeper(Arc<AtomicBool>);

#[async_trait]
impl Deadline for Sleeper {
    async fn probe(&self) -> Result<u32, Error> {
        Ok(0)
    }

    async fn wait(&self, ms: u64) -> Result<(), Error> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_deadline_stops_the_call_on_the_server() {
    let finished = Arc::new(AtomicBool::new(false));
    let services = DispatchTable::new();
    services.serve::<dyn Deadline>(Arc::new(Sleeper(finished.clone())));
    let server = RpcServer::bind(&RpcConfig::default(), services)
        .await
        .expect("bind");
    let client = RpcClient::connect(&server.local_addr().to_string(), &RpcConfig::default())
        .await
        .expect("connect");
    let svc = client_of(&client);

    let start = Instant::now();
    let err = svc
        .with_timeout(Duration::from_millis(100))
        .wait(1_500)
        .await
        .expect_err("past its deadline");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(1_200),
        "{:?}",
        start.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1_800).saturating_sub(start.elapsed())).await;
    assert!(
        !finished.load(Ordering::SeqCst),
        "the method ran past the caller's deadline"
    );
    assert_eq!(server.inflight(), 0);

    // The handle it came from keeps the default deadline (7 s > 300 ms).
    svc.wait(300).await.expect("no per-call deadline");
    assert!(finished.load(Ordering::SeqCst));
}
