//! The server side: accepts connections and serves calls on them.
//!
//! Each connection runs in one task (see [`conn`](super::conn)); a call that has
//! to wait runs in a task of its own, so that a slow method never holds up the
//! others on the same connection, and its deadline, a CANCEL or a panic affect
//! that call only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::config::RpcConfig;
use mod_api::layer::Side;
use mod_api::{Dispatch, DispatchTable, Error, ErrorKind, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsStream};
use tracing::Instrument;

use super::conn::{self, ConnState};
use super::counted::counted;
use super::frame;
use super::limits::Limits;
use super::{health, stream, tls, HANDSHAKE_TIMEOUT};

/// How long [`RpcServer::shutdown`] lets writers flush after the grace period.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// State shared by the accept loop, the connections and their calls.
pub(crate) struct ServerShared {
    /// The services served, looked up per call (the container's table).
    pub(crate) services: DispatchTable,
    /// The built-in health service ([`health`](super::health)), served beside them.
    pub(crate) health: Arc<dyn Dispatch>,
    pub(crate) secret: Option<Vec<u8>>,
    pub(crate) max_frame: usize,
    pub(crate) limits: Limits,
    tls: Option<TlsAcceptor>,
    pub(crate) shutting_down: AtomicBool,
    stop_accept: Notify,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    conns_idle: Notify,
    /// Calls running on every connection (a [`CallGuard`](conn::CallGuard) each).
    pub(crate) inflight: AtomicUsize,
    pub(crate) calls_idle: Notify,
}

struct ConnEntry {
    /// `None` while a TLS connection is in its TLS handshake.
    state: Option<Arc<ConnState>>,
    task: AbortHandle,
}

impl ServerShared {
    /// The dispatcher of `service`: a hosted one, or the health probe's.
    pub(crate) fn dispatcher(&self, service: &str) -> Option<Arc<dyn Dispatch>> {
        match service {
            health::HEALTH_SERVICE => Some(self.health.clone()),
            _ => self.services.get(service),
        }
    }

    /// Connections open now.
    pub(crate) fn connections(&self) -> usize {
        self.conns().len()
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<u64, ConnEntry>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by a connection task when it ends.
    pub(crate) fn remove_conn(&self, id: u64) {
        let mut conns = self.conns();
        conns.remove(&id);
        if conns.is_empty() {
            self.conns_idle.notify_waiters();
        }
    }

    /// Gives a connection that finished its TLS handshake its state; `false`
    /// (and unregistered) when the server is shutting down meanwhile.
    fn attach(&self, id: u64, state: &Arc<ConnState>) -> bool {
        let mut conns = self.conns();
        if !self.shutting_down.load(Ordering::Acquire) {
            if let Some(entry) = conns.get_mut(&id) {
                entry.state = Some(state.clone());
                return true;
            }
        }
        drop(conns);
        self.remove_conn(id);
        false
    }

    fn snapshot(&self) -> Vec<(Option<Arc<ConnState>>, AbortHandle)> {
        self.conns()
            .values()
            .map(|c| (c.state.clone(), c.task.clone()))
            .collect()
    }
}

/// An RPC server: serves the services its dispatcher lookup knows, on every
/// connection it accepts. Dropping it closes every connection at once; use
/// [`shutdown`](Self::shutdown) to finish calls in flight first.
///
/// With TLS in [`RpcConfig::tls`], a connection opens with a TLS handshake
/// (presenting a client certificate when `client_ca` is set). With a secret in
/// [`RpcConfig::secret`], it must then send a HELLO carrying the same secret
/// (compared in constant time) or it is closed. Without TLS the secret travels
/// in clear: it keeps out strangers on a trusted network, not an eavesdropper.
/// Each connection is held to the limits of [`RpcConfig`] (reply queue, calls,
/// idle and frame timeouts), and the server to `max_connections`.
pub struct RpcServer {
    local_addr: SocketAddr,
    advertise: String,
    shared: Arc<ServerShared>,
    accept: AbortHandle,
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("local_addr", &self.local_addr)
            .field("advertise", &self.advertise)
            .finish()
    }
}

