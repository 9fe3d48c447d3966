//! [`ServiceProxy`]: the client side of one remote service.
//!
//! The registry watch is turned into a [`Targets`] list by the follow task, once
//! per snapshot, so a call only reads an `Arc`: no instance is cloned, no
//! address looked up and nothing allocated to choose where a call goes. Each
//! target keeps its in-flight count, its health (outlier.rs) and its connection across
//! snapshots, as long as its address stays in the registry.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mod_api::config::{Balance, InvokeConfig, OutlierConfig};
use mod_api::{Call, Error, ErrorKind, Instance, Registry, Result, Status, Transport};
use tokio::sync::watch;

use super::outlier::{Ejections, Failure, Health};
use crate::rpc::{not_sent, probe, RpcClient, RpcConnections};

/// One address of the service, as the proxy sees it.
struct Target {
    address: String,
    /// Calls of this proxy running on it (for [`Balance::LeastInFlight`]).
    in_flight: AtomicUsize,
    /// Its failures and ejections (outlier ejection).
    health: Health,
    /// The connection last used, so that a call need not ask the pool.
    client: Mutex<Option<RpcClient>>,
}

impl Target {
    fn new(address: &str, ejections: &Ejections) -> Target {
        Target {
            address: address.to_owned(),
            in_flight: AtomicUsize::new(0),
            health: Health::new(ejections),
            client: Mutex::new(None),
        }
    }

    /// A live connection: the cached one, else one from the pool.
    async fn client(&self, pool: &RpcConnections) -> Result<RpcClient> {
        {
            let cached = self.client.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(client) = cached.as_ref().filter(|c| !c.is_closed()) {
                return Ok(client.clone());
            }
        }
        let client = pool.get(&self.address).await?;
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
        Ok(client)
    }
}

/// The service's addresses from one registry snapshot.
#[derive(Default)]
struct Targets {
    /// One per address in the snapshot, whatever its status (kept for the next one).
    all: Vec<Arc<Target>>,
    /// The addresses with an `Up` instance: those of the caller's own site
    /// first (the first `local`), then the others, each in snapshot order.
    up: Vec<Arc<Target>>,
    /// How many of `up` are in the caller's site (all of them when the
    /// caller names no site).
    local: usize,
}

impl Targets {
    /// The targets of `instances`, reusing those of `prev` by address; `site`
    /// is the caller's (instances of other sites go last).
    fn build(
        instances: &[Instance],
        site: Option<&str>,
        prev: &Targets,
        ejections: &Ejections,
    ) -> Targets {
        let mut next = Targets::default();
        let (local, remote): (Vec<&Instance>, Vec<&Instance>) = instances
            .iter()
            .partition(|i| site.is_none_or(|s| i.metadata.get("site").is_some_and(|i| i == s)));
        next.add(&local, prev, ejections);
        next.local = next.up.len();
        next.add(&remote, prev, ejections);
        next
    }

    /// Adds the targets of `instances` (reusing those of `prev` by address).
    fn add(&mut self, instances: &[&Instance], prev: &Targets, ejections: &Ejections) {
        for i in instances {
            let known = self.all.iter().find(|t| t.address == i.address).cloned();
            let target = match known {
                Some(t) => t,
                None => {
                    let t = prev
                        .all
                        .iter()
                        .find(|t| t.address == i.address)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Target::new(&i.address, ejections)));
                    self.all.push(t.clone());
                    t
                }
            };
            if i.status == Status::Up && !self.up.iter().any(|t| Arc::ptr_eq(t, &target)) {
                self.up.push(target);
            }
        }
    }

    /// The caller's site's `Up` targets.
    fn local(&self) -> &[Arc<Target>] {
        &self.up[..self.local]
    }
}

/// The client side of one service: follows its instances, balances, retries.
pub struct ServiceProxy {
    service: &'static str,
    config: InvokeConfig,
    targets: watch::Receiver<Option<Arc<Targets>>>,
    connections: Arc<RpcConnections>,
    next: AtomicUsize,
    ejections: Arc<Ejections>,
}

