//! Unit tests of the in-process queue: spilling, recovery, and what the
//! conformance suite cannot check (it runs against every backend).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mod_api::{BacklogPolicy, Consumer, ErrorKind, Offered, Queue, QueueConfig, QueueExt, Result};

use super::record::folder_name;
use super::spill::Spill;
use super::{dead_letter_config, MemoryQueue};

fn spill_config(capacity: usize) -> QueueConfig {
    QueueConfig {
        capacity,
        backlog: BacklogPolicy::Overflow,
        ..QueueConfig::default()
    }
}

/// Queue `name` of `capacity` that overflows into `dir`.
fn spilling(name: &str, capacity: usize, dir: &Path) -> Result<MemoryQueue<u32>> {
    MemoryQueue::open_with_spill_dir(name, spill_config(capacity), None, Some(dir))
}

fn spill_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(folder_name(name)))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Polls and acks everything there is, in delivery order.
async fn drain(q: &MemoryQueue<u32>) -> Vec<u32> {
    let c = Consumer::default();
    let mut out = Vec::new();
    while let Some(d) = q.poll(&c).await.unwrap() {
        assert!(q.ack_delivery(&d).await.unwrap());
        out.push(d.message);
    }
    out
}

/// Counts `ERROR` events; enough of a subscriber to check that recovery reports.
#[derive(Default)]
struct ErrorCounter(Arc<AtomicUsize>);

impl tracing::Subscriber for ErrorCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn spill_keeps_offer_order_across_memory_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let q = spilling("orders", 3, dir.path()).unwrap();
    for i in 0..10 {
        let offered = q.offer(i).await.unwrap();
        if i < 3 {
            assert!(matches!(offered, Offered::Enqueued(_)), "{i}: {offered:?}");
        } else {
            assert!(
                matches!(offered, Offered::Overflowed(_)),
                "{i}: {offered:?}"
            );
        }
    }
    assert_eq!(q.len().await.unwrap(), 10);
    assert!(!spill_files(dir.path(), "orders").is_empty());
    // Consume part, offer more: new ones must still queue behind the spilled ones.
    let c = Consumer::default();
    let first = q.poll(&c).await.unwrap().unwrap();
    assert_eq!(first.message, 0);
    assert!(q.ack_delivery(&first).await.unwrap());
    assert!(matches!(q.offer(10).await.unwrap(), Offered::Overflowed(_)));
    assert_eq!(drain(&q).await, (1..11).collect::<Vec<_>>());
    assert_eq!(q.len().await.unwrap(), 0);
    assert!(
        spill_files(dir.path(), "orders").is_empty(),
        "consumed spill files are deleted"
    );
    // Once drained, offers go to memory again.
    assert!(matches!(q.offer(11).await.unwrap(), Offered::Enqueued(_)));
}

#[tokio::test]
async fn spilled_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    {
        let q = spilling("jobs", 2, dir.path()).unwrap();
        for i in 0..8 {
            ids.push(q.offer(i).await.unwrap().id().unwrap().clone());
        }
        let c = Consumer::default();
        // 0 and 1 were never spilled: memory is lost with the process.
        for _ in 0..2 {
            let d = q.poll(&c).await.unwrap().unwrap();
            assert!(q.ack_delivery(&d).await.unwrap());
        }
        // 2 moved back to memory and was acknowledged: done, gone for good.
        let d = q.poll(&c).await.unwrap().unwrap();
        assert_eq!(d.message, 2);
        assert!(q.ack_delivery(&d).await.unwrap());
        // 3 is delivered but not acknowledged: it must come back.
        assert_eq!(q.poll(&c).await.unwrap().unwrap().message, 3);
        // 6 is withdrawn while spilled: it must not come back.
        assert!(q.remove(&ids[6]).await.unwrap());
        assert_eq!(q.len().await.unwrap(), 4);
    }
    for restart in 0..2 {
        let q = spilling("jobs", 2, dir.path()).unwrap();
        assert_eq!(
            q.len().await.unwrap(),
            4,
            "restart {restart}: 3, 4, 5 and 7"
        );
        if restart == 1 {
            let c = Consumer::default();
            let d = q.poll(&c).await.unwrap().unwrap();
            assert_eq!((d.message, &d.id), (3, &ids[3]), "recovered ids are kept");
            let new_id = q.offer(100).await.unwrap().id().unwrap().clone();
            assert!(
                !ids.contains(&new_id) && new_id > ids[7],
                "{new_id} collides"
            );
            assert!(q.ack_delivery(&d).await.unwrap());
            assert_eq!(drain(&q).await, vec![4, 5, 7, 100]);
            assert!(spill_files(dir.path(), "jobs").is_empty());
        }
    }
}

