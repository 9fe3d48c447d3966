//! Background upkeep of a cache's index: drop members of expired entries,
//! evict down to `max_entries` (see the [parent](super) docs).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mod_api::Result;

use super::lua::MAINTAIN;
use super::{Shared, BATCH};
use crate::redis::script::{evalsha, run};

/// Upkeep script runs per upkeep (each does at most `BATCH` of each kind of work).
const MAX_UPKEEP_RUNS: usize = 20;

impl Shared {
    /// Counts a new index member; every `upkeep_every` of them, runs upkeep in
    /// the background (one at a time per handle).
    pub(super) fn new_member(self: Arc<Self>) {
        let n = self.new_members.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(self.upkeep_every) || self.upkeep_running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = self.maintain().await {
                tracing::warn!(cache = %self.name, error = %e, "cache upkeep failed");
            }
            self.upkeep_running.store(false, Ordering::Release);
        });
    }

    pub(super) async fn maintain(&self) -> Result<u64> {
        let mut conn = self.redis.conn();
        let mut evicted_total = 0;
        for _ in 0..MAX_UPKEEP_RUNS {
            let mut cmd = evalsha(
                &MAINTAIN,
                1,
                6,
                self.idx.len() + self.entry_base.len() + self.key_msg.len() + 64,
            );
            cmd.arg(&self.idx)
                .arg(&self.entry_base)
                .arg(self.max_entries.unwrap_or(0))
                .arg(BATCH)
                .arg(self.channel.as_deref().unwrap_or(""))
                .arg(&self.key_msg);
            let (swept, evicted, more): (u64, u64, u8) = run(&mut conn, &MAINTAIN, &cmd).await?;
            evicted_total += evicted;
            tracing::debug!(cache = %self.name, swept, evicted, "cache upkeep");
            if more == 0 {
                break;
            }
        }
        Ok(evicted_total)
    }
}
