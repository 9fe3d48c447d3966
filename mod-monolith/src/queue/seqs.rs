//! [`Seqs`]: values keyed by sequence number, for a queue's log and a group's
//! pending deliveries.
//!
//! Both are appended to in increasing order and mostly removed from the front,
//! so a deque sorted by sequence number beats a B-tree: appending is a push, a
//! lookup an index computation (a binary search once there are gaps), and a
//! removal leaves a hole that is trimmed off the front or, once holes outnumber
//! values, compacted away (so memory stays proportional to what is held).

use std::collections::VecDeque;

/// Holes allowed beyond the number of values before a compaction.
const SLACK: usize = 32;

/// Values of type `T` by sequence number (see the [module docs](self)).
pub(super) struct Seqs<T> {
    /// Sorted by sequence number; `None` is a removed value.
    slots: VecDeque<(u64, Option<T>)>,
    /// How many slots hold a value.
    live: usize,
}

impl<T> Default for Seqs<T> {
    fn default() -> Self {
        Seqs {
            slots: VecDeque::new(),
            live: 0,
        }
    }
}

impl<T> Seqs<T> {
    /// How many values are held.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Adds `value` at `seq`, replacing any value there. O(1) when `seq` is
    /// above every sequence number held.
    pub(super) fn insert(&mut self, seq: u64, value: T) {
        match self.slots.back() {
            Some(&(last, _)) if last >= seq => match self.position(seq) {
                Ok(i) => {
                    if self.slots[i].1.replace(value).is_none() {
                        self.live += 1;
                    }
                }
                Err(i) => {
                    self.slots.insert(i, (seq, Some(value)));
                    self.live += 1;
                }
            },
            _ => {
                self.slots.push_back((seq, Some(value)));
                self.live += 1;
            }
        }
    }

    /// The value at `seq`.
    pub(super) fn get(&self, seq: u64) -> Option<&T> {
        let i = self.position(seq).ok()?;
        self.slots[i].1.as_ref()
    }

    /// Whether a value is held at `seq`.
    pub(super) fn contains(&self, seq: u64) -> bool {
        self.get(seq).is_some()
    }

    /// Removes the value at `seq`.
    pub(super) fn remove(&mut self, seq: u64) -> Option<T> {
        let i = self.position(seq).ok()?;
        let value = self.slots[i].1.take()?;
        self.live -= 1;
        self.tidy();
        Some(value)
    }

    /// Removes the value with the lowest sequence number.
    pub(super) fn pop_first(&mut self) -> Option<(u64, T)> {
        let i = self.slots.iter().position(|(_, v)| v.is_some())?;
        let seq = self.slots[i].0;
        let value = self.slots[i].1.take()?;
        self.live -= 1;
        self.tidy();
        Some((seq, value))
    }

    /// The value with the lowest sequence number at or above `seq`.
    pub(super) fn first_from(&mut self, seq: u64) -> Option<(u64, &mut T)> {
        let start = self.position(seq).unwrap_or_else(|i| i);
        self.slots
            .range_mut(start..)
            .find_map(|(s, v)| v.as_mut().map(|v| (*s, v)))
    }

    /// Where `seq` is (`Ok`) or would go (`Err`) in `slots`.
    fn position(&self, seq: u64) -> Result<usize, usize> {
        let Some(&(first, _)) = self.slots.front() else {
            return Err(0);
        };
        // Without holes in the numbering, `seq` sits at its offset from the front.
        if let Some(offset) = seq.checked_sub(first) {
            let guess = usize::try_from(offset).unwrap_or(usize::MAX);
            if self.slots.get(guess).is_some_and(|&(s, _)| s == seq) {
                return Ok(guess);
            }
        }
        self.slots.binary_search_by_key(&seq, |&(s, _)| s)
    }

    /// Drops holes at the front, and all holes once they outnumber values.
    fn tidy(&mut self) {
        while self.slots.front().is_some_and(|(_, v)| v.is_none()) {
            self.slots.pop_front();
        }
        if self.slots.len() > 2 * self.live + SLACK {
            self.slots.retain(|(_, v)| v.is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_sorted_map() {
        let mut seqs = Seqs::default();
        let mut map = std::collections::BTreeMap::new();
        // A fixed pseudo-random walk of inserts and removals, mostly in order.
        let mut x: u64 = 7;
        let mut next = 0u64;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match (x >> 33) % 10 {
                0..=4 => {
                    seqs.insert(next, next * 2);
                    map.insert(next, next * 2);
                    next += 1 + (x >> 60) % 2;
                }
                5..=6 => {
                    let seq = map.keys().next().copied().unwrap_or(0);
                    assert_eq!(seqs.remove(seq), map.remove(&seq));
                }
                7 => {
                    let seq = (x >> 40) % (next + 1);
                    assert_eq!(seqs.remove(seq), map.remove(&seq));
                }
                8 => assert_eq!(seqs.pop_first(), map.pop_first()),
                _ => {
                    let seq = (x >> 40) % (next + 1);
                    seqs.insert(seq, 1);
                    map.insert(seq, 1);
                }
            }
            assert_eq!(seqs.len(), map.len());
            let probe = (x >> 20) % (next + 2);
            assert_eq!(seqs.get(probe), map.get(&probe));
            assert_eq!(
                seqs.first_from(probe).map(|(s, v)| (s, *v)),
                map.range(probe..).next().map(|(s, v)| (*s, *v))
            );
            assert!(seqs.slots.len() <= 2 * seqs.live + SLACK + 1);
        }
    }
}
