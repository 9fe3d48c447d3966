//! Voters that fall behind: one cut off while the others compact their
//! log, and one restarted empty.

use super::tests::{agreed_leader, cluster, converged, topology};
use super::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_catches_up_through_a_snapshot() {
    let voters = cluster(3).await;
    let all: Vec<&RaftVoter> = voters.iter().collect();
    let leader = agreed_leader(&all, Duration::from_secs(5))
        .await
        .expect("a leader is elected");
    let cut = &voters[(leader + 1) % 3];
    let addr = cut.inner.voters[&cut.id()].clone();
    let server = cut.server.lock().unwrap().take().unwrap();
    server.abort();
    let _ = server.await;

    // The two others go on, then compact their log past what `cut` has.
    for epoch in 1..=3 {
        voters[leader]
            .propose(Command::Commit(topology(epoch, "a:1")))
            .await
            .unwrap();
    }
    let others = voters.iter().filter(|v| v.id() != cut.id());
    let applied = converged(&others.clone().collect::<Vec<_>>(), 3).await[0].applied;
    assert_eq!(applied, 3);
    for voter in others {
        let raft = &voter.inner.raft;
        let index = raft.metrics().borrow().last_applied.unwrap().index;
        raft.trigger().snapshot().await.unwrap();
        raft.wait(Some(Duration::from_secs(5)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= index),
                "a snapshot of everything applied",
            )
            .await
            .unwrap();
        raft.trigger().purge_log(index).await.unwrap();
        raft.wait(Some(Duration::from_secs(5)))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= index),
                "the log purged",
            )
            .await
            .unwrap();
    }
    assert_eq!(cut.state().borrow().applied, 0);

    // Reachable again: it can only catch up from a snapshot.
    let listener = TcpListener::bind(&addr).await.unwrap();
    *cut.server.lock().unwrap() = Some(tokio::spawn(server::serve(listener, cut.inner.clone())));
    let states = converged(&all, 3).await;
    assert_eq!(states[0], states[1]);
    assert_eq!(states[1], states[2]);
    assert_eq!(states[0].topology.epoch, 3);
    // (openraft's metrics follow the state machine by a moment.)
    cut.inner
        .raft
        .wait(Some(Duration::from_secs(2)))
        .metrics(
            |m| m.snapshot.is_some(),
            "caught up by installing a snapshot",
        )
        .await
        .unwrap();
}

/// A voter keeps its log in memory: restarted, it comes back empty, which
/// openraft 0.9 accepts only with its `loosen-follower-log-revert` feature
/// (without it the leader panics on a debug assertion). Run it with
/// `--features raft,openraft/loosen-follower-log-revert -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_voter_catches_up_from_empty() {
    let voters = cluster(3).await;
    let all: Vec<&RaftVoter> = voters.iter().collect();
    let leader = agreed_leader(&all, Duration::from_secs(5))
        .await
        .expect("a leader is elected");
    for epoch in 1..=3 {
        voters[leader]
            .propose(Command::Commit(topology(epoch, "a:1")))
            .await
            .unwrap();
    }
    // Voter 1, the one that initializes the group, goes (leader or not).
    let id = voters[0].id();
    let book = voters[0].inner.voters.clone();
    voters[0].shutdown().await;
    let others = [&voters[1], &voters[2]];
    let leader = agreed_leader(&others, Duration::from_secs(2))
        .await
        .expect("the two others have a leader");
    others[leader]
        .propose(Command::Commit(topology(4, "b:1")))
        .await
        .unwrap();

    let back = RaftVoter::start(id, &book[&id], book.clone())
        .await
        .unwrap();
    assert_eq!(back.state().borrow().applied, 0, "it comes back empty");
    let live = [&voters[1], &voters[2], &back];
    agreed_leader(&live, Duration::from_secs(3))
        .await
        .expect("the restarted voter follows the leader");
    back.propose(Command::Commit(topology(5, "c:1")))
        .await
        .unwrap();
    let states = converged(&live, 5).await;
    assert_eq!(states[0], states[1]);
    assert_eq!(states[1], states[2]);
    assert_eq!(states[2].topology.epoch, 5);
}
