//! TLS of the RPC transport over real sockets, with certificates made at run
//! time by rcgen (nothing secret is committed): TLS and mutual TLS between a
//! client and a server, refusals as typed errors while the server lives on,
//! two distributed nodes over TLS, and the refusal to listen exposed in clear.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use mod_api::config::{InvokeConfig, RegistryConfig};
use mod_api::testkit::eventually;
use mod_api::{async_trait, service, Backend, Config, DispatchTable, Error, ErrorKind};
use mod_distribute::rpc::{not_sent, RpcClient, RpcServer, RpcTransport};
use mod_distribute::{Distributed, RedisServer};
use mod_distribute::{RedisConfig, RpcConfig, RpcTlsConfig};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod pki;
use pki::Pki;
use rcgen::ExtendedKeyUsagePurpose;

#[service(crate = mod_api, name = "test.Tls")]
pub trait Secure {
    #[idempotent]
    async fn echo(&self, text: String) -> Result<String, Error>;
    /// A reply of `len` bytes.
    async fn blob(&self, len: u32) -> Result<String, Error>;
}

struct Impl;

#[async_trait]
impl Secure for Impl {
    async fn echo(&self, text: String) -> Result<String, Error> {
        Ok(text)
    }

    async fn blob(&self, len: u32) -> Result<String, Error> {
        Ok("x".repeat(len as usize))
    }
}

const FIVE: Duration = Duration::from_secs(5);

fn server_config(pki: &Pki, client_ca: Option<&Path>) -> RpcConfig {
    let (cert, key) = pki.server();
    RpcConfig {
        tls: Some(RpcTlsConfig {
            cert: Some(cert),
            key: Some(key),
            client_ca: client_ca.map(Path::to_path_buf),
            ..RpcTlsConfig::default()
        }),
        ..RpcConfig::default()
    }
}

fn client_config(ca: &Path, identity: Option<(PathBuf, PathBuf)>) -> RpcConfig {
    let (client_cert, client_key) = identity.unzip();
    RpcConfig {
        tls: Some(RpcTlsConfig {
            ca: Some(ca.to_path_buf()),
            client_cert,
            client_key,
            ..RpcTlsConfig::default()
        }),
        ..RpcConfig::default()
    }
}

async fn serve(config: &RpcConfig) -> RpcServer {
    let services = DispatchTable::new();
    services.serve::<dyn Secure>(Arc::new(Impl));
    RpcServer::bind(config, services).await.unwrap()
}

