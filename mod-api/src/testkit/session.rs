//! Conformance tests of the session building block.
//!
//! Only the contract of [`SessionStore`] and
//! [`Backend::sessions`]. Tests keep their node alive while they use a store.

#[allow(unused_imports)]
use super::*;

use std::collections::HashSet;
use std::sync::Arc;

use crate::{Backend, ErrorKind, SessionConfig, SessionId, SessionStore};

/// The session tests, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_session {
    ($harness:path) => {
        $crate::__conformance_tests!($harness, session;
            create_gives_unique_url_safe_ids,
            get_returns_data_and_principal,
            unknown_id_is_none,
            get_does_not_refresh_idle_timeout,
            validate_slides_idle_timeout,
            absolute_lifetime_ends_a_busy_session,
            update_with_current_version_replaces_data,
            stale_version_is_a_retryable_conflict,
            concurrent_updates_lose_no_write,
            rotate_moves_the_session_to_a_new_id,
            destroy_ends_the_session,
            update_of_ended_session_is_not_found,
            destroy_principal_ends_only_that_principal,
            other_node_sees_same_sessions,
            other_data_type_is_type_mismatch,
            oversized_data_is_refused,
        );
    };
}

const WITHIN: Duration = Duration::from_secs(5);
const LONG: Duration = Duration::from_secs(600);

fn config(idle: Duration, absolute: Duration) -> SessionConfig {
    SessionConfig {
        idle_timeout: idle,
        absolute_lifetime: absolute,
        ..SessionConfig::default()
    }
}

fn open<B: Backend>(node: &B, name: &str, config: SessionConfig) -> Arc<dyn SessionStore<u32>> {
    node.sessions::<u32>(name, config)
        .expect("open session store")
}

/// A store of a fresh name with long timeouts.
fn fresh<B: Backend>(node: &B) -> Arc<dyn SessionStore<u32>> {
    open(node, &unique("sessions"), config(LONG, LONG))
}

/// Ids are at least 43 URL-safe characters (256 bits) and never repeat.
pub async fn create_gives_unique_url_safe_ids<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = fresh(&node);
    let mut seen = HashSet::new();
    for i in 0..100 {
        let id = s.create("alice", i).await.unwrap().id;
        let text = id.as_str();
        assert!(text.len() >= 43, "id too short: {} chars", text.len());
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "id is not URL-safe"
        );
        assert!(SessionId::parse(text).is_ok());
        assert!(seen.insert(text.to_owned()), "id repeated");
    }
}

/// `get` returns what `create` stored.
pub async fn get_returns_data_and_principal<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = fresh(&node);
    let created = s.create("alice", 7).await.unwrap();
    assert_eq!(created.principal, "alice");
    assert_eq!(created.data, 7);
    let got = s.get(&created.id).await.unwrap().expect("live session");
    assert_eq!(got.id, created.id);
    assert_eq!(got.principal, "alice");
    assert_eq!(got.data, 7);
    assert_eq!(got.version, created.version);
    assert_eq!(got.created_ms, created.created_ms);
}

/// An id never issued reads as `None` through `get` and `validate`.
pub async fn unknown_id_is_none<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = fresh(&node);
    s.create("alice", 1).await.unwrap();
    let unknown = SessionId::generate().unwrap();
    assert!(s.get(&unknown).await.unwrap().is_none());
    assert!(s.validate(&unknown).await.unwrap().is_none());
    assert!(!s.destroy(&unknown).await.unwrap());
}

/// `get` does not refresh the idle timeout: polled with `get` only, a session ends.
pub async fn get_does_not_refresh_idle_timeout<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = open(
        &node,
        &unique("sessions"),
        config(Duration::from_millis(400), LONG),
    );
    let id = s.create("alice", 1).await.unwrap().id;
    eventually(
        "idle session ended while only read with get",
        WITHIN,
        || async { s.get(&id).await.unwrap().is_none() },
    )
    .await;
    assert!(s.validate(&id).await.unwrap().is_none());
}

