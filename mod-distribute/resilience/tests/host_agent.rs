//! The host agent with a real `redis-server` and real replica processes: the
//! replicas are this test binary again, running the ignored test
//! `host_child` in the role the deployer's environment gives it.
//!
//! Checked: the report appears under its key with a TTL of three periods,
//! each replica `Running` and probed `Ok`, the host's figures filled in, and
//! only the agent's host's processes in it; a `SIGSTOP`ped replica is
//! reported `Stopped` with a probe `Timeout` while the other is still probed
//! `Ok` and the reports keep coming (and `Running` again after `SIGCONT`); a
//! `kill -9` shows as `Gone` or a new pid with a restart; a frozen Redis
//! does not stop the reports for good; the report key expires once the
//! agent stopped. Instructions: garbage in the inbox is skipped and later
//! instructions still run; `restart` gives a new pid and an `ok` result;
//! `start` of a new node brings a replica of another host's process `Up` in
//! the registry and in the report; `stop` leaves it stopped; an unknown node
//! is a failed result; dropping the agent kills its replicas.
//!
//! Set `HOST_AGENT_TEST_LOGS=1` to see the replicas' output.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_api::{async_trait, service, Backend, Config, Error, Registry, Status};
use mod_distribute::deploy::{self, DeploymentFile, Launcher};
use mod_distribute::{Distributed, Redis, RedisConfig, RedisServer};
use mod_resilience::faults::report::{HostReport, Instruction, LocalProbe, ProcState};
use mod_resilience::host::{HostAgent, HostAgentConfig};

/// The replicas' one service.
#[service(crate = mod_api, name = "test.Echo")]
pub trait Echo {
    /// Which node answers.
    #[idempotent]
    async fn whoami(&self) -> Result<String, Error>;
}

struct Node(String);

#[async_trait]
impl Echo for Node {
    async fn whoami(&self) -> Result<String, Error> {
        Ok(self.0.clone())
    }
}

/// The serving role: provides `test.Echo`, serves until SIGTERM.
#[test]
#[ignore = "a replica of the host agent tests, run by them"]
fn host_child() {
    let Some(role) = deploy::role() else {
        return; // run by hand with --ignored: nothing to do
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // The signal handlers first: a SIGTERM once it is registered (or
        // READY) must find them (their first poll installs them).
        let mut signal = std::pin::pin!(deploy::shutdown_signal());
        assert!(futures_util::FutureExt::now_or_never(signal.as_mut()).is_none());
        let app = Distributed::start(Config::load(None).expect("config"))
            .await
            .expect("start");
        app.container()
            .provide::<dyn Echo>(Arc::new(Node(role.node.clone())))
            .await
            .expect("provide");
        println!();
        println!("READY {}", role.node);
        let signal = signal.await.expect("signal");
        app.shutdown(Duration::from_secs(2)).await;
        println!("BYE {} on {signal}", role.node);
    });
}

/// The arguments that make this binary run `host_child` only.
const CHILD_ARGS: [&str; 5] = [
    "--exact",
    "host_child",
    "--ignored",
    "--nocapture",
    "--test-threads=1",
];

const PERIOD: Duration = Duration::from_millis(250);

/// What a test works with: the Redis, a caller's registry, the agent.
struct Setup {
    _server: RedisServer,
    server_pid: u32,
    caller: Distributed,
    registry: Arc<dyn Registry>,
    redis: Redis,
    agent: HostAgent,
}

