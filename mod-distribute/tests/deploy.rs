//! The deployer with real processes and a real `redis-server`: the replicas
//! are this test binary again, running the ignored test `deploy_child` in the
//! role the deployer's environment gives it (`deploy::role()`).
//!
//! Checked: every replica becomes `Up` and answers with its own per-process
//! configuration; its output comes prefixed with its node; a `kill -9` is
//! restarted (events, restart count, registry); `stop` ends every process
//! gracefully (SIGTERM: each says goodbye) without restarting any, and leaves
//! no process behind; `restart = "never"` leaves a crashed replica down and
//! `wait_ready` says so at once; `on-failure` backs off 100, 200, 400 ms;
//! dropping a deployment kills its processes; a launcher (`deploy_launcher`,
//! this binary again) stops its replicas gracefully on SIGTERM
//! (`run_until_signal`) and takes them along when SIGKILLed; bad files and a
//! missing program are errors.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mod_api::{async_trait, service, Backend, Config, Error, ErrorKind, Status};
use mod_distribute::deploy::{self, Deployment, DeploymentFile, Event, Launcher};
use mod_distribute::{Distributed, RedisConfig, RedisServer};

mod common;

use common::gone;

/// What a replica says about itself: node, process, host label, greeting.
type Hello = (String, String, String, String);

/// A service hosted by the `alpha` processes.
#[service(crate = mod_api, name = "test.Alpha")]
pub trait Alpha {
    /// Who answers.
    #[idempotent]
    async fn hello(&self) -> Result<Hello, Error>;
}

/// A service hosted by the `beta` process.
#[service(crate = mod_api, name = "test.Beta")]
pub trait Beta {
    /// Who answers.
    #[idempotent]
    async fn hello(&self) -> Result<Hello, Error>;
}

struct Replica(Hello);

#[async_trait]
impl Alpha for Replica {
    async fn hello(&self) -> Result<Hello, Error> {
        Ok(self.0.clone())
    }
}

#[async_trait]
impl Beta for Replica {
    async fn hello(&self) -> Result<Hello, Error> {
        Ok(self.0.clone())
    }
}

/// The serving role: provides both services (`MODKIT_HOST` picks what is
/// served), prints a few lines, serves until SIGTERM, then shuts down.
#[test]
#[ignore = "a replica of the deployment tests, run by them"]
fn deploy_child() {
    let Some(role) = deploy::role() else {
        return; // run by hand with --ignored: nothing to do
    };
    if let Ok(code) = std::env::var("DEPLOY_TEST_EXIT") {
        eprintln!("{} exits with {code}", role.node);
        std::process::exit(code.parse().expect("exit code"));
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // The signal handlers first: a SIGTERM once it is registered (or
        // READY) must find them (their first poll installs them).
        let mut signal = std::pin::pin!(deploy::shutdown_signal());
        assert!(futures_util::FutureExt::now_or_never(signal.as_mut()).is_none());
        let app = Distributed::start(Config::load(None).expect("config"))
            .await
            .expect("start");
        let greeting = std::env::var("DEPLOY_TEST_GREETING").unwrap_or_default();
        let me = (role.node.clone(), role.process, role.host, greeting);
        let container = app.container();
        container
            .provide::<dyn Alpha>(Arc::new(Replica(me.clone())))
            .await
            .expect("provide");
        container
            .provide::<dyn Beta>(Arc::new(Replica(me)))
            .await
            .expect("provide");
        container.check_hosting().expect("hosting");
        // After libtest's "test deploy_child ... ", which ends in no newline.
        println!();
        println!("READY {}", role.node);
        eprintln!("{} on stderr", role.node);
        println!("{}", "x".repeat(deploy::MAX_LINE_BYTES + 100));
        let signal = signal.await.expect("signal");
        app.shutdown(Duration::from_secs(2)).await;
        println!("BYE {} on {signal}", role.node);
    });
}

