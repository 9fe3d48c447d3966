//! Seed 000's site rule on a real group: four `redis-server`s in two sites
//! (a: the primary and two replicas; b: one replica) and one controller
//! voter. A flapping node of site a moves no site; site b frozen (SIGSTOP)
//! is `site_down` within its rounds and `site_up` once it answers again;
//! site a with two of its three nodes frozen is `site_down` with
//! `primary: true`. Checked on the recorded alerts (kind, site, counts, when).

use std::time::{Duration, Instant};

use mod_distribute::topology::Alert;
use mod_distribute::RedisServer;
use tokio::sync::broadcast;

mod common;
use common::signal;

/// The site alerts received, with when they arrived.
struct SiteAlerts {
    alerts: broadcast::Receiver<Alert>,
    start: Instant,
    got: Vec<(Duration, Alert)>,
}

impl SiteAlerts {
    /// Waits up to `within` for the next `site_down`/`site_up` alert (others
    /// skipped), records it and returns it with how long it took.
    async fn next(&mut self, within: Duration) -> Option<(Duration, Alert)> {
        let asked = Instant::now();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.alerts.recv()).await {
                Ok(Ok(alert @ (Alert::SiteDown { .. } | Alert::SiteUp { .. }))) => {
                    self.got.push((self.start.elapsed(), alert.clone()));
                    return Some((asked.elapsed(), alert));
                }
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => panic!("alerts ended: {e}"),
                Err(_) => return None,
            }
        }
    }
}

fn pid(node: &RedisServer) -> u32 {
    node.pid().expect("a running redis-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_go_down_by_ratio_over_rounds_and_a_flapping_node_moves_none() {
    let nodes = common::group(3);
    let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
    let mut config = common::ha(addrs.clone());
    config.sites = [("a", &addrs[..3]), ("b", &addrs[3..])]
        .into_iter()
        .map(|(site, nodes)| (site.to_string(), nodes.to_vec()))
        .collect();
    let (every, rounds) = (config.probe_every, config.site_rounds);
    let controller = common::solo(config).await;
    let mut alerts = SiteAlerts {
        alerts: controller.alerts(),
        start: Instant::now(),
        got: Vec::new(),
    };

    // One node of site a flaps for 5 s: frozen for one round, answering for
    // two. 2/3 of site a stays above 1/2: no site moves.
    for _ in 0..8 {
        signal(pid(&nodes[1]), "-STOP");
        tokio::time::sleep(every).await;
        signal(pid(&nodes[1]), "-CONT");
        tokio::time::sleep(every * 2).await;
    }
    let flapped = alerts.next(every * 4).await;
    assert!(
        flapped.is_none(),
        "a flapping node moved a site: {flapped:?}"
    );

    // Site b (its only node) frozen: down after `rounds` rounds, with its counts.
    signal(pid(&nodes[3]), "-STOP");
    let (took, alert) = alerts
        .next(Duration::from_secs(10))
        .await
        .expect("site_down b");
    assert_eq!(
        alert,
        Alert::SiteDown {
            group: "main".into(),
            site: "b".into(),
            available: 0,
            total: 1,
            rounds,
            primary: false,
        }
    );
    // Seed 000's first alert ≤ 4 s after the threshold is crossed (here at
    // the first probe that goes unanswered: within one round of the freeze).
    eprintln!(
        "site_down b {} ms after the freeze (probe every {} ms, {rounds} rounds)",
        took.as_millis(),
        every.as_millis()
    );
    assert!(took <= Duration::from_secs(4), "site_down after {took:?}");
    assert!(
        took >= every * (rounds - 1),
        "site_down before its rounds: {took:?}"
    );
    signal(pid(&nodes[3]), "-CONT");
    let (_, alert) = alerts
        .next(Duration::from_secs(10))
        .await
        .expect("site_up b");
    assert!(
        matches!(&alert, Alert::SiteUp { site, available: 1, total: 1, .. } if site == "b"),
        "{alert:?}"
    );

    // Site a loses two of its three nodes: down, and it holds the primary.
    signal(pid(&nodes[1]), "-STOP");
    signal(pid(&nodes[2]), "-STOP");
    let down = alerts.next(Duration::from_secs(10)).await;
    signal(pid(&nodes[1]), "-CONT");
    signal(pid(&nodes[2]), "-CONT");
    let (_, alert) = down.expect("site_down a");
    assert!(
        matches!(&alert, Alert::SiteDown { site, available: 1, total: 3, primary: true, .. } if site == "a"),
        "{alert:?}"
    );
    let (_, alert) = alerts
        .next(Duration::from_secs(10))
        .await
        .expect("site_up a");
    assert!(
        matches!(&alert, Alert::SiteUp { site, .. } if site == "a"),
        "{alert:?}"
    );
    // The whole history: exactly these four, in this order.
    let kinds: Vec<String> = alerts
        .got
        .iter()
        .map(|(_, a)| match a {
            Alert::SiteDown { site, .. } => format!("down {site}"),
            Alert::SiteUp { site, .. } => format!("up {site}"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["down b", "up b", "down a", "up a"],
        "{:?}",
        alerts.got
    );
}
