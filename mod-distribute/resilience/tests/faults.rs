//! Fault handling with real processes: replicas of a service (this test
//! binary again, in the role the deployer gives it) under host agents, a
//! fault monitor over them, and a client calling an idempotent method all
//! along. Each test injects one fault for real and checks the verdict, the
//! alerts, the registry, and that the client's calls kept succeeding.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_api::state::{Role, StateConfig, StateHandle, Stateful};
use mod_api::{async_trait, service, Backend, Config, Error, Registry, ServiceExt, Status};
use mod_distribute::deploy::{self, DeploymentFile, Launcher};
use mod_distribute::topology::Alert;
use mod_distribute::{Distributed, Redis, RedisServer, RpcConfig};
use mod_resilience::faults::{FaultConfig, FaultKind, FaultMonitor, Repair, Rule, Step};
use mod_resilience::host::{HostAgent, HostAgentConfig};
use tokio::sync::broadcast;

mod common;

use common::fault_proxy::FaultProxy;
use common::signal;

/// The service under test.
#[service(crate = mod_api, name = "test.Work")]
pub trait Work {
    /// The answering replica's node id.
    #[idempotent]
    async fn who(&self) -> Result<String, Error>;
}

struct Replica(String);

/// A stateful service: a running total, owned by one replica at a time.
#[service(crate = mod_api, name = "test.Tally")]
pub trait Tally {
    /// Adds one; the answering node, its owner epoch and the new total.
    async fn add(&self) -> Result<(String, u64, u64), Error>;
}

struct Total {
    node: String,
    total: std::sync::Mutex<u64>,
    handle: std::sync::OnceLock<StateHandle>,
}

#[async_trait]
impl Tally for Total {
    async fn add(&self) -> Result<(String, u64, u64), Error> {
        let epoch = match self.handle.get().map(StateHandle::role) {
            Some(Role::Owner { epoch }) => epoch,
            _ => 0,
        };
        let mut total = self.total.lock().unwrap();
        *total += 1;
        Ok((self.node.clone(), epoch, *total))
    }
}

impl Stateful for Total {
    type State = u64;
    async fn checkpoint(&self) -> mod_api::Result<u64> {
        Ok(*self.total.lock().unwrap())
    }
    async fn restore(&self, total: u64) -> mod_api::Result<()> {
        *self.total.lock().unwrap() = total;
        Ok(())
    }
}

#[async_trait]
impl Work for Replica {
    async fn who(&self) -> Result<String, Error> {
        Ok(self.0.clone())
    }
}

/// The serving role: serves `Work` until SIGTERM.
#[test]
#[ignore = "a replica of the fault tests, run by them"]
fn faults_child() {
    let Some(role) = deploy::role() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let app = Distributed::start(Config::load(None).expect("config"))
            .await
            .expect("start");
        app.container()
            .provide::<dyn Work>(Arc::new(Replica(role.node.clone())))
            .await
            .expect("provide");
        // Hosted only where the deployment file names it.
        let total = Arc::new(Total {
            node: role.node.clone(),
            total: std::sync::Mutex::new(0),
            handle: std::sync::OnceLock::new(),
        });
        let state = StateConfig::new()
            .period(Duration::from_millis(100))
            .lease(Duration::from_secs(1));
        let handle = app
            .provide_stateful::<dyn Tally, _>(total.clone(), total.clone(), state)
            .await
            .expect("provide the tally");
        total.handle.set(handle).ok();
        deploy::shutdown_signal().await.expect("signal");
        app.shutdown(Duration::from_secs(1)).await;
    });
}

const CHILD_ARGS: [&str; 5] = [
    "--exact",
    "faults_child",
    "--ignored",
    "--nocapture",
    "--test-threads=1",
];

/// A deployment under host agents, a caller, and a monitor over them.
struct Rig {
    _redis: RedisServer,
    agents: Vec<HostAgent>,
    caller: Distributed,
    monitor: FaultMonitor,
    alerts: broadcast::Receiver<Alert>,
    /// Alerts received and not asked for yet.
    seen: Vec<Alert>,
}

