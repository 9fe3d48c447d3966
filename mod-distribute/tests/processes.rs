//! Multi-process tests: replicas of a service run as separate OS processes (this
//! test binary, re-executed in "replica" role), share a real `redis-server`, and
//! are called over RPC; one replica is killed (SIGKILL) mid-stream.

use std::sync::Arc;
use std::time::Duration;

use mod_api::config::{InvokeConfig, RegistryConfig};
use mod_api::{async_trait, service, Backend, Config, Error};
use mod_distribute::RedisConfig;
use mod_distribute::{Distributed, RedisServer};

mod common;
use common::RoleProcess;

/// A service whose replies say which replica answered.
#[service(crate = mod_api, name = "test.Whoami")]
pub trait Whoami {
    /// The replica's node id (idempotent: safe to retry on another replica).
    #[idempotent]
    async fn whoami(&self, seq: u64) -> Result<(String, u64), Error>;
}

struct Replica(String);

#[async_trait]
impl Whoami for Replica {
    async fn whoami(&self, seq: u64) -> Result<(String, u64), Error> {
        Ok((self.0.clone(), seq))
    }
}

const ROLE: &str = "MODKIT_TEST_ROLE";
/// The site of a replica (`invoke.site`), when it has one.
const SITE: &str = "MODKIT_TEST_SITE";

fn config(redis_url: &str, node: &str, host: &[&str]) -> Config {
    Config {
        node_id: Some(node.into()),
        registry: RegistryConfig {
            ttl: Duration::from_secs(2),
            sweep: Duration::from_millis(100),
        },
        invoke: InvokeConfig {
            timeout: Duration::from_secs(2),
            host: Some(host.iter().map(|s| s.to_string()).collect()),
            ..InvokeConfig::default()
        },
        ..Config::default()
    }
    .with_section(&RedisConfig {
        url: redis_url.into(),
        prefix: "processes".into(),
        ..RedisConfig::default()
    })
}

/// The replica role: serves `Whoami` until killed or until stdin closes.
#[test]
fn replica_main() {
    let Ok(node) = std::env::var(ROLE) else {
        return; // a normal test run: nothing to do
    };
    let url = std::env::var("MODKIT_REDIS_URL").expect("MODKIT_REDIS_URL");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut config = config(&url, &node, &["test.Whoami"]);
        config.invoke.site = std::env::var(SITE).ok();
        let app = Distributed::start(config).await.expect("replica start");
        app.container()
            .provide::<dyn Whoami>(Arc::new(Replica(node.clone())))
            .await
            .expect("provide");
        println!("READY {node}");
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await
        .ok();
        app.shutdown(Duration::from_secs(1)).await;
    });
}

/// A replica process (the `replica_main` role); killed when dropped.
fn spawn_replica(url: &str, node: &str) -> RoleProcess {
    let env = [(ROLE, node), ("MODKIT_REDIS_URL", url)];
    RoleProcess::spawn("replica_main", &env, drop).0
}

/// Waits until `n` replicas of `test.Whoami` are registered.
async fn registered(registry: &Arc<dyn mod_api::Registry>, n: usize) {
    let what = format!("{n} replicas registered");
    mod_api::testkit::eventually(&what, Duration::from_secs(10), || {
        let registry = registry.clone();
        async move {
            registry
                .lookup("test.Whoami")
                .await
                .map(|l| l.len() == n)
                .unwrap_or(false)
        }
    })
    .await;
}

/// A replica process in `site`.
fn spawn_in_site(url: &str, node: &str, site: &str) -> RoleProcess {
    let env = [(ROLE, node), ("MODKIT_REDIS_URL", url), (SITE, site)];
    RoleProcess::spawn("replica_main", &env, drop).0
}

/// Site a has two replicas, site b one; a caller in site a calls only site
/// a's while they live, and keeps answering from site b's when both of
/// site a's are killed (SIGKILL: still registered until their leases end).
#[test]
fn calls_stay_in_their_site_and_cross_over_when_it_is_lost() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let redis = RedisServer::start().expect("redis-server");
    let mut a1 = spawn_in_site(&redis.url(), "a1", "a");
    let mut a2 = spawn_in_site(&redis.url(), "a2", "a");
    let mut b1 = spawn_in_site(&redis.url(), "b1", "b");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut config = config(&redis.url(), "caller", &[]);
        config.invoke.site = Some("a".into());
        let caller = Distributed::start(config).await.expect("caller");
        let registry = caller.registry();
        registered(&registry, 3).await;
        let sites: Vec<_> = registry.lookup("test.Whoami").await.expect("lookup");
        for i in &sites {
            let expected = &i.id[..1];
            assert_eq!(
                i.metadata.get("site").map(String::as_str),
                Some(expected),
                "{i:?}"
            );
        }

        let client = caller.container().get::<dyn Whoami>().expect("proxy");
        // (seq, who answered, when), for the checks below.
        let mut history = Vec::new();
        let start = std::time::Instant::now();
        for seq in 0..400u64 {
            if seq == 100 {
                a1.kill();
                a2.kill();
            }
            let (node, echoed) = client
                .whoami(seq)
                .await
                .unwrap_or_else(|e| panic!("call {seq} failed after site a was lost: {e}"));
            assert_eq!(echoed, seq);
            history.push((seq, node, start.elapsed()));
        }
        let before: Vec<&str> = history[..100].iter().map(|(_, n, _)| n.as_str()).collect();
        assert!(
            before.contains(&"a1") && before.contains(&"a2") && !before.contains(&"b1"),
            "while site a lived, its replicas (and only they) answered: {before:?}"
        );
        let after: Vec<&str> = history[100..].iter().map(|(_, n, _)| n.as_str()).collect();
        assert!(
            after.iter().all(|n| *n == "b1"),
            "after site a was killed only site b answered: {after:?}"
        );
    });
    assert!(b1.stop().success());
}

