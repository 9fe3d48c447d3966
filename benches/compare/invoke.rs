//! Invocation: modkit's monolith container against a direct trait-object call,
//! modkit's RPC against tarpc, modkit's RPC over TLS against itself in clear,
//! and the plain TCP ping-pong floor.

use std::hint::black_box;
use std::sync::Arc;

use mod_monolith::Monolith;
use modkit::{Backend, Config};

use crate::fixtures::{payload, tarpc_echo, Echo, EchoImpl, EchoPair};
use crate::floor::{tcp_echo_server, TcpEcho};
use crate::harness::{compare, concurrent, measure, report, side, Plan, Side};
use crate::tls::BenchTls;
use crate::{timed_loop, BenchResult};

/// Concurrent calls in flight for the `c64` comparisons.
const C64: usize = 64;

/// `invoke.monolith`: the object the container hands out vs the same object
/// behind a plain `Arc<dyn Echo>`; `invoke.monolith.get` adds `Container::get`
/// to every call (what code that does not keep the handle pays).
pub async fn monolith(plan: Plan) -> BenchResult {
    let mono = Monolith::new(Config::default())?;
    mono.container()
        .provide::<dyn Echo>(Arc::new(EchoImpl))
        .await?;
    let via_container = mono.container().get::<dyn Echo>()?;
    let direct: Arc<dyn Echo> = Arc::new(EchoImpl);
    let p = Arc::new(payload());

    // The same loop on both sides: only the object differs.
    let modkit = call_side(&via_container, &p);
    let peer = call_side(&direct, &p);
    compare(plan, "invoke.monolith", "direct", modkit, peer.clone()).await;

    let with_get = {
        let (mono, p) = (mono.clone(), p.clone());
        side(move |dur| {
            let (mono, p) = (mono.clone(), p.clone());
            Box::pin(async move {
                timed_loop!(dur, 1024, {
                    let svc = mono.container().get::<dyn Echo>().unwrap();
                    black_box(svc.echo(p.to_vec()).await.unwrap());
                })
            })
        })
    };
    compare(plan, "invoke.monolith.get", "direct", with_get, peer).await;
    Ok(())
}

/// Calls `echo` on `svc` in a loop.
fn call_side(svc: &Arc<dyn Echo>, p: &Arc<Vec<u8>>) -> Side {
    let (svc, p) = (svc.clone(), p.clone());
    side(move |dur| {
        let (svc, p) = (svc.clone(), p.clone());
        Box::pin(async move {
            timed_loop!(dur, 1024, {
                black_box(svc.echo(p.to_vec()).await.unwrap());
            })
        })
    })
}

/// One call in flight at a time to `svc`, in a loop.
fn seq_side(svc: &Arc<dyn Echo>, p: &Arc<Vec<u8>>) -> Side {
    let (svc, p) = (svc.clone(), p.clone());
    side(move |dur| {
        let (svc, p) = (svc.clone(), p.clone());
        Box::pin(async move {
            timed_loop!(dur, 1, {
                black_box(svc.echo(p.to_vec()).await.unwrap());
            })
        })
    })
}

/// `invoke.remote.seq`, `invoke.remote.c64` vs tarpc, `invoke.remote.tls.seq`
/// (TLS vs plain, both modkit), and `tcp.echo.seq`.
///
/// modkit: node B calls node A's RPC server (B hosts nothing, colocation off).
/// tarpc: a client and a server in this process over loopback TCP, bincode,
/// TCP_NODELAY on both ends (modkit's RPC sets it too). Same payload, same
/// runtime, one connection each.
pub async fn remote(plan: Plan, url: &str, prefix: &str) -> BenchResult {
    let pair = EchoPair::start(url, prefix).await?;
    let tarpc = tarpc_echo().await?;
    let p = Arc::new(payload());

    let modkit_seq = seq_side(&pair.echo, &p);
    let tarpc_seq = {
        let (client, p) = (tarpc.clone(), p.clone());
        side(move |dur| {
            let (client, p) = (client.clone(), p.clone());
            Box::pin(async move {
                timed_loop!(dur, 1, {
                    let ctx = tarpc::context::current();
                    black_box(client.echo(ctx, p.to_vec()).await.unwrap());
                })
            })
        })
    };
    compare(
        plan,
        "invoke.remote.seq",
        "tarpc",
        modkit_seq.clone(),
        tarpc_seq,
    )
    .await;

    let modkit_c64 = {
        let (svc, p) = (pair.echo.clone(), p.clone());
        side(move |dur| {
            let (svc, p) = (svc.clone(), p.clone());
            Box::pin(concurrent(C64, dur, move |_, dur| {
                let (svc, p) = (svc.clone(), p.clone());
                async move {
                    timed_loop!(dur, 1, {
                        black_box(svc.echo(p.to_vec()).await.unwrap());
                    })
                }
            }))
        })
    };
    let tarpc_c64 = {
        let (client, p) = (tarpc.clone(), p.clone());
        side(move |dur| {
            let (client, p) = (client.clone(), p.clone());
            Box::pin(concurrent(C64, dur, move |_, dur| {
                let (client, p) = (client.clone(), p.clone());
                async move {
                    timed_loop!(dur, 1, {
                        let ctx = tarpc::context::current();
                        black_box(client.echo(ctx, p.to_vec()).await.unwrap());
                    })
                }
            }))
        })
    };
    compare(plan, "invoke.remote.c64", "tarpc", modkit_c64, tarpc_c64).await;

    // The same sequential call over TLS (a second pair of nodes), against plain.
    let tls = BenchTls::make()?;
    let tls_pair = EchoPair::start_with(url, &format!("{prefix}-tls"), tls.rpc.clone()).await?;
    let tls_seq = seq_side(&tls_pair.echo, &p);
    compare(
        plan,
        "invoke.remote.tls.seq",
        "plain",
        tls_seq,
        modkit_seq.clone(),
    )
    .await;
    tls_pair.shutdown().await;

    // The floor: the same 64 bytes (plus a 4-byte length) bounced over plain TCP.
    let addr = tcp_echo_server().await?;
    let conn = Arc::new(tokio::sync::Mutex::new(TcpEcho::connect(addr).await?));
    let floor = side(move |dur| {
        let conn = conn.clone();
        Box::pin(async move {
            let mut conn = conn.lock().await;
            timed_loop!(dur, 1, {
                conn.round_trip().await.unwrap();
            })
        })
    });
    let (modkit, floor) = measure(plan, &modkit_seq, &floor).await;
    let extra = format!(
        "modkit_us={:.1} floor_us={:.1}",
        modkit.micros(),
        floor.micros()
    );
    report("tcp.echo.seq", "floor", modkit, floor, &extra);
    pair.shutdown().await;
    Ok(())
}