impl Rig {
    /// `file`'s processes on their hosts (one agent per host label in
    /// `hosts`), each replica's env from `env`.
    async fn start(
        file: &str,
        hosts: &[&str],
        faults: FaultConfig,
        env: impl Fn(&deploy::Role) -> Vec<(String, String)> + Clone + 'static,
    ) -> Rig {
        let redis = RedisServer::start().expect("redis-server");
        let file = DeploymentFile::parse(file).expect("file");
        let prefix = format!("faults-{}", std::process::id());
        let mut config = Config::default();
        config
            .edit_section(|r: &mut mod_distribute::RedisConfig| {
                r.url = redis.url();
                r.prefix = prefix.clone();
            })
            .unwrap();
        let mut agents = Vec::new();
        for host in hosts {
            let mut host_config = config.clone();
            let deployment = Launcher::new(&file)
                .args(CHILD_ARGS)
                .host(*host)
                .fresh_prefix(false)
                .replica_env(env.clone())
                .launch(&mut host_config)
                .expect("launch");
            let handle = Redis::connect(&redis.url(), &prefix).await.expect("redis");
            let registry = Distributed::start(host_config.clone())
                .await
                .expect("agent node")
                .registry();
            let agent_config = HostAgentConfig::new(*host);
            agents.push(HostAgent::start(agent_config, deployment, handle, registry));
        }
        config.invoke.host = Some(Vec::new());
        config.invoke.timeout = Duration::from_millis(500);
        let caller = Distributed::start(config).await.expect("caller");
        let replicas: usize = file.process.iter().map(|p| p.replicas).sum();
        eventually("every replica Up", Duration::from_secs(30), || {
            let registry = caller.registry();
            async move { up(&*registry).await.len() == replicas }
        })
        .await;
        let handle = Redis::connect(&redis.url(), &prefix).await.expect("redis");
        let monitor = FaultMonitor::start(faults, handle, caller.registry(), RpcConfig::default());
        let alerts = monitor.alerts();
        Rig {
            _redis: redis,
            agents,
            caller,
            monitor,
            alerts,
            seen: Vec::new(),
        }
    }

    /// The pid of replica `node`.
    fn pid(&self, node: &str) -> u32 {
        self.agents
            .iter()
            .find_map(|a| a.deployment().process(node))
            .and_then(|p| p.pid)
            .expect("running replica")
    }