/// A launcher that only runs its deployment (two replicas) until a signal:
/// prints the replicas' pids once they are up, then `run_until_signal`.
#[test]
#[ignore = "a launcher of the deployment tests, run by them"]
fn deploy_launcher() {
    if std::env::var_os(LAUNCHER_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let file = DeploymentFile::parse(
            "[[process]]\nname = \"solo\"\nservices = [\"test.Alpha\"]\nreplicas = 2\n",
        )
        .unwrap();
        let mut config = Config::default();
        let deployment = launcher(&file).launch(&mut config).expect("launch");
        let caller = Distributed::start(config).await.expect("caller");
        deployment
            .wait_ready(&*caller.registry(), Duration::from_secs(30))
            .await
            .expect("ready");
        drop(caller);
        let pids: Vec<String> = deployment
            .processes()
            .iter()
            .map(|p| p.pid.expect("running").to_string())
            .collect();
        let running = tokio::spawn(deployment.run_until_signal(Duration::from_secs(10)));
        // Let it install its signal handlers before the test sends one.
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!();
        println!("PIDS {}", pids.join(" "));
        running.await.expect("join").expect("run_until_signal");
        println!("LAUNCHER STOPPED");
    });
}

const LAUNCHER_ENV: &str = "DEPLOY_TEST_LAUNCHER";

/// The arguments that make this binary run `deploy_child` only.
const CHILD_ARGS: [&str; 5] = [
    "--exact",
    "deploy_child",
    "--ignored",
    "--nocapture",
    "--test-threads=1",
];

fn launcher(file: &DeploymentFile) -> Launcher {
    Launcher::new(file).args(CHILD_ARGS)
}

