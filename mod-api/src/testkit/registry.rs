//! Conformance tests of the registry building block.
//!
//! Watch checks read snapshots until one shows the expected state, asserting on
//! the way that versions strictly increase: a backend may coalesce changes into
//! one snapshot, but never repeats or reorders versions.

use std::sync::Arc;
use std::time::Duration;

use super::{eventually, unique, Harness};
use crate::backend::Backend;
use crate::error::ErrorKind;
use crate::registry::{ConsumerInfo, Instance, Registry, RegistryExt, Snapshot, Status, Watch};

/// Generous bound for anything asynchronous.
const WITHIN: Duration = Duration::from_secs(5);
/// A lease that expires quickly once nobody renews it.
const SHORT_TTL: Duration = Duration::from_millis(300);
/// A lease that outlives any test.
const LONG_TTL: Duration = Duration::from_secs(60);

/// The registry tests, for [`conformance_suite!`](crate::conformance_suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_registry {
    ($harness:path) => {
        $crate::__conformance_tests!($harness, registry;
            register_is_visible_on_another_node,
            lookup_of_unknown_service_is_empty,
            lookup_is_sorted_by_id,
            services_lists_live_services_sorted,
            deregister_removes_and_reports_presence,
            register_again_replaces_the_instance,
            set_status_is_visible_and_unknown_is_not_found,
            watch_starts_with_current_snapshot_then_changes,
            watch_sees_status_change_and_deregistration,
            instance_without_heartbeats_expires_and_watchers_are_told,
            heartbeats_keep_an_instance_alive,
            leased_instance_outlives_its_ttl_and_drop_removes_it,
            abandoned_lease_expires,
            lease_deregister_removes_now,
            heartbeat_of_unknown_instance_is_not_found,
            consumers_are_idempotent_sorted_and_removable,
            invalid_names_are_rejected,
        );
    };
}

/// An instance with every field set to something other than its default.
fn rich(service: &str, id: &str) -> Instance {
    let mut i = Instance::new(service, id, format!("10.0.0.1:{}", 7000 + id.len()));
    i.metadata.insert("zone".into(), "eu-1".into());
    i.metadata.insert("host".into(), format!("host-{id}"));
    i.weight = 7;
    i.version = "1.2.3".into();
    i
}

/// The ids of `instances`, in their order.
fn ids(instances: &[Instance]) -> Vec<&str> {
    instances.iter().map(|i| i.id.as_str()).collect()
}

/// The kind of an error that `r` must be.
fn kind<T: std::fmt::Debug>(r: crate::Result<T>, what: &str) -> ErrorKind {
    r.expect_err(what).kind()
}

/// Registers `rich(service, id)` under a long lease.
async fn put(reg: &Arc<dyn Registry>, service: &str, id: &str) {
    let inst = rich(service, id);
    reg.register(inst, LONG_TTL).await.expect("register");
}

/// The ids `lookup` returns, in its order.
async fn ids_of(reg: &Arc<dyn Registry>, service: &str) -> Vec<String> {
    let found = reg.lookup(service).await.expect("lookup");
    found.into_iter().map(|i| i.id).collect()
}

/// Registries of two nodes of the harness's deployment.
async fn two<H: Harness>(h: &H) -> (Arc<dyn Registry>, Arc<dyn Registry>) {
    (h.node().await.registry(), h.node().await.registry())
}

/// The first snapshot of a watch (its version becomes `last`).
async fn first(watch: &mut Watch, service: &str, last: &mut u64) -> Snapshot {
    let snap = tokio::time::timeout(WITHIN, watch.next())
        .await
        .expect("a watch yields its current snapshot at once")
        .expect("watch ended before its first snapshot");
    assert_eq!(snap.service, service);
    *last = snap.version;
    snap
}

/// Reads snapshots until one satisfies `pred`; versions must strictly increase.
async fn until(
    watch: &mut Watch,
    last: &mut u64,
    what: &str,
    pred: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let snap = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap_or_else(|_| panic!("no snapshot where {what} within {WITHIN:?}"))
            .unwrap_or_else(|| panic!("watch ended before a snapshot where {what}"));
        assert!(
            snap.version > *last,
            "versions must strictly increase: {} after {}",
            snap.version,
            *last
        );
        *last = snap.version;
        let sorted = snap.instances.windows(2).all(|w| w[0].id < w[1].id);
        assert!(sorted, "snapshot instances must be sorted by id");
        if pred(&snap) {
            return snap;
        }
    }
}