    /// The first alert of kind `kind` not asked for yet, within `within`.
    async fn alert(&mut self, kind: &str, within: Duration) -> Alert {
        if let Some(i) = self.seen.iter().position(|a| a.kind() == kind) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.alerts.recv()).await {
                Ok(Ok(alert)) if alert.kind() == kind => return alert,
                Ok(Ok(other)) => self.seen.push(other),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => panic!("alerts ended: {e}"),
                Err(_) => panic!("no {kind} alert within {within:?}"),
            }
        }
    }

    /// Calls `who` in a loop until stopped: (calls, failures and when).
    fn load(&self) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(usize, Failures)>) {
        let stop = Arc::new(AtomicBool::new(false));
        let client = self.caller.container().get::<dyn Work>().expect("client");
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (calls, failures) = (AtomicUsize::new(0), std::sync::Mutex::new(Vec::new()));
            while !flag.load(Ordering::Relaxed) {
                calls.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                if let Err(e) = client.who().await {
                    failures.lock().unwrap().push((started, e.to_string()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (calls.into_inner(), failures.into_inner().unwrap())
        });
        (stop, task)
    }
}

/// Failed calls of the load, with when they started.
type Failures = Vec<(Instant, String)>;

/// The failures of calls started after `at`, which must be none; the ones before (while the
/// fault was being detected: a frozen replica costs its callers their
/// deadline until it is cordoned or ejected) at most `before`.
fn none_after(failures: &Failures, at: Instant, before: usize) {
    let late: Vec<_> = failures.iter().filter(|(t, _)| *t > at).collect();
    assert!(late.is_empty(), "calls failed after the cordon: {late:?}");
    assert!(
        failures.len() <= before,
        "{} calls failed: {failures:?}",
        failures.len()
    );
}

/// The `Up` instances of `test.Work`: their node ids.
async fn up(registry: &dyn Registry) -> Vec<String> {
    let all = registry.lookup("test.Work").await.unwrap_or_default();
    all.into_iter()
        .filter(|i| i.status == Status::Up)
        .map(|i| i.id)
        .collect()
}

async fn status(registry: &dyn Registry, node: &str) -> Option<Status> {
    let all = registry.lookup("test.Work").await.unwrap_or_default();
    all.into_iter().find(|i| i.id == node).map(|i| i.status)
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn kind_of(alert: &Alert) -> &str {
    match alert {
        Alert::InstanceFault { kind, .. } => kind,
        _ => "",
    }
}

fn three_replicas() -> &'static str {
    "[[process]]\nname = \"work\"\nservices = [\"test.Work\"]\nreplicas = 3\nhost = \"h1\"\n"
}

fn no_env(_: &deploy::Role) -> Vec<(String, String)> {
    Vec::new()
}

/// A replica frozen with SIGSTOP: classified service, cordoned, restarted
/// by its agent, Up again; the client's calls never fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_is_cordoned_and_restarted() {
    let mut rig = Rig::start(three_replicas(), &["h1"], FaultConfig::default(), no_env).await;
    let (stop, load) = rig.load();
    let old = rig.pid("work-1");
    signal(old, "-STOP");
    let frozen = Instant::now();

    let fault = rig.alert("instance_fault", Duration::from_secs(5)).await;
    let cordoned_after = frozen.elapsed();
    // The registry tells callers within milliseconds.
    let cordoned = Instant::now() + Duration::from_millis(200);
    assert_eq!(kind_of(&fault), "service", "{fault:?}");
    let Alert::InstanceFault { node, actions, .. } = &fault else {
        unreachable!()
    };
    assert_eq!(node, "work-1");
    assert!(actions.contains(&"cordon".to_owned()), "{actions:?}");
    assert!(
        cordoned_after < Duration::from_secs(2),
        "{cordoned_after:?}"
    );

    rig.alert("instance_recovered", Duration::from_secs(15))
        .await;
    let registry = rig.caller.registry();
    assert_eq!(status(&*registry, "work-1").await, Some(Status::Up));
    assert_ne!(rig.pid("work-1"), old, "restarted by its agent");
    stop.store(true, Ordering::Relaxed);
    let (calls, failures) = load.await.unwrap();
    assert!(calls > 20, "{calls}");
    none_after(&failures, cordoned, 3);
    assert!(rig.monitor.faulty().is_empty());
}

/// One replica reachable only through a proxy that is cut: its agent still
/// reaches it, so the verdict is network, not service; no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_replica_is_a_network_fault() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = FaultProxy::start(port).await;
    let advertise = proxy.addr.clone();
    let env = move |role: &deploy::Role| match role.node.as_str() {
        "work-2" => vec![
            ("MODKIT_RPC_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("MODKIT_RPC_ADVERTISE".into(), advertise.clone()),
        ],
        _ => Vec::new(),
    };
    let mut rig = Rig::start(three_replicas(), &["h1"], FaultConfig::default(), env).await;
    let (stop, load) = rig.load();
    let pid = rig.pid("work-2");
    proxy.cut(true);

    let fault = rig.alert("instance_fault", Duration::from_secs(5)).await;
    let cordoned = Instant::now() + Duration::from_millis(200);
    assert_eq!(kind_of(&fault), "network", "{fault:?}");
    let registry = rig.caller.registry();
    assert_eq!(status(&*registry, "work-2").await, Some(Status::Draining));
    proxy.cut(false);
    rig.alert("instance_recovered", Duration::from_secs(10))
        .await;
    assert_eq!(status(&*registry, "work-2").await, Some(Status::Up));
    assert_eq!(rig.pid("work-2"), pid, "a network fault restarts nothing");
    stop.store(true, Ordering::Relaxed);
    let (_, failures) = load.await.unwrap();
    none_after(&failures, cordoned, 3);
}

