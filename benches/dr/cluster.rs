//! The group the `dr` bench runs on: six `redis-server`s in two sites, one
//! controller voter, a `SET` + `WAIT 3` writer and three more subscribed
//! handles, every write recorded.
//!
//! `WAIT 3`, not 1: a write is safe from the loss of a whole site only once
//! a replica of the other site has it, and the primary's own site holds two
//! replicas: `WAIT 1` may be answered by one of those alone (10 cycles with
//! `WAIT 1` lost nothing, the window being short, but nothing rules it out).
//! `wait_replicas = 3` tells the controller (it then promotes once 5 − 3 + 1
//! = 3 replicas answer: the other site's). While one site is lost, no write
//! can have three replicas: the new primary takes writes (what `rto`
//! measures) and `WAIT 3` times out on them until the lost site is back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mod_distribute::topology::Alert;
use mod_distribute::{Redis, RedisConfig, RedisServer};
use mod_resilience::{Controller, GroupState, HaConfig, Solo};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// Nodes per site.
const PER_SITE: usize = 3;
/// Handles that follow the controller besides the writer's.
const SUBSCRIBERS: usize = 3;
/// The writer's `WAIT` (see the module docs).
const WAIT: usize = PER_SITE;

/// One recorded write: its key, whether the primary took it (`SET` answered
/// OK) and whether `WAIT 3` acknowledged it, where it went.
struct Write {
    key: u64,
    took: bool,
    acked: bool,
    url: String,
    at: Instant,
}

/// What one site loss measured.
pub struct Loss {
    pub site: String,
    /// The freeze to the commit of the topology without the site's primary.
    pub commit_ms: f64,
    pub alert_ms: f64,
    pub push_ms: f64,
    pub rto_ms: f64,
}

pub struct Cluster {
    nodes: Vec<RedisServer>,
    sites: BTreeMap<String, Vec<usize>>,
    controller: Controller,
    handles: Vec<Redis>,
    writes: Arc<Mutex<Vec<Write>>>,
    writer: JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.writer.abort();
        for node in &self.nodes {
            signal(node, "-CONT"); // a frozen server dies on its drop's SIGKILL either way
        }
    }
}

fn signal(node: &RedisServer, sig: &str) {
    if let Some(pid) = node.pid() {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Waits up to `within` for `f` to hold of the controller's state.
async fn state_where(
    controller: &Controller,
    within: Duration,
    f: impl Fn(&GroupState) -> bool,
) -> GroupState {
    let mut state = controller.state();
    let got = tokio::time::timeout(within, state.wait_for(|s| f(s))).await;
    match got {
        Ok(Ok(s)) => s.clone(),
        _ => panic!(
            "the group did not reach the expected state: {:?}",
            controller.state().borrow().topology
        ),
    }
}

/// The next alert `f` accepts, within `within`.
async fn alert_where(
    alerts: &mut broadcast::Receiver<Alert>,
    within: Duration,
    f: impl Fn(&Alert) -> bool,
) -> Alert {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, alerts.recv()).await {
            Ok(Ok(alert)) if f(&alert) => return alert,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("alerts ended: {e}"),
            Err(_) => panic!("no expected alert within {within:?}"),
        }
    }
}

