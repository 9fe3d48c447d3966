//! Outlier ejection ([`OutlierConfig`]): per instance, the failures in a row
//! and the ejection it is serving, read by the proxy on every call.
//!
//! An ejected instance is on probation until it answers again: when its
//! ejection ends the proxy sends it the built-in health probe
//! ([`probe`](crate::rpc::probe)), not a caller's call; an answer brings it
//! back, silence ejects it again for longer. So a frozen instance costs the
//! calls that were on it when it froze, and no more.
//!
//! Times are milliseconds since the proxy's epoch, so that the state is a few
//! atomics, and a call reads one counter while no instance is on probation.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mod_api::config::OutlierConfig;
use mod_api::{Error, ErrorKind};

use crate::rpc::not_sent;

/// How one failure of a call on an instance counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The connection was refused or could not be made: ejects at once.
    Refused,
    /// Lost mid-call, or the call timed out: ejects after enough in a row.
    Counted,
    /// Not the instance's fault (the caller's input, configuration, ...).
    NotCounted,
}

impl Failure {
    /// What `e`, the error of one attempt, says about the instance.
    pub(super) fn of(e: &Error) -> Failure {
        match e.kind() {
            ErrorKind::Unavailable if not_sent(e) => Failure::Refused,
            ErrorKind::Unavailable | ErrorKind::Closed | ErrorKind::Timeout => Failure::Counted,
            _ => Failure::NotCounted,
        }
    }
}

/// One instance's health as a proxy sees it.
#[derive(Debug)]
pub(super) struct Health {
    /// Counted failures since the last success.
    failures: AtomicU32,
    /// End of the last ejection (ms after the epoch); 0: never ejected.
    ejected_until: AtomicU64,
    /// Ejections in a row: the multiplier of the next one's length.
    ejections: AtomicU32,
    /// Ejected, and no call succeeded on it since.
    probation: AtomicBool,
    /// A task is probing it (one at a time).
    probing: AtomicBool,
    /// The proxy's count of instances on probation.
    on_probation: Arc<AtomicUsize>,
}

impl Health {
    /// A healthy instance of the proxy whose [`Ejections`] are `ejections`.
    pub(super) fn new(ejections: &Ejections) -> Health {
        Health {
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            probation: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            on_probation: ejections.on_probation.clone(),
        }
    }

    /// When its last ejection ends (ms after the epoch).
    pub(super) fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    /// Claims the probing of it; `false` when a task already probes it.
    pub(super) fn start_probing(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    /// The probing task ends.
    pub(super) fn stop_probing(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// Whether a new call may go to it: not while it is on probation.
    pub(super) fn admits(&self) -> bool {
        !self.probation.load(Ordering::Relaxed)
    }

    /// A call (or a probe) succeeded on it.
    pub(super) fn succeeded(&self) {
        // Read first: a healthy instance's line stays shared between cores.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.probation.load(Ordering::Relaxed) && self.probation.swap(false, Ordering::Relaxed) {
            self.on_probation.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Records `failure`; whether it now calls for an ejection.
    pub(super) fn failed(&self, failure: Failure, config: &OutlierConfig) -> bool {
        match failure {
            Failure::NotCounted => false,
            Failure::Refused => true,
            Failure::Counted => {
                self.probation.load(Ordering::Relaxed)
                    || self.failures.fetch_add(1, Ordering::Relaxed) + 1
                        >= config.consecutive_failures
            }
        }
    }

    /// Ejects it from `now`, unless another call just did; the ejection's
    /// number in a row and its end, when this call ejected it.
    pub(super) fn eject(&self, now: u64, config: &OutlierConfig) -> Option<(u32, u64)> {
        let last_end = self.ejected_until.load(Ordering::Relaxed);
        if now < last_end {
            return None;
        }
        let calm = config.max_ejection.as_millis() as u64;
        let nth = match last_end {
            0 => 1,
            end if now > end.saturating_add(calm) => 1,
            _ => self.ejections.load(Ordering::Relaxed).saturating_add(1),
        };
        let end = now + config.ejection(nth).as_millis() as u64;
        self.ejected_until
            .compare_exchange(last_end, end, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        self.ejections.store(nth, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        if !self.probation.swap(true, Ordering::Relaxed) {
            self.on_probation.fetch_add(1, Ordering::Relaxed);
        }
        Some((nth, end))
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        // Gone from the registry while on probation: the proxy stops looking.
        if *self.probation.get_mut() {
            self.on_probation.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The proxy-wide part: the clock origin and how many of its instances are
/// on probation, so that a call knows without a clock read that none is.
#[derive(Debug)]
pub(super) struct Ejections {
    epoch: Instant,
    on_probation: Arc<AtomicUsize>,
}

impl Ejections {
    pub(super) fn new() -> Self {
        Ejections {
            epoch: Instant::now(),
            on_probation: Arc::default(),
        }
    }

    /// Milliseconds since the epoch.
    pub(super) fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether an instance is on probation.
    pub(super) fn any(&self) -> bool {
        self.on_probation.load(Ordering::Relaxed) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_millis(100),
            max_ejection: Duration::from_millis(1_000),
            max_ejected_percent: 50,
            probe_timeout: Duration::from_millis(100),
        }
    }

    #[test]
    fn counted_failures_eject_only_in_a_row() {
        let e = Ejections::new();
        let (h, c) = (Health::new(&e), config());
        assert!(!h.failed(Failure::Counted, &c));
        assert!(!h.failed(Failure::Counted, &c));
        h.succeeded();
        assert!(!h.failed(Failure::Counted, &c));
        assert!(!h.failed(Failure::Counted, &c));
        assert!(h.failed(Failure::Counted, &c));
        assert!(h.failed(Failure::Refused, &c));
        assert!(!h.failed(Failure::NotCounted, &c));
    }

    #[test]
    fn probation_lasts_until_a_success() {
        let e = Ejections::new();
        let (h, c) = (Health::new(&e), config());
        assert!(!e.any() && h.admits());
        h.eject(0, &c).unwrap();
        assert!(e.any() && !h.admits());
        // A failure on probation ejects again at once.
        assert!(h.failed(Failure::Counted, &c));
        h.succeeded();
        assert!(!e.any() && h.admits());
        // Dropped on probation (gone from the registry): no longer counted.
        h.eject(200, &c).unwrap();
        drop(h);
        assert!(!e.any());
    }

    #[test]
    fn ejections_grow_in_a_row_and_reset_after_calm() {
        let e = Ejections::new();
        let (h, c) = (Health::new(&e), config());
        assert_eq!(h.eject(0, &c), Some((1, 100)));
        assert_eq!(h.ejected_until(), 100);
        // Ejected already: a second failing call does not eject it again.
        assert_eq!(h.eject(60, &c), None);
        assert_eq!(h.eject(150, &c), Some((2, 350)));
        assert_eq!(h.eject(400, &c), Some((3, 700)));
        // More than max_ejection without an ejection: from one again.
        assert_eq!(h.eject(2_000, &c), Some((1, 2_100)));
    }

    #[test]
    fn errors_that_say_nothing_about_the_instance_do_not_count() {
        assert_eq!(Failure::of(&Error::timeout("late")), Failure::Counted);
        assert_eq!(Failure::of(&Error::closed("lost")), Failure::Counted);
        assert_eq!(Failure::of(&Error::config("bad")), Failure::NotCounted);
    }
}
