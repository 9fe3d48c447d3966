//! The RPC transport: calls to services in other processes over TCP.
//!
//! - [`RpcServer`] serves the dispatchers of the services hosted here (a
//!   [`DispatchTable`](mod_api::DispatchTable), the container's).
//! - [`RpcClient`] is one connection to a server carrying many concurrent calls;
//!   [`RpcConnections`] keeps one per address; [`RpcTransport`] adapts a client to
//!   [`mod_api::Transport`] with a default deadline.
//! - Every server also answers the built-in health probe ([`health`],
//!   [`probe`]), whatever services it hosts.
//!
//! Length-prefixed frames ([`frame`] documents the format), many calls
//! multiplexed on one connection, write coalescing (one `write` per batch of
//! queued frames), a maximum frame size, deadlines that travel with each call
//! and are enforced on both sides, cancellation (dropping a call's future sends
//! CANCEL; the server drops the method's future), graceful shutdown (GOAWAY),
//! optional shared-secret authentication, and optional TLS or mutual TLS
//! (rustls; `[rpc.tls]`, `RpcConfig::tls`, stream.rs and tls.rs), inside which the secret
//! then travels. Every resource a peer can make a server hold is bounded
//! (limits.rs): queued reply bytes and calls per connection (backpressure:
//! the server stops reading that connection), connections, idle connections
//! (clients send keepalive PINGs) and half-sent frames. A server that would
//! listen beyond loopback with neither TLS nor a secret refuses to start
//! unless `RpcConfig::insecure` says otherwise. See the crate docs, "RPC limits
//! and security".
//!
//! Retrying: a call that fails may have run on the server, unless [`not_sent`]
//! says otherwise. Retry a method not marked idempotent only when it does.
//!
//! # Where the time goes
//!
//! On loopback a round trip is mostly kernel time and thread wake-ups, so the
//! design counts syscalls and task switches. Each connection is one task whose
//! loop handles every frame that arrived (parsed in place from one read
//! buffer), then writes everything queued in one `write`, then waits for either
//! (reader.rs, outbox.rs). A lone client call writes its request from the
//! caller; concurrent calls are batched by the connection's task, which lets
//! the callers woken by one batch of replies append their next requests before
//! it writes (else each request left in a `write` of its own). Client deadlines
//! are swept by that task with one timer, not a timer per call (pending.rs).
//! On the server a call is polled once in the loop and only gets a task of its
//! own if it has to wait (conn.rs). A sequential call costs two `sendto`, two
//! `recvfrom` and two `epoll_wait` — what a plain TCP ping-pong costs — and no
//! futex or eventfd wake-up. The limits add no syscall and no clock read per
//! call: two relaxed atomic loads per frame for backpressure, a frame counter
//! that the watchdog's timer compares (limits.rs). Over TLS the count is the
//! same (rustls writes with `writev`); what TLS adds is CPU, measured at 3–18%
//! fewer sequential calls per second on a shared 2-core machine
//! (`invoke.remote.tls.seq` in the benches).

use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use crate::config::RpcConfig;
use async_trait::async_trait;
use mod_api::{Call, Error, Result, Transport};

mod client;
mod client_task;
mod conn;
mod counted;
pub mod frame;
mod handshake;
pub mod health;
mod limits;
mod outbox;
mod pending;
mod pool;
mod reader;
mod server;
mod stream;
mod tls;

pub use client::RpcClient;
pub use health::{probe, HealthReport};
pub use pool::RpcConnections;
pub use server::RpcServer;

/// Call ids are sequential: a multiplicative hash spreads them for the map.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Hashes call ids (for the maps of calls in flight).
pub(crate) type IdBuildHasher = BuildHasherDefault<IdHasher>;

/// How long a client may take to connect and be accepted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server waits for a new connection's HELLO.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Marks an error as "the call did not run on the server" (see [`not_sent`]).
#[derive(Debug)]
struct NotSent(&'static str);

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for NotSent {}

fn mark_not_sent(err: Error) -> Error {
    err.with_source(NotSent("the request never reached a service"))
}

/// Whether the call that failed with `err` certainly did not run on the server:
/// the request never left this client (connection already closed or lost before
/// it was written, request too large, connect failed), or the server refused it
/// unrun (shutting down). Such a call is safe to retry even if not idempotent.
///
/// Only errors returned by this module carry the mark; it does not survive
/// [`Error::to_detached`] or the wire.
pub fn not_sent(err: &Error) -> bool {
    std::error::Error::source(err).is_some_and(|s| s.is::<NotSent>())
}

/// Checks the TLS part of `config` (both sides: the files exist and parse, the
/// fields that go together are set together), so that a node fails at start
/// rather than at its first call. A `Config` error says what is wrong.
pub fn check_config(config: &RpcConfig) -> Result<()> {
    tls::acceptor(config)?;
    tls::connector(config)?;
    Ok(())
}

/// A [`Transport`] over one [`RpcClient`], with a default deadline for calls
/// that carry none.
#[derive(Debug, Clone)]
pub struct RpcTransport {
    client: RpcClient,
    timeout: Duration,
}

impl RpcTransport {
    /// Calls go through `client`; `timeout` applies when a call has no deadline.
    pub fn new(client: RpcClient, timeout: Duration) -> Self {
        RpcTransport { client, timeout }
    }

    /// The client underneath.
    pub fn client(&self) -> &RpcClient {
        &self.client
    }
}

#[async_trait]
impl Transport for RpcTransport {
    async fn call(&self, call: Call) -> Result<Vec<u8>> {
        let timeout = call.context.timeout().unwrap_or(self.timeout);
        self.client.call(call, timeout).await
    }
}