impl RpcServer {
    /// Listens on `config.listen` and serves calls with the dispatchers in
    /// `services` (looked up per call, so services may be added later),
    /// over TLS when `config.tls` names a certificate and key.
    ///
    /// Secure by default: on an address other than loopback, a server with
    /// neither TLS nor a secret refuses to start (a `Config` error) unless
    /// `config.insecure` is set.
    pub async fn bind(config: &RpcConfig, services: DispatchTable) -> Result<RpcServer> {
        let tls = tls::acceptor(config)?;
        let listener = TcpListener::bind(&config.listen).await.map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("rpc: cannot listen on {}", config.listen),
            )
            .with_source(e)
        })?;
        let local_addr = listener.local_addr().map_err(Error::from)?;
        let exposed = !local_addr.ip().is_loopback();
        if exposed && tls.is_none() && config.secret.is_none() && !config.insecure {
            return Err(Error::config(format!(
                "rpc: refusing to listen on {local_addr} (not loopback) with neither TLS nor a \
                 secret: any process that reaches it could call every method. Configure \
                 [rpc.tls] cert and key (MODKIT_RPC_TLS_CERT, MODKIT_RPC_TLS_KEY), or \
                 rpc.secret (MODKIT_RPC_SECRET), or set rpc.insecure = true \
                 (MODKIT_RPC_INSECURE=1) on a network you trust"
            )));
        }
        if exposed && tls.is_none() {
            tracing::warn!(addr = %local_addr, "rpc server listens without TLS: calls and the secret travel in clear");
        }
        let advertise = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let shared = Arc::new_cyclic(|me| ServerShared {
            services,
            health: health::dispatcher(me.clone()),
            secret: config.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            max_frame: config.max_frame_bytes as usize,
            limits: Limits::new(config),
            tls,
            shutting_down: AtomicBool::new(false),
            stop_accept: Notify::new(),
            conns: Mutex::new(HashMap::new()),
            conns_idle: Notify::new(),
            inflight: AtomicUsize::new(0),
            calls_idle: Notify::new(),
        });
        let span = tracing::info_span!("rpc.server", addr = %local_addr);
        let accept = tokio::spawn(accept_loop(shared.clone(), listener).instrument(span));
        tracing::info!(
            addr = %local_addr,
            advertise,
            auth = shared.secret.is_some(),
            tls = shared.tls.is_some(),
            "rpc server listening"
        );
        Ok(RpcServer {
            local_addr,
            advertise,
            shared,
            accept: accept.abort_handle(),
        })
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address other nodes should use: `RpcConfig::advertise`, else the bound one.
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// Number of connections held now (including those in their handshake).
    pub fn connections(&self) -> usize {
        self.shared.connections()
    }

    /// Number of calls running now.
    pub fn inflight(&self) -> usize {
        self.shared.inflight.load(Ordering::Acquire)
    }

    /// Stops gracefully: stops accepting, sends GOAWAY on every connection,
    /// refuses new calls (as not run, so callers may retry elsewhere), lets calls
    /// in flight finish for up to `grace`, then flushes their replies and closes.
    /// Calls still running after `grace` are dropped.
    ///
    /// Deregister from the registry before calling this, so callers stop
    /// choosing this instance.
    pub async fn shutdown(&self, grace: Duration) {
        let span = tracing::info_span!("rpc.shutdown", addr = %self.local_addr);
        async {
            let deadline = Instant::now() + grace;
            let shared = &self.shared;
            {
                // Under the lock: a connection is either in the snapshot below or
                // sees the flag and is refused by the accept loop.
                let _conns = shared.conns();
                shared.shutting_down.store(true, Ordering::Release);
            }
            shared.stop_accept.notify_one();
            for (conn, _) in shared.snapshot() {
                if let Some(conn) = conn {
                    let _ = conn.outbox.push(|s| frame::encode_goaway(&mut s.buf));
                }
            }
            loop {
                let idle = shared.calls_idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                let left = shared.inflight.load(Ordering::Acquire);
                if left == 0 {
                    break;
                }
                if tokio::time::timeout_at(deadline, idle).await.is_err() {
                    tracing::warn!(
                        calls = left,
                        ?grace,
                        "rpc shutdown: grace elapsed, dropping calls"
                    );
                    break;
                }
            }
            for (conn, _) in shared.snapshot() {
                if let Some(conn) = conn {
                    conn.outbox.close();
                }
            }
            let closed = async {
                loop {
                    let idle = shared.conns_idle.notified();
                    tokio::pin!(idle);
                    idle.as_mut().enable();
                    if shared.conns().is_empty() {
                        return;
                    }
                    idle.await;
                }
            };
            if tokio::time::timeout(FLUSH_TIMEOUT, closed).await.is_err() {
                tracing::warn!("rpc shutdown: connections slow to flush; closing them");
                for (_, task) in shared.snapshot() {
                    task.abort();
                }
            }
            tracing::info!("rpc server stopped");
        }
        .instrument(span)
        .await
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        self.accept.abort();
        // Aborting a connection task drops its state, which aborts its calls.
        for (_, task) in self.shared.snapshot() {
            task.abort();
        }
    }
}

