//! The node agent against real processes: the primary it runs is killed
//! (`kill -9`), the controller fails over, and the agent restarts the node
//! empty — as a replica of the new primary from its first moment, never as
//! a primary — after which the controller unfences it.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mod_distribute::redis_server::redis_server_binary;
use mod_distribute::RedisServer;
use mod_resilience::{Controller, GroupState, NodeAgent, Solo};

mod common;

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_comes_back_only_as_a_replica() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("mod_resilience=info")
        .try_init();
    let (port, b_port, c_port) = (free_port(), free_port(), free_port());
    let a = format!("127.0.0.1:{port}");
    let (b, c) = (format!("127.0.0.1:{b_port}"), format!("127.0.0.1:{c_port}"));
    let dir = std::env::temp_dir().join(format!("modkit-agent-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let command: Vec<String> = [
        redis_server_binary().as_str(),
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // The agent's first start uses the command as given (a primary here);
    // the other two nodes are its replicas.
    let config = common::ha(vec![a.clone(), b.clone(), c.clone()]);
    let controller = Controller::start(config, Arc::new(Solo::new(1, GroupState::default())))
        .await
        .unwrap();
    let controllers = vec![controller.local_addr().to_string()];
    let agent = NodeAgent::start(&a, command, controllers).unwrap();
    let replica_of = ["--replicaof", "127.0.0.1", &port.to_string()];
    let _b = RedisServer::start_on_port(b_port, &replica_of).unwrap();
    let _c = RedisServer::start_on_port(c_port, &replica_of).unwrap();
    let mut state = controller.state();
    let first = tokio::time::timeout(
        Duration::from_secs(15),
        state.wait_for(|s| s.topology.epoch >= 1),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(first.topology.primary.as_deref(), Some(a.as_str()));

    // Killed only once both replicas are on its history.
    let synced = Instant::now();
    while common::info(&a)
        .await
        .is_none_or(|i| i.matches("state=online").count() != 2)
    {
        assert!(
            synced.elapsed() < Duration::from_secs(10),
            "replicas never synced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = agent.pid().expect("running").to_string();
    let mut restarts = agent.restarts();
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    let killed_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), restarts.wait_for(|n| *n >= 1))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the agent did not restart the node: {:?}",
                controller.state().borrow()
            )
        })
        .unwrap();
    let committed = controller.state().borrow().topology.clone();
    let primary = committed.primary.clone().unwrap();
    assert_ne!(
        primary, a,
        "restarted only after another primary was committed"
    );
    assert!(committed.epoch >= 2);

    // From its first answer on, the restarted node is a replica of it.
    let first_answer = loop {
        if let Some(info) = common::info(&a).await {
            break info;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(15));
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(first_answer.contains("role:slave"), "{first_answer}");
    let (_, primary_port) = primary.rsplit_once(':').unwrap();
    assert!(
        first_answer.contains(&format!("master_port:{primary_port}")),
        "{first_answer}"
    );
    let rejoined = tokio::time::timeout(
        Duration::from_secs(15),
        state.wait_for(|s| s.topology.fenced.is_empty() && s.topology.replicas.contains(&a)),
    )
    .await
    .expect("the controller unfences the restarted node")
    .unwrap()
    .clone();
    assert_eq!(rejoined.topology.primary, Some(primary));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
