//! The timeline: what happened when, noted by several tasks and printed in
//! time order, and the watcher that notes every change of owner in the store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use modkit::distribute::state::store::parse_token;
use modkit::distribute::state::StateStore;
use modkit::{Codec, DefaultCodec};

use crate::service::Scores;
use crate::{lock, SERVICE};

/// What happened when: noted by several tasks, printed in time order.
#[derive(Clone)]
pub struct Timeline {
    /// The start.
    t0: Instant,
    /// `t0` in ms since the Unix epoch (the clock of Redis, on this machine).
    t0_unix_ms: i64,
    /// Not printed yet: ms from the start, and what.
    notes: Arc<Mutex<Vec<(i64, String)>>>,
}

impl Timeline {
    /// A timeline starting now.
    pub fn new() -> Timeline {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timeline {
            t0: Instant::now(),
            t0_unix_ms: unix.as_millis() as i64,
            notes: Arc::default(),
        }
    }

    /// Milliseconds from the start to `at`.
    fn ms(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.t0).as_millis() as i64
    }

    /// Notes `what` at `at`.
    pub fn note(&self, at: Instant, what: impl Into<String>) {
        self.note_ms(self.ms(at), what);
    }

    /// Notes `what` at `ms` from the start.
    fn note_ms(&self, ms: i64, what: impl Into<String>) {
        lock(&self.notes).push((ms, what.into()));
    }

    /// Prints what was noted so far, in time order.
    pub fn print(&self) {
        let mut notes = std::mem::take(&mut *lock(&self.notes));
        notes.sort_by_key(|(ms, _)| *ms);
        for (ms, what) in notes {
            println!("[{ms:>6} ms] {what}");
        }
    }
}

/// Notes every change of owner that the store shows (polled every 5 ms),
/// with the checkpoint a new owner restores and when it was written.
pub async fn watch_owner(store: StateStore, timeline: Timeline) {
    let mut token: Option<String> = None;
    // The last owner seen, and whether it released the service (else its lease ran out).
    let mut last: Option<String> = None;
    let mut released = false;
    loop {
        if let Ok(seen) = store.ownership().await {
            if seen.owner != token {
                let now = Instant::now();
                match seen.owner.as_deref().and_then(parse_token) {
                    Some((epoch, node)) => {
                        let what = restored(&store, &timeline, last.as_deref(), released).await;
                        timeline.note(
                            now,
                            format!("{node} owns {SERVICE} (epoch {epoch}), {what}"),
                        );
                        (last, released) = (Some(node.to_owned()), false);
                    }
                    None => {
                        let old = last.as_deref().unwrap_or("the owner");
                        released = seen.handover.is_some();
                        timeline.note(
                            now,
                            match &seen.handover {
                                Some(to) => format!("{old} releases {SERVICE}, reserved for {to}"),
                                None => format!("{old}'s lease has run out: nobody owns {SERVICE}"),
                            },
                        );
                    }
                }
                token = seen.owner;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a new owner restores: the stored checkpoint, also noted at the time
/// `writer` wrote it (its `final` one when it released the service).
async fn restored(
    store: &StateStore,
    timeline: &Timeline,
    writer: Option<&str>,
    released: bool,
) -> String {
    let stored = match store.load().await {
        Ok(Some(stored)) => stored,
        Ok(None) => return "no checkpoint yet: starts empty".into(),
        Err(e) => return format!("checkpoint unreadable: {e}"),
    };
    let updates = <DefaultCodec as Codec>::decode::<Scores>(&stored.state)
        .map(|s| s.applied.len().to_string())
        .unwrap_or_else(|e| format!("? ({e})"));
    let kind = if released { "final" } else { "last periodic" };
    let written = stored.at_ms as i64 - timeline.t0_unix_ms;
    timeline.note_ms(
        written,
        format!(
            "{} writes its {kind} checkpoint (epoch {}, {updates} updates)",
            writer.unwrap_or("the owner"),
            stored.epoch
        ),
    );
    format!("restores the checkpoint of [{written:>6} ms]")
}
