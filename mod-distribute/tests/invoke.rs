//! Invocation across nodes of one test process (each node its own registry
//! listener and RPC server, sharing a real `redis-server`): balancing, draining,
//! colocation, and deadlines.

use std::sync::Arc;
use std::time::Duration;

use mod_api::config::{Balance, InvokeConfig, RegistryConfig};
use mod_api::testkit::eventually;
use mod_api::{async_trait, service, Backend, Config, Error, ErrorKind, ServiceExt, Status};
use mod_distribute::RedisConfig;
use mod_distribute::{Distributed, RedisServer};

/// Replies with the node that served the call.
#[service(crate = mod_api, name = "test.Node")]
pub trait NodeName {
    /// The serving node's id.
    #[idempotent]
    async fn name(&self) -> Result<String, Error>;
    /// Sleeps, then answers (for deadline tests).
    async fn slow(&self, millis: u64) -> Result<(), Error>;
}

struct Named(String);

#[async_trait]
impl NodeName for Named {
    async fn name(&self) -> Result<String, Error> {
        Ok(self.0.clone())
    }

    async fn slow(&self, millis: u64) -> Result<(), Error> {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        Ok(())
    }
}

async fn node(redis: &RedisServer, id: &str, host: &[&str], invoke: InvokeConfig) -> Distributed {
    let config = Config {
        node_id: Some(id.into()),
        registry: RegistryConfig {
            ttl: Duration::from_secs(5),
            sweep: Duration::from_millis(100),
        },
        invoke: InvokeConfig {
            host: Some(host.iter().map(|s| s.to_string()).collect()),
            ..invoke
        },
        ..Config::default()
    }
    .with_section(&RedisConfig {
        url: redis.url(),
        prefix: "invoke".into(),
        ..RedisConfig::default()
    });
    let node = Distributed::start(config).await.expect("node");
    node.container()
        .provide::<dyn NodeName>(Arc::new(Named(id.into())))
        .await
        .expect("provide");
    node
}

async fn wait_instances(caller: &Distributed, n: usize) {
    let registry = caller.registry();
    eventually("instances registered", Duration::from_secs(10), || {
        let registry = registry.clone();
        async move {
            registry
                .lookup("test.Node")
                .await
                .map(|l| l.len() == n)
                .unwrap_or(false)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_and_draining_instances_get_no_new_calls() {
    let redis = RedisServer::start().expect("redis-server");
    let _a = node(&redis, "a", &["test.Node"], InvokeConfig::default()).await;
    let _b = node(&redis, "b", &["test.Node"], InvokeConfig::default()).await;
    let caller = node(&redis, "caller", &[], InvokeConfig::default()).await;
    wait_instances(&caller, 2).await;
    let client = caller.container().get::<dyn NodeName>().expect("proxy");

    let mut names = Vec::new();
    for _ in 0..10 {
        names.push(client.name().await.expect("call"));
    }
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 5, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "b").count(), 5, "{names:?}");

    // Cordon `a`: once the proxy's watch sees it, every call goes to `b`.
    caller
        .registry()
        .set_status("test.Node", "a", Status::Draining)
        .await
        .expect("drain a");
    let client2 = client.clone();
    eventually(
        "calls avoid the draining instance",
        Duration::from_secs(5),
        || {
            let client = client2.clone();
            async move {
                let mut all_b = true;
                for _ in 0..6 {
                    all_b &= client.name().await.map(|n| n == "b").unwrap_or(false);
                }
                all_b
            }
        },
    )
    .await;
    for _ in 0..20 {
        assert_eq!(client.name().await.expect("call"), "b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_in_flight_avoids_the_busy_instance() {
    let redis = RedisServer::start().expect("redis-server");
    let _a = node(&redis, "a", &["test.Node"], InvokeConfig::default()).await;
    let _b = node(&redis, "b", &["test.Node"], InvokeConfig::default()).await;
    let least = InvokeConfig {
        balance: Balance::LeastInFlight,
        ..InvokeConfig::default()
    };
    let caller = node(&redis, "caller", &[], least).await;
    wait_instances(&caller, 2).await;
    let client = caller.container().get::<dyn NodeName>().expect("proxy");

    // Occupy one instance with a long call; quick calls then go to the other.
    let busy = client.clone();
    let long = tokio::spawn(async move { busy.slow(800).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(client.name().await.expect("call"));
    }
    assert!(
        names.windows(2).all(|w| w[0] == w[1]),
        "calls alternated: {names:?}"
    );
    long.await.expect("join").expect("slow call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colocated_service_is_the_object_itself_unless_colocation_is_off() {
    let redis = RedisServer::start().expect("redis-server");
    let local = node(&redis, "local", &["test.Node"], InvokeConfig::default()).await;
    let got = local.container().get::<dyn NodeName>().expect("get");
    assert_eq!(got.name().await.expect("call"), "local");
    // Colocated: no proxy in between (the client type would have another size).
    assert_eq!(std::mem::size_of_val(&*got), std::mem::size_of::<Named>());
    // A per-call deadline holds for the object itself too.
    let err = got
        .with_timeout(Duration::from_millis(50))
        .slow(2_000)
        .await
        .expect_err("deadline passed");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(err.context_value("method"), Some("slow"), "{err}");

    let no_colocation = InvokeConfig {
        colocate: false,
        ..InvokeConfig::default()
    };
    let remote = node(&redis, "remote", &["test.Node"], no_colocation).await;
    wait_instances(&remote, 2).await;
    let via_rpc = remote.container().get::<dyn NodeName>().expect("proxy");
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(via_rpc.name().await.expect("call"));
    }
    assert!(
        names.contains(&"local".to_string()),
        "all calls stayed local: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_of_a_remote_call_is_enforced() {
    let redis = RedisServer::start().expect("redis-server");
    let server = node(&redis, "server", &["test.Node"], InvokeConfig::default()).await;
    let short = InvokeConfig {
        timeout: Duration::from_millis(200),
        ..InvokeConfig::default()
    };
    let caller = node(&redis, "caller", &[], short).await;
    wait_instances(&caller, 1).await;
    let client = caller.container().get::<dyn NodeName>().expect("proxy");
    let err = client.slow(2_000).await.expect_err("deadline passed");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    // The error says which call, to which instance, failed.
    let address = server.rpc_address().await.expect("serving");
    assert_eq!(err.context_value("service"), Some("test.Node"), "{err}");
    assert_eq!(err.context_value("method"), Some("slow"), "{err}");
    assert_eq!(
        err.context_value("address"),
        Some(address.as_str()),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "(service: test.Node, method: slow, address: {address})"
        )),
        "{text}"
    );
    client.slow(10).await.expect("a quick call still works");
    // A caller's own deadline replaces the configured one for its calls only.
    client
        .with_timeout(Duration::from_secs(5))
        .slow(600)
        .await
        .expect("within the per-call deadline");
    let err = client
        .slow(600)
        .await
        .expect_err("the configured deadline still holds");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
}