/// Host `h1`'s share of `file`, ready, under a started agent.
async fn setup(file: &str) -> Setup {
    let file = DeploymentFile::parse(file).unwrap();
    let server = RedisServer::start().expect("redis-server");
    let server_pid = server.pid().expect("redis-server pid");
    let mut config = Config::default();
    config
        .edit_section(|r: &mut RedisConfig| r.url = server.url())
        .unwrap();
    let mut launcher = Launcher::new(&file).args(CHILD_ARGS).host("h1");
    if std::env::var_os("HOST_AGENT_TEST_LOGS").is_none() {
        launcher = launcher.log_writer(std::io::sink());
    }
    let deployment = launcher.launch(&mut config).expect("launch");
    let caller = Distributed::start(config.clone()).await.expect("caller");
    let registry = caller.registry();
    deployment
        .wait_ready(&*registry, Duration::from_secs(60))
        .await
        .expect("ready");
    let redis = Redis::connect(&server.url(), deployment.redis_prefix())
        .await
        .expect("redis");
    let config = HostAgentConfig {
        report_every: PERIOD,
        ..HostAgentConfig::new("h1")
    };
    let agent = HostAgent::start(config, deployment, redis.clone(), registry.clone());
    Setup {
        _server: server,
        server_pid,
        caller,
        registry,
        redis,
        agent,
    }
}

impl Setup {
    /// The report in Redis now, if there is one.
    async fn report(&self) -> Option<HostReport> {
        let json: Option<String> = redis::cmd("GET")
            .arg(self.agent.report_key())
            .query_async(&mut self.redis.conn())
            .await
            .ok()?;
        Some(serde_json::from_str(&json?).expect("a report"))
    }

    /// The first report in Redis for which `check` holds (60 s at most,
    /// then a panic naming `what` with the last report).
    async fn wait_report(&self, what: &str, check: impl Fn(&HostReport) -> bool) -> HostReport {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let report = self.report().await;
            if let Some(report) = report.as_ref().filter(|r| check(r)) {
                return report.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no report with {what} within 60 s; the last: {report:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `RPUSH`es `entry` to the agent's inbox.
    async fn push(&self, entry: &str) {
        let _: i64 = redis::cmd("RPUSH")
            .arg(self.agent.inbox_key())
            .arg(entry)
            .query_async(&mut self.redis.conn())
            .await
            .unwrap();
    }

    async fn instruct(&self, instruction: &Instruction) {
        self.push(&serde_json::to_string(instruction).unwrap())
            .await;
    }

    /// The pid of replica `node` by the deployment.
    fn pid(&self, node: &str) -> Option<u32> {
        self.agent.deployment().process(node).and_then(|p| p.pid)
    }
}

/// Whether replica `node` is in `report`, running and probed fine.
fn healthy(report: &HostReport, node: &str) -> bool {
    report.processes.iter().any(|p| {
        p.node == node
            && p.state == ProcState::Running
            && matches!(p.local_probe, LocalProbe::Ok { .. })
    })
}

fn process<'a>(
    report: &'a HostReport,
    node: &str,
) -> &'a mod_resilience::faults::report::ProcessReport {
    report
        .processes
        .iter()
        .find(|p| p.node == node)
        .unwrap_or_else(|| panic!("no {node} in {report:#?}"))
}

/// `kill -<signal> <pid>`.
fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: a signal to a process of this test.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after 60 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 60 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const TWO_HOSTS: &str = r#"
    [[process]]
    name = "alpha"
    services = ["test.Echo"]
    replicas = 2
    host = "h1"

