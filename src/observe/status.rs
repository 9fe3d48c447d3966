//! The status page's data (`/status.json`): the registry's services and
//! instances, and the numbers of the recorder's own output (see `scrape.rs`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::scrape::{parse_value, quantile, Sample};
use crate::{App, Backend, BackendKind, Registry};

/// Everything the page shows.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    node: String,
    package: &'static str,
    redis: RedisStatus,
    services: Vec<ServiceStatus>,
    queues: Vec<QueueStatus>,
    caches: Vec<CacheStatus>,
    connections: Vec<Connections>,
}

#[derive(Debug, Serialize)]
struct RedisStatus {
    /// The redacted URL, or `in-process` for the monolith.
    endpoint: String,
    /// How many times the endpoint changed (failover); 0 in the monolith.
    epoch: u64,
    /// Whether the last registry read (a Redis round trip) succeeded; always in the monolith.
    answers: bool,
}

#[derive(Debug, Serialize)]
struct ServiceStatus {
    name: String,
    instances: Vec<InstanceStatus>,
    methods: Vec<MethodStatus>,
    /// Why the instances could not be read, if they could not.
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct InstanceStatus {
    id: String,
    node: String,
    address: String,
    status: String,
    version: String,
}

#[derive(Debug, Default, Serialize)]
struct MethodStatus {
    method: String,
    side: String,
    calls: f64,
    errors: f64,
    /// From the `modkit_call_seconds` buckets, since the process started.
    p99_seconds: Option<f64>,
    #[serde(skip)]
    buckets: Vec<(f64, f64)>,
}

#[derive(Debug, Default, Serialize)]
struct QueueStatus {
    name: String,
    depth: Option<f64>,
    unacked: Option<f64>,
    dead_lettered: f64,
}

#[derive(Debug, Default, Serialize)]
struct CacheStatus {
    name: String,
    hits: f64,
    misses: f64,
    near_hits: f64,
    near_misses: f64,
}

#[derive(Debug, Serialize)]
struct Connections {
    what: String,
    open: f64,
}

/// The status of `app`'s node from the recorder's `samples`.
pub(crate) async fn status(app: &App, samples: &[Sample]) -> Status {
    let registry = app.registry();
    let (mut services, answers) = match registry.services().await {
        Ok(names) => (instances(&*registry, names).await, true),
        Err(e) => {
            tracing::warn!(error = %e, "status page: cannot list services");
            (BTreeMap::new(), false)
        }
    };
    for ((service, method, side), m) in methods(samples) {
        let row = services
            .entry(service.clone())
            .or_insert_with(|| ServiceStatus {
                name: service,
                instances: Vec::new(),
                methods: Vec::new(),
                error: None,
            });
        row.methods.push(MethodStatus { method, side, ..m });
    }
    let (endpoint, epoch) = redis(app);
    Status {
        node: app.node_id().to_owned(),
        package: match app.kind() {
            BackendKind::Monolith => "monolith",
            BackendKind::Distribute => "distribute",
        },
        redis: RedisStatus {
            endpoint,
            epoch,
            answers,
        },
        services: services.into_values().collect(),
        queues: queues(samples),
        caches: caches(samples),
        connections: samples
            .iter()
            .filter(|s| s.name == "modkit_rpc_connections" || s.name == "modkit_redis_connections")
            .map(|s| Connections {
                what: match s.label("side") {
                    "" => "redis".to_owned(),
                    side => format!("rpc {side}"),
                },
                open: s.value,
            })
            .collect(),
    }
}

async fn instances(registry: &dyn Registry, names: Vec<String>) -> BTreeMap<String, ServiceStatus> {
    let mut services = BTreeMap::new();
    for name in names {
        let (instances, error) = match registry.lookup(&name).await {
            Ok(found) => (found, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let instances = instances
            .into_iter()
            .map(|i| InstanceStatus {
                node: i
                    .metadata
                    .get("node")
                    .cloned()
                    .unwrap_or_else(|| i.id.clone()),
                id: i.id,
                address: i.address,
                status: format!("{:?}", i.status),
                version: i.version,
            })
            .collect();
        let row = ServiceStatus {
            name: name.clone(),
            instances,
            methods: Vec::new(),
            error,
        };
        services.insert(name, row);
    }
    services
}

/// Per (service, method, side): calls, errors and p99.
fn methods(samples: &[Sample]) -> BTreeMap<(String, String, String), MethodStatus> {
    let mut rows: BTreeMap<(String, String, String), MethodStatus> = BTreeMap::new();
    for s in samples {
        let key = || {
            (
                s.label("service").to_owned(),
                s.label("method").to_owned(),
                s.label("side").to_owned(),
            )
        };
        match s.name.as_str() {
            "modkit_calls_total" => rows.entry(key()).or_default().calls += s.value,
            "modkit_call_errors_total" => rows.entry(key()).or_default().errors += s.value,
            "modkit_call_seconds_bucket" => {
                if let Some(le) = parse_value(s.label("le")) {
                    rows.entry(key()).or_default().buckets.push((le, s.value));
                }
            }
            _ => {}
        }
    }
    for row in rows.values_mut() {
        row.p99_seconds = quantile(0.99, &mut row.buckets);
    }
    rows
}

fn queues(samples: &[Sample]) -> Vec<QueueStatus> {
    let mut rows: BTreeMap<&str, QueueStatus> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name.starts_with("modkit_queue_"))
    {
        let row = rows.entry(s.label("name")).or_default();
        match s.name.as_str() {
            "modkit_queue_depth" => row.depth = Some(s.value),
            "modkit_queue_unacked" => row.unacked = Some(s.value),
            "modkit_queue_dead_lettered_total" => row.dead_lettered += s.value,
            _ => {}
        }
    }
    named(rows, |row, name| row.name = name)
}

fn caches(samples: &[Sample]) -> Vec<CacheStatus> {
    let mut rows: BTreeMap<&str, CacheStatus> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name.starts_with("modkit_cache_"))
    {
        let row = rows.entry(s.label("name")).or_default();
        let hit = s.label("result") == "hit";
        let count = match (s.name.as_str(), hit) {
            ("modkit_cache_requests_total", true) => &mut row.hits,
            ("modkit_cache_requests_total", false) => &mut row.misses,
            ("modkit_cache_near_requests_total", true) => &mut row.near_hits,
            ("modkit_cache_near_requests_total", false) => &mut row.near_misses,
            _ => continue,
        };
        *count += s.value;
    }
    named(rows, |row, name| row.name = name)
}

/// The rows of `rows`, each given its key as its name.
fn named<T>(rows: BTreeMap<&str, T>, set: impl Fn(&mut T, String)) -> Vec<T> {
    rows.into_iter()
        .map(|(name, mut row)| {
            set(&mut row, name.to_owned());
            row
        })
        .collect()
}

/// The Redis endpoint (redacted) and its epoch; `in-process` for the monolith.
fn redis(app: &App) -> (String, u64) {
    #[cfg(feature = "distribute")]
    if let Some(d) = app.distributed() {
        let redis = d.redis();
        return (mod_distribute::redis::redact(&redis.url()), redis.epoch());
    }
    let _ = app;
    ("in-process".to_owned(), 0)
}
