//! A real group (three `redis-server`s, one primary and two replicas), one
//! controller voter, and a modkit handle that follows it: `kill -9` of the
//! primary is detected, a replica with the highest offset is promoted, the
//! handle moves to it, no `WAIT`-acknowledged write is lost, and the killed
//! primary, restarted, rejoins as a replica. Checked on the recorded history
//! of writes and the decision log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mod_distribute::RedisServer;
use mod_resilience::consensus::Command;
use mod_resilience::HaConfig;

mod common;

/// One write: its key, whether `WAIT 1` acknowledged it, and where it went.
#[derive(Debug, Clone)]
struct Write {
    key: u64,
    acked: bool,
    url: String,
    at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_primary_fails_over_without_losing_acknowledged_writes() {
    let mut nodes = common::group(2);
    let controller = common::solo(common::ha_over(&nodes)).await;
    let first = controller.state().borrow().clone();
    let (b, c) = (nodes[1].addr(), nodes[2].addr());
    let a = &mut nodes[0];
    assert_eq!(first.topology.primary, Some(a.addr()));

    let redis = common::following(&controller, "ha").await;

    let history = Arc::new(Mutex::new(Vec::<Write>::new()));
    let writer = {
        let (redis, history) = (redis.clone(), history.clone());
        tokio::spawn(async move {
            for key in 0.. {
                let url = redis.url();
                let acked = common::write_acked(&redis, key).await;
                history.lock().unwrap().push(Write {
                    key,
                    acked,
                    url,
                    at: Instant::now(),
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    a.kill();
    let after = common::wait_state(&controller, "epoch 2", |s| s.topology.epoch >= 2).await;
    let new_primary = after.topology.primary.clone().unwrap();
    assert!(new_primary == b || new_primary == c, "{new_primary}");
    assert_eq!(after.topology.fenced, vec![a.addr()]);

    // The first acknowledged write on the new primary.
    let first_write = loop {
        let found = history
            .lock()
            .unwrap()
            .iter()
            .find(|w| w.acked && w.at > killed_at && w.url.contains(&new_primary))
            .cloned();
        if let Some(w) = found {
            break w;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(15),
            "no acknowledged write after the failover"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "kill -9 → first acknowledged write on {new_primary}: {:?}",
        first_write.at - killed_at
    );

    // The old primary comes back (empty, as after a crash without
    // persistence) on its address: it must rejoin as a replica.
    let a = RedisServer::start_on_port(a.port(), &[]).unwrap();
    let rejoined = common::wait_state(&controller, "the old primary rejoining", |s| {
        s.topology.fenced.is_empty() && s.topology.epoch >= 3
    })
    .await;
    assert!(rejoined.topology.replicas.contains(&a.addr()));
    assert_eq!(
        rejoined.topology.primary.as_deref(),
        Some(new_primary.as_str())
    );
    writer.abort();

    // No acknowledged write lost: every key WAIT confirmed is on the new primary.
    let history = history.lock().unwrap().clone();
    let on_new = common::keys_on(&new_primary).await;
    let lost: Vec<u64> = history
        .iter()
        .filter(|w| w.acked && !on_new.contains(&w.key))
        .map(|w| w.key)
        .collect();
    assert!(
        history.iter().filter(|w| w.acked).count() > 20,
        "too few writes to judge"
    );
    assert_eq!(lost, Vec::<u64>::new(), "acknowledged writes lost");
    // Every write after the switch went to the new primary, none back to the old.
    let switched = history
        .iter()
        .position(|w| w.url.contains(&new_primary))
        .unwrap();
    assert!(history[switched..]
        .iter()
        .all(|w| w.url.contains(&new_primary)));

    // The decision log: intent before the commit, epochs only growing.
    let log = controller.state().borrow().log.clone();
    let intent = log
        .iter()
        .position(|d| matches!(&d.command, Command::Intent { epoch: 2, .. }));
    let commit = log
        .iter()
        .position(|d| matches!(&d.command, Command::Commit(t) if t.epoch == 2));
    assert!(intent.is_some() && intent < commit, "{log:?}");
    let epochs: Vec<u64> = log
        .iter()
        .filter_map(|d| match &d.command {
            Command::Commit(t) => Some(t.epoch),
            _ => None,
        })
        .collect();
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
}

/// A planned switchover under a writer: every write the old primary took is
/// on the new one (not only the `WAIT`-acknowledged ones: the target caught
/// up before it was promoted), the old primary follows it as a replica,
/// nothing is fenced, and a second switchover (through the admin port)
/// moves it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_loses_no_write_and_the_old_primary_follows() {
    let nodes = common::group(2);
    let controller = common::solo(HaConfig {
        admin: Some("127.0.0.1:0".into()),
        ..common::ha_over(&nodes)
    })
    .await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let redis = common::following(&controller, "ha").await;

    let err = controller
        .switchover(Some("127.0.0.1:1".into()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), mod_api::ErrorKind::InvalidInput, "{err}");

    let done = Arc::new(Mutex::new(Vec::<(u64, bool)>::new()));
    let writer = {
        let (redis, done) = (redis.clone(), done.clone());
        tokio::spawn(async move {
            for key in 0.. {
                let mut conn = redis.conn();
                let ok = redis::cmd("SET")
                    .arg(format!("w:{key}"))
                    .arg(key)
                    .query_async::<()>(&mut conn)
                    .await
                    .is_ok();
                done.lock().unwrap().push((key, ok));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = controller.switchover(Some(c.addr())).await.unwrap();
    assert_eq!(
        (t.epoch, t.primary.as_deref()),
        (2, Some(c.addr().as_str()))
    );
    assert!(
        t.fenced.is_empty() && t.replicas.contains(&a.addr()),
        "{t:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The second through the operator's path (`modkit-ha switchover`),
    // asking a dead address first as an operator listing voters would.
    let admin = controller.admin_addr().unwrap().to_string();
    let back = mod_resilience::admin::send(
        &["127.0.0.1:1".into(), admin],
        &mod_resilience::admin::Request::Switchover { to: None },
    )
    .await
    .unwrap();
    assert_eq!(back.epoch, 3);
    assert_ne!(back.primary, t.primary);
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.abort();

    let done = done.lock().unwrap().clone();
    let primary = back.primary.clone().unwrap();
    let on_primary = common::keys_on(&primary).await;
    let lost: Vec<u64> = done
        .iter()
        .filter(|(k, ok)| *ok && !on_primary.contains(k))
        .map(|(k, _)| *k)
        .collect();
    let failed = done.iter().filter(|(_, ok)| !ok).count();
    eprintln!(
        "two switchovers: {} writes, {failed} refused (during the hand-over), {} lost",
        done.len(),
        lost.len()
    );
    assert!(done.len() > 100, "too few writes to judge");
    assert_eq!(lost, Vec::<u64>::new(), "acknowledged writes lost");
    // Both old primaries follow the new one.
    for addr in [&a.addr(), &b.addr(), &c.addr()] {
        if *addr == primary {
            continue;
        }
        let client = redis::Client::open(format!("redis://{addr}")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(info.contains("role:slave"), "{addr}: {info}");
    }
}

/// The primary and one replica killed together. Without `WAIT` the last
/// replica is promoted; with `WAIT 1` it is not (the acknowledged writes
/// may be on the dead replica only): the group stays without a primary and
/// says why, rather than losing them silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_and_replica_killed_together() {
    for wait_replicas in [0, 1] {
        let mut nodes = common::group(2);
        let controller = common::solo(HaConfig {
            wait_replicas,
            ..common::ha_over(&nodes)
        })
        .await;
        let mut alerts = controller.alerts();
        nodes[0].kill();
        nodes[1].kill();
        let survivor = nodes[2].addr();
        if wait_replicas == 0 {
            let after = common::wait_state(&controller, "the last replica promoted", |s| {
                s.topology.epoch >= 2
            })
            .await;
            assert_eq!(after.topology.primary, Some(survivor));
            continue;
        }
        let reason = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Ok(mod_distribute::topology::Alert::NoPromotableReplica { reason, .. }) =
                    alerts.recv().await
                {
                    return reason;
                }
            }
        })
        .await
        .expect("a no_promotable_replica alert");
        assert!(reason.contains("1 of 2"), "{reason}");
        // And it holds: still nothing promoted a while later.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let state = controller.state().borrow().clone();
        assert_eq!(state.topology.epoch, 1, "{state:?}");
        let info = common::info(&survivor).await.unwrap();
        assert!(info.contains("role:slave"), "{info}");
    }
}
