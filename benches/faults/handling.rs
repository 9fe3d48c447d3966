//! Fault handling (`mod_resilience::faults`): each fault kind injected for
//! real into a deployment run by the library deployer under host agents,
//! with a fault monitor over it and a client calling an idempotent method.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mod_resilience::faults::{FaultConfig, FaultMonitor};
use mod_resilience::host::{HostAgent, HostAgentConfig};
use modkit::distribute::deploy::{self, DeploymentFile, Launcher};
use modkit::distribute::topology::Alert;
use modkit::distribute::{Distributed, Redis, RedisConfig, RpcConfig};
use modkit::{Backend, Config, Registry, Status};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use crate::Work;

/// One injection's outcome.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The first fault alert's kind was the injected one.
    pub classified_ok: bool,
    /// Injection → the monitor's fault alert (and cordon).
    pub detect_ms: Option<f64>,
    /// Injection → serving again (restarted, recovered, or migrated).
    pub recovered_ms: Option<f64>,
    /// Calls started after the detection (+200 ms) that failed.
    pub failed_after: usize,
    /// All failed calls.
    pub failed: usize,
}

/// A deployment under host agents with a monitor and a client.
struct Lab {
    agents: Vec<HostAgent>,
    caller: Distributed,
    _monitor: FaultMonitor,
    alerts: broadcast::Receiver<Alert>,
}