/// A repair that never works (a command that fixes nothing) escalates after
/// `max_repairs`, with the history, and the replica is marked Down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repairs_that_keep_failing_escalate() {
    let dir = tempfile::tempdir().unwrap();
    let (paged, told) = (dir.path().join("paged"), dir.path().join("told"));
    let faults = FaultConfig {
        max_repairs: 2,
        // The escalation target and the process's own report target.
        escalate_to: Some(format!("cat > {}", paged.display())),
        report_to: [("work".to_owned(), format!("cat >> {}", told.display()))].into(),
        rules: vec![Rule {
            kind: FaultKind::Service,
            report: true,
            repair: Some(Repair {
                step: Step::Command("true".into()),
                expected: Duration::from_millis(300),
            }),
        }],
        ..FaultConfig::default()
    };
    let mut rig = Rig::start(three_replicas(), &["h1"], faults, no_env).await;
    let pid = rig.pid("work-0");
    signal(pid, "-STOP");
    let escalated = rig.alert("escalated", Duration::from_secs(10)).await;
    let Alert::Escalated { node, history } = &escalated else {
        unreachable!()
    };
    assert_eq!(node, "work-0");
    assert_eq!(history.len(), 2, "{history:?}");
    let registry = rig.caller.registry();
    assert_eq!(status(&*registry, "work-0").await, Some(Status::Down));
    signal(pid, "-CONT");
    let read = |path: std::path::PathBuf| async move {
        let mut text = String::new();
        for _ in 0..200 {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains("escalated") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        text
    };
    let paged = read(paged).await;
    assert!(
        paged.contains(r#""alert":"escalated""#) && paged.contains("work-0"),
        "{paged}"
    );
    let told = read(told).await;
    assert!(told.contains(r#""alert":"instance_fault""#), "{told}");
    assert!(told.contains(r#""alert":"escalated""#), "{told}");
}

/// With two replicas, cordoning one would be 50 % > 49 %: it is held back,
/// and an alert says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cordon_cap_holds_back_and_says_so() {
    let file =
        "[[process]]\nname = \"work\"\nservices = [\"test.Work\"]\nreplicas = 2\nhost = \"h1\"\n";
    let faults = FaultConfig {
        rules: vec![Rule {
            kind: FaultKind::Service,
            report: true,
            repair: None,
        }],
        ..FaultConfig::default()
    };
    let mut rig = Rig::start(file, &["h1"], faults, no_env).await;
    let pid = rig.pid("work-0");
    signal(pid, "-STOP");
    let held = rig.alert("cordon_held_back", Duration::from_secs(5)).await;
    assert!(
        matches!(&held, Alert::CordonHeldBack { node, total: 2, .. } if node == "work-0"),
        "{held:?}"
    );
    let registry = rig.caller.registry();
    assert_eq!(status(&*registry, "work-0").await, Some(Status::Up));
    signal(pid, "-CONT");
}

/// A whole host lost (its agent and its replicas gone): host fault, and the
/// migratable service starts on the other host's agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_host_migrates_its_migratable_services() {
    let file = "[[process]]\nname = \"work\"\nservices = [\"test.Work\"]\nreplicas = 1\nhost = \"h1\"\n\
                [[process]]\nname = \"spare\"\nservices = [\"test.Work\"]\nreplicas = 1\nhost = \"h2\"\n";
    let faults = FaultConfig {
        migratable: vec!["test.Work".into()],
        ..FaultConfig::default()
    };
    let mut rig = Rig::start(file, &["h1", "h2"], faults, no_env).await;
    let (stop, load) = rig.load();
    let h1 = rig.agents.remove(0);
    let lost = Instant::now();
    drop(h1); // the agent and its replicas die with it

    let fault = rig.alert("instance_fault", Duration::from_secs(5)).await;
    assert_eq!(kind_of(&fault), "host", "{fault:?}");
    let migrated = rig.alert("migrated", Duration::from_secs(5)).await;
    let Alert::Migrated { from, to, host } = &migrated else {
        unreachable!()
    };
    assert_eq!((from.as_str(), host.as_str()), ("work-0", "h2"));
    let registry = rig.caller.registry();
    let to = to.clone();
    eventually("the migrated replica Up", Duration::from_secs(10), || {
        let (registry, to) = (registry.clone(), to.clone());
        async move { up(&*registry).await.contains(&to) }
    })
    .await;
    eprintln!(
        "migrated replica up {:?} after the host was lost",
        lost.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let (_, failures) = load.await.unwrap();
    // Its replica died: refused connections are retried on the spare.
    none_after(&failures, lost, 0);
}

/// `kill -9` of a replica: a service fault, reported; its agent's
/// supervisor has it serving again within seconds; no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_reported_and_serves_again() {
    let mut rig = Rig::start(three_replicas(), &["h1"], FaultConfig::default(), no_env).await;
    let (stop, load) = rig.load();
    let old = rig.pid("work-2");
    let registry = rig.caller.registry();
    let address = |registry: Arc<dyn Registry>| async move {
        let all = registry.lookup("test.Work").await.unwrap_or_default();
        all.into_iter()
            .find(|i| i.id == "work-2" && i.status == Status::Up)
            .map(|i| i.address)
    };
    let before = address(registry.clone()).await.expect("work-2 Up");
    signal(old, "-KILL");
    let killed = Instant::now();
    let fault = rig.alert("instance_fault", Duration::from_secs(5)).await;
    assert_eq!(kind_of(&fault), "service", "{fault:?}");
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
    eventually(
        "work-2 serving again, on a new address",
        Duration::from_secs(5),
        || {
            let (registry, before) = (registry.clone(), before.clone());
            async move { address(registry).await.is_some_and(|a| a != before) }
        },
    )
    .await;
    assert_ne!(rig.pid("work-2"), old);
    stop.store(true, Ordering::Relaxed);
    let (_, failures) = load.await.unwrap();
    none_after(&failures, killed, 0);
}

/// The owner of a stateful service freezes: the monitor does not cordon
/// it but moves the service (or finds it moved: the standby claims it by
/// itself once the frozen owner's lease runs out); the other replica
/// restores the last checkpoint under epoch 2 and the total goes on from
/// where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_owner_of_a_stateful_service_is_taken_over() {
    let file = "[[process]]\nname = \"work\"\nservices = [\"test.Work\", \"test.Tally\"]\nreplicas = 2\nhost = \"h1\"\n";
    let mut rig = Rig::start(file, &["h1"], FaultConfig::default(), no_env).await;
    let registry = rig.caller.registry();
    let owners = || {
        let registry = registry.clone();
        async move { registry.lookup("test.Tally").await.unwrap_or_default() }
    };
    eventually("an owner registered", Duration::from_secs(10), || async {
        owners().await.len() == 1
    })
    .await;
    let owner = owners().await[0].id.clone();
    let tally = rig.caller.container().get::<dyn Tally>().expect("client");
    for n in 1..=20 {
        let (node, epoch, total) = tally.add().await.expect("add");
        assert_eq!((node.as_str(), epoch, total), (owner.as_str(), 1, n));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // checkpointed
    signal(rig.pid(&owner), "-STOP");

    let fault = rig.alert("instance_fault", Duration::from_secs(5)).await;
    let Alert::InstanceFault { node, actions, .. } = &fault else {
        unreachable!()
    };
    assert_eq!(node, &owner);
    let other = if owner == "work-0" {
        "work-1"
    } else {
        "work-0"
    };
    assert!(
        actions.contains(&format!("takeover:test.Tally:{other}")),
        "{actions:?}"
    );
    // Calls that reach the frozen owner time out (and never ran); then the
    // new owner answers, from the checkpointed total.
    let tally = tally.with_timeout(Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(8);
    let answer = loop {
        assert!(Instant::now() < deadline, "no new owner answered");
        match tally.add().await {
            Ok(answer) => break answer,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(
        answer,
        (other.to_owned(), 2, 21),
        "taken over with the state"
    );
}