#[test]
fn killing_one_of_two_replicas_loses_no_idempotent_call() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let redis = RedisServer::start().expect("redis-server");
    let mut a = spawn_replica(&redis.url(), "replica-a");
    let mut b = spawn_replica(&redis.url(), "replica-b");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let caller = Distributed::start(config(&redis.url(), "caller", &[]))
            .await
            .expect("caller");
        let registry = caller.registry();
        registered(&registry, 2).await;

        let client = caller.container().get::<dyn Whoami>().expect("proxy");
        let mut answered_by = Vec::new();
        for seq in 0..400u64 {
            if seq == 100 {
                a.kill();
            }
            let (node, echoed) = client
                .whoami(seq)
                .await
                .unwrap_or_else(|e| panic!("call {seq} failed after a replica died: {e}"));
            assert_eq!(echoed, seq);
            answered_by.push(node);
        }
        let before: Vec<_> = answered_by[..100].to_vec();
        assert!(
            before.iter().any(|n| n == "replica-a") && before.iter().any(|n| n == "replica-b"),
            "calls were not balanced over both replicas: {before:?}"
        );
        assert!(
            answered_by[110..].iter().all(|n| n == "replica-b"),
            "a killed replica answered"
        );
    });
    assert!(b.stop().success());
}

#[test]
fn graceful_shutdown_deregisters_before_exit() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let redis = RedisServer::start().expect("redis-server");
    let mut a = spawn_replica(&redis.url(), "replica-a");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let caller = Distributed::start(config(&redis.url(), "caller", &[]))
            .await
            .expect("caller");
        let registry = caller.registry();
        assert_eq!(
            registry.lookup("test.Whoami").await.expect("lookup").len(),
            1
        );
        let client = caller.container().get::<dyn Whoami>().expect("proxy");
        assert_eq!(client.whoami(7).await.expect("call").0, "replica-a");

        // Closing stdin asks the replica to shut down gracefully: it deregisters
        // first, long before its 2 s lease could expire.
        let status = a.stop();
        assert!(status.success(), "replica exited with {status}");
        assert!(registry
            .lookup("test.Whoami")
            .await
            .expect("lookup")
            .is_empty());
    });
}

/// Calls `whoami` `n` times in a row; the answering nodes, `None` for a call
/// that timed out (any other failure fails the test).
async fn answers(client: &Arc<dyn Whoami>, n: u64) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for seq in 0..n {
        match client.whoami(seq).await {
            Ok((node, _)) => out.push(Some(node)),
            Err(e) if e.kind() == mod_api::ErrorKind::Timeout => out.push(None),
            Err(e) => panic!("call {seq}: {e}"),
        }
    }
    out
}

/// A replica frozen with SIGSTOP answers nothing: its calls time out. With
/// outlier ejection (the default) a caller stops choosing it after
/// `consecutive_failures` timeouts; with it off, every other call times out.
#[test]
fn a_frozen_replica_is_ejected_after_a_few_timeouts() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let redis = RedisServer::start().expect("redis-server");
    let a = spawn_replica(&redis.url(), "replica-a");
    let mut b = spawn_replica(&redis.url(), "replica-b");
    let signal = |sig: &str| a.signal(sig);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let caller = |outlier: mod_api::config::OutlierConfig| {
            let mut config = config(&redis.url(), "caller", &[]);
            config.invoke.timeout = Duration::from_millis(200);
            config.invoke.outlier = outlier;
            Distributed::start(config)
        };
        let on = caller(Default::default()).await.expect("caller");
        let off = caller(mod_api::config::OutlierConfig {
            consecutive_failures: 0,
            ..Default::default()
        })
        .await
        .expect("caller");
        let on = on.container().get::<dyn Whoami>().expect("proxy");
        let off = off.container().get::<dyn Whoami>().expect("proxy");
        // Both callers know both replicas before one freezes.
        for client in [&on, &off] {
            let seen = answers(client, 20).await;
            assert!(seen.contains(&Some("replica-a".into())), "{seen:?}");
        }

        // Side by side, before the frozen replica's 2 s lease runs out.
        signal("-STOP");
        let (with, without) = tokio::join!(answers(&on, 30), answers(&off, 30));
        signal("-CONT");

        let timeouts = |seen: &[Option<String>]| seen.iter().filter(|s| s.is_none()).count();
        let consecutive = mod_api::config::OutlierConfig::default().consecutive_failures as usize;
        assert_eq!(
            timeouts(&with),
            consecutive,
            "with ejection the frozen replica costs exactly {consecutive} calls: {with:?}"
        );
        // (The signal may land a call or two late.)
        let froze = with.iter().position(Option::is_none).unwrap_or(0);
        assert!(
            with[froze..]
                .iter()
                .all(|s| s.as_deref() != Some("replica-a")),
            "after it froze nothing more went to the frozen replica: {with:?}"
        );
        // Until its lease expires, every other call goes to the frozen replica.
        assert!(
            timeouts(&without) >= 2 * consecutive,
            "without ejection the frozen replica keeps costing calls: {without:?}"
        );
        // Woken, it answers its health probe when the ejection ends: back in balancing.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !answers(&on, 4).await.contains(&Some("replica-a".into())) {
            assert!(
                std::time::Instant::now() < deadline,
                "the woken replica never came back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    drop(a);
    assert!(b.stop().success());
}