/// Byte ranges of the records in a spill file, found by their magic.
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    (0..bytes.len().saturating_sub(3))
        .filter(|&i| &bytes[i..i + 4] == b"MKQ1")
        .collect()
}

#[tokio::test]
async fn corrupt_and_truncated_spill_records_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = spilling("bad", 1, dir.path()).unwrap();
        for i in 0..7 {
            q.offer(1000 + i).await.unwrap();
        }
    }
    let files = spill_files(dir.path(), "bad");
    assert_eq!(files.len(), 1);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let starts = record_starts(&bytes);
    assert_eq!(starts.len(), 6, "messages 1001..=1006 were spilled");
    // A flipped byte in the body of 1002, a broken magic of 1004, and 1006 cut short.
    let end = bytes.len();
    bytes[starts[2 - 1] + 14] ^= 0xff;
    bytes[starts[4 - 1]] = b'X';
    bytes.truncate(end - 3);
    std::fs::write(&files[0], &bytes).unwrap();

    let errors = ErrorCounter::default();
    let count = errors.0.clone();
    let q = tracing::subscriber::with_default(errors, || spilling("bad", 1, dir.path())).unwrap();
    assert!(
        count.load(Ordering::SeqCst) >= 3,
        "each bad record is reported"
    );
    assert_eq!(q.len().await.unwrap(), 3);
    assert_eq!(drain(&q).await, vec![1001, 1003, 1005]);
}

/// An emptied segment in the middle is reported and counted; the segments
/// around it are recovered whole and in order.
#[tokio::test]
async fn an_empty_segment_is_reported_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spill, _) = Spill::open(dir.path(), "holes", 64).unwrap();
        for seq in 0..9u64 {
            spill.append(seq, &(seq as u32)).unwrap();
        }
    }
    let files = spill_files(dir.path(), "holes");
    assert!(files.len() >= 3, "{files:?}");
    let emptied = std::fs::read(&files[1]).unwrap();
    let lost = record_starts(&emptied).len();
    let first = record_starts(&std::fs::read(&files[0]).unwrap()).len() as u32;
    assert!(lost > 0);
    std::fs::write(&files[1], b"").unwrap();

    let errors = ErrorCounter::default();
    let count = errors.0.clone();
    let q = tracing::subscriber::with_default(errors, || spilling("holes", 1, dir.path())).unwrap();
    assert!(
        count.load(Ordering::SeqCst) >= 1,
        "the empty segment is reported"
    );
    assert_eq!(q.spill_recovery_errors(), 1);
    assert_eq!(q.len().await.unwrap(), 9 - lost);
    let got = drain(&q).await;
    let expected: Vec<u32> = (0..9)
        .filter(|s| *s < first || *s >= first + lost as u32)
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn garbage_file_recovers_nothing_and_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("junk");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join(format!("{:020}.spill", 3)),
        b"MKQ1\xff\xff\xff\xffjunkMKQ1",
    )
    .unwrap();
    std::fs::write(folder.join("notes.txt"), b"ignored").unwrap();
    let q = spilling("junk", 1, dir.path()).unwrap();
    assert_eq!(q.len().await.unwrap(), 0);
    q.offer(1).await.unwrap();
    q.offer(2).await.unwrap();
    assert_eq!(drain(&q).await, vec![1, 2]);
}

#[test]
fn segments_roll_over_and_are_deleted_once_done() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spill, max) = Spill::open(dir.path(), "seg", 64).unwrap();
    assert_eq!(max, None);
    for seq in 0..10u64 {
        spill.append(seq, &format!("message {seq}")).unwrap();
    }
    let files = spill_files(dir.path(), "seg");
    assert!(files.len() >= 3, "{files:?}");
    let first: Vec<(u64, String)> = spill.take(4);
    assert_eq!(
        first.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    for seq in [0, 1, 2] {
        spill.done(seq);
    }
    // Records are 31 bytes: 0, 1 and 2 filled the first segment, now deleted.
    assert!(!spill_files(dir.path(), "seg").contains(&files[0]));
    assert!(spill_files(dir.path(), "seg").contains(&files[1]));
    drop(spill);
    // After a restart what is not done comes back: 3 (taken, not done) and 4..10.
    let (mut spill, max) = Spill::open(dir.path(), "seg", 64).unwrap();
    assert_eq!(max, Some(9));
    assert_eq!(spill.len(), 7);
    let rest: Vec<(u64, String)> = spill.take(100);
    assert_eq!(rest[0], (3, "message 3".to_owned()));
    assert_eq!(rest[1], (4, "message 4".to_owned()));
    for (seq, _) in &rest {
        spill.done(*seq);
    }
    assert!(spill_files(dir.path(), "seg").is_empty());
}

