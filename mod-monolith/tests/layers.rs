//! The standard layers around the monolith's blocks: what the observe layer
//! records (metrics, WARN events) and that the check layer refuses before the
//! backend. The distributed backend opens its blocks through the same
//! `OpenBlocks::open`, so this holds there too.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use mod_api::testkit::unique;
use mod_api::{
    Backend, CachePolicy, Config, Consumer, ErrorKind, QueueConfig, QueueExt, SessionConfig,
};
use mod_monolith::Monolith;

/// The process's recorder (installed once), with metrics enabled.
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this test binary");
        mod_api::layer::enable_metrics();
        snapshotter
    })
}

/// Held by each test for its whole run: a snapshot of the debugging
/// recorder resets its counters, so a test snapshotting while another one
/// counts took that one's counts away (seen: 269 of 512 operations).
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Every metric whose `name` label is `name`: (metric, labels other than `name`, value).
fn metrics_of(name: &str) -> Vec<Metric> {
    mod_api::layer::flush_counts();
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<_> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels
                .iter()
                .any(|(k, v)| k == "name" && v == name)
                .then(|| {
                    let rest = labels.into_iter().filter(|(k, _)| k != "name").collect();
                    (key.name().to_owned(), rest, value)
                })
        })
        .collect()
}

fn counter(all: &[Metric], metric: &str, labels: &[(&str, &str)]) -> u64 {
    all.iter()
        .filter(|(m, l, _)| {
            m == metric
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| match v {
            DebugValue::Counter(n) => *n,
            other => panic!("{metric} is not a counter: {other:?}"),
        })
        .sum()
}

fn gauge(all: &[Metric], metric: &str) -> f64 {
    all.iter()
        .find_map(|(m, _, v)| match v {
            DebugValue::Gauge(g) if m == metric => Some(g.into_inner()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no gauge {metric}"))
}

fn samples(all: &[Metric], metric: &str, op: &str) -> usize {
    all.iter()
        .filter(|(m, l, _)| m == metric && l.iter().any(|(k, v)| k == "op" && v == op))
        .map(|(_, _, v)| match v {
            DebugValue::Histogram(h) => h.len(),
            other => panic!("{metric} is not a histogram: {other:?}"),
        })
        .sum()
}

/// One recorded metric: (metric, labels other than `name`, value).
type Metric = (String, Vec<(String, String)>, DebugValue);

fn monolith() -> Monolith {
    snapshotter();
    captured();
    Monolith::new(Config::default()).expect("monolith")
}

#[tokio::test]
async fn cache_operations_errors_and_hits_are_counted() {
    let _serial = one_at_a_time().await;
    let app = monolith();
    let name = unique("layered-cache");
    let cache = app
        .cache::<Vec<u8>>(&name, CachePolicy::new().max_value_bytes(64))
        .expect("cache");
    assert_eq!(cache.get("a").await.unwrap(), None);
    cache.set("a", vec![1; 8]).await.unwrap();
    assert_eq!(cache.get("a").await.unwrap(), Some(vec![1; 8]));
    // Refused by the check layer, recorded by the observe layer around it.
    let err = cache.set("b", vec![0; 1000]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    let loaded = cache
        .get_or_load("c", Box::pin(async { Ok(vec![3]) }))
        .await
        .unwrap();
    assert_eq!(loaded, vec![3]);
    let again = cache
        .get_or_load("c", Box::pin(async { Ok(vec![4]) }))
        .await
        .unwrap();
    assert_eq!(again, vec![3]);

    let all = metrics_of(&name);
    let ops = |op| {
        counter(
            &all,
            "modkit_block_ops_total",
            &[("block", "cache"), ("op", op)],
        )
    };
    assert_eq!((ops("get"), ops("set"), ops("get_or_load")), (2, 2, 2));
    let too_large = [("op", "set"), ("kind", "payload_too_large")];
    assert_eq!(counter(&all, "modkit_block_errors_total", &too_large), 1);
    assert_eq!(
        counter(&all, "modkit_cache_requests_total", &[("result", "hit")]),
        2
    );
    assert_eq!(
        counter(&all, "modkit_cache_requests_total", &[("result", "miss")]),
        2
    );
    // Latency is sampled: 1 in LATENCY_SAMPLE consecutive operations of a thread.
    assert!(samples(&all, "modkit_block_op_seconds", "set") <= 2);
    let rounds = 8 * mod_api::layer::LATENCY_SAMPLE as usize;
    for _ in 0..rounds {
        assert!(cache.contains("a").await.unwrap());
    }
    let all = metrics_of(&name);
    let contains = [("block", "cache"), ("op", "contains")];
    assert_eq!(
        counter(&all, "modkit_block_ops_total", &contains),
        rounds as u64
    );
    assert_eq!(samples(&all, "modkit_block_op_seconds", "contains"), 8);
    // A read the backend answers at once (`Cache::get_now`) is observed the same way.
    for _ in 0..rounds {
        assert!(cache.get("a").await.unwrap().is_some());
    }
    let all = metrics_of(&name);
    let get = [("block", "cache"), ("op", "get")];
    assert_eq!(counter(&all, "modkit_block_ops_total", &get), rounds as u64);
    assert_eq!(samples(&all, "modkit_block_op_seconds", "get"), 8);
    let hits = [("result", "hit")];
    assert_eq!(
        counter(&all, "modkit_cache_requests_total", &hits),
        rounds as u64
    );
}

#[tokio::test]
async fn queue_unacked_depth_and_dead_letters_are_recorded() {
    let _serial = one_at_a_time().await;
    let app = monolith();
    let name = unique("layered-queue");
    let config = QueueConfig {
        visibility_timeout: Duration::from_millis(50),
        max_deliveries: 1,
        ..QueueConfig::default()
    };
    let queue = app.queue::<u32>(&name, config).expect("queue");
    for n in 0..3 {
        queue.offer(n).await.unwrap();
    }
    let consumer = Consumer::new("g", "c1");
    let first = queue.take(&consumer).await.unwrap();
    let _second = queue.take(&consumer).await.unwrap();
    assert!(queue.ack_delivery(&first).await.unwrap());
    mod_api::layer::refresh_gauges().await;
    let all = metrics_of(&name);
    assert_eq!(gauge(&all, "modkit_queue_unacked"), 1.0);
    assert_eq!(
        gauge(&all, "modkit_queue_depth"),
        queue.len().await.unwrap() as f64
    );

    // The unacknowledged one passes its only delivery: dead-lettered at the next poll.
    tokio::time::sleep(Duration::from_millis(80)).await;
    let third = queue
        .poll(&consumer)
        .await
        .unwrap()
        .expect("the third message");
    assert_eq!(third.message, 2);
    let all = metrics_of(&name);
    assert_eq!(
        counter(
            &all,
            "modkit_queue_dead_lettered_total",
            &[("reason", "max_deliveries")]
        ),
        1
    );
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The WARN events of this test binary: a global subscriber, installed
/// before any test's first event (a thread-local one races with the callsite
/// interest cache when tests run in parallel).
fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        captured
    })
}

#[tokio::test]
async fn failures_are_warn_events_with_the_kind_and_outcomes_are_not() {
    let _serial = one_at_a_time().await;
    let app = monolith();
    let name = unique("layered-sessions");
    let store = app
        .sessions::<String>(
            &name,
            SessionConfig {
                max_value_bytes: 16,
                ..SessionConfig::default()
            },
        )
        .expect("store");
    let session = store.create("ann", "hi".into()).await.unwrap();
    // An outcome the caller handles (a stale version): DEBUG, not WARN.
    let stale = store
        .update(&session.id, session.version + 7, "x".into())
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::Conflict);
    let big = store.create("bob", "y".repeat(100)).await.unwrap_err();
    assert_eq!(big.kind(), ErrorKind::PayloadTooLarge);

    let text = String::from_utf8(captured().0.lock().unwrap().clone()).unwrap();
    let warns: Vec<&str> = text.lines().filter(|l| l.contains(&name)).collect();
    // One event per failure: the check layer refuses, the observe layer reports.
    assert_eq!(warns.len(), 1, "{text}");
    assert!(
        warns[0].contains("WARN") && warns[0].contains("payload_too_large"),
        "{text}"
    );
    assert!(warns[0].contains("op=\"create\""), "{text}");
}