/// Registered on one node, an instance is visible, field for field, on another at once.
pub async fn register_is_visible_on_another_node<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let svc = unique("reg-visible");
    let inst = rich(&svc, "i1");
    a.register(inst.clone(), LONG_TTL).await.expect("register");
    let found = b.lookup(&svc).await.expect("lookup");
    assert_eq!(found, vec![inst]);
}

/// A service nobody registered has no instances (not an error).
pub async fn lookup_of_unknown_service_is_empty<H: Harness>(h: &H) {
    let reg = h.node().await.registry();
    let found = reg.lookup(&unique("reg-none")).await.expect("lookup");
    assert!(found.is_empty(), "unexpected instances: {found:?}");
}

/// `lookup` returns instances sorted by id, whatever the order of registration.
pub async fn lookup_is_sorted_by_id<H: Harness>(h: &H) {
    let reg = h.node().await.registry();
    let svc = unique("reg-sorted");
    for id in ["c", "a", "d", "b"] {
        put(&reg, &svc, id).await;
    }
    assert_eq!(ids_of(&reg, &svc).await, ["a", "b", "c", "d"]);
}

/// `services` lists every service with a live instance, sorted, and drops it when empty.
pub async fn services_lists_live_services_sorted<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let (s1, s2) = (unique("reg-svc-b"), unique("reg-svc-a"));
    put(&a, &s1, "x").await;
    put(&a, &s2, "y").await;
    let names = b.services().await.expect("services");
    assert!(
        names.contains(&s1) && names.contains(&s2),
        "missing in {names:?}"
    );
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "not sorted: {names:?}"
    );
    assert!(a.deregister(&s1, "x").await.expect("deregister"));
    let names = b.services().await.expect("services");
    assert!(!names.contains(&s1), "{s1} has no instance but is listed");
    assert!(names.contains(&s2));
}

/// `deregister` removes an instance and says whether it was there.
pub async fn deregister_removes_and_reports_presence<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let svc = unique("reg-dereg");
    put(&a, &svc, "i1").await;
    put(&a, &svc, "i2").await;
    assert!(b.deregister(&svc, "i1").await.expect("deregister"));
    assert_eq!(ids_of(&a, &svc).await, ["i2"]);
    assert!(!b.deregister(&svc, "i1").await.expect("deregister again"));
    assert!(!b
        .deregister(&unique("reg-none"), "i1")
        .await
        .expect("deregister unknown"));
}

/// Registering the same id again replaces the instance (one entry, new fields).
pub async fn register_again_replaces_the_instance<H: Harness>(h: &H) {
    let reg = h.node().await.registry();
    let svc = unique("reg-replace");
    put(&reg, &svc, "i1").await;
    let mut moved = rich(&svc, "i1");
    moved.address = "10.9.9.9:9999".into();
    moved.weight = 3;
    reg.register(moved.clone(), LONG_TTL)
        .await
        .expect("register again");
    assert_eq!(reg.lookup(&svc).await.expect("lookup"), vec![moved]);
}

/// `set_status` is visible everywhere; an unknown instance is NotFound.
pub async fn set_status_is_visible_and_unknown_is_not_found<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let svc = unique("reg-status");
    put(&a, &svc, "i1").await;
    b.set_status(&svc, "i1", Status::Draining)
        .await
        .expect("set_status");
    let found = a.lookup(&svc).await.expect("lookup");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].status, Status::Draining);
    assert_eq!(
        found[0].address,
        rich(&svc, "i1").address,
        "other fields kept"
    );
    assert_eq!(
        kind(a.set_status(&svc, "nope", Status::Down).await, "unknown id"),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(
            a.set_status(&unique("reg-none"), "i1", Status::Down).await,
            "unknown service"
        ),
        ErrorKind::NotFound
    );
}

