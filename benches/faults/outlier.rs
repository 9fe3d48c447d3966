//! The outlier-ejection comparison (see the crate docs of the bench).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modkit::config::OutlierConfig;
use modkit::distribute::redis_server::spawn_tied;
use modkit::distribute::Distributed;
use modkit::{Backend, Error, Status};

use crate::{config, Work, AFTER_FAULT, CALLERS, ROLE};

/// A replica process; killed (woken first) and reaped when dropped.
struct Replica(Child);

impl Replica {
    fn spawn(url: &str, prefix: &str, node: &str) -> std::io::Result<Replica> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(ROLE, format!("{node}@{prefix}@{url}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        spawn_tied(cmd).map(Replica)
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one client node saw after the fault.
#[derive(Default)]
pub struct Seen {
    pub failed: usize,
    pub last_failure_ms: f64,
}

/// Runs [`CALLERS`] loops on `client` until `stop`; failures after `fault`
/// (set when it happens) are counted.
async fn load(
    client: Arc<dyn Work>,
    stop: Arc<AtomicBool>,
    fault: Arc<Mutex<Option<Instant>>>,
) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (client, stop, fault, seen) =
                (client.clone(), stop.clone(), fault.clone(), seen.clone());
            tokio::spawn(async move {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    if client.work(seq).await.is_ok() {
                        continue;
                    }
                    let Some(at) = *fault.lock().unwrap() else {
                        continue;
                    };
                    let mut seen = seen.lock().unwrap();
                    seen.failed += 1;
                    seen.last_failure_ms = at.elapsed().as_secs_f64() * 1e3;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    Arc::try_unwrap(seen)
        .ok()
        .expect("tasks ended")
        .into_inner()
        .unwrap()
}

async fn wait_up(app: &Distributed, n: usize) -> modkit::Result<()> {
    let registry = app.registry();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = registry.lookup("bench.Work").await?;
        if up.iter().filter(|i| i.status == Status::Up).count() >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::timeout("replicas did not register in 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One cycle of fault `kind`: what the ejecting and the baseline client saw.
pub async fn cycle(url: &str, kind: &str, n: usize) -> modkit::Result<(Seen, Seen)> {
    // A namespace per cycle: no instance of an earlier cycle is in view.
    let prefix = format!("faults-{}-{kind}-{n}", std::process::id());
    let faulty = Replica::spawn(url, &prefix, "replica-a")?;
    let _healthy = Replica::spawn(url, &prefix, "replica-b")?;
    let node = |name: &str, outlier: OutlierConfig| {
        let mut c = config(url, &prefix, name, &[]);
        c.invoke.outlier = outlier;
        Distributed::start(c)
    };
    let on = node("caller-on", OutlierConfig::default()).await?;
    let off = node(
        "caller-off",
        OutlierConfig {
            consecutive_failures: 0,
            ..OutlierConfig::default()
        },
    )
    .await?;
    wait_up(&on, 2).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let fault = Arc::new(Mutex::new(None));
    let run = |app: &Distributed| {
        let client = app.container().get::<dyn Work>().expect("client");
        tokio::spawn(load(client, stop.clone(), fault.clone()))
    };
    let (with, without) = (run(&on), run(&off));
    tokio::time::sleep(Duration::from_millis(300)).await;
    *fault.lock().unwrap() = Some(Instant::now());
    match kind {
        "kill" => faulty.signal("-KILL"),
        _ => faulty.signal("-STOP"),
    }
    tokio::time::sleep(AFTER_FAULT).await;
    stop.store(true, Ordering::Relaxed);
    let seen = (with.await.expect("load"), without.await.expect("load"));
    on.shutdown(Duration::from_millis(100)).await;
    off.shutdown(Duration::from_millis(100)).await;
    Ok(seen)
}
