//! The three scenarios (see the crate docs of the bench): planned takeover,
//! crash takeover, and the fresh-start baseline.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use modkit::distribute::Distributed;
use modkit::{Backend, Error};

use crate::cluster::{answered_by, duplicates, missing, read_state, wait_standby, Load, Node};
use crate::{config, percentile, state_mb, Ledger, PAD_BYTES, PERIOD, SERVICE};

/// Time under load between two cycles (periodic checkpoints run meanwhile).
const SETTLE: Duration = Duration::from_millis(500);
/// How long a node gets to start, take over or answer before the cycle
/// counts as failed (`inf`).
const LIMIT: Duration = Duration::from_secs(20);
/// Updates applied before the fresh-start cycles (the state they restore).
const FRESH_UPDATES: u64 = 200;

/// The client node (hosts nothing) of namespace `prefix`, and its proxy.
async fn client(url: &str, prefix: &str) -> modkit::Result<(Distributed, Arc<dyn Ledger>)> {
    let app = Distributed::start(config(url, prefix, "client", &[])).await?;
    let ledger = app.container().get::<dyn Ledger>()?;
    Ok((app, ledger))
}

/// Starts `node-a` (it becomes the owner: the service never had one) and
/// then `node-b` (a standby), and waits for both roles.
async fn pair(url: &str, prefix: &str, ledger: &dyn Ledger) -> modkit::Result<[Node; 2]> {
    let a = Node::spawn(url, prefix, "node-a")?;
    answered_by(ledger, "node-a", Instant::now(), LIMIT)
        .await
        .ok_or_else(|| Error::timeout("node-a never answered as the owner"))?;
    let b = Node::spawn(url, prefix, "node-b")?;
    wait_standby(url, prefix, "node-b", LIMIT).await?;
    Ok([a, b])
}

/// Says on stderr which updates were lost: how many, the first and last
/// id, and when they were acknowledged relative to `reference`.
fn report_lost(what: &str, lost: &[(u64, Instant)], reference: Instant) {
    let rel = |at: Instant| match at.checked_duration_since(reference) {
        Some(d) => format!("+{:.1}ms", d.as_secs_f64() * 1e3),
        None => format!("-{:.1}ms", (reference - at).as_secs_f64() * 1e3),
    };
    if let (Some(first), Some(last)) = (lost.first(), lost.last()) {
        eprintln!(
            "takeover {what}: {} acknowledged updates lost, ids {}..={}, acknowledged {} to {}",
            lost.len(),
            first.0,
            last.0,
            rel(first.1),
            rel(last.1)
        );
    }
}

/// Planned takeovers back and forth between two nodes under the client's load.
pub async fn planned(url: &str, cycles: usize) -> modkit::Result<()> {
    let prefix = format!("takeover-{}-planned", std::process::id());
    let (app, ledger) = client(url, &prefix).await?;
    let nodes = pair(url, &prefix, &*ledger).await?;
    let started = Instant::now();
    let load = Load::start(ledger.clone());
    tokio::time::sleep(SETTLE).await;
    let (mut owner, mut standby) = (0, 1);
    let mut took = Vec::new();
    for n in 0..cycles {
        let target = nodes[standby].name.clone();
        let alert = Instant::now();
        app.request_takeover(SERVICE, Some(&target)).await?;
        match answered_by(&*ledger, &target, alert, LIMIT).await {
            Some((ms, (_, pad, _))) => {
                if pad != PAD_BYTES as u64 {
                    eprintln!(
                        "takeover planned cycle {n}: {target} answers with a pad of {pad} bytes"
                    );
                }
                took.push(ms);
            }
            None => {
                eprintln!(
                    "takeover planned cycle {n}: {target} did not answer within {LIMIT:?} of the request"
                );
                took.push(f64::INFINITY);
            }
        }
        std::mem::swap(&mut owner, &mut standby);
        tokio::time::sleep(SETTLE).await;
    }
    let log = load.finish().await;
    let state = read_state(&*ledger).await?;
    let lost = missing(&log.acked, &state, &HashSet::new());
    report_lost("planned", &lost, started);
    eprintln!(
        "takeover planned: {} updates acknowledged, {} in the final state (owner {})",
        log.acked.len(),
        state.len(),
        nodes[owner].name
    );
    println!(
        "takeover planned state_mb={} cycles={cycles} p50_ms={:.0} p99_ms={:.0} failed_calls={} \
         lost_updates={} duplicate_updates={}",
        state_mb(),
        percentile(took.clone(), 0.5),
        percentile(took, 0.99),
        log.failed,
        lost.len(),
        duplicates(&state),
    );
    app.shutdown(Duration::from_millis(100)).await;
    Ok(())
}