/// `validate` slides the idle timeout; once validates stop, the session ends.
pub async fn validate_slides_idle_timeout<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = open(
        &node,
        &unique("sessions"),
        config(Duration::from_millis(500), LONG),
    );
    let id = s.create("alice", 1).await.unwrap().id;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            s.validate(&id).await.unwrap().is_some(),
            "validated session idled out"
        );
    }
    eventually(
        "session idled out after validates stopped",
        WITHIN,
        || async { s.get(&id).await.unwrap().is_none() },
    )
    .await;
}

/// The absolute lifetime ends a session however often it is validated.
pub async fn absolute_lifetime_ends_a_busy_session<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = open(
        &node,
        &unique("sessions"),
        config(LONG, Duration::from_millis(600)),
    );
    let id = s.create("alice", 1).await.unwrap().id;
    eventually(
        "absolute lifetime ended a validated session",
        WITHIN,
        || async { s.validate(&id).await.unwrap().is_none() },
    )
    .await;
    assert!(s.get(&id).await.unwrap().is_none());
}

/// An update with the current version stores the data and bumps the version.
pub async fn update_with_current_version_replaces_data<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = fresh(&node);
    let created = s.create("alice", 1).await.unwrap();
    let updated = s.update(&created.id, created.version, 2).await.unwrap();
    assert_eq!(updated.data, 2);
    assert_eq!(updated.version, created.version + 1);
    assert_eq!(updated.id, created.id);
    let got = s.get(&created.id).await.unwrap().expect("live session");
    assert_eq!((got.data, got.version), (2, created.version + 1));
}

/// An update with an old version is a retryable `Conflict` and changes nothing.
pub async fn stale_version_is_a_retryable_conflict<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = fresh(&node);
    let created = s.create("alice", 1).await.unwrap();
    let first = s.update(&created.id, created.version, 2).await.unwrap();
    let err = s.update(&created.id, created.version, 3).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.is_retryable());
    let got = s.get(&created.id).await.unwrap().expect("live session");
    assert_eq!((got.data, got.version), (2, first.version));
}

/// Eight tasks incrementing one session ten times each, retrying on conflict,
/// lose no increment.
pub async fn concurrent_updates_lose_no_write<H: Harness>(h: &H) {
    const TASKS: u32 = 8;
    const EACH: u32 = 10;
    let node = h.node().await;
    let s = fresh(&node);
    let created = s.create("alice", 0).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (s, id) = (s.clone(), created.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut landed = 0;
            for _attempt in 0..10_000 {
                let cur = s.get(&id).await.unwrap().expect("live session");
                // Let the others run between read and write, so updates interleave.
                tokio::task::yield_now().await;
                match s.update(&id, cur.version, cur.data + 1).await {
                    Ok(_) => landed += 1,
                    Err(e) if e.kind() == ErrorKind::Conflict => assert!(e.is_retryable()),
                    Err(e) => panic!("update failed: {e}"),
                }
                if landed == EACH {
                    return;
                }
            }
            panic!("only {landed} updates landed in 10000 attempts");
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let got = s.get(&created.id).await.unwrap().expect("live session");
    assert_eq!(got.data, TASKS * EACH, "an increment was lost");
    assert_eq!(got.version, created.version + u64::from(TASKS * EACH));
}

/// `rotate` gives a new id with the same data, principal and creation time; the old id ends.
pub async fn rotate_moves_the_session_to_a_new_id<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = fresh(&node);
    let old = s.create("alice", 5).await.unwrap();
    let new = s.rotate(&old.id).await.unwrap();
    assert_ne!(new.id, old.id);
    assert_eq!((new.principal.as_str(), new.data), ("alice", 5));
    assert_eq!(new.created_ms, old.created_ms);
    assert!(
        s.validate(&old.id).await.unwrap().is_none(),
        "old id still valid"
    );
    let got = s.validate(&new.id).await.unwrap().expect("new id valid");
    assert_eq!((got.principal.as_str(), got.data), ("alice", 5));
    // The rotated session still belongs to its principal.
    assert_eq!(s.destroy_principal("alice").await.unwrap(), 1);
    assert!(s.get(&new.id).await.unwrap().is_none());
}