impl ServiceProxy {
    /// A proxy that follows `registry`'s watch of `service` in the background.
    pub fn start(
        service: &'static str,
        registry: Arc<dyn Registry>,
        connections: Arc<RpcConnections>,
        config: InvokeConfig,
    ) -> Arc<ServiceProxy> {
        let (tx, rx) = watch::channel(None);
        let ejections = Arc::new(Ejections::new());
        let site = config.site.clone();
        let proxy = Arc::new(ServiceProxy {
            service,
            config,
            targets: rx,
            connections,
            next: AtomicUsize::new(0),
            ejections: ejections.clone(),
        });
        tokio::spawn(follow(service, site, registry, tx, ejections));
        proxy
    }

    /// Where the next attempt of a call may go: the caller's site's `Up`
    /// targets that admit a call, while one of them was not `tried` by it;
    /// then any site's that admit one; when none does, all `Up` ones.
    fn candidates<'a>(
        &self,
        targets: &'a Targets,
        tried: &[Arc<Target>],
    ) -> Cow<'a, [Arc<Target>]> {
        let local = targets.local();
        if local.len() < targets.up.len() {
            let open = self.admitting(local);
            if open
                .iter()
                .any(|t| !tried.iter().any(|d| Arc::ptr_eq(d, t)))
            {
                return open;
            }
        }
        let open = self.admitting(&targets.up);
        if open.is_empty() {
            Cow::Borrowed(&targets.up)
        } else {
            open
        }
    }

    /// Those of `tier` that admit a call (outlier ejection); all of them
    /// when nothing is ejected.
    fn admitting<'a>(&self, tier: &'a [Arc<Target>]) -> Cow<'a, [Arc<Target>]> {
        if !self.ejections.any() {
            return Cow::Borrowed(tier);
        }
        Cow::Owned(tier.iter().filter(|t| t.health.admits()).cloned().collect())
    }

    /// Records a failed attempt on `target` (one of `targets.up`), and ejects
    /// it when the failures call for it and the share of ejected ones allows.
    fn on_failure(&self, target: &Arc<Target>, e: &Error, targets: &Targets) {
        let config = &self.config.outlier;
        if !config.enabled() || !target.health.failed(Failure::of(e), config) {
            return;
        }
        let now = self.ejections.now();
        let up = &targets.up;
        let others = up.iter().filter(|t| !Arc::ptr_eq(t, target));
        let out = others.filter(|t| !t.health.admits()).count();
        if out >= config.max_ejected(up.len()) {
            tracing::warn!(
                service = self.service,
                address = %target.address,
                ejected = out,
                up = up.len(),
                "instance keeps failing but is not ejected: max_ejected_percent holds it back"
            );
            return;
        }
        if let Some((nth, end)) = target.health.eject(now, config) {
            ejected(self.service, &target.address, e, nth, end - now);
            if target.health.start_probing() {
                tokio::spawn(readmit(
                    self.service,
                    Arc::downgrade(target),
                    self.connections.clone(),
                    config.clone(),
                    self.ejections.clone(),
                ));
            }
        }
    }

    /// The next target among `candidates` not `tried` yet.
    fn pick<'a>(
        &self,
        candidates: &'a [Arc<Target>],
        tried: &[Arc<Target>],
    ) -> Option<&'a Arc<Target>> {
        let fresh = |t: &&Arc<Target>| !tried.iter().any(|d| Arc::ptr_eq(d, t));
        match self.config.balance {
            Balance::RoundRobin => {
                let n = candidates.iter().filter(fresh).count();
                if n == 0 {
                    return None;
                }
                let k = self.next.fetch_add(1, Ordering::Relaxed) % n;
                candidates.iter().filter(fresh).nth(k)
            }
            Balance::LeastInFlight => candidates
                .iter()
                .filter(fresh)
                .min_by_key(|t| t.in_flight.load(Ordering::Relaxed)),
        }
    }

    async fn targets(&self, deadline: Instant) -> Result<Arc<Targets>> {
        if let Some(targets) = self.targets.borrow().as_ref() {
            return Ok(targets.clone());
        }
        let mut rx = self.targets.clone();
        let wait = async move { rx.wait_for(Option::is_some).await.map(|t| t.clone()) };
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(targets)) => Ok(targets.unwrap_or_default()),
            Ok(Err(_)) => Err(Error::closed("the registry watch ended")),
            Err(_) => Err(Error::unavailable(format!(
                "no snapshot of service {} from the registry before the deadline",
                self.service
            ))),
        }
    }

    /// The first snapshot after `seen` (before `deadline`): what a call
    /// refused with [`ErrorKind::Moved`] waits for.
    async fn next_targets(&self, seen: &Arc<Targets>, deadline: Instant) -> Option<Arc<Targets>> {
        let mut rx = self.targets.clone();
        let newer = rx.wait_for(|t| t.as_ref().is_some_and(|t| !Arc::ptr_eq(t, seen)));
        let got = match tokio::time::timeout_at(deadline.into(), newer).await {
            Ok(Ok(targets)) => targets.clone(),
            _ => None,
        };
        got
    }

    /// One attempt on `target`, counted in its in-flight calls.
    async fn attempt(
        &self,
        target: &Target,
        call: &Call,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Vec<u8>> {
        // Decremented however the attempt ends, including the caller dropping it.
        struct InFlight<'a>(&'a AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        target.in_flight.fetch_add(1, Ordering::Relaxed);
        let _counted = InFlight(&target.in_flight);
        let client = target.client(&self.connections).await?;
        client.call_within(call, deadline, budget).await
    }
}