/// A log sink the test reads.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until every one of `lines` is a whole line of the logs.
    async fn wait_for(&self, lines: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text();
            let missing: Vec<_> = lines
                .iter()
                .filter(|l| !text.lines().any(|t| t == **l))
                .collect();
            if missing.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let short: Vec<String> = text
                    .lines()
                    .map(|l| l.chars().take(120).collect())
                    .collect();
                panic!(
                    "log lines {missing:?} missing; the logs:\n{}",
                    short.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether process `pid` exists (signal 0 reaches it).
fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// The next event matching `want`, within 10 s.
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("no such event within 10 s")
            .expect("events");
        if want(&event) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_restart_and_stop() {
    let file = DeploymentFile::parse(
        r#"
        [[process]]
        name = "alpha"
        services = ["test.Alpha"]
        replicas = 2
        [process.env]
        DEPLOY_TEST_GREETING = "hello from alpha"

        [[process]]
        name = "beta"
        services = ["test.Beta"]
        host = "box-b"
        restart = "always"
        "#,
    )
    .unwrap();
    let logs = Logs::default();
    let mut config = Config::default();
    // No Redis named: the deployment starts its own.
    let deployment = launcher(&file)
        .log_writer(logs.clone())
        .launch(&mut config)
        .expect("launch");
    assert_eq!(
        config.invoke.host,
        Some(vec![]),
        "the launcher hosts nothing"
    );
    let redis: RedisConfig = config.section().unwrap();
    assert_eq!(redis.url, deployment.redis_url());
    assert_eq!(
        deployment.redis_prefix(),
        format!("modkit-{}", std::process::id())
    );

    let caller = Distributed::start(config.clone()).await.expect("caller");
    let registry = caller.registry();
    deployment
        .wait_ready(&*registry, Duration::from_secs(30))
        .await
        .expect("ready");
    let nodes_of = |service: &'static str| {
        let registry = registry.clone();
        async move {
            let mut nodes: Vec<(String, Status, String)> = registry
                .lookup(service)
                .await
                .unwrap()
                .into_iter()
                .map(|i| (i.id, i.status, i.address))
                .collect();
            nodes.sort_by(|a, b| a.0.cmp(&b.0));
            nodes
        }
    };
    let alpha_nodes = nodes_of("test.Alpha").await;
    let ids: Vec<_> = alpha_nodes
        .iter()
        .map(|(id, s, _)| (id.as_str(), *s))
        .collect();
    assert_eq!(ids, [("alpha-0", Status::Up), ("alpha-1", Status::Up)]);
    assert_eq!(nodes_of("test.Beta").await[0].0, "beta-0");

    // Calls reach them, and each process has its own configuration.
    let alpha = caller.container().get::<dyn Alpha>().unwrap();
    let (node, process, host, greeting) = alpha.hello().await.unwrap();
    assert!(node.starts_with("alpha-"), "{node}");
    assert_eq!((process.as_str(), host.as_str()), ("alpha", "local"));
    assert_eq!(greeting, "hello from alpha");
    let beta = caller.container().get::<dyn Beta>().unwrap();
    let hello = beta.hello().await.unwrap();
    assert_eq!(
        hello,
        (
            "beta-0".into(),
            "beta".into(),
            "box-b".into(),
            String::new()
        )
    );

    // Their output comes prefixed, long lines cut.
    logs.wait_for(&[
        "[alpha-0] READY alpha-0",
        "[alpha-1] READY alpha-1",
        "[beta-0] READY beta-0",
        "[alpha-1] alpha-1 on stderr",
    ])
    .await;
    let cut = format!(
        "[beta-0] {} …[truncated]",
        "x".repeat(deploy::MAX_LINE_BYTES)
    );
    assert!(logs.text().lines().any(|l| l == cut), "no cut line");

    // kill -9 of one replica: restarted, and Up again at its new address.
    let mut events = deployment.events();
    let victim = deployment.process("alpha-1").unwrap();
    let old_pid = victim.pid.expect("running");
    assert_eq!(victim.restarts, 0);
    let old_address = alpha_nodes[1].2.clone();
    // SAFETY: SIGKILL to our own child.
    assert_eq!(
        unsafe { libc::kill(old_pid as libc::pid_t, libc::SIGKILL) },
        0
    );
    let exited = next_event(&mut events, |e| matches!(e, Event::Exited { .. })).await;
    let Event::Exited {
        node,
        status,
        restart_in,
    } = exited
    else {
        unreachable!()
    };
    assert_eq!(node, "alpha-1");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert_eq!(restart_in, Some(Duration::from_millis(100)));
    let started = next_event(&mut events, |e| matches!(e, Event::Started { .. })).await;
    let Event::Started {
        node,
        pid: new_pid,
        restarts,
    } = started
    else {
        unreachable!()
    };
    assert_eq!((node.as_str(), restarts), ("alpha-1", 1));
    assert_ne!(new_pid, old_pid);
    assert!(alive(new_pid) && !alive(old_pid));
    let info = deployment.process("alpha-1").unwrap();
    assert_eq!((info.pid, info.restarts), (Some(new_pid), 1));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = nodes_of("test.Alpha").await;
        let again = now
            .iter()
            .any(|(id, s, addr)| id == "alpha-1" && *s == Status::Up && *addr != old_address);
        if again {
            break;
        }
        assert!(Instant::now() < deadline, "alpha-1 not up again: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let others: Vec<u32> = deployment
        .processes()
        .iter()
        .filter(|p| p.role.node != "alpha-1")
        .map(|p| p.restarts)
        .collect();
    assert_eq!(others, [0, 0]);
    logs.wait_for(&["[alpha-1] READY alpha-1"]).await;

    // stop: SIGTERM to all, graceful, nothing restarted (not even beta's
    // `always`), nothing left.
    let pids: Vec<u32> = deployment
        .processes()
        .iter()
        .map(|p| p.pid.expect("running"))
        .collect();
    drop(alpha);
    drop(beta);
    caller.shutdown(Duration::from_secs(1)).await;
    drop((caller, registry));
    let started = Instant::now();
    deployment.stop(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stop waited for a kill"
    );
    for pid in &pids {
        assert!(!alive(*pid), "process {pid} is still there after stop");
    }
    logs.wait_for(&[
        "[alpha-0] BYE alpha-0 on SIGTERM",
        "[alpha-1] BYE alpha-1 on SIGTERM",
        "[beta-0] BYE beta-0 on SIGTERM",
    ])
    .await;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, Event::Started { .. }),
            "started during stop: {event:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_backoff_and_drop() {
    let file = DeploymentFile::parse(
        r#"
        [[process]]
        name = "crash"
        services = ["test.Alpha"]
        restart = "never"
        env = { DEPLOY_TEST_EXIT = "3" }

        [[process]]
        name = "steady"
        services = ["test.Beta"]

        [[process]]
        name = "flaky"
        services = ["test.Alpha"]
        env = { DEPLOY_TEST_EXIT = "4" }
        "#,
    )
    .unwrap();
    // A Redis named by the configuration: used, not replaced.
    let (server, mut config) = own_redis();
    let logs = Logs::default();
    let deployment = launcher(&file)
        .log_writer(logs.clone())
        .launch(&mut config)
        .expect("launch");
    let mut events = deployment.events();
    assert_eq!(deployment.redis_url(), server.url());

    // `never`: exited with 3, left down.
    logs.wait_for(&["[crash-0] crash-0 exits with 3"]).await;
    // `on-failure`: 100, 200, 400 ms between its restarts. (Its first exit
    // may come before `events()` subscribed: then the first event seen is
    // its first restart.)
    let mut seen = Vec::new();
    let mut restarts = 0;
    while restarts < 3 {
        let event = next_event(&mut events, |e| match e {
            Event::Exited { node, .. } | Event::Started { node, .. } => node == "flaky-0",
            _ => false,
        })
        .await;
        match event {
            Event::Exited {
                status, restart_in, ..
            } => {
                assert_eq!(status.code(), Some(4));
                // The delay before restart n + 1: 100 ms doubled n times.
                let want = Duration::from_millis(100 << restarts);
                assert_eq!(restart_in, Some(want), "after {restarts} restarts");
                seen.push(format!("exit, restart in {want:?}"));
            }
            Event::Started { restarts: n, .. } => {
                assert!(n == restarts + 1, "restart {n} after {restarts}: {seen:?}");
                restarts = n;
                seen.push(format!("restart {n}"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(seen.len() >= 5, "{seen:?}");
    assert!(deployment.process("flaky-0").unwrap().restarts >= 3);
    let crash = deployment.process("crash-0").unwrap();
    assert!(crash.given_up && crash.pid.is_none() && crash.restarts == 0);
    assert_eq!(crash.last_exit.and_then(|s| s.code()), Some(3));

    // wait_ready does not wait for a replica that will never come.
    let caller = Distributed::start(config.clone()).await.expect("caller");
    let started = Instant::now();
    let e = deployment
        .wait_ready(&*caller.registry(), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("test.Alpha on crash-0 (exited: exit status: 3; not restarted)"),
        "{text}"
    );

    // Dropping the deployment kills what runs.
    let steady = deployment
        .process("steady-0")
        .unwrap()
        .pid
        .expect("running");
    assert!(alive(steady));
    drop(caller);
    drop(deployment);
    assert!(!alive(steady), "steady-0 outlived its deployment");
}

#[tokio::test]
async fn bad_files_and_programs_are_errors() {
    let bad = |text: &str| {
        let e = DeploymentFile::parse(text).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        e.to_string()
    };
    let e = bad("[[process]]\nname = \"a\"\nservices = [\"s\"]\nreplicsa = 2\n");
    assert!(e.contains("unknown field `replicsa`"), "{e}");
    let e = bad("[[process]]\nname = \"a\"\nservices = [\"s\"]\nreplicas = 0\n");
    assert!(e.contains("replicas: must be at least 1"), "{e}");
    let e = bad("[[process]]\nname = \"a\"\nservices = []\n");
    assert!(e.contains("services: empty"), "{e}");
    let e = bad("[[process]]\nname = \"a\"\nservices = [\"s\"]\n[[process]]\nname = \"a\"\nservices = [\"t\"]\n");
    assert!(e.contains("two processes are named `a`"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deploy.toml");
    std::fs::write(
        &path,
        "[[process]]\nname = \"a\"\nservices = [\"s\"]\nrestart = \"sometimes\"\n",
    )
    .unwrap();
    let e = DeploymentFile::load(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let text = e.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("sometimes"),
        "{text}"
    );

    // A program that cannot start: an error naming the node, and nothing left running.
    let file = DeploymentFile::parse("[[process]]\nname = \"a\"\nservices = [\"s\"]\n").unwrap();
    let mut config = Config::default();
    config
        .edit_section(|r: &mut RedisConfig| r.url = "redis://127.0.0.1:1".into())
        .unwrap();
    let e = Launcher::new(&file)
        .program("/nonexistent/modkit-replica")
        .launch(&mut config)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("cannot start a-0"), "{e}");
    // Deployment::launch is the launcher with its defaults.
    let _: fn(&mut Config, &DeploymentFile) -> mod_api::Result<Deployment> = Deployment::launch;
}

#[cfg(target_os = "linux")]
#[test]
fn a_launcher_stops_its_replicas_on_sigterm_and_takes_them_along_on_sigkill() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let mut launcher = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "deploy_launcher",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(LAUNCHER_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = launcher.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let (lines_tx, lines) = std::sync::mpsc::channel();
        let stdout = launcher.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let pids: Vec<u32> = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).unwrap_or_else(|_| {
                let _ = launcher.kill();
                panic!("the launcher printed no pids")
            });
            if let Some(pids) = line.strip_prefix("PIDS ") {
                break pids.split(' ').map(|p| p.parse().unwrap()).collect();
            }
        };
        assert_eq!(pids.len(), 2);
        assert!(pids.iter().all(|p| !gone(*p)));
        // SAFETY: a signal to our own child.
        assert_eq!(
            unsafe { libc::kill(launcher.id() as libc::pid_t, signal) },
            0
        );
        let status = launcher.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pids.iter().all(|p| gone(*p)) {
            assert!(
                Instant::now() < deadline,
                "replicas {pids:?} outlived a launcher ended by signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let errors = errors.join().unwrap();
        // Every line the launcher printed (its reader ends at end of file).
        let mut rest: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            rest.push(line);
        }
        if signal == libc::SIGTERM {
            // Forwarded as SIGTERM: each replica shut down gracefully.
            assert!(status.success(), "{status}");
            assert!(rest.iter().any(|l| l == "LAUNCHER STOPPED"), "{rest:?}");
            for node in ["solo-0", "solo-1"] {
                let bye = format!("[{node}] BYE {node} on SIGTERM");
                assert!(errors.lines().any(|l| l == bye), "no {bye:?}");
            }
        } else {
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL)
            );
        }
    }
}

/// Whether some instance of `service` in `registry` is replica `node`, `Up`,
/// and (if given) not at `old_address`.
async fn up_at(
    registry: &dyn mod_api::Registry,
    service: &str,
    node: &str,
    old_address: Option<&str>,
) -> bool {
    let instances = registry.lookup(service).await.unwrap_or_default();
    instances
        .iter()
        .any(|i| i.id == node && i.status == Status::Up && Some(i.address.as_str()) != old_address)
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_restart_stop_and_start_replicas() {
    let file = DeploymentFile::parse(
        r#"
        [[process]]
        name = "alpha"
        services = ["test.Alpha"]
        replicas = 2
        host = "h1"

        [[process]]
        name = "beta"
        services = ["test.Beta"]
        host = "h2"
        restart = "never"
        "#,
    )
    .unwrap();
    let (_server, mut config) = own_redis();
    let logs = Logs::default();
    // Only host h1's processes.
    let deployment = launcher(&file)
        .host("h1")
        .log_writer(logs.clone())
        .launch(&mut config)
        .expect("launch");
    assert_eq!(deployment.host(), Some("h1"));
    let nodes: Vec<String> = deployment
        .processes()
        .into_iter()
        .map(|p| p.role.node)
        .collect();
    assert_eq!(nodes, ["alpha-0", "alpha-1"]);
    assert_eq!(
        deployment.services().keys().collect::<Vec<_>>(),
        ["test.Alpha"]
    );
    let caller = Distributed::start(config.clone()).await.expect("caller");
    let registry = caller.registry();
    deployment
        .wait_ready(&*registry, Duration::from_secs(30))
        .await
        .expect("ready");
    let mut events = deployment.events();

    // restart: killed and started again at once, counted.
    let old = deployment.process("alpha-0").unwrap().pid.unwrap();
    let asked = Instant::now();
    deployment.restart("alpha-0").expect("restart");
    let info = deployment.process("alpha-0").unwrap();
    let new = info.pid.expect("running again at once");
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert_ne!(new, old);
    assert_eq!(info.restarts, 1);
    assert!(gone(old) && alive(new));
    let exited = next_event(&mut events, |e| matches!(e, Event::Exited { .. })).await;
    assert!(
        matches!(&exited, Event::Exited { node, restart_in: Some(d), .. } if node == "alpha-0" && d.is_zero()),
        "{exited:?}"
    );
    let started = next_event(&mut events, |e| matches!(e, Event::Started { .. })).await;
    assert_eq!(
        started,
        Event::Started {
            node: "alpha-0".into(),
            pid: new,
            restarts: 1
        }
    );
    logs.wait_for(&["[alpha-0] READY alpha-0"]).await;

    // stop_replica: SIGTERM (it says goodbye), and it stays stopped.
    let one = deployment.process("alpha-1").unwrap().pid.unwrap();
    deployment
        .stop_replica("alpha-1", Duration::from_secs(10))
        .await
        .expect("stop_replica");
    logs.wait_for(&["[alpha-1] BYE alpha-1 on SIGTERM"]).await;
    assert!(gone(one));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = deployment.process("alpha-1").unwrap();
    assert!(info.stopped && info.pid.is_none(), "{info:?}");
    assert_eq!(info.restarts, 0);
    assert_eq!(deployment.services()["test.Alpha"], ["alpha-0"]);
    // wait_ready does not wait for it.
    deployment
        .wait_ready(&*registry, Duration::from_secs(30))
        .await
        .expect("ready without alpha-1");

    // start_replica: a replica of host h2's process, here, supervised.
    deployment.start_replica("beta", "beta-7").expect("start");
    let beta = deployment.process("beta-7").unwrap();
    assert_eq!((beta.role.replica, beta.role.host.as_str()), (7, "h1"));
    eventually("beta-7 up", || {
        up_at(&*registry, "test.Beta", "beta-7", None)
    })
    .await;
    let hello = caller
        .container()
        .get::<dyn Beta>()
        .unwrap()
        .hello()
        .await
        .unwrap();
    assert_eq!(
        (hello.0.as_str(), hello.1.as_str(), hello.2.as_str()),
        ("beta-7", "beta", "h1")
    );
    deployment
        .wait_ready(&*registry, Duration::from_secs(30))
        .await
        .expect("ready with beta-7");

    // Errors: unknown node or process, a taken node, a bad id.
    let e = deployment.restart("gamma-0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("gamma-0"), "{e}");
    let e = deployment
        .stop_replica("gamma-0", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = deployment.start_replica("gamma", "gamma-0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("no process `gamma`"), "{e}");
    let e = deployment.start_replica("beta", "beta-7").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    let e = deployment.start_replica("beta", "alpha-0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    let e = deployment.start_replica("beta", "no way").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

    // A stopped replica started again is supervised again: a kill -9 of it
    // is restarted by the supervisor.
    deployment
        .start_replica("alpha", "alpha-1")
        .expect("start again");
    let info = deployment.process("alpha-1").unwrap();
    assert!(!info.stopped && info.restarts == 1, "{info:?}");
    let pid = info.pid.unwrap();
    // SAFETY: SIGKILL to our own child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    eventually("alpha-1 restarted by its supervisor", || {
        let info = deployment.process("alpha-1").unwrap();
        async move { info.restarts == 2 && info.pid.is_some_and(|p| p != pid) }
    })
    .await;

    // Everything stops with the deployment, the added replica too.
    let pids: Vec<u32> = deployment
        .processes()
        .iter()
        .filter_map(|p| p.pid)
        .collect();
    assert_eq!(pids.len(), 3);
    caller.shutdown(Duration::from_secs(1)).await;
    drop((caller, registry));
    deployment.stop(Duration::from_secs(10)).await;
    for pid in pids {
        assert!(gone(pid), "{pid} outlived stop");
    }
}

/// A `redis-server` of the test's own, and a configuration naming it.
fn own_redis() -> (RedisServer, Config) {
    let server = RedisServer::start().expect("redis-server");
    let mut config = Config::default();
    config
        .edit_section(|r: &mut RedisConfig| r.url = server.url())
        .unwrap();
    (server, config)
}
