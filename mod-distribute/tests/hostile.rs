//! Hostile and careless input, sent for real: over a socket to a real
//! `RpcServer`, or through the API to a real `redis-server`. Each test checks
//! that the process lives on, that a well-formed client is still served, and
//! that nothing accepted was lost.

use std::sync::Arc;
use std::time::Duration;

use mod_api::{
    async_trait, service, Backend, CachePolicy, Config, DispatchTable, Error, ErrorKind,
};
use mod_distribute::rpc::frame::{self, Frame, Request, Status};
use mod_distribute::rpc::{RpcClient, RpcServer, RpcTransport};
use mod_distribute::{Distributed, RedisServer};
use mod_distribute::{RedisConfig, RpcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[service(crate = mod_api, name = "test.Echo")]
pub trait Echo {
    async fn echo(&self, text: String) -> Result<String, Error>;
}

struct EchoImpl;

#[async_trait]
impl Echo for EchoImpl {
    async fn echo(&self, text: String) -> Result<String, Error> {
        Ok(text)
    }
}

async fn serve() -> RpcServer {
    let services = DispatchTable::new();
    services.serve::<dyn Echo>(Arc::new(EchoImpl));
    RpcServer::bind(&RpcConfig::default(), services)
        .await
        .unwrap()
}

/// Reads frames from `raw` until the response to `call_id` arrives.
async fn response(raw: &mut TcpStream, call_id: u64) -> (Status, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        while let Some((f, used)) = frame::decode(&buf, 1 << 20).expect("well-formed frames") {
            let found = match f {
                Frame::Response {
                    call_id: id,
                    status,
                    data,
                } if id == call_id => Some((status, data.to_vec())),
                _ => None,
            };
            buf.drain(..used);
            if let Some(found) = found {
                return found;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut chunk))
            .await
            .expect("a reply within 5 s")
            .expect("read");
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_bomb_in_a_request_is_an_error_for_that_call_only() {
    let server = serve().await;
    let addr = server.local_addr().to_string();
    let mut raw = TcpStream::connect(&addr).await.unwrap();
    let mut out = Vec::new();
    frame::encode_hello(&mut out, b"").unwrap();
    let bomb = mod_api::testkit::length_bomb();
    frame::encode_request(
        &mut out,
        &Request {
            call_id: 7,
            deadline_ms: 5000,
            service: "test.Echo",
            method: "echo",
            payload: &bomb,
        },
        1 << 20,
    )
    .unwrap();
    assert!(out.len() < 64, "the attack is a few dozen bytes");
    raw.write_all(&out).await.unwrap();
    let (status, data) = response(&mut raw, 7).await;
    assert_eq!(status, Status::Err);
    let err: Error = mod_api::codec::decode(&data).unwrap();
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");

    // The same connection still serves a good call, and so does a new client.
    let good = mod_api::codec::encode(&("still here".to_string(),)).unwrap();
    let mut next = Vec::new();
    let req = Request {
        call_id: 8,
        deadline_ms: 5000,
        service: "test.Echo",
        method: "echo",
        payload: &good,
    };
    frame::encode_request(&mut next, &req, 1 << 20).unwrap();
    raw.write_all(&next).await.unwrap();
    let (status, data) = response(&mut raw, 8).await;
    assert_eq!(status, Status::Ok);
    let reply: Result<String, Error> = mod_api::codec::decode(&data).unwrap();
    assert_eq!(reply.unwrap(), "still here");

    let client = RpcClient::connect(&addr, &RpcConfig::default())
        .await
        .unwrap();
    let echo = EchoClient::new(Arc::new(RpcTransport::new(client, Duration::from_secs(5))));
    assert_eq!(echo.echo("fine".into()).await.unwrap(), "fine");
}

/// A value above the configured maximum (600 MB, above Redis's own 512 MB
/// limit) is refused before it reaches the shared connection: a non-retryable
/// `PayloadTooLarge`, while concurrent calls on the same node all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_cache_value_never_reaches_redis() {
    let redis = RedisServer::start().expect("redis-server");
    let config = Config {
        ..Config::default()
    }
    .with_section(&RedisConfig {
        url: redis.url(),
        prefix: "hostile".into(),
        ..RedisConfig::default()
    });
    let node = Distributed::start(config).await.unwrap();
    let cache = node.cache::<String>("big", CachePolicy::new()).unwrap();
    let busy = {
        let cache = cache.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                cache.set(&format!("k{i}"), format!("v{i}")).await?;
                assert_eq!(cache.get(&format!("k{i}")).await?, Some(format!("v{i}")));
            }
            Ok::<_, Error>(())
        })
    };
    let huge = "x".repeat(600 * 1024 * 1024);
    let err = cache.set("huge", huge).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    assert!(
        !err.is_retryable(),
        "a caller that retries would loop forever"
    );
    busy.await.unwrap().expect("concurrent calls unaffected");
    assert_eq!(cache.get("huge").await.unwrap(), None);
}
