//! The controller's decisions as pure functions: the voters act on them
//! against real nodes, and the deterministic simulation
//! (`tests/simulation/`) checks them under thousands of seeded fault
//! schedules — one definition for both.

/// How many voters make a majority of `voters` (at least one).
pub fn majority(voters: usize) -> usize {
    voters.max(1) / 2 + 1
}

/// Whether the primary counts as failed: a majority of the voters report
/// it down.
pub fn primary_failed(voters_down: usize, voters: usize) -> bool {
    voters_down >= majority(voters)
}

/// Seed 000's group rule: unhealthy when available/total ≤ `ratio`.
pub fn unhealthy(available: usize, total: usize, ratio: f64) -> bool {
    (available as f64) <= ratio * total as f64
}

/// Seed 000's site rule over probe rounds: a site is down once it was
/// [`unhealthy`] for `rounds` rounds in a row, and up again once it was
/// healthy for `rounds` rounds in a row, so one flapping node never moves it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteHealth {
    down: bool,
    /// Rounds in a row against the current state.
    against: u32,
}

impl SiteHealth {
    /// One probe round: `available` of `total` nodes answered. `Some(down)`
    /// when the site changes state with this round (`true`: now down).
    pub fn round(
        &mut self,
        available: usize,
        total: usize,
        ratio: f64,
        rounds: u32,
    ) -> Option<bool> {
        let unhealthy = unhealthy(available, total, ratio);
        if unhealthy == self.down {
            self.against = 0;
            return None;
        }
        self.against += 1;
        if self.against < rounds.max(1) {
            return None;
        }
        self.down = unhealthy;
        self.against = 0;
        Some(unhealthy)
    }

    /// Whether the site counts as down.
    pub fn is_down(&self) -> bool {
        self.down
    }
}

/// How many of `replicas` must answer before one may be promoted, when
/// writers use `WAIT wait_replicas`: a write acknowledged by k replicas is
/// on at least one of any R−k+1 of them (k = 0: any one will do).
pub fn replicas_needed(replicas: usize, wait_replicas: usize) -> usize {
    if wait_replicas == 0 {
        1
    } else {
        (replicas + 1).saturating_sub(wait_replicas).max(1)
    }
}

/// Whether a node with `replid`/`replid2` is on the history `old` (the old
/// primary's replication id; unknown: any history will do). A node an
/// earlier, interrupted attempt promoted has the old history as `replid2`.
pub fn on_history(old: Option<&str>, replid: &str, replid2: &str) -> bool {
    old.is_none_or(|id| replid == id || replid2 == id)
}

/// A replica that answered after the fence, as a failover sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `host:port`.
    pub addr: String,
    /// Its replication offset.
    pub offset: u64,
    /// Its `replica-priority` (lower wins a tie of offsets; 0: never).
    pub priority: u32,
    /// Its position in the configured nodes (earlier wins the last tie).
    pub position: usize,
}

/// Chooses the replica to promote among `answered` (those on the old
/// history) of `replicas`: the highest offset, then the lower
/// `replica-priority`, then the earlier position. Too few answered for
/// `WAIT wait_replicas`, or only a priority-0 replica holds the highest
/// offset (promoting another could lose what only it holds): the reason,
/// to alert with.
pub fn choose(
    answered: Vec<Candidate>,
    replicas: usize,
    wait_replicas: usize,
) -> Result<Candidate, String> {
    let needed = replicas_needed(replicas, wait_replicas);
    if answered.len() < needed {
        return Err(format!(
            "{} of {replicas} replicas answered on the old primary's history; {needed} needed (WAIT {wait_replicas})",
            answered.len()
        ));
    }
    let highest = answered.iter().map(|c| c.offset).max().unwrap_or(0);
    answered
        .into_iter()
        .filter(|c| c.offset == highest && c.priority > 0)
        .min_by_key(|c| (c.priority, c.position))
        .ok_or_else(|| {
            format!("only replicas with replica-priority 0 (never promoted) hold offset {highest}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(addr: &str, offset: u64, position: usize) -> Candidate {
        Candidate {
            addr: addr.into(),
            offset,
            priority: 100,
            position,
        }
    }

    #[test]
    fn highest_offset_first_then_position() {
        let chosen = choose(vec![c("b", 10, 1), c("c", 12, 2), c("d", 12, 3)], 3, 0);
        assert_eq!(chosen.unwrap().addr, "c");
    }

    #[test]
    fn priority_breaks_ties_of_offsets_and_zero_is_never_promoted() {
        let p = |addr: &str, offset, priority, position| Candidate {
            priority,
            ..c(addr, offset, position)
        };
        let chosen = choose(
            vec![p("b", 12, 100, 1), p("c", 12, 10, 2), p("d", 11, 1, 3)],
            3,
            0,
        );
        assert_eq!(chosen.unwrap().addr, "c", "offset first, then priority");
        let chosen = choose(vec![p("b", 12, 0, 1), p("c", 12, 50, 2)], 2, 0);
        assert_eq!(chosen.unwrap().addr, "c");
        assert!(
            choose(vec![p("b", 12, 0, 1), p("c", 11, 50, 2)], 2, 0).is_err(),
            "only a never-promote replica holds the newest writes"
        );
    }

    #[test]
    fn wait_k_needs_r_minus_k_plus_one_answers() {
        assert_eq!(replicas_needed(2, 1), 2);
        assert_eq!(replicas_needed(4, 2), 3);
        assert_eq!(replicas_needed(2, 0), 1);
        assert_eq!(replicas_needed(2, 5), 1);
        assert!(choose(vec![c("b", 10, 1)], 2, 1).is_err());
        assert!(choose(vec![c("b", 10, 1)], 2, 0).is_ok());
        assert!(choose(Vec::new(), 2, 0).is_err());
    }

    #[test]
    fn majorities_and_health() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(5), 3);
        assert!(!primary_failed(1, 3));
        assert!(primary_failed(2, 3));
        assert!(unhealthy(2, 4, 0.5));
        assert!(!unhealthy(3, 4, 0.5));
        assert!(on_history(None, "x", ""));
        assert!(on_history(Some("a"), "b", "a"));
        assert!(!on_history(Some("a"), "b", "c"));
    }

    #[test]
    fn a_site_moves_only_after_rounds_in_a_row() {
        let mut site = SiteHealth::default();
        // One node of four flapping: 3/4 > 1/2, never down.
        for r in 0..100 {
            assert_eq!(site.round(if r % 2 == 0 { 3 } else { 4 }, 4, 0.5, 3), None);
        }
        // Two of four down for two rounds, then back: not three in a row.
        for available in [2, 2, 4, 2, 2, 3] {
            assert_eq!(site.round(available, 4, 0.5, 3), None);
        }
        assert!(!site.is_down());
        assert_eq!(site.round(2, 4, 0.5, 3), None);
        assert_eq!(site.round(1, 4, 0.5, 3), None);
        assert_eq!(
            site.round(0, 4, 0.5, 3),
            Some(true),
            "the third round in a row"
        );
        assert!(site.is_down());
        assert_eq!(site.round(0, 4, 0.5, 3), None, "told once");
        assert_eq!(site.round(4, 4, 0.5, 3), None);
        assert_eq!(
            site.round(2, 4, 0.5, 3),
            None,
            "a bad round resets the count"
        );
        assert_eq!(site.round(3, 4, 0.5, 3), None);
        assert_eq!(site.round(4, 4, 0.5, 3), None);
        assert_eq!(site.round(4, 4, 0.5, 3), Some(false));
    }
}