fn secure(client: &RpcClient) -> SecureClient {
    SecureClient::new(Arc::new(RpcTransport::new(client.clone(), FIVE)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_tls_work_small_large_and_concurrent() {
    let pki = Pki::new("test ca");
    let secret = Some("inside tls".to_string());
    let server = serve(&RpcConfig {
        secret: secret.clone(),
        ..server_config(&pki, None)
    })
    .await;
    let config = RpcConfig {
        secret,
        ..client_config(&pki.path("ca.pem"), None)
    };
    // By IP address (the certificate names 127.0.0.1) and by DNS name.
    let port = server.local_addr().port();
    for addr in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let client = RpcClient::connect(&addr, &config).await.unwrap();
        let svc = secure(&client);
        assert_eq!(svc.echo("hello".into()).await.unwrap(), "hello");
        // Larger than the read buffer and rustls's buffer, both ways.
        let big = "z".repeat(700_000);
        assert_eq!(svc.echo(big.clone()).await.unwrap(), big);
        let calls = (0..200).map(|i| {
            let svc = svc.clone();
            async move { (i, svc.echo(format!("call {i}")).await) }
        });
        for (i, reply) in join_all(calls).await {
            assert_eq!(reply.unwrap(), format!("call {i}"));
        }
    }
}

/// A request frame for `test.Tls::<method>`.
fn request(id: u64, method: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![1u8, 2];
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&5000u32.to_be_bytes());
    for s in ["test.Tls", method] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(payload);
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    f
}

/// Reads one frame: call id, kind, body length.
async fn read_frame(rd: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(u64, u8, usize)> {
    let mut head = [0u8; 14];
    rd.read_exact(&mut head).await?;
    let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; len - 10];
    rd.read_exact(&mut rest).await?;
    Ok((
        u64::from_be_bytes(head[6..14].try_into().unwrap()),
        head[5],
        len,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_over_tls_delivers_every_reply() {
    let pki = Pki::new("test ca");
    let server = serve(&server_config(&pki, None)).await;
    // A raw TLS client, so that it can send a flood and not read for a while.
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut hello = 10u32.to_be_bytes().to_vec();
    hello.extend_from_slice(&[1, 1]);
    hello.extend_from_slice(&0u64.to_be_bytes());
    wr.write_all(&hello).await.unwrap();
    assert_eq!(read_frame(&mut rd).await.unwrap().0, 0, "HELLO accepted");
    // 300 replies of 256 KiB: 75 MiB, far past the 8 MiB reply queue.
    let payload = mod_api::codec::encode(&(256u32 * 1024,)).unwrap();
    let frames: Vec<u8> = (1..=300)
        .flat_map(|id| request(id, "blob", &payload))
        .collect();
    let writer = tokio::spawn(async move {
        wr.write_all(&frames).await.unwrap();
        wr.flush().await.unwrap();
        wr
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = vec![false; 301];
    for _ in 0..300 {
        let (id, kind, len) = tokio::time::timeout(FIVE, read_frame(&mut rd))
            .await
            .expect("a reply")
            .unwrap();
        assert_eq!(kind, 3, "a RESPONSE");
        assert!(len > 256 * 1024, "the whole reply");
        assert!(!std::mem::replace(&mut seen[id as usize], true), "once");
    }
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_certified_clients_only() {
    let pki = Pki::new("test ca");
    let other = Pki::new("another ca");
    let server = serve(&server_config(&pki, Some(&pki.path("ca.pem")))).await;
    let addr = server.local_addr().to_string();
    let ca = pki.path("ca.pem");

    let good = RpcClient::connect(&addr, &client_config(&ca, Some(pki.client())))
        .await
        .unwrap();
    assert_eq!(secure(&good).echo("in".into()).await.unwrap(), "in");

    let err = RpcClient::connect(&addr, &client_config(&ca, None))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Unauthenticated,
        "no client cert: {err}"
    );
    assert!(not_sent(&err));
    let err = RpcClient::connect(&addr, &client_config(&ca, Some(other.client())))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Unauthenticated,
        "cert of another CA: {err}"
    );

    // The server lives on, for the client it had and for new ones.
    assert_eq!(secure(&good).echo("still".into()).await.unwrap(), "still");
    let again = RpcClient::connect(&addr, &client_config(&ca, Some(pki.client())))
        .await
        .unwrap();
    assert_eq!(secure(&again).echo("again".into()).await.unwrap(), "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_another_ca_or_name_is_refused() {
    let pki = Pki::new("test ca");
    let other = Pki::new("another ca");
    let server = serve(&server_config(&pki, None)).await;
    let addr = server.local_addr().to_string();
    let err = RpcClient::connect(&addr, &client_config(&other.path("ca.pem"), None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    let mut named = client_config(&pki.path("ca.pem"), None);
    named.tls.as_mut().unwrap().server_name = Some("elsewhere.test".into());
    let err = RpcClient::connect(&addr, &named).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_tls_peers_do_not_mix_and_nothing_breaks() {
    let pki = Pki::new("test ca");
    let tls_server = serve(&server_config(&pki, None)).await;
    let tls_addr = tls_server.local_addr().to_string();
    let plain_server = serve(&RpcConfig::default()).await;
    let plain_addr = plain_server.local_addr().to_string();
    let tls_client = client_config(&pki.path("ca.pem"), None);

    // A plain client of a TLS server: refused with a typed error, no hang.
    let err = tokio::time::timeout(FIVE, RpcClient::connect(&tls_addr, &RpcConfig::default()))
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // Raw bytes that are no TLS: the connection is closed.
    let mut raw = TcpStream::connect(&tls_addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let end = tokio::time::timeout(FIVE, async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the server closes a non-TLS connection");
    // A TLS client of a plain server.
    let err = tokio::time::timeout(FIVE, RpcClient::connect(&plain_addr, &tls_client))
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // Both servers serve their own kind still.
    let c = RpcClient::connect(&tls_addr, &tls_client).await.unwrap();
    assert_eq!(secure(&c).echo("tls".into()).await.unwrap(), "tls");
    let c = RpcClient::connect(&plain_addr, &RpcConfig::default())
        .await
        .unwrap();
    assert_eq!(secure(&c).echo("plain".into()).await.unwrap(), "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_server_needs_tls_a_secret_or_insecure() {
    let exposed = RpcConfig {
        listen: "0.0.0.0:0".into(),
        ..RpcConfig::default()
    };
    let lookup = DispatchTable::new();
    let err = RpcServer::bind(&exposed, lookup.clone()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let message = err.to_string();
    for hint in ["[rpc.tls]", "rpc.secret", "rpc.insecure = true"] {
        assert!(
            message.contains(hint),
            "the error says how to fix it: {message}"
        );
    }
    let insecure = RpcConfig {
        insecure: true,
        ..exposed.clone()
    };
    RpcServer::bind(&insecure, lookup.clone()).await.unwrap();
    let secret = RpcConfig {
        secret: Some("s".into()),
        ..exposed.clone()
    };
    RpcServer::bind(&secret, lookup.clone()).await.unwrap();
    let pki = Pki::new("test ca");
    let tls = RpcConfig {
        listen: exposed.listen.clone(),
        ..server_config(&pki, None)
    };
    RpcServer::bind(&tls, lookup.clone()).await.unwrap();
    // Loopback stays allowed without either.
    RpcServer::bind(&RpcConfig::default(), lookup)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_tls_files_are_config_errors() {
    let pki = Pki::new("test ca");
    let mut config = server_config(&pki, None);
    config.tls.as_mut().unwrap().key = Some(pki.path("missing.key"));
    let lookup = DispatchTable::new();
    let err = RpcServer::bind(&config, lookup).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("missing.key"), "{err}");
    let err = RpcClient::connect("127.0.0.1:1", &client_config(&pki.path("nope.pem"), None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    // A node checks its TLS files when it starts, before it needs them.
    let node = Config::default().with_section(&client_config(&pki.path("nope.pem"), None));
    let err = Distributed::start(node).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_distributed_nodes_call_each_other_over_mutual_tls() {
    let redis = RedisServer::start().expect("redis-server");
    let pki = Pki::new("deployment ca");
    // One certificate for both nodes: it names the host they share.
    let (cert, key) = pki.issue(
        "node",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = pki.client();
    let tls = RpcTlsConfig {
        cert: Some(cert),
        key: Some(key),
        ca: Some(pki.path("ca.pem")),
        client_ca: Some(pki.path("ca.pem")),
        client_cert: Some(client_cert),
        client_key: Some(client_key),
        server_name: None,
    };
    let node = |id: &str, host: &[&str]| {
        Config {
            node_id: Some(id.into()),
            registry: RegistryConfig {
                ttl: Duration::from_secs(5),
                sweep: Duration::from_millis(100),
            },
            invoke: InvokeConfig {
                host: Some(host.iter().map(|s| s.to_string()).collect()),
                colocate: false,
                ..InvokeConfig::default()
            },
            ..Config::default()
        }
        .with_section(&RpcConfig {
            tls: Some(tls.clone()),
            ..RpcConfig::default()
        })
        .with_section(&RedisConfig {
            url: redis.url(),
            prefix: "tls".into(),
            ..RedisConfig::default()
        })
    };
    let a = Distributed::start(node("a", &["test.Tls"])).await.unwrap();
    a.container()
        .provide::<dyn Secure>(Arc::new(Impl))
        .await
        .unwrap();
    let b = Distributed::start(node("b", &[])).await.unwrap();
    b.container()
        .provide::<dyn Secure>(Arc::new(Impl))
        .await
        .unwrap();
    let svc = b.container().get::<dyn Secure>().unwrap();
    eventually("b reaches a over TLS", Duration::from_secs(10), || {
        let svc = svc.clone();
        async move { svc.echo("over tls".into()).await.is_ok() }
    })
    .await;
    assert_eq!(svc.echo("again".into()).await.unwrap(), "again");
    // A's server speaks TLS only: a plain client is turned away.
    let addr = a.rpc_address().await.unwrap();
    let err = RpcClient::connect(&addr, &RpcConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    b.shutdown(FIVE).await;
    a.shutdown(FIVE).await;
}
