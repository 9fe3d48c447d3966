//! The serving side of the subscription: what a controller runs so that
//! [`Follower`](super::Follower)s (and the proxy) learn each commit at once.

use super::{write_update, Alert, Topology, Update, HEARTBEAT};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mod_api::{Error, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// Subscribers beyond this many are turned away (each costs a task).
const MAX_SUBSCRIBERS: usize = 4096;
/// A subscriber that does not take a line within this is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves a topology and alerts on a TCP port; stops when dropped.
pub struct Publisher {
    topology: watch::Sender<Topology>,
    serving: watch::Sender<bool>,
    alerts: broadcast::Sender<Alert>,
    addr: std::net::SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Publisher {
    /// Listens on `addr` (`host:port`; port 0 picks a free one).
    pub async fn bind(addr: &str) -> Result<Publisher> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::config(format!("cannot listen on {addr}")).with_source(e))?;
        let addr = listener.local_addr()?;
        let topology = watch::channel(Topology::default()).0;
        let serving = watch::channel(true).0;
        let alerts = broadcast::channel(256).0;
        let accept = tokio::spawn(accept(
            listener,
            topology.clone(),
            serving.clone(),
            alerts.clone(),
        ));
        Ok(Publisher {
            topology,
            serving,
            alerts,
            addr,
            accept,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Sends `topology` to every subscriber now (and to later ones first).
    pub fn publish(&self, topology: Topology) {
        self.topology.send_replace(topology);
    }

    /// Serves subscribers (the default) or not: off, every subscription is
    /// closed and new ones are turned away — what a controller that lost
    /// its majority does, so that nobody takes its topology for current.
    pub fn set_serving(&self, on: bool) {
        self.serving.send_if_modified(|serving| {
            let changed = *serving != on;
            *serving = on;
            changed
        });
    }

    /// Sends `alert` to every subscriber connected now.
    pub fn alert(&self, alert: Alert) {
        let _ = self.alerts.send(alert);
    }
}

async fn accept(
    listener: TcpListener,
    topology: watch::Sender<Topology>,
    serving: watch::Sender<bool>,
    alerts: broadcast::Sender<Alert>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "topology listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !*serving.borrow() {
            tracing::debug!("topology subscriber turned away: not serving");
            continue;
        }
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_SUBSCRIBERS {
            open.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(
                max = MAX_SUBSCRIBERS,
                "topology subscriber refused: too many"
            );
            continue;
        }
        let (changes, alerts, open) = (topology.subscribe(), alerts.subscribe(), open.clone());
        let serving = serving.subscribe();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, changes, serving, alerts).await {
                tracing::debug!(error = %e, "topology subscriber gone");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

async fn serve(
    mut stream: TcpStream,
    mut changes: watch::Receiver<Topology>,
    mut serving: watch::Receiver<bool>,
    mut alerts: broadcast::Receiver<Alert>,
) -> Result<()> {
    stream.set_nodelay(true)?;
    // The topology goes out first, on every change and as the heartbeat;
    // an alert goes out alone.
    let mut topology_due = true;
    loop {
        if topology_due {
            let current = changes.borrow_and_update().clone();
            send(&mut stream, &Update::Topology(current)).await?;
        }
        topology_due = tokio::select! {
            changed = changes.changed() => match changed {
                Ok(()) => true,
                Err(_) => return Ok(()),
            },
            alert = alerts.recv() => match alert {
                Ok(alert) => {
                    send(&mut stream, &Update::Alert(alert)).await?;
                    false
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "topology subscriber too slow for the alerts");
                    false
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            changed = serving.changed() => {
                let on = changed.is_ok() && *serving.borrow_and_update();
                if !on {
                    return Ok(());
                }
                false
            }
            _ = tokio::time::sleep(HEARTBEAT) => true,
        };
    }
}

async fn send(stream: &mut TcpStream, update: &Update) -> Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, write_update(stream, update))
        .await
        .map_err(|_| Error::timeout("topology subscriber does not read"))?
}
