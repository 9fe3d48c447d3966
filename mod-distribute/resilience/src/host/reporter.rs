//! The report loop: every period, the replicas' state from the deployment
//! and `/proc`, their addresses from the registry, a local probe of each
//! (all at once), the host's figures; written to the report key with a TTL.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use mod_api::{ErrorKind, Registry};
use mod_distribute::deploy::{Deployment, ProcessInfo};
use mod_distribute::rpc::{self, RpcConnections};
use mod_distribute::Redis;
use tokio::sync::watch;

use super::inbox::Actions;
use super::procfs;
use crate::faults::report::{HostReport, LocalProbe, ProcState, ProcessReport};

/// The report loop's state.
pub(super) struct Reporter {
    pub(super) host: String,
    pub(super) key: String,
    pub(super) every: Duration,
    pub(super) probe_timeout: Duration,
    pub(super) redis: Redis,
    pub(super) registry: Arc<dyn Registry>,
    pub(super) pool: RpcConnections,
    pub(super) deployment: Weak<Deployment>,
    pub(super) actions: Arc<Actions>,
    pub(super) latest: Arc<Mutex<Option<HostReport>>>,
    /// Node → the address its probe dials, as last found in the registry.
    pub(super) addresses: HashMap<String, String>,
    pub(super) page_size: u64,
    /// Whose file system's free space is reported.
    pub(super) cwd: PathBuf,
    /// Failed writes in a row.
    pub(super) failures: u64,
}

impl Reporter {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let Some(report) = self.report().await else {
                return; // the deployment is gone
            };
            self.write(report).await;
        }
    }

    /// Builds a report now; `None` once the deployment is gone.
    async fn report(&mut self) -> Option<HostReport> {
        // Not held across the awaits: dropping the agent kills at once.
        let processes = self.deployment.upgrade()?.processes();
        self.refresh_addresses(&processes).await;
        let probes = join_all(processes.iter().map(|p| self.probe(&p.role.node))).await;
        let processes = processes
            .iter()
            .zip(probes)
            .map(|(p, local_probe)| self.process_report(p, local_probe))
            .collect();
        let (mem_available_bytes, mem_total_bytes) = procfs::memory();
        Some(HostReport {
            host: self.host.clone(),
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            load1: procfs::load1(),
            mem_available_bytes,
            mem_total_bytes,
            disk_free_bytes: procfs::disk_free(&self.cwd),
            processes,
            actions: self.actions.snapshot(),
        })
    }

    fn process_report(&self, p: &ProcessInfo, local_probe: LocalProbe) -> ProcessReport {
        let stat = p.pid.and_then(procfs::process);
        ProcessReport {
            node: p.role.node.clone(),
            process: p.role.process.clone(),
            services: p.role.services.clone(),
            pid: p.pid,
            state: stat.map_or(ProcState::Gone, |s| s.state),
            cpu_ticks: stat.map_or(0, |s| s.cpu_ticks),
            rss_bytes: stat.map_or(0, |s| s.rss_pages.saturating_mul(self.page_size)),
            restarts: p.restarts,
            local_probe,
        }
    }

    /// Looks up where the replicas listen (their services' instances whose
    /// id or `node` metadata is the replica's node id), within the probe
    /// timeout; on failure the addresses found before stay.
    async fn refresh_addresses(&mut self, processes: &[ProcessInfo]) {
        let nodes: BTreeSet<&str> = processes.iter().map(|p| p.role.node.as_str()).collect();
        let services: BTreeSet<&str> = processes
            .iter()
            .flat_map(|p| p.role.services.iter().map(String::as_str))
            .collect();
        let lookups = join_all(services.iter().map(|s| self.registry.lookup(s)));
        let Ok(found) = tokio::time::timeout(self.probe_timeout, lookups).await else {
            tracing::debug!(host = %self.host, "host agent: registry lookup timed out; probing the addresses known");
            return;
        };
        let mut addresses: BTreeMap<String, String> = BTreeMap::new();
        for instances in found {
            let Ok(instances) = instances else {
                return; // partial answers would drop good addresses
            };
            for instance in instances {
                let node = instance.metadata.get("node").unwrap_or(&instance.id);
                if !nodes.contains(node.as_str()) {
                    continue;
                }
                let addr = instance
                    .metadata
                    .get("listen")
                    .map(|l| loopback_for_unspecified(l))
                    .unwrap_or_else(|| instance.address.clone());
                addresses.insert(node.clone(), addr);
            }
        }
        self.addresses = addresses.into_iter().collect();
    }

    /// The agent's probe of replica `node`.
    async fn probe(&self, node: &str) -> LocalProbe {
        let Some(addr) = self.addresses.get(node) else {
            return LocalProbe::Unknown;
        };
        let started = Instant::now();
        match rpc::probe(&self.pool, addr, self.probe_timeout).await {
            Ok(_) => LocalProbe::Ok {
                ms: started.elapsed().as_millis() as u64,
            },
            Err(e) if e.kind() == ErrorKind::Timeout => LocalProbe::Timeout,
            Err(e) => LocalProbe::Failed {
                reason: e.to_string(),
            },
        }
    }

    /// Writes `report` (bounded by a period) and keeps it as the latest.
    async fn write(&mut self, report: HostReport) {
        let json = match serde_json::to_string(&report) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(host = %self.host, error = %e, "host agent: cannot encode the report");
                return;
            }
        };
        let ttl_ms = (self.every * 3).as_millis().max(1) as u64;
        let mut conn = self.redis.conn();
        let mut set = redis::cmd("SET");
        set.arg(&self.key).arg(json).arg("PX").arg(ttl_ms);
        let set = set.query_async::<()>(&mut conn);
        let bound = self.every.max(Duration::from_millis(100));
        let error = match tokio::time::timeout(bound, set).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no reply within {} ms", bound.as_millis())),
        };
        match error {
            None => {
                if self.failures > 0 {
                    tracing::info!(host = %self.host, failures = self.failures, "host agent: report written again");
                }
                self.failures = 0;
                *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
            }
            Some(error) => {
                self.failures += 1;
                // The first failure, then one in 40 (every 10 s at 250 ms).
                if self.failures % 40 == 1 {
                    tracing::warn!(host = %self.host, key = %self.key, %error, failures = self.failures, "host agent: cannot write the report");
                }
            }
        }
    }
}

/// `listen` as a dialable address: an unspecified IP (`0.0.0.0`, `::`)
/// becomes the loopback of its family.
fn loopback_for_unspecified(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(mut addr) if addr.ip().is_unspecified() => {
            let loopback: std::net::IpAddr = match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            };
            addr.set_ip(loopback);
            addr.to_string()
        }
        _ => listen.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_become_loopback() {
        assert_eq!(loopback_for_unspecified("0.0.0.0:7001"), "127.0.0.1:7001");
        assert_eq!(loopback_for_unspecified("[::]:7001"), "[::1]:7001");
        assert_eq!(loopback_for_unspecified("10.0.0.5:7001"), "10.0.0.5:7001");
        assert_eq!(loopback_for_unspecified("not an address"), "not an address");
    }
}
