//! What both bench targets share: the echo services (modkit and tarpc), the
//! node configuration and the payload.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mod_distribute::Distributed;
use modkit::distribute::RpcConfig;
use modkit::{async_trait, Backend, Error};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio::net::{TcpListener, TcpStream};

/// The payload size of every comparison.
pub const PAYLOAD: usize = 64;

/// A 64-byte payload.
pub fn payload() -> Vec<u8> {
    (0..PAYLOAD as u8).collect()
}

/// The modkit echo service.
#[modkit::service(name = "bench.Echo")]
pub trait Echo {
    /// Returns its argument.
    async fn echo(&self, payload: Vec<u8>) -> Result<Vec<u8>, Error>;
}

/// Implements both [`Echo`] and [`TarpcEcho`].
#[derive(Clone)]
pub struct EchoImpl;

#[async_trait]
impl Echo for EchoImpl {
    async fn echo(&self, payload: Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(payload)
    }
}

/// The same method as a tarpc service.
#[tarpc::service]
pub trait TarpcEcho {
    /// Returns its argument.
    async fn echo(payload: Vec<u8>) -> Vec<u8>;
}

impl TarpcEcho for EchoImpl {
    async fn echo(self, _: tarpc::context::Context, payload: Vec<u8>) -> Vec<u8> {
        payload
    }
}

#[path = "../node_config.rs"]
mod node;
pub use node::node_config;

/// Two nodes on one Redis: `server` serves [`Echo`], `client` only calls it.
pub struct EchoPair {
    pub server: Distributed,
    pub client: Distributed,
    pub echo: Arc<dyn Echo>,
}

impl EchoPair {
    pub async fn start(url: &str, prefix: &str) -> modkit::Result<EchoPair> {
        Self::start_with(url, prefix, RpcConfig::default()).await
    }

    /// Like [`start`](Self::start), both nodes' RPC configured by `rpc` (TLS).
    pub async fn start_with(url: &str, prefix: &str, rpc: RpcConfig) -> modkit::Result<EchoPair> {
        let node = |id: &str, host: &[&str]| node_config(url, prefix, id, host).with_section(&rpc);
        let server = Distributed::start(node("echo-a", &["bench.Echo"])).await?;
        server
            .container()
            .provide::<dyn Echo>(Arc::new(EchoImpl))
            .await?;
        let client = Distributed::start(node("echo-b", &[])).await?;
        let echo = client.container().get::<dyn Echo>()?;
        // The proxy learns the instance from its registry watch: wait for it.
        let mut last = None;
        for _ in 0..500 {
            match echo.echo(payload()).await {
                Ok(_) => {
                    return Ok(EchoPair {
                        server,
                        client,
                        echo,
                    })
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(last.unwrap_or_else(|| Error::unavailable("echo never answered")))
    }

    /// Deregisters the service and closes both nodes' connections.
    pub async fn shutdown(self) {
        self.server.shutdown(Duration::from_secs(1)).await;
        self.client.shutdown(Duration::from_secs(1)).await;
    }
}

/// Starts a tarpc echo server on loopback (TCP_NODELAY, bincode) and returns a
/// connected client. Every connection and request gets its own task: tarpc's
/// usual way to serve.
pub async fn tarpc_echo() -> std::io::Result<TarpcEchoClient> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let framed = Framed::new(stream, LengthDelimitedCodec::new());
            let transport = tarpc::serde_transport::new(framed, Bincode::default());
            let channel = BaseChannel::with_defaults(transport);
            tokio::spawn(
                channel
                    .execute(EchoImpl.serve())
                    .for_each(|call| async move {
                        tokio::spawn(call);
                    }),
            );
        }
    });
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let framed = Framed::new(stream, LengthDelimitedCodec::new());
    let transport = tarpc::serde_transport::new(framed, Bincode::default());
    Ok(TarpcEchoClient::new(tarpc::client::Config::default(), transport).spawn())
}