    [[process]]
    name = "beta"
    services = ["test.Echo"]
    host = "h2"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_a_frozen_and_a_killed_replica() {
    let s = setup(TWO_HOSTS).await;
    let both = |r: &HostReport| healthy(r, "alpha-0") && healthy(r, "alpha-1");
    let report = s.wait_report("both replicas healthy", both).await;

    // Host h1's processes only, each as the deployment knows it.
    let nodes: Vec<&str> = report.processes.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes, ["alpha-0", "alpha-1"]);
    assert_eq!(report.host, "h1");
    for p in &report.processes {
        assert_eq!(p.pid, s.pid(&p.node));
        assert_eq!((p.process.as_str(), p.restarts), ("alpha", 0));
        assert_eq!(p.services, ["test.Echo"]);
        // (cpu_ticks may still be 0: a tick is 10 ms)
        assert!(p.rss_bytes > 0, "{p:?}");
    }
    assert!(report.mem_total_bytes > 0 && report.mem_available_bytes <= report.mem_total_bytes);
    assert!(report.disk_free_bytes > 0 && report.load1 >= 0.0);
    assert!(report.actions.is_empty());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(s.agent.report_key())
        .query_async(&mut s.redis.conn())
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 750, "PTTL {ttl}");
    assert!(s.agent.latest().is_some_and(|r| r.host == "h1"));

    // SIGSTOP: stopped, the probe times out; the other is still fine, and
    // the reports keep their pace.
    let frozen = s.pid("alpha-0").unwrap();
    signal(frozen, libc::SIGSTOP);
    let report = s
        .wait_report("alpha-0 stopped and timing out", |r| {
            let p = process(r, "alpha-0");
            p.state == ProcState::Stopped && p.local_probe == LocalProbe::Timeout
        })
        .await;
    assert!(healthy(&report, "alpha-1"), "{report:#?}");
    let next = s
        .wait_report("a later report", |r| r.at_ms > report.at_ms)
        .await;
    assert!(
        next.at_ms - report.at_ms < 3_000,
        "reports {} ms apart while a replica is frozen",
        next.at_ms - report.at_ms
    );
    assert_eq!(process(&next, "alpha-0").state, ProcState::Stopped);
    signal(frozen, libc::SIGCONT);
    s.wait_report("alpha-0 healthy again", |r| healthy(r, "alpha-0"))
        .await;
    assert_eq!(s.pid("alpha-0"), Some(frozen));

    // kill -9: gone or a new pid, with a restart; then healthy again.
    let killed = s.pid("alpha-1").unwrap();
    signal(killed, libc::SIGKILL);
    let report = s
        .wait_report("alpha-1 restarted", |r| {
            let p = process(r, "alpha-1");
            p.restarts >= 1 && (p.state == ProcState::Gone || p.pid != Some(killed))
        })
        .await;
    assert!(process(&report, "alpha-1").restarts >= 1);
    let report = s
        .wait_report("alpha-1 healthy again", |r| healthy(r, "alpha-1"))
        .await;
    let again = process(&report, "alpha-1");
    assert!(again.pid.is_some_and(|p| p != killed), "{again:?}");

    // A frozen Redis: writes time out, then the reports come again.
    signal(s.server_pid, libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(s.server_pid, libc::SIGCONT);
    let resumed = Instant::now();
    let before = s.agent.latest().unwrap().at_ms;
    s.wait_report("reports after Redis froze", |r| r.at_ms > before + 1000)
        .await;
    assert!(resumed.elapsed() < Duration::from_secs(30));

    // Stopped: the replicas end, the report expires.
    let pids: Vec<u32> = ["alpha-0", "alpha-1"]
        .iter()
        .filter_map(|n| s.pid(n))
        .collect();
    let Setup {
        caller,
        registry,
        redis,
        agent,
        _server,
        ..
    } = s;
    let key = agent.report_key().to_owned();
    caller.shutdown(Duration::from_secs(1)).await;
    drop((caller, registry));
    agent.stop(Duration::from_secs(10)).await;
    for pid in pids {
        assert!(gone(pid), "{pid} outlived the agent");
    }
    let stopped = Instant::now();
    eventually("the report key expired", || {
        let mut conn = redis.conn();
        let key = key.clone();
        async move {
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            exists == 0
        }
    })
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
}

