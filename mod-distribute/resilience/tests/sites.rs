//! Seed 000's site rule on a real group: four `redis-server`s in two sites
//! (a: the primary and two replicas; b: one replica) and one controller
//! voter. A flapping node of site a moves no site; site b frozen (SIGSTOP)
//! is `site_down` within its rounds and `site_up` once it answers again;
//! site a with two of its three nodes frozen is `site_down` with
//! `primary: true`, and the primary moves to site b without losing a
//! `WAIT`-acknowledged write; with site b down too, `no_backup_site` and
//! nothing moves. Checked on the recorded alerts (kind, site, counts, when),
//! the committed topology and the writes.

use std::sync::{Arc, Mutex};
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
    /// The site alerts `controller` raises from now on.
    fn of(controller: &mod_resilience::Controller) -> SiteAlerts {
        SiteAlerts {
            alerts: controller.alerts(),
            start: Instant::now(),
            got: Vec::new(),
        }
    }

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

/// A primary and three replicas, `[ha]` over them with site a = the
/// primary and two replicas, site b = the last replica.
fn two_sites() -> (Vec<RedisServer>, Vec<String>, mod_resilience::HaConfig) {
    let nodes = common::group(3);
    let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
    let mut config = common::ha(addrs.clone());
    config.sites = [("a", &addrs[..3]), ("b", &addrs[3..])]
        .into_iter()
        .map(|(site, nodes)| (site.to_string(), nodes.to_vec()))
        .collect();
    (nodes, addrs, config)
}

fn pid(node: &RedisServer) -> u32 {
    node.pid().expect("a running redis-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_go_down_by_ratio_over_rounds_and_the_primary_leaves_a_site_that_is_down() {
    let (nodes, addrs, config) = two_sites();
    let (every, rounds) = (config.probe_every, config.site_rounds);
    let controller = common::solo(config).await;
    let mut alerts = SiteAlerts::of(&controller);

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

    // Site a loses two of its three nodes under a writer: down, it holds the
    // primary, and the primary moves to site b's replica with no
    // acknowledged write lost.
    let redis = common::following(&controller, "sites").await;
    let history = Arc::new(Mutex::new(Vec::<(u64, bool)>::new()));
    let writer = {
        let (redis, history) = (redis.clone(), history.clone());
        tokio::spawn(async move {
            for key in 0.. {
                let acked = common::write_acked(&redis, key).await;
                history.lock().unwrap().push((key, acked));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frozen = Instant::now();
    signal(pid(&nodes[1]), "-STOP");
    signal(pid(&nodes[2]), "-STOP");
    let down = alerts.next(Duration::from_secs(10)).await;
    let switched = common::wait_state(&controller, "the primary in site b", |s| {
        s.topology.primary.as_deref() == Some(addrs[3].as_str())
    })
    .await;
    eprintln!(
        "site switch: primary in site b {} ms after site a lost two of three",
        frozen.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(pid(&nodes[1]), "-CONT");
    signal(pid(&nodes[2]), "-CONT");
    assert_eq!(switched.topology.epoch, 2, "{:?}", switched.topology);
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

    // Every write `WAIT` acknowledged, before and after the switch, is on
    // the new primary in site b.
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.abort();
    let history = history.lock().unwrap().clone();
    let on_b = common::keys_on(&addrs[3]).await;
    let acked: Vec<u64> = history
        .iter()
        .filter(|(_, a)| *a)
        .map(|(k, _)| *k)
        .collect();
    let lost: Vec<u64> = acked
        .iter()
        .filter(|k| !on_b.contains(k))
        .copied()
        .collect();
    assert!(acked.len() > 50, "too few writes to judge: {}", acked.len());
    assert_eq!(
        lost,
        Vec::<u64>::new(),
        "acknowledged writes lost in the site switch"
    );
    eprintln!(
        "site switch: {} acknowledged writes, all on site b's new primary",
        acked.len()
    );
}

/// The primary's site goes down while the only other site is down too:
/// seed 000's second alert, and nothing switches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_other_site_down_too_nothing_switches() {
    let (nodes, addrs, config) = two_sites();
    let controller = common::solo(config).await;
    let mut raw = controller.alerts();
    let mut alerts = SiteAlerts::of(&controller);
    signal(pid(&nodes[3]), "-STOP");
    let (_, alert) = alerts
        .next(Duration::from_secs(10))
        .await
        .expect("site_down b");
    assert!(
        matches!(&alert, Alert::SiteDown { site, primary: false, .. } if site == "b"),
        "{alert:?}"
    );
    signal(pid(&nodes[1]), "-STOP");
    signal(pid(&nodes[2]), "-STOP");
    let down_a = alerts.next(Duration::from_secs(10)).await;
    let no_backup = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(alert @ Alert::NoBackupSite { .. }) = raw.recv().await {
                return alert;
            }
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let topology = controller.state().borrow().topology.clone();
    for node in &nodes[1..] {
        signal(pid(node), "-CONT");
    }
    let (_, alert) = down_a.expect("site_down a");
    assert!(
        matches!(&alert, Alert::SiteDown { site, primary: true, .. } if site == "a"),
        "{alert:?}"
    );
    let no_backup = no_backup.expect("no_backup_site");
    assert!(
        matches!(&no_backup, Alert::NoBackupSite { site, reason, .. } if site == "a" && reason.contains("every other site is down")),
        "{no_backup:?}"
    );
    assert_eq!(
        (topology.epoch, topology.primary.as_deref()),
        (1, Some(addrs[0].as_str())),
        "nothing switched"
    );
}