async fn accept_loop(shared: Arc<ServerShared>, listener: TcpListener) {
    static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
    let mut refusals = Refusals::default();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shared.stop_accept.notified() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "rpc accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let held = shared.conns().len();
        if held >= shared.limits.max_conns {
            // Closed at once (dropped), before any byte is read or buffer allocated.
            refusals.note(peer, shared.limits.max_conns);
            drop(stream);
            continue;
        }
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "set_nodelay failed");
        }
        let mut conns = shared.conns();
        if shared.shutting_down.load(Ordering::Acquire) {
            break;
        }
        // Registered under the lock, so the task's removal always comes after.
        let span = tracing::debug_span!("rpc.conn", %peer);
        let (state, task) = match &shared.tls {
            None => {
                let (rd, wr) = stream::split_tcp(stream);
                let state = Arc::new(ConnState::new(peer, wr));
                let serve = conn::serve(shared.clone(), state.clone(), id, rd);
                (
                    Some(state),
                    tokio::spawn(counted(Side::Server, serve).instrument(span)),
                )
            }
            Some(acceptor) => {
                let serve = serve_tls(shared.clone(), acceptor.clone(), id, stream, peer);
                (
                    None,
                    tokio::spawn(counted(Side::Server, serve).instrument(span)),
                )
            }
        };
        conns.insert(
            id,
            ConnEntry {
                state,
                task: task.abort_handle(),
            },
        );
    }
    tracing::debug!("rpc accept loop stopped");
}

/// A TLS connection: its TLS handshake (bounded by the handshake timeout, in
/// the connection's task so that a slow peer holds up no one), then served as
/// any other.
async fn serve_tls(
    shared: Arc<ServerShared>,
    acceptor: TlsAcceptor,
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let error = tls::rustls_error(&e).map_or_else(|| e.to_string(), |t| t.to_string());
            tracing::warn!(%peer, error, "rpc TLS handshake failed; closing connection");
            shared.remove_conn(id);
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "rpc TLS handshake timed out; closing connection");
            shared.remove_conn(id);
            return;
        }
    };
    let (rd, wr) = stream::split_tls(TlsStream::Server(tls));
    let state = Arc::new(ConnState::new(peer, wr));
    if shared.attach(id, &state) {
        conn::serve(shared, state, id, rd).await;
    }
}

/// Logs refused connections: the first at once, then at most one summary a
/// second, so a flood of connections cannot flood the log too.
#[derive(Default)]
struct Refusals {
    since: Option<Instant>,
    more: u64,
}

impl Refusals {
    fn note(&mut self, peer: SocketAddr, max: usize) {
        let now = Instant::now();
        match self.since {
            Some(at) if now - at < Duration::from_secs(1) => self.more += 1,
            _ => {
                tracing::warn!(
                    %peer,
                    max_connections = max,
                    refused_since_last = self.more,
                    "rpc connection refused: the server holds max_connections already"
                );
                self.since = Some(now);
                self.more = 0;
            }
        }
    }
}
