//! The stable endpoint for clients that are not modkit (`redis-cli`, other
//! languages): a TCP proxy on a fixed address that forwards each connection
//! to the primary of the highest committed epoch.
//!
//! When the epoch changes, every forwarded connection is closed (its client
//! reconnects and lands on the new primary, as after any Redis restart).
//! When no controller has been heard for three heartbeats, the proxy closes
//! its connections and refuses new ones: the primary it knows may have been
//! replaced, and forwarding to a fenced node is worse than failing.

use std::time::Duration;

use mod_api::{Error, Result};
use mod_distribute::topology::Follower;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};

/// How long dialling the primary may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a forwarded connection checks contact with the controllers.
const CONTACT_CHECK: Duration = Duration::from_millis(100);

/// A running proxy; dropping it stops accepting (open connections end with
/// their clients).
pub struct Proxy {
    addr: std::net::SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Proxy {
    /// Listens on `listen` and forwards to the primary `follower` names.
    pub async fn start(listen: &str, follower: Follower) -> Result<Proxy> {
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            Error::config(format!("proxy: cannot listen on {listen}")).with_source(e)
        })?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "redis proxy listening");
        let accept = tokio::spawn(accept(listener, follower));
        Ok(Proxy { addr, accept })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

async fn accept(listener: TcpListener, follower: Follower) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::warn!(error = %e, "proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let follower = follower.clone();
        tokio::spawn(async move {
            if let Err(e) = forward(client, follower).await {
                tracing::debug!(error = %e, "proxy: connection ended");
            }
        });
    }
}

async fn forward(mut client: TcpStream, follower: Follower) -> Result<()> {
    if !follower.in_contact() {
        return Err(Error::unavailable(
            "proxy: no controller heard; not forwarding",
        ));
    }
    let topology = follower.topology();
    let Some(primary) = topology.primary.clone() else {
        return Err(Error::unavailable("proxy: no committed primary"));
    };
    let mut upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&primary))
        .await
        .map_err(|_| Error::timeout("proxy: primary does not answer"))??;
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let mut changes = follower.watch();
    let moved = async {
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() || changes.borrow().epoch != topology.epoch {
                        return "epoch changed";
                    }
                }
                _ = tokio::time::sleep(CONTACT_CHECK) => {
                    if !follower.in_contact() {
                        return "controllers lost";
                    }
                }
            }
        }
    };
    tokio::select! {
        copied = copy_bidirectional(&mut client, &mut upstream) => { copied?; }
        why = moved => tracing::info!(why, epoch = topology.epoch, %primary, "proxy: closing a forwarded connection"),
    }
    Ok(())
}