/// `destroy` ends a live session (`true`), then reports `false`.
pub async fn destroy_ends_the_session<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = fresh(&node);
    let a = s.create("alice", 1).await.unwrap();
    let b = s.create("alice", 2).await.unwrap();
    assert!(s.destroy(&a.id).await.unwrap());
    assert!(s.get(&a.id).await.unwrap().is_none());
    assert!(s.validate(&a.id).await.unwrap().is_none());
    assert!(!s.destroy(&a.id).await.unwrap());
    assert!(
        s.get(&b.id).await.unwrap().is_some(),
        "destroy ended another session"
    );
}

/// Updating a destroyed or rotated-away session is `NotFound`.
pub async fn update_of_ended_session_is_not_found<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = fresh(&node);
    let a = s.create("alice", 1).await.unwrap();
    s.destroy(&a.id).await.unwrap();
    let err = s.update(&a.id, a.version, 2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let b = s.create("alice", 1).await.unwrap();
    s.rotate(&b.id).await.unwrap();
    let err = s.update(&b.id, b.version, 2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// `destroy_principal` ends every session of that principal, counts them, and no other.
pub async fn destroy_principal_ends_only_that_principal<H: Harness>(h: &H) {
    let node = h.node().await;
    let s = fresh(&node);
    let mut alice = Vec::new();
    for i in 0..3 {
        alice.push(s.create("alice", i).await.unwrap().id);
    }
    let bob = s.create("bob", 9).await.unwrap().id;
    assert_eq!(s.destroy_principal("alice").await.unwrap(), 3);
    for id in &alice {
        assert!(
            s.get(id).await.unwrap().is_none(),
            "alice's session survived"
        );
    }
    assert!(
        s.validate(&bob).await.unwrap().is_some(),
        "bob's session ended"
    );
    assert_eq!(s.destroy_principal("alice").await.unwrap(), 0);
    assert_eq!(s.destroy_principal("nobody").await.unwrap(), 0);
}

/// A store opened by name on another node sees the same sessions.
pub async fn other_node_sees_same_sessions<H: Harness>(h: &H) {
    let name = unique("sessions");
    let (node_a, node_b) = (h.node().await, h.node().await);
    let a = open(&node_a, &name, config(LONG, LONG));
    let b = open(&node_b, &name, config(LONG, LONG));
    let created = a.create("alice", 1).await.unwrap();
    let seen = b
        .validate(&created.id)
        .await
        .unwrap()
        .expect("visible on node b");
    assert_eq!(seen.data, 1);
    b.update(&created.id, seen.version, 2).await.unwrap();
    assert_eq!(a.get(&created.id).await.unwrap().map(|s| s.data), Some(2));
    assert!(b.destroy(&created.id).await.unwrap());
    assert!(a.get(&created.id).await.unwrap().is_none());
}

/// Opening an open store name with another data type is `TypeMismatch`.
pub async fn other_data_type_is_type_mismatch<H: Harness>(h: &H) {
    let node = h.node().await;
    let name = unique("sessions");
    let _numbers = open(&node, &name, config(LONG, LONG));
    match node.sessions::<String>(&name, config(LONG, LONG)) {
        Ok(_) => panic!("a second data type was accepted"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::TypeMismatch),
    }
}

/// Session data encoding to more than `max_value_bytes` is refused by create
/// and update with a non-retryable `PayloadTooLarge`; the session is unchanged.
pub async fn oversized_data_is_refused<H: Harness>(h: &H) {
    use crate::Codec;
    let node = h.node().await;
    let fits = "x".repeat(1000);
    let config = SessionConfig {
        max_value_bytes: crate::DefaultCodec::encoded_len(&fits).unwrap(),
        ..config(LONG, LONG)
    };
    let s = node
        .sessions::<String>(&unique("sessions"), config)
        .expect("open session store");
    let err = s.create("alice", "y".repeat(1001)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    assert!(!err.is_retryable());
    let created = s.create("alice", fits.clone()).await.unwrap();
    let err = s
        .update(&created.id, created.version, "y".repeat(1001))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    let now = s.get(&created.id).await.unwrap().expect("still there");
    assert_eq!((now.data, now.version), (fits, created.version));
}
