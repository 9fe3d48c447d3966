//! The resource bounds of a server connection (see `RpcConfig`): when to stop
//! reading a connection's requests (backpressure), and the watchdog that
//! closes idle connections and half-sent frames.
//!
//! The watchdog reads the clock on a tick, never per frame: the reader counts
//! frames, and each tick compares the count with the previous one. A limit is
//! therefore enforced within a quarter of itself.

use std::time::Duration;

use crate::config::RpcConfig;
use tokio::time::Instant;

/// Shortest tick of the watchdog, so tiny test limits do not spin.
const MIN_TICK: Duration = Duration::from_millis(10);

/// A server's per-connection bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Reply bytes queued before the connection's requests stop being read.
    pub max_queued: usize,
    /// Calls running before the connection's requests stop being read.
    pub max_calls: usize,
    /// Connections held at once.
    pub max_conns: usize,
    /// Idle time before a connection is closed (`None`: never).
    pub idle: Option<Duration>,
    /// Time to finish a frame once begun (`None`: unbounded).
    pub frame: Option<Duration>,
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl Limits {
    pub(crate) fn new(config: &RpcConfig) -> Self {
        Limits {
            max_queued: usize::try_from(config.max_queued_reply_bytes).unwrap_or(usize::MAX),
            max_calls: (config.max_calls_per_connection as usize).max(1),
            max_conns: (config.max_connections as usize).max(1),
            idle: nonzero(config.idle_timeout),
            frame: nonzero(config.frame_timeout),
        }
    }

    /// The idle timeout told to clients in the HELLO answer, in ms (0: none).
    pub(crate) fn idle_ms(&self) -> u32 {
        self.idle
            .map_or(0, |d| d.as_millis().clamp(1, u32::MAX as u128) as u32)
    }

    /// How often the watchdog looks (`None`: it has nothing to watch).
    fn tick(&self) -> Option<Duration> {
        let shortest = match (self.idle, self.frame) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some((shortest / 4).max(MIN_TICK))
    }
}

/// What the connection looked like at a tick.
pub(crate) struct Seen {
    /// Frames the reader has completed so far.
    pub frames: u64,
    /// The reader holds the beginning of a frame.
    pub partial: bool,
    /// Requests are not being read (a limit is reached): the peer's silence
    /// and its unfinished frame are then the server's doing.
    pub paused: bool,
    /// Calls are running or replies wait to be written.
    pub busy: bool,
    /// Reply bytes wait to be written.
    pub queued: bool,
    /// Batches of replies handed to the socket so far.
    pub batches: u64,
}

/// Why the watchdog closes a connection.
#[derive(Debug)]
pub(crate) enum Expired {
    /// Nothing happened for the idle timeout.
    Idle(Duration),
    /// A frame stayed half-sent past the frame timeout.
    SlowFrame(Duration),
    /// Replies waited for the idle timeout and the peer took none of them.
    Stalled(Duration),
}

/// Watches one connection at every tick.
pub(crate) struct Watchdog {
    limits: Limits,
    tick: Option<Duration>,
    frames: u64,
    /// When activity was last seen (at tick precision).
    active_at: Instant,
    /// When the current partial frame was first seen, and the frame count then.
    partial_since: Option<(Instant, u64)>,
    /// Since when replies wait and none was written, and the batch count then.
    stalled_since: Option<(Instant, u64)>,
}

impl Watchdog {
    pub(crate) fn new(limits: Limits) -> Self {
        Watchdog {
            limits,
            tick: limits.tick(),
            frames: 0,
            active_at: Instant::now(),
            partial_since: None,
            stalled_since: None,
        }
    }

    /// When the next tick is due (`None`: no limit to watch).
    pub(crate) fn next_tick(&self) -> Option<Instant> {
        self.tick.map(|t| Instant::now() + t)
    }

    /// Looks at the connection; `Err` when it must be closed.
    pub(crate) fn check(&mut self, seen: Seen) -> Result<(), Expired> {
        let now = Instant::now();
        let moved = seen.frames != self.frames;
        self.frames = seen.frames;
        if moved || seen.busy || seen.paused {
            self.active_at = now;
        }
        if seen.paused || !seen.partial {
            self.partial_since = None;
        } else {
            match self.partial_since {
                // The same frame as at an earlier tick: none completed since.
                Some((since, frames)) if frames == seen.frames => {
                    if let Some(limit) = self.limits.frame {
                        if now - since >= limit {
                            return Err(Expired::SlowFrame(limit));
                        }
                    }
                }
                _ => self.partial_since = Some((now, seen.frames)),
            }
        }
        if !seen.queued {
            self.stalled_since = None;
        } else {
            match self.stalled_since {
                // A peer that reads nothing: it holds its reply queue forever
                // otherwise (gone without a FIN, or never reading).
                Some((since, batches)) if batches == seen.batches => {
                    if let Some(limit) = self.limits.idle {
                        if now - since >= limit {
                            return Err(Expired::Stalled(limit));
                        }
                    }
                }
                _ => self.stalled_since = Some((now, seen.batches)),
            }
        }
        if let Some(limit) = self.limits.idle {
            if now - self.active_at >= limit {
                return Err(Expired::Idle(limit));
            }
        }
        Ok(())
    }
}