const ONE_AND_A_SPARE: &str = r#"
    [[process]]
    name = "alpha"
    services = ["test.Echo"]
    host = "h1"

    [[process]]
    name = "mig"
    services = ["test.Echo"]
    host = "h2"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carries_out_instructions() {
    let s = setup(ONE_AND_A_SPARE).await;
    s.wait_report("alpha-0 healthy", |r| healthy(r, "alpha-0"))
        .await;
    let first = s.pid("alpha-0").unwrap();

    // Garbage is skipped; the restart after it runs.
    s.push("not json at all").await;
    s.push(r#"{"do":"explode","id":9}"#).await;
    s.push("\u{0}\u{1}binary").await;
    s.instruct(&Instruction::Restart {
        id: 1,
        node: "alpha-0".into(),
    })
    .await;
    let report = s
        .wait_report("the restart's result", |r| {
            r.actions.iter().any(|a| a.id == 1)
        })
        .await;
    let ids: Vec<u64> = report.actions.iter().map(|a| a.id).collect();
    assert_eq!(ids, [1], "{report:#?}");
    let action = &report.actions[0];
    assert!(action.ok && action.node == "alpha-0", "{action:?}");
    let second = s.pid("alpha-0").unwrap();
    assert_ne!(second, first);
    assert!(gone(first));
    let report = s
        .wait_report("alpha-0 healthy after the restart", |r| {
            healthy(r, "alpha-0")
        })
        .await;
    let p = process(&report, "alpha-0");
    assert_eq!((p.pid, p.restarts), (Some(second), 1));

    // Start: a replica of h2's process, here, Up in the registry.
    s.instruct(&Instruction::Start {
        id: 2,
        process: "mig".into(),
        node: "mig-7".into(),
    })
    .await;
    let report = s
        .wait_report("the start's result", |r| {
            r.actions.iter().any(|a| a.id == 2)
        })
        .await;
    let action = report.actions.iter().find(|a| a.id == 2).unwrap();
    assert!(action.ok && action.node == "mig-7", "{action:?}");
    let registry = s.registry.clone();
    eventually("mig-7 up in the registry", || {
        let registry = registry.clone();
        async move {
            let instances = registry.lookup("test.Echo").await.unwrap_or_default();
            instances
                .iter()
                .any(|i| i.id == "mig-7" && i.status == Status::Up)
        }
    })
    .await;
    s.wait_report("mig-7 healthy", |r| healthy(r, "mig-7"))
        .await;
    let mig = s.agent.deployment().process("mig-7").unwrap();
    assert_eq!(mig.role.host, "h1");

    // Stop: stopped, and it stays so.
    s.instruct(&Instruction::Stop {
        id: 3,
        node: "alpha-0".into(),
    })
    .await;
    let report = s
        .wait_report("the stop's result", |r| r.actions.iter().any(|a| a.id == 3))
        .await;
    let action = report.actions.iter().find(|a| a.id == 3).unwrap();
    assert!(action.ok, "{action:?}");
    let stopped = s
        .wait_report("alpha-0 gone", |r| {
            let p = process(r, "alpha-0");
            p.state == ProcState::Gone && p.pid.is_none()
        })
        .await;
    assert!(gone(second));
    let later = s
        .wait_report("four periods later", |r| r.at_ms >= stopped.at_ms + 1000)
        .await;
    let p = process(&later, "alpha-0");
    assert_eq!((p.state, p.pid, p.restarts), (ProcState::Gone, None, 1));
    assert!(healthy(&later, "mig-7"));

    // An unknown node: a failed result naming it.
    s.instruct(&Instruction::Restart {
        id: 4,
        node: "nope-0".into(),
    })
    .await;
    let report = s
        .wait_report("the failed restart's result", |r| {
            r.actions.iter().any(|a| a.id == 4)
        })
        .await;
    let action = report.actions.iter().find(|a| a.id == 4).unwrap();
    assert!(!action.ok && action.detail.contains("nope-0"), "{action:?}");
    let ids: Vec<u64> = report.actions.iter().map(|a| a.id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert!(s.agent.latest().is_some_and(|r| r.actions.len() == 4));

    // Dropping the agent kills its replicas.
    let mig = s.pid("mig-7").unwrap();
    let Setup { caller, agent, .. } = s;
    caller.shutdown(Duration::from_secs(1)).await;
    drop(agent);
    eventually("mig-7 killed with the agent", || async move { gone(mig) }).await;
}