/// A watch yields the current snapshot first, then changes made on other nodes.
pub async fn watch_starts_with_current_snapshot_then_changes<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let svc = unique("reg-watch");
    put(&a, &svc, "i1").await;
    let mut watch = b.watch(&svc).await.expect("watch");
    let mut last = 0;
    let snap = first(&mut watch, &svc, &mut last).await;
    assert_eq!(snap.instances, vec![rich(&svc, "i1")]);
    put(&a, &svc, "i0").await;
    let snap = until(&mut watch, &mut last, "i0 joined", |s| {
        s.instances.len() == 2
    })
    .await;
    assert_eq!(snap.instances, vec![rich(&svc, "i0"), rich(&svc, "i1")]);
    put(&a, &svc, "i2").await;
    until(&mut watch, &mut last, "i2 joined", |s| {
        s.instances.len() == 3
    })
    .await;
}

/// A watch of an empty service sees status changes and deregistrations.
pub async fn watch_sees_status_change_and_deregistration<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let svc = unique("reg-watch2");
    let mut watch = b.watch(&svc).await.expect("watch");
    let mut last = 0;
    assert!(first(&mut watch, &svc, &mut last)
        .await
        .instances
        .is_empty());
    put(&a, &svc, "i1").await;
    until(&mut watch, &mut last, "i1 is up", |s| {
        s.instances.len() == 1 && s.instances[0].status == Status::Up
    })
    .await;
    a.set_status(&svc, "i1", Status::Draining)
        .await
        .expect("set_status");
    until(&mut watch, &mut last, "i1 is draining", |s| {
        s.instances.len() == 1 && s.instances[0].status == Status::Draining
    })
    .await;
    assert!(a.deregister(&svc, "i1").await.expect("deregister"));
    until(&mut watch, &mut last, "i1 is gone", |s| {
        s.instances.is_empty()
    })
    .await;
}

/// An instance whose lease is not renewed disappears, watchers are told, and its
/// heartbeat is then NotFound.
pub async fn instance_without_heartbeats_expires_and_watchers_are_told<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let svc = unique("reg-expire");
    put(&a, &svc, "keep").await;
    a.register(rich(&svc, "dies"), SHORT_TTL)
        .await
        .expect("register");
    let mut watch = b.watch(&svc).await.expect("watch");
    let mut last = 0;
    assert_eq!(
        ids(&first(&mut watch, &svc, &mut last).await.instances),
        ["dies", "keep"]
    );
    // Nobody reads the registry meanwhile: the backend itself must notice.
    let snap = until(&mut watch, &mut last, "the expired instance is gone", |s| {
        !s.instances.iter().any(|i| i.id == "dies")
    })
    .await;
    assert_eq!(
        ids(&snap.instances),
        ["keep"],
        "only the expired instance goes"
    );
    assert_eq!(ids_of(&b, &svc).await, ["keep"]);
    assert_eq!(
        kind(a.heartbeat(&svc, "dies").await, "expired"),
        ErrorKind::NotFound
    );
}

/// Heartbeats more often than the TTL keep an instance for many TTLs.
pub async fn heartbeats_keep_an_instance_alive<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let svc = unique("reg-beat");
    let ttl = Duration::from_millis(600);
    a.register(rich(&svc, "i1"), ttl).await.expect("register");
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.heartbeat(&svc, "i1")
            .await
            .expect("heartbeat of a live instance");
    }
    assert_eq!(ids_of(&b, &svc).await, ["i1"]);
}

/// `register_leased` renews in the background; dropping the lease removes the instance.
pub async fn leased_instance_outlives_its_ttl_and_drop_removes_it<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let svc = unique("reg-lease");
    let lease = a
        .register_leased(rich(&svc, "i1"), SHORT_TTL)
        .await
        .expect("lease");
    assert_eq!((lease.service(), lease.id()), (svc.as_str(), "i1"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ids_of(&b, &svc).await, ["i1"], "renewed");
    drop(lease);
    let reg = b.clone();
    eventually("a dropped lease deregisters", WITHIN, || async {
        reg.lookup(&svc).await.is_ok_and(|found| found.is_empty())
    })
    .await;
}