async fn lab(url: &str, prefix: &str, file: &str, hosts: &[&str], cut: Option<&Cut>) -> Lab {
    let file = DeploymentFile::parse(file).expect("deployment file");
    let mut config = Config::default();
    config
        .edit_section(|r: &mut RedisConfig| {
            r.url = url.into();
            r.prefix = prefix.into();
        })
        .expect("redis section");
    let cut_env = cut.map(|c| (c.port, c.proxy.clone()));
    let mut agents = Vec::new();
    for host in hosts {
        let mut node_config = config.clone();
        let env = cut_env.clone();
        let deployment = Launcher::new(&file)
            .host(*host)
            .fresh_prefix(false)
            .log_writer(std::io::sink())
            .replica_env(move |role| match (&env, role.node.as_str()) {
                (Some((port, proxy)), "work-2") => vec![
                    ("MODKIT_RPC_LISTEN".into(), format!("127.0.0.1:{port}")),
                    ("MODKIT_RPC_ADVERTISE".into(), proxy.clone()),
                ],
                _ => Vec::new(),
            })
            .launch(&mut node_config)
            .expect("launch");
        let redis = Redis::connect(url, prefix).await.expect("redis");
        let node = Distributed::start(node_config).await.expect("agent node");
        let registry = node.registry();
        agents.push(HostAgent::start(
            HostAgentConfig::new(*host),
            deployment,
            redis,
            registry,
        ));
    }
    config.invoke.host = Some(Vec::new());
    config.invoke.timeout = Duration::from_millis(500);
    let caller = Distributed::start(config).await.expect("caller");
    let want: usize = file.process.iter().map(|p| p.replicas).sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while up(&*caller.registry()).await.len() < want {
        assert!(Instant::now() < deadline, "replicas did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let faults = FaultConfig {
        migratable: vec!["bench.Work".into()],
        ..FaultConfig::default()
    };
    let redis = Redis::connect(url, prefix).await.expect("redis");
    let monitor = FaultMonitor::start(faults, redis, caller.registry(), RpcConfig::default());
    let alerts = monitor.alerts();
    Lab {
        agents,
        caller,
        _monitor: monitor,
        alerts,
    }
}

async fn up(registry: &dyn Registry) -> Vec<(String, String)> {
    let all = registry.lookup("bench.Work").await.unwrap_or_default();
    all.into_iter()
        .filter(|i| i.status == Status::Up)
        .map(|i| (i.id, i.address))
        .collect()
}

/// A TCP proxy in front of one replica that can be cut (bytes held).
struct Cut {
    port: u16,
    proxy: String,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Cut {
    async fn start() -> Cut {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy");
        let proxy = listener.local_addr().expect("addr").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut ur, mut uw) = upstream.into_split();
                    let until = |cut: bool, flag: Arc<AtomicBool>| async move {
                        while flag.load(Ordering::Relaxed) != cut {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    };
                    // While cut the link is silent (bytes held, nothing
                    // refused); once healed this connection ends, as TCP's
                    // would after its retransmissions gave up.
                    if flag.load(Ordering::Relaxed) {
                        until(false, flag).await;
                        return;
                    }
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut uw) => {}
                        _ = tokio::io::copy(&mut ur, &mut cw) => {}
                        _ = until(true, flag.clone()) => until(false, flag).await,
                    }
                });
            }
        });
        Cut {
            port,
            proxy,
            cut,
            task,
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

const ONE_HOST: &str =
    "[[process]]\nname = \"work\"\nservices = [\"bench.Work\"]\nreplicas = 3\nhost = \"h1\"\n";
const TWO_HOSTS: &str =
    "[[process]]\nname = \"work\"\nservices = [\"bench.Work\"]\nhost = \"h1\"\n\
     [[process]]\nname = \"spare\"\nservices = [\"bench.Work\"]\nhost = \"h2\"\n";

/// One injection of `kind` (`service_kill`, `service_hang`, `network_cut`,
/// `host_loss`) on a fresh deployment under `prefix`.
pub async fn inject(url: &str, prefix: &str, kind: &str) -> Outcome {
    let cut = match kind {
        "network_cut" => Some(Cut::start().await),
        _ => None,
    };
    let (file, hosts): (&str, &[&str]) = match kind {
        "host_loss" => (TWO_HOSTS, &["h1", "h2"]),
        _ => (ONE_HOST, &["h1"]),
    };
    let mut lab = lab(url, prefix, file, hosts, cut.as_ref()).await;
    let registry = lab.caller.registry();
    let target = match kind {
        "host_loss" => "work-0",
        "network_cut" => "work-2",
        _ => "work-1",
    };
    let pid = lab.agents[0]
        .deployment()
        .process(target)
        .and_then(|p| p.pid)
        .expect("target running");
    let address = |reg: Arc<dyn Registry>| async move {
        up(&*reg)
            .await
            .into_iter()
            .find(|(id, _)| id == target)
            .map(|(_, a)| a)
    };
    let before = address(registry.clone()).await;

    // The client: idempotent calls, each failure with when its call started.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let client = lab.caller.container().get::<dyn Work>().expect("client");
    let load = {
        let (stop, failures) = (stop.clone(), failures.clone());
        tokio::spawn(async move {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let started = Instant::now();
                if client.who(seq).await.is_err() {
                    failures.lock().unwrap().push(started);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let injected = Instant::now();
    let mut lost_host = None;
    match kind {
        "service_kill" => signal(pid, "-KILL"),
        "service_hang" => signal(pid, "-STOP"),
        "network_cut" => cut
            .as_ref()
            .expect("cut")
            .cut
            .store(true, Ordering::Relaxed),
        _ => lost_host = Some(lab.agents.remove(0)),
    }
    drop(lost_host); // the host agent and its replicas die together

    // A killed replica is serving again when it is Up on a new address.
    let restarted = (kind == "service_kill").then(|| {
        let (registry, before) = (registry.clone(), before.clone());
        tokio::spawn(async move { wait_new_address(&registry, target, &before).await })
    });
    let expected = kind.split('_').next().unwrap_or_default();
    let mut outcome = Outcome::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut detected = None;
    let ms = |at: Instant| at.duration_since(injected).as_secs_f64() * 1e3;
    loop {
        let alert = match tokio::time::timeout_at(deadline, lab.alerts.recv()).await {
            Ok(Ok(alert)) => alert,
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            _ => break,
        };
        match alert {
            Alert::InstanceFault { node, kind, .. } if node == target && detected.is_none() => {
                outcome.classified_ok = kind == expected;
                outcome.detect_ms = Some(ms(Instant::now()));
                detected = Some(Instant::now());
                if let Some(cut) = &cut {
                    // Healed once detected: recovery is the cordon lifted.
                    cut.cut.store(false, Ordering::Relaxed);
                }
                if restarted.is_some() {
                    break;
                }
            }
            Alert::InstanceRecovered { node, .. } if node == target => {
                outcome.recovered_ms = Some(ms(Instant::now()));
                break;
            }
            Alert::Migrated { to, .. } => {
                let to = Some(to);
                if let Some(at) = wait_new_address(&registry, "", &to).await {
                    outcome.recovered_ms = Some(ms(at));
                }
                break;
            }
            _ => {}
        }
    }
    if let Some(restarted) = restarted {
        outcome.recovered_ms = restarted.await.ok().flatten().map(ms);
    }
    if kind == "service_hang" {
        signal(pid, "-CONT");
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let failures = failures.lock().unwrap();
    outcome.failed = failures.len();
    let after = detected.map(|d| d + Duration::from_millis(200));
    outcome.failed_after = match after {
        Some(after) => failures.iter().filter(|t| **t > after).count(),
        None => failures.len(),
    };
    outcome
}

/// When `node`'s `Up` instance has an address other than `before` (with
/// `node` empty: when an instance with id `before` is `Up`), within 10 s.
async fn wait_new_address(
    registry: &Arc<dyn Registry>,
    node: &str,
    before: &Option<String>,
) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let now = up(&**registry).await;
        let there = match node {
            "" => now.iter().any(|(id, _)| Some(id) == before.as_ref()),
            _ => now
                .iter()
                .any(|(id, a)| id == node && Some(a) != before.as_ref()),
        };
        if there {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// The serving role the deployer gives this binary: serves [`Work`].
pub async fn serve() -> modkit::Result<()> {
    let app = Distributed::start(Config::load(None)?).await?;
    app.container()
        .provide::<dyn Work>(Arc::new(crate::Worker))
        .await?;
    deploy::shutdown_signal().await?;
    app.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