#[async_trait]
impl Transport for ServiceProxy {
    async fn call(&self, call: Call) -> Result<Vec<u8>> {
        // The caller's deadline, else the configured one; it travels with the request.
        let timeout = call.context.timeout().unwrap_or(self.config.timeout);
        let start = Instant::now();
        let deadline = start + timeout;
        // Errors leave with the call's service and method (and the instance's
        // address when one was tried) as context: added here, on the error
        // path only.
        let in_call = |e: Error| {
            e.with_context("service", call.service)
                .with_context("method", call.method)
        };
        let mut targets = self.targets(deadline).await.map_err(in_call)?;
        let mut tried: Vec<Arc<Target>> = Vec::new();
        let mut last_error: Option<Error> = None;
        let mut attempts = 1 + self.config.retries as usize;
        let mut first = true;
        while attempts > 0 {
            let picked = self
                .pick(&self.candidates(&targets, &tried), &tried)
                .cloned();
            let Some(target) = picked else {
                // Refused by an instance that no longer owns the service (a
                // stateful service moving): the registry shows the new owner
                // soon; the call did not run, so it waits for that.
                if last_error
                    .as_ref()
                    .is_some_and(|e| e.kind() == ErrorKind::Moved)
                {
                    if let Some(next) = self.next_targets(&targets, deadline).await {
                        targets = next;
                        continue;
                    }
                }
                break;
            };
            // The first attempt starts now: it has the whole timeout.
            let budget = if first {
                timeout
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            first = false;
            if budget.is_zero() {
                return Err(in_call(Error::timeout("deadline passed")));
            }
            let e = match self.attempt(&target, &call, deadline, budget).await {
                Ok(reply) => {
                    target.health.succeeded();
                    return Ok(reply);
                }
                Err(e) => e,
            };
            let address = &target.address;
            // A refusal by a non-owner is no fault of the instance, and the
            // call did not run there: always safe to send elsewhere.
            let moved = e.kind() == ErrorKind::Moved;
            if !moved {
                self.on_failure(&target, &e, &targets);
                attempts -= 1;
            }
            let transport_failure = matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Closed);
            let may_retry = moved || (transport_failure && (call.idempotent || not_sent(&e)));
            let e = in_call(e).with_context("address", address);
            if moved {
                tracing::debug!(error = %e, "instance does not own the service now; trying the owner");
            } else {
                tracing::warn!(error = %e, may_retry, "remote call failed");
            }
            if !may_retry {
                return Err(e);
            }
            last_error = Some(e);
            tried.push(target);
        }
        Err(last_error
            .unwrap_or_else(|| in_call(Error::unavailable("no Up instance of the service"))))
    }
}