/// An abandoned lease is no longer renewed: the instance expires.
pub async fn abandoned_lease_expires<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let svc = unique("reg-abandon");
    let lease = a
        .register_leased(rich(&svc, "i1"), SHORT_TTL)
        .await
        .expect("lease");
    lease.abandon();
    assert_eq!(ids_of(&b, &svc).await, ["i1"], "not removed at once");
    let reg = b.clone();
    eventually("an abandoned lease expires", WITHIN, || async {
        reg.lookup(&svc).await.is_ok_and(|found| found.is_empty())
    })
    .await;
}

/// `Lease::deregister` removes the instance before it returns.
pub async fn lease_deregister_removes_now<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let svc = unique("reg-lease-dereg");
    let lease = a
        .register_leased(rich(&svc, "i1"), LONG_TTL)
        .await
        .expect("lease");
    assert!(lease.deregister().await.expect("deregister"));
    assert!(b.lookup(&svc).await.expect("lookup").is_empty());
}

/// Heartbeat of an instance never registered, or deregistered, is NotFound.
pub async fn heartbeat_of_unknown_instance_is_not_found<H: Harness>(h: &H) {
    let reg = h.node().await.registry();
    let svc = unique("reg-hb");
    assert_eq!(
        kind(reg.heartbeat(&svc, "ghost").await, "unknown service"),
        ErrorKind::NotFound
    );
    put(&reg, &svc, "i1").await;
    reg.heartbeat(&svc, "i1").await.expect("heartbeat");
    assert_eq!(
        kind(reg.heartbeat(&svc, "ghost").await, "unknown id"),
        ErrorKind::NotFound
    );
    assert!(reg.deregister(&svc, "i1").await.expect("deregister"));
    assert_eq!(
        kind(reg.heartbeat(&svc, "i1").await, "deregistered"),
        ErrorKind::NotFound
    );
}

/// Consumers: registering twice keeps one entry, the list is sorted and shared,
/// and deregistering says whether the consumer was there.
pub async fn consumers_are_idempotent_sorted_and_removable<H: Harness>(h: &H) {
    let (a, b) = two(h).await;
    let svc = unique("reg-consumers");
    let info = |c: &str| ConsumerInfo {
        service: svc.clone(),
        consumer: c.into(),
    };
    assert!(a.consumers(&svc).await.expect("consumers").is_empty());
    for c in ["web", "batch", "web"] {
        a.register_consumer(info(c))
            .await
            .expect("register_consumer");
    }
    let listed = b.consumers(&svc).await.expect("consumers");
    assert_eq!(listed, vec![info("batch"), info("web")]);
    assert!(b
        .deregister_consumer(&info("web"))
        .await
        .expect("deregister"));
    assert!(!b.deregister_consumer(&info("web")).await.expect("again"));
    assert_eq!(
        a.consumers(&svc).await.expect("consumers"),
        vec![info("batch")]
    );
}

/// Empty service names, or names with whitespace or braces, are InvalidInput.
pub async fn invalid_names_are_rejected<H: Harness>(h: &H) {
    let reg = h.node().await.registry();
    for bad in ["", "has space", "with{brace}", "tab\tname"] {
        let inst = Instance::new(bad, "i1", "addr");
        assert_eq!(
            kind(reg.register(inst, LONG_TTL).await, bad),
            ErrorKind::InvalidInput
        );
        assert_eq!(kind(reg.lookup(bad).await, bad), ErrorKind::InvalidInput);
        assert_eq!(kind(reg.watch(bad).await, bad), ErrorKind::InvalidInput);
        let consumer = ConsumerInfo {
            service: bad.into(),
            consumer: "c".into(),
        };
        assert_eq!(
            kind(reg.register_consumer(consumer).await, bad),
            ErrorKind::InvalidInput
        );
    }
    let names = reg.services().await.expect("services");
    assert!(
        !names.iter().any(|n| n.is_empty() || n.contains(' ')),
        "{names:?}"
    );
    let svc = unique("zero-ttl");
    let zero = reg.register(Instance::new(&svc, "i1", "addr"), Duration::ZERO);
    assert_eq!(kind(zero.await, "zero ttl"), ErrorKind::InvalidInput);
    assert!(reg.lookup(&svc).await.expect("lookup").is_empty());
}
