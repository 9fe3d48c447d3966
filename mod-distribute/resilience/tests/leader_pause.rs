//! The controller group as real processes: three `modkit-ha controller`
//! voters (openraft). The leader is frozen (SIGSTOP) and the primary killed
//! while it is: the other two elect a leader and fail over. Woken
//! (SIGCONT), the old leader acts on nothing: it follows the new leader's
//! decisions, so every voter ends with one epoch-2 primary, and the epochs
//! a follower saw only grew.

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mod_distribute::topology::Follower;
use mod_resilience::admin;

mod common;

fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A voter process, killed with the test.
struct Voter {
    child: Child,
    admin: String,
}

impl Drop for Voter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The voter whose admin port says it leads, within 10 s.
async fn leader(voters: &[Voter], skip: Option<usize>) -> usize {
    let start = Instant::now();
    loop {
        for (i, v) in voters.iter().enumerate() {
            if Some(i) != skip && matches!(admin::status(&v.admin).await, Ok((_, true, _))) {
                return i;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_neither_blocks_a_failover_nor_acts_when_it_wakes() {
    let mut nodes = common::group(2);
    let nodes_toml: Vec<String> = nodes.iter().map(|n| format!("{:?}", n.addr())).collect();
    let raft: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let listen: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let dir = std::env::temp_dir().join(format!("modkit-voters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let voters: Vec<Voter> = (0..3)
        .map(|i| {
            let admin = free_addr();
            let config = format!(
                "[ha]\nnodes = [{}]\nlisten = {:?}\nadmin = {admin:?}\nvoter = {}\nvoters = {:?}\n",
                nodes_toml.join(", "),
                listen[i],
                i + 1,
                raft
            );
            let path = dir.join(format!("ha{}.toml", i + 1));
            std::fs::write(&path, config).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_modkit-ha"));
            cmd.arg("controller")
                .arg("--config")
                .arg(&path)
                .env("RUST_LOG", "warn");
            let child = mod_distribute::redis_server::spawn_tied(cmd).unwrap();
            Voter { child, admin }
        })
        .collect();
    let follower = Follower::subscribe(&listen, Duration::from_secs(20))
        .await
        .expect("the voters commit a first topology");
    let epochs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watch = {
        let (mut topology, epochs) = (follower.watch(), epochs.clone());
        tokio::spawn(async move {
            loop {
                let epoch = topology.borrow_and_update().epoch;
                epochs.lock().unwrap().push(epoch);
                if topology.changed().await.is_err() {
                    return;
                }
            }
        })
    };

    let frozen = leader(&voters, None).await;
    common::signal(voters[frozen].child.id(), "-STOP");
    let killed_at = Instant::now();
    nodes[0].kill();
    let new_leader = leader(&voters, Some(frozen)).await;
    assert_ne!(new_leader, frozen);
    let mut topology = follower.watch();
    let moved = tokio::time::timeout(Duration::from_secs(15), topology.wait_for(|t| t.epoch >= 2))
        .await
        .expect("a failover without the frozen leader")
        .unwrap()
        .clone();
    eprintln!(
        "leader frozen, primary killed → epoch {} ({:?}) after {:?}",
        moved.epoch,
        moved.primary,
        killed_at.elapsed()
    );
    assert_ne!(moved.primary, Some(nodes[0].addr()));

    common::signal(voters[frozen].child.id(), "-CONT");
    // Woken, it catches up with the new leader's log: the same topology.
    let start = Instant::now();
    loop {
        let views: Vec<_> =
            futures_util::future::join_all(voters.iter().map(|v| admin::status(&v.admin))).await;
        let tops: Vec<_> = views.iter().flatten().map(|(_, _, t)| t.clone()).collect();
        if tops.len() == 3 && tops.iter().all(|t| *t == tops[0]) && tops[0].epoch >= moved.epoch {
            assert_eq!(tops[0].primary, moved.primary, "{tops:?}");
            let leaders = views.iter().flatten().filter(|(_, l, _)| *l).count();
            assert!(leaders <= 1, "{views:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the woken voter never agreed: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.abort();
    let epochs = epochs.lock().unwrap().clone();
    assert!(epochs.windows(2).all(|w| w[0] <= w[1]), "{epochs:?}");
    drop(voters);
    let _ = std::fs::remove_dir_all(&dir);
}