/// Reports an ejection (WARN, `modkit_outlier_ejections_total`).
fn ejected(service: &'static str, address: &str, e: &Error, nth: u32, for_ms: u64) {
    tracing::warn!(service, address, error = %e, nth, for_ms, "instance ejected from balancing");
    if mod_api::layer::metrics_enabled() {
        metrics::counter!("modkit_outlier_ejections_total", "service" => service).increment(1);
    }
}

/// Brings an ejected target back: when its ejection ends, probes it
/// (the RPC server's built-in health probe); an answer ends its probation,
/// none ejects it again. Ends when it is back (a call may also bring it
/// back) or gone from the registry.
async fn readmit(
    service: &'static str,
    target: Weak<Target>,
    connections: Arc<RpcConnections>,
    config: OutlierConfig,
    ejections: Arc<Ejections>,
) {
    loop {
        let Some(wait) = target.upgrade().map(|t| t.health.ejected_until()) else {
            return;
        };
        let wait = wait.saturating_sub(ejections.now());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let Some(t) = target.upgrade() else {
            return;
        };
        if t.health.admits() {
            t.health.stop_probing();
            return;
        }
        match probe(&connections, &t.address, config.probe_timeout).await {
            Ok(_) => {
                t.health.succeeded();
                t.health.stop_probing();
                tracing::info!(service, address = %t.address, "instance answers its health probe; back in balancing");
                return;
            }
            Err(e) => {
                let now = ejections.now();
                if let Some((nth, end)) = t.health.eject(now, &config) {
                    ejected(service, &t.address, &e, nth, end - now);
                }
            }
        }
    }
}

/// Feeds the proxy's targets from the registry watch until the proxy (the only
/// receiver) is dropped.
async fn follow(
    service: &'static str,
    site: Option<String>,
    registry: Arc<dyn Registry>,
    tx: watch::Sender<Option<Arc<Targets>>>,
    ejections: Arc<Ejections>,
) {
    let mut current = Arc::new(Targets::default());
    loop {
        match registry.watch(service).await {
            Ok(mut watch) => loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    next = watch.next() => match next {
                        Some(snapshot) => {
                            tracing::debug!(service, version = snapshot.version, n = snapshot.instances.len(), "instances changed");
                            current = Arc::new(Targets::build(&snapshot.instances, site.as_deref(), &current, &ejections));
                            tx.send_replace(Some(current.clone()));
                        }
                        None => break,
                    },
                }
            },
            Err(e) => tracing::warn!(service, error = %e, "registry watch failed; retrying"),
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, site: Option<&str>, status: Status) -> Instance {
        let mut i = Instance::new("svc", id, format!("{id}:1"));
        if let Some(site) = site {
            i.metadata.insert("site".into(), site.into());
        }
        i.status = status;
        i
    }

    fn addresses(targets: &[Arc<Target>]) -> Vec<&str> {
        targets.iter().map(|t| t.address.as_str()).collect()
    }

    #[test]
    fn own_site_targets_come_first_and_are_counted() {
        let instances = [
            instance("b1", Some("b"), Status::Up),
            instance("a1", Some("a"), Status::Up),
            instance("x", None, Status::Up),
            instance("a2", Some("a"), Status::Draining),
            instance("a3", Some("a"), Status::Up),
        ];
        let ejections = Ejections::new();
        let none = Targets::default();
        let in_a = Targets::build(&instances, Some("a"), &none, &ejections);
        assert_eq!(addresses(&in_a.up), ["a1:1", "a3:1", "b1:1", "x:1"]);
        assert_eq!(addresses(in_a.local()), ["a1:1", "a3:1"]);
        assert_eq!(
            in_a.all.len(),
            5,
            "a draining instance is kept for the next snapshot"
        );
        // Without a site every instance is local; with an unknown one none is.
        let anywhere = Targets::build(&instances, None, &in_a, &ejections);
        assert_eq!(anywhere.local, anywhere.up.len());
        assert!(
            Arc::ptr_eq(&anywhere.up[0], &in_a.up[2]),
            "targets are reused by address"
        );
        let elsewhere = Targets::build(&instances, Some("c"), &none, &ejections);
        assert_eq!((elsewhere.local, elsewhere.up.len()), (0, 4));
    }
}
