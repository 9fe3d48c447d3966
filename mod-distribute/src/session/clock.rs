//! An upper bound of the Redis clock between two reads of it, so that the
//! read-only path of `validate` needs no `TIME` (see the [parent](super)).
//!
//! A sample pairs a `TIME` reply `T` with the local monotonic time `s` at
//! which its request was sent; Redis read its clock after `s`, so at any later
//! local time `t` its clock reads at most `T + (t - s)` (clocks run at the
//! same rate, to within drift). Over-estimating "now" only ever makes
//! `validate` refresh a little early or ask the script; never late.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a sample is trusted (bounds drift, and a step of Redis's clock
/// or a failover to a server with another clock).
const SAMPLE_LIFE: Duration = Duration::from_secs(1);

/// The latest sample; `sampled_at == 0` means none.
pub(super) struct RedisClock {
    base: Instant,
    /// Redis µs since the Unix epoch minus local µs since `base`, at the sample.
    offset_us: AtomicI64,
    /// Local µs since `base` when the sample's request was sent (+1, so 0 means none).
    sampled_at: AtomicU64,
    /// The Redis endpoint epoch of the sample.
    epoch: AtomicU64,
}

impl RedisClock {
    pub(super) fn new() -> Self {
        RedisClock {
            base: Instant::now(),
            offset_us: AtomicI64::new(0),
            sampled_at: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    /// Local µs since `base`: take it before sending the `TIME` of a sample.
    pub(super) fn local_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    /// Records `TIME` (`secs`, `micros`) of a request sent at `sent_us`.
    pub(super) fn sample(&self, sent_us: u64, secs: u64, micros: u64, epoch: u64) {
        let redis_us = secs.saturating_mul(1_000_000).saturating_add(micros);
        let offset = (redis_us as i64).saturating_sub(sent_us as i64);
        self.offset_us.store(offset, Ordering::Relaxed);
        self.epoch.store(epoch, Ordering::Relaxed);
        // Release: a reader that sees this sample time sees its offset too.
        self.sampled_at.store(sent_us + 1, Ordering::Release);
    }

    /// At least the Redis clock now, in ms; `None` without a fresh sample of
    /// endpoint `epoch` (then read `TIME`).
    pub(super) fn upper_bound_ms(&self, epoch: u64) -> Option<u64> {
        let sampled_at = self.sampled_at.load(Ordering::Acquire);
        let now = self.local_us();
        if sampled_at == 0
            || now.saturating_sub(sampled_at - 1) > SAMPLE_LIFE.as_micros() as u64
            || self.epoch.load(Ordering::Relaxed) != epoch
        {
            return None;
        }
        let redis_us = (now as i64).saturating_add(self.offset_us.load(Ordering::Relaxed));
        // Rounded up: an upper bound.
        Some((redis_us.max(0) as u64).div_ceil(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_the_remote_clock_from_above_while_fresh() {
        let clock = RedisClock::new();
        assert_eq!(clock.upper_bound_ms(0), None);
        let sent = clock.local_us();
        clock.sample(sent, 1_700_000_000, 500_000, 0);
        let now = clock.upper_bound_ms(0).expect("fresh sample");
        assert!(
            (1_700_000_000_500..1_700_000_000_600).contains(&now),
            "{now}"
        );
        assert_eq!(clock.upper_bound_ms(1), None, "sample of another endpoint");
    }
}
