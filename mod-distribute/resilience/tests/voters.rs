//! Three controller voters agreeing through openraft on a real group of
//! three `redis-server`s: a `kill -9` of the primary is failed over by the
//! majority, every voter holds the same topology, a client subscribed to all
//! three follows; with the leading voter gone, the two left still fail over
//! the next killed primary.

#![cfg(feature = "raft")]

use std::sync::Arc;
use std::time::Duration;

use mod_distribute::{Redis, RedisConfig};
use mod_resilience::raft::RaftVoter;
use mod_resilience::{Consensus, Controller, GroupState, HaConfig};

mod common;

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_majority_of_voters_fails_over_and_survives_its_leader() {
    let mut nodes = common::group(2);
    let raft: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let mut voters: Vec<Arc<RaftVoter>> = Vec::new();
    let mut controllers: Vec<Option<Controller>> = Vec::new();
    for id in 1..=3u64 {
        let config = HaConfig {
            voter: id,
            voters: raft.clone(),
            ..common::ha_over(&nodes)
        };
        let voter = Arc::new(
            RaftVoter::start(id, &raft[id as usize - 1], config.voter_ids())
                .await
                .unwrap(),
        );
        let consensus: Arc<dyn Consensus> = voter.clone();
        controllers.push(Some(Controller::start(config, consensus).await.unwrap()));
        voters.push(voter);
    }
    for c in controllers.iter().flatten() {
        common::wait_state(c, "epoch 1", |s| s.topology.epoch >= 1).await;
    }
    let redis = Redis::connect_with(&RedisConfig {
        prefix: "voters".into(),
        controllers: controllers
            .iter()
            .flatten()
            .map(|c| c.local_addr().to_string())
            .collect(),
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    assert!(redis.url().contains(&nodes[0].port().to_string()));

    nodes[0].kill();
    let after: Vec<GroupState> = {
        let mut states = Vec::new();
        for c in controllers.iter().flatten() {
            states.push(common::wait_state(c, "the failover", |s| s.topology.epoch >= 2).await);
        }
        states
    };
    let first = after[0].topology.primary.clone().unwrap();
    assert_ne!(first, nodes[0].addr());
    // Epoch 2 is the same decision on every voter.
    for c in controllers.iter().flatten() {
        let log = c.state().borrow().log.clone();
        let two: Vec<_> = log
            .iter()
            .filter_map(|d| match &d.command {
                mod_resilience::Command::Commit(t) if t.epoch == 2 => t.primary.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(two, vec![first.clone()]);
    }
    let port = first.rsplit_once(':').unwrap().1.to_owned();
    let start = std::time::Instant::now();
    while !redis.url().contains(&port) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the client did not follow"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The leader goes away; the two voters left are a majority.
    let leader = voters.iter().position(|v| v.is_leader()).expect("a leader");
    controllers[leader] = None;
    voters[leader].shutdown().await;
    let killed = nodes.iter().position(|n| n.addr() == first).unwrap();
    nodes[killed].kill();
    let left = controllers.iter().flatten().next().unwrap();
    let again = common::wait_state(left, "a failover without the old leader", |s| {
        s.topology
            .primary
            .as_deref()
            .is_some_and(|p| p != first && s.topology.epoch >= 3)
    })
    .await;
    let second = again.topology.primary.unwrap();
    assert_ne!(
        second,
        nodes[0].addr(),
        "the dead first primary was promoted"
    );

    // One more voter goes: the last is outside a majority and stops serving
    // its topology (it may be stale by now), so a follower that hears only
    // it sees the controllers as lost — the proxy stops forwarding on that.
    let alive: Vec<usize> = (0..3).filter(|&i| controllers[i].is_some()).collect();
    let (last, gone) = (alive[0], alive[1]);
    let only = vec![controllers[last].as_ref().unwrap().local_addr().to_string()];
    let follower = mod_distribute::topology::Follower::subscribe(&only, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(follower.in_contact());
    controllers[gone] = None;
    voters[gone].shutdown().await;
    let start = std::time::Instant::now();
    while follower.in_contact() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "a voter alone still serves its topology"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("a lone voter stopped serving after {:?}", start.elapsed());
}
