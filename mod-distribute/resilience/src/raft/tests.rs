//! Three voters on loopback: agreement, failover, and the loss of a majority
//! (and the helpers of [`super::recovery_tests`]).

use super::*;
use mod_distribute::topology::Topology;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(super) fn topology(epoch: u64, primary: &str) -> Topology {
    Topology {
        group: "g".into(),
        epoch,
        primary: Some(primary.into()),
        ..Topology::default()
    }
}

pub(super) async fn cluster(size: u64) -> Vec<RaftVoter> {
    let mut listeners = Vec::new();
    let mut voters = BTreeMap::new();
    for id in 1..=size {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        voters.insert(id, listener.local_addr().unwrap().to_string());
        listeners.push((id, listener));
    }
    let mut started = Vec::new();
    for (id, listener) in listeners {
        started.push(
            RaftVoter::start_on(id, listener, voters.clone())
                .await
                .unwrap(),
        );
    }
    started
}

/// The index in `voters` of the leader all of them agree on, within `within`.
pub(super) async fn agreed_leader(voters: &[&RaftVoter], within: Duration) -> Option<usize> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let leaders: Vec<_> = voters
            .iter()
            .map(|v| v.inner.raft.metrics().borrow().current_leader)
            .collect();
        if let Some(at) = voters.iter().position(|v| v.is_leader()) {
            if leaders.iter().all(|l| *l == Some(voters[at].id())) {
                return Some(at);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Waits until every voter applied `applied` commands; returns their states.
pub(super) async fn converged(voters: &[&RaftVoter], applied: u64) -> Vec<GroupState> {
    let mut states = Vec::new();
    for voter in voters {
        let mut seen = voter.state();
        let state = tokio::time::timeout(
            Duration::from_secs(5),
            seen.wait_for(|s| s.applied >= applied),
        )
        .await
        .unwrap_or_else(|_| panic!("voter {} did not apply {applied} commands", voter.id()))
        .unwrap()
        .clone();
        states.push(state);
    }
    states
}

/// A voter's listener closes the connection on bad input and lives on.
async fn refuses(addr: &str, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut buf = [0; 16];
    let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf))
        .await
        .expect("the voter closes a connection that sent bad input");
    assert!(matches!(read, Ok(0) | Err(_)), "no answer to bad input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_agree_fail_over_and_refuse_without_a_majority() {
    let voters = cluster(3).await;
    let all: Vec<&RaftVoter> = voters.iter().collect();
    assert!(all.iter().all(|v| v.voters() == 3));
    let leader = agreed_leader(&all, Duration::from_secs(5))
        .await
        .expect("a leader is elected");
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (f1, f2) = (&voters[followers[0]], &voters[followers[1]]);

    // Bad input does not hurt a voter.
    let addr = f1.inner.voters[&f1.id()].clone();
    refuses(&addr, &(wire::MAX_FRAME as u32 + 1).to_be_bytes()).await;
    refuses(&addr, b"\0\0\0\x05{oops").await;

    // From a follower (forwarded), from the leader, from the other follower.
    let report = Command::Report {
        voter: f1.id(),
        node: "a:1".into(),
        down: true,
    };
    f1.propose(report.clone()).await.unwrap();
    assert_eq!(f1.state().borrow().applied, 1, "applied by the proposer");
    let commit = Command::Commit(topology(1, "a:1"));
    voters[leader].propose(commit.clone()).await.unwrap();
    assert_eq!(voters[leader].state().borrow().applied, 2);
    let intent = Command::Intent {
        epoch: 2,
        from: "a:1".into(),
        by: f2.id(),
    };
    f2.propose(intent.clone()).await.unwrap();
    assert_eq!(f2.state().borrow().applied, 3);

    let states = converged(&all, 3).await;
    assert_eq!(states[0], states[1]);
    assert_eq!(states[1], states[2]);
    let state = &states[0];
    assert_eq!(state.applied, 3);
    assert_eq!(state.topology.epoch, 1);
    assert_eq!(state.voters_down("a:1"), 1);
    assert_eq!(state.intent, Some((2, "a:1".into())));
    let logged: Vec<_> = state.log.iter().map(|d| d.command.clone()).collect();
    assert_eq!(logged, vec![report, commit, intent]);

    // The leader dies: the two others elect a new one, fast.
    let old = voters[leader].id();
    let died = Instant::now();
    voters[leader].shutdown().await;
    let err = voters[leader]
        .propose(Command::Commit(topology(9, "z:1")))
        .await
        .expect_err("a voter that is shut down proposes nothing");
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(!err.is_retryable());
    let survivors = [f1, f2];
    let new = agreed_leader(&survivors, Duration::from_secs(2))
        .await
        .expect("a new leader within 2 s");
    let elapsed = died.elapsed();
    println!(
        "raft: new leader {} elected {elapsed:?} after leader {old} died",
        survivors[new].id()
    );
    assert!(elapsed < Duration::from_secs(2));
    assert_ne!(survivors[new].id(), old);
    let (new_leader, follower) = (survivors[new], survivors[1 - new]);

    // Two of three still commit, through the follower and the leader.
    follower
        .propose(Command::Commit(topology(2, "b:1")))
        .await
        .unwrap();
    let up = Command::Report {
        voter: new_leader.id(),
        node: "a:1".into(),
        down: false,
    };
    new_leader.propose(up).await.unwrap();
    let states = converged(&survivors, 5).await;
    assert_eq!(states[0], states[1]);
    assert_eq!(states[0].applied, 5);
    assert_eq!(states[0].topology.primary.as_deref(), Some("b:1"));
    assert_eq!(
        states[0].intent, None,
        "the commit of epoch 2 ends the intent"
    );
    // The dead voter's state stayed where it was.
    assert_eq!(voters[leader].state().borrow().applied, 3);

    // One of three left: proposals fail, retryably, within the timeout.
    new_leader.shutdown().await;
    for pause in [Duration::ZERO, Duration::from_millis(800)] {
        tokio::time::sleep(pause).await;
        let started = Instant::now();
        let err = follower
            .propose(Command::Commit(topology(3, "c:1")))
            .await
            .expect_err("no majority, no commit");
        let took = started.elapsed();
        println!("raft: without a majority, propose failed after {took:?}: {err}");
        assert!(err.is_retryable(), "{err}");
        assert!(
            matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{err}"
        );
        assert!(
            took <= TIMING.propose + Duration::from_millis(500),
            "{took:?}"
        );
    }
    assert_eq!(follower.state().borrow().applied, 5, "nothing was applied");
    assert!(!follower.is_leader());
    follower.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_followers_times_out_retryably() {
    let voters = cluster(3).await;
    let all: Vec<&RaftVoter> = voters.iter().collect();
    let leader = agreed_leader(&all, Duration::from_secs(5))
        .await
        .expect("a leader is elected");
    voters[leader]
        .propose(Command::Commit(topology(1, "a:1")))
        .await
        .unwrap();
    for (i, voter) in voters.iter().enumerate() {
        if i != leader {
            voter.shutdown().await;
        }
    }
    let alone = Instant::now();
    while voters[leader].is_leader() {
        assert!(
            alone.elapsed() < Duration::from_secs(1),
            "a leader without a majority stops acting as one"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "raft: a lone leader stopped leading after {:?}",
        alone.elapsed()
    );
    let started = Instant::now();
    let err = voters[leader]
        .propose(Command::Commit(topology(2, "b:1")))
        .await
        .expect_err("no majority, no commit");
    let took = started.elapsed();
    println!("raft: a lone leader's propose failed after {took:?}: {err}");
    assert!(err.is_retryable(), "{err}");
    assert!(
        matches!(err.kind(), ErrorKind::Timeout | ErrorKind::Unavailable),
        "{err}"
    );
    assert!(
        took <= TIMING.propose + Duration::from_millis(500),
        "{took:?}"
    );
    assert_eq!(voters[leader].state().borrow().topology.epoch, 1);
}

#[tokio::test]
async fn start_refuses_a_voter_outside_the_set_and_a_busy_address() {
    let busy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let voters = BTreeMap::from([(1, addr.clone())]);
    let err = RaftVoter::start(2, "127.0.0.1:0", voters.clone())
        .await
        .err()
        .expect("voter 2 is not in the set");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = RaftVoter::start(1, &addr, voters)
        .await
        .err()
        .expect("the address is taken");
    assert_eq!(err.kind(), ErrorKind::Io);
}