impl Cluster {
    pub async fn start() -> Cluster {
        let primary = RedisServer::start().expect("redis-server");
        let port = primary.port();
        let nodes: Vec<RedisServer> = std::iter::once(primary)
            .chain((1..2 * PER_SITE).map(|_| RedisServer::start_replica_of(port).expect("replica")))
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        let sites: BTreeMap<String, Vec<usize>> =
            [("a", 0..PER_SITE), ("b", PER_SITE..2 * PER_SITE)]
                .into_iter()
                .map(|(name, range)| (name.to_string(), range.collect()))
                .collect();
        let config = HaConfig {
            nodes: addrs.clone(),
            listen: "127.0.0.1:0".into(),
            sites: sites
                .iter()
                .map(|(name, members)| {
                    (
                        name.clone(),
                        members.iter().map(|i| addrs[*i].clone()).collect(),
                    )
                })
                .collect(),
            wait_replicas: WAIT as u32,
            ..HaConfig::default()
        };
        let controller = Controller::start(config, Arc::new(Solo::new(1, GroupState::default())))
            .await
            .expect("controller");
        state_where(&controller, Duration::from_secs(20), |s| {
            s.topology.epoch >= 1
        })
        .await;
        let mut handles = Vec::new();
        for _ in 0..=SUBSCRIBERS {
            let handle = Redis::connect_with(&RedisConfig {
                prefix: "dr".into(),
                controllers: vec![controller.local_addr().to_string()],
                ..RedisConfig::default()
            })
            .await
            .expect("a handle following the controller");
            handles.push(handle);
        }
        let writes = Arc::new(Mutex::new(Vec::new()));
        let writer = tokio::spawn(write_forever(handles[0].clone(), writes.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        Cluster {
            nodes,
            sites,
            controller,
            handles,
            writes,
            writer,
        }
    }

    /// The site of `addr`, with its nodes.
    fn site_of(&self, addr: &str) -> (String, Vec<usize>) {
        self.sites
            .iter()
            .find(|(_, members)| members.iter().any(|i| self.nodes[*i].addr() == addr))
            .map(|(name, members)| (name.clone(), members.clone()))
            .expect("every node is in a site")
    }

    fn primary(&self) -> (u64, String) {
        let topology = self.controller.state().borrow().topology.clone();
        (topology.epoch, topology.primary.expect("a primary"))
    }

    /// Freezes the site holding the primary until the group runs on the
    /// other one, then thaws it and waits until it is back as replicas.
    pub async fn lose_primary_site(&self) -> Loss {
        let (epoch, primary) = self.primary();
        let (site, members) = self.site_of(&primary);
        let addrs: Vec<String> = members.iter().map(|i| self.nodes[*i].addr()).collect();
        let mut alerts = self.controller.alerts();
        let frozen = Instant::now();
        for i in &members {
            signal(&self.nodes[*i], "-STOP");
        }
        let down = |a: &Alert| matches!(a, Alert::SiteDown { site: s, .. } if *s == site);
        alert_where(&mut alerts, Duration::from_secs(20), down).await;
        let alert_ms = ms(frozen.elapsed());
        let moved = state_where(&self.controller, Duration::from_secs(30), |s| {
            s.topology.epoch > epoch
                && s.topology
                    .primary
                    .as_ref()
                    .is_some_and(|p| !addrs.contains(p))
        })
        .await;
        let committed = Instant::now();
        let commit_ms = ms(frozen.elapsed());
        let new_primary = moved.topology.primary.expect("a primary");
        while !self.handles.iter().all(|h| h.url().contains(&new_primary)) {
            assert!(
                committed.elapsed() < Duration::from_secs(10),
                "handles did not follow"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let push_ms = ms(committed.elapsed());
        let rto_ms = loop {
            let first = self
                .writes
                .lock()
                .unwrap()
                .iter()
                .find(|w| w.took && w.at > frozen && w.url.contains(&new_primary))
                .map(|w| w.at - frozen);
            if let Some(took) = first {
                break ms(took);
            }
            assert!(
                frozen.elapsed() < Duration::from_secs(30),
                "no acknowledged write after the loss"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        for i in &members {
            signal(&self.nodes[*i], "-CONT");
        }
        let up = |a: &Alert| matches!(a, Alert::SiteUp { site: s, .. } if *s == site);
        alert_where(&mut alerts, Duration::from_secs(20), up).await;
        state_where(&self.controller, Duration::from_secs(30), |s| {
            s.topology.fenced.is_empty()
        })
        .await;
        // Let the returning nodes finish their resync before the next loss.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Loss {
            site,
            commit_ms,
            alert_ms,
            push_ms,
            rto_ms,
        }
    }

    /// `WAIT`-acknowledged writes missing on the primary now.
    pub async fn lost_acked(&self) -> usize {
        let (_, primary) = self.primary();
        // The acknowledged ones first: a write acknowledged after the KEYS
        // below would look lost.
        let acked: Vec<(u64, String)> = {
            let writes = self.writes.lock().unwrap();
            writes
                .iter()
                .filter(|w| w.acked)
                .map(|w| (w.key, w.url.clone()))
                .collect()
        };
        let client = redis::Client::open(format!("redis://{primary}")).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("primary");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("dr:*")
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        let present: std::collections::HashSet<u64> =
            keys.iter().filter_map(|k| k[3..].parse().ok()).collect();
        let lost: Vec<_> = acked
            .iter()
            .filter(|(key, _)| !present.contains(key))
            .collect();
        for (key, url) in &lost {
            eprintln!("lost: dr:{key}, acknowledged through {url} (primary now {primary})");
        }
        lost.len()
    }

    /// Flaps one replica of the primary's site for `soak`: site alerts and
    /// primary changes meanwhile.
    pub async fn flap(&self, soak: Duration) -> usize {
        let (_, primary) = self.primary();
        let (_, members) = self.site_of(&primary);
        let flapper = members
            .iter()
            .copied()
            .find(|i| self.nodes[*i].addr() != primary)
            .expect("a replica in the primary's site");
        let mut alerts = self.controller.alerts();
        let mut seed = u64::from(std::process::id()) | 1;
        let mut between = || {
            // xorshift64: a pause of 100–1500 ms.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            Duration::from_millis(100 + seed % 1400)
        };
        let (mut moves, mut last) = (0, primary);
        let start = Instant::now();
        while start.elapsed() < soak {
            signal(&self.nodes[flapper], "-STOP");
            tokio::time::sleep(between()).await;
            signal(&self.nodes[flapper], "-CONT");
            tokio::time::sleep(between()).await;
            let (_, now) = self.primary();
            if now != last {
                moves += 1;
                last = now;
            }
        }
        let mut site_downs = 0;
        while let Ok(alert) = alerts.try_recv() {
            if matches!(alert, Alert::SiteDown { .. }) {
                site_downs += 1;
            }
        }
        moves + site_downs
    }
}

/// `SET dr:<key>` then `WAIT 3 200`, every 2 ms, each recorded.
async fn write_forever(redis: Redis, writes: Arc<Mutex<Vec<Write>>>) {
    for key in 0u64.. {
        let url = redis.url();
        let mut conn = redis.conn();
        let reply: redis::RedisResult<((), i64)> = redis::pipe()
            .cmd("SET")
            .arg(format!("dr:{key}"))
            .arg(key)
            .cmd("WAIT")
            .arg(WAIT)
            .arg(200)
            .query_async(&mut conn)
            .await;
        let acked = matches!(reply, Ok(((), n)) if n >= WAIT as i64);
        writes.lock().unwrap().push(Write {
            key,
            took: reply.is_ok(),
            acked,
            url,
            at: Instant::now(),
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