/// `kill -9` of the owner each cycle; the killed node comes back as the
/// next cycle's standby.
pub async fn crash(url: &str, cycles: usize) -> modkit::Result<()> {
    let prefix = format!("takeover-{}-crash", std::process::id());
    let (app, ledger) = client(url, &prefix).await?;
    let mut nodes = pair(url, &prefix, &*ledger).await?;
    let load = Load::start(ledger.clone());
    // Some periodic checkpoints (with updates in them) before the first kill.
    tokio::time::sleep(SETTLE + PERIOD).await;
    let (mut owner, mut standby) = (0, 1);
    let (mut took, mut rpo) = (Vec::new(), Vec::new());
    let mut lost_before = HashSet::new();
    for n in 0..cycles {
        let (killed, target) = (nodes[owner].name.clone(), nodes[standby].name.clone());
        let kill = Instant::now();
        nodes[owner].kill();
        let ms = match answered_by(&*ledger, &target, kill, LIMIT).await {
            Some((ms, (_, pad, _))) => {
                if pad != PAD_BYTES as u64 {
                    eprintln!(
                        "takeover crash cycle {n}: {target} answers with a pad of {pad} bytes"
                    );
                }
                ms
            }
            None => {
                eprintln!("takeover crash cycle {n}: {target} did not answer within {LIMIT:?} of the kill");
                f64::INFINITY
            }
        };
        took.push(ms);
        // Acknowledged before the state is read: each must be in it.
        let acked = load.log.lock().unwrap().acked.clone();
        match read_state(&*ledger).await {
            Ok(state) => {
                let lost = missing(&acked, &state, &lost_before);
                let window = lost
                    .iter()
                    .map(|(_, at)| kill.saturating_duration_since(*at))
                    .max()
                    .unwrap_or_default();
                let window_ms = window.as_secs_f64() * 1e3;
                report_lost("crash", &lost, kill);
                eprintln!(
                    "takeover crash cycle {n}: {killed} killed, {target} answered after {ms:.0} ms, \
                     {} acknowledged updates lost, rpo {window_ms:.0} ms",
                    lost.len()
                );
                lost_before.extend(lost.iter().map(|(id, _)| *id));
                rpo.push(window_ms);
            }
            Err(e) => {
                eprintln!("takeover crash cycle {n}: state not read back: {e}");
                rpo.push(f64::INFINITY);
            }
        }
        nodes[owner] = Node::spawn(url, &prefix, &killed)?;
        wait_standby(url, &prefix, &killed, LIMIT).await?;
        std::mem::swap(&mut owner, &mut standby);
        tokio::time::sleep(SETTLE).await;
    }
    let log = load.finish().await;
    println!(
        "takeover crash state_mb={} cycles={cycles} p50_ms={:.0} p99_ms={:.0} rpo_ms_p99={:.0} \
         lost_updates={} period_ms={} rpo_ms_p50={:.0} failed_calls={}",
        state_mb(),
        percentile(took.clone(), 0.5),
        percentile(took, 0.99),
        percentile(rpo.clone(), 0.99),
        lost_before.len(),
        PERIOD.as_millis(),
        percentile(rpo, 0.5),
        log.failed,
    );
    app.shutdown(Duration::from_millis(100)).await;
    Ok(())
}

/// The baseline: the owner stops, and a fresh process restores the state
/// from its checkpoint in Redis and answers.
pub async fn fresh_start(url: &str, cycles: usize) -> modkit::Result<()> {
    let prefix = format!("takeover-{}-fresh", std::process::id());
    let (app, ledger) = client(url, &prefix).await?;
    let mut current = Node::spawn(url, &prefix, "fresh-0")?;
    answered_by(&*ledger, "fresh-0", Instant::now(), LIMIT)
        .await
        .ok_or_else(|| Error::timeout("fresh-0 never answered as the owner"))?;
    for id in 1..=FRESH_UPDATES {
        ledger.apply(id).await?;
    }
    let (mut took, mut restart, mut unrestored) = (Vec::new(), Vec::new(), 0);
    for n in 1..=cycles {
        let name = format!("fresh-{n}");
        let stopping = Instant::now();
        if !current.stop(LIMIT).await {
            eprintln!(
                "takeover fresh_start cycle {n}: {} did not stop by itself",
                current.name
            );
        }
        app.request_takeover(SERVICE, Some(&name)).await?;
        let spawned = Instant::now();
        let next = Node::spawn(url, &prefix, &name)?;
        match answered_by(&*ledger, &name, spawned, LIMIT).await {
            Some((ms, (_, pad, updates))) => {
                took.push(ms);
                restart.push(ms + (spawned - stopping).as_secs_f64() * 1e3);
                if pad != PAD_BYTES as u64 || updates != FRESH_UPDATES {
                    eprintln!(
                        "takeover fresh_start cycle {n}: {name} holds {updates} updates, pad {pad} bytes"
                    );
                    unrestored += 1;
                }
            }
            None => {
                eprintln!("takeover fresh_start cycle {n}: {name} did not answer within {LIMIT:?}");
                took.push(f64::INFINITY);
                restart.push(f64::INFINITY);
                unrestored += 1;
            }
        }
        current = next;
    }
    println!(
        "takeover fresh_start state_mb={} cycles={cycles} p50_ms={:.0} p99_ms={:.0} unrestored={unrestored} \
         restart_p50_ms={:.0} restart_p99_ms={:.0}",
        state_mb(),
        percentile(took.clone(), 0.5),
        percentile(took, 0.99),
        percentile(restart.clone(), 0.5),
        percentile(restart, 0.99),
    );
    app.shutdown(Duration::from_millis(100)).await;
    Ok(())
}