#[test]
fn folder_names_stay_inside_the_spill_dir() {
    assert_eq!(folder_name("orders.dlq"), "orders.dlq");
    assert_eq!(folder_name("../etc"), "..%2Fetc");
    assert_eq!(folder_name(".."), "%2E%2E");
    assert_eq!(folder_name("a/b:c"), "a%2Fb%3Ac");
}

#[tokio::test]
async fn spill_without_dir_is_invalid() {
    let config = QueueConfig {
        backlog: BacklogPolicy::Overflow,
        ..QueueConfig::default()
    };
    let err = MemoryQueue::<u32>::open("q", config, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let config = QueueConfig {
        max_deliveries: 0,
        ..QueueConfig::default()
    };
    let err = MemoryQueue::<u32>::open("q", config, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn ids_sort_in_offer_order() {
    let q = MemoryQueue::<u32>::open("ids", QueueConfig::default(), None).unwrap();
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(q.offer(i).await.unwrap().id().unwrap().clone());
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
}

#[tokio::test]
async fn dropped_oldest_cannot_be_acked() {
    let config = QueueConfig {
        capacity: 1,
        backlog: BacklogPolicy::DropOldest,
        ..QueueConfig::default()
    };
    let q = MemoryQueue::<u32>::open("drop", config, None).unwrap();
    q.offer(1).await.unwrap();
    let d = q.poll(&Consumer::default()).await.unwrap().unwrap();
    let offered = q.offer(2).await.unwrap();
    assert_eq!(
        offered,
        Offered::DisplacedOldest {
            id: offered.id().unwrap().clone(),
            dropped: d.id.clone()
        }
    );
    assert!(!q.ack_delivery(&d).await.unwrap());
    assert_eq!(q.len().await.unwrap(), 1);
}

#[tokio::test]
async fn without_dead_letter_queue_the_message_is_kept() {
    let config = QueueConfig {
        visibility_timeout: Duration::from_millis(20),
        max_deliveries: 1,
        ..QueueConfig::default()
    };
    let q = MemoryQueue::<u32>::open("keep", config, None).unwrap();
    q.offer(7).await.unwrap();
    let c = Consumer::default();
    for expected in 1..=3 {
        let d = q
            .poll_timeout(&c, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((d.message, d.delivery_count), (7, expected));
    }
    assert_eq!(q.len().await.unwrap(), 1);
}

#[tokio::test]
async fn dead_letters_go_to_the_given_queue() {
    let dlq: Arc<MemoryQueue<u32>> =
        Arc::new(MemoryQueue::open("main.dlq", dead_letter_config(), None).unwrap());
    let config = QueueConfig {
        visibility_timeout: Duration::from_millis(20),
        max_deliveries: 2,
        ..QueueConfig::default()
    };
    let q = MemoryQueue::<u32>::open("main", config, Some(dlq.clone())).unwrap();
    q.offer(9).await.unwrap();
    let c = Consumer::default();
    for _ in 0..2 {
        assert!(q
            .poll_timeout(&c, Duration::from_secs(5))
            .await
            .unwrap()
            .is_some());
    }
    assert!(q
        .poll_timeout(&c, Duration::from_millis(200))
        .await
        .unwrap()
        .is_none());
    assert_eq!(q.len().await.unwrap(), 0);
    let dead = dlq.poll(&c).await.unwrap().unwrap();
    assert_eq!((dead.message, dead.delivery_count), (9, 1));
}

#[test]
fn ids_round_trip_and_parse_like_str_parse() {
    use super::ids::{message_id, parse_id};
    use mod_api::MessageId;
    for seq in [0, 1, 9, 10, 12345, u64::MAX / 10, u64::MAX - 1, u64::MAX] {
        let id = message_id(seq);
        assert_eq!(id.0, format!("{seq:020}"));
        assert_eq!(parse_id(&id), Some(seq));
    }
    for (text, parsed) in [
        ("", None),
        ("7", Some(7)),
        ("0000000000000000000000042", Some(42)),
        ("18446744073709551615", Some(u64::MAX)),
        ("18446744073709551616", None),
        ("99999999999999999999", None),
        ("123456789012345678901", None),
        ("12a", None),
        ("+5", None),
        ("-5", None),
        (" 5", None),
    ] {
        assert_eq!(parse_id(&MessageId(text.into())), parsed, "{text:?}");
    }
}
