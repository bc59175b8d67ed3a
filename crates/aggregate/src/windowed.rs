//! Facts in time order with one running sum per window.
//!
//! Each fact enters a window when the clock reaches it and leaves when the window's start
//! passes it, so the cost of a record or of a clock tick does not depend on how long the
//! windows are: every fact is added to and removed from each window at most once.

use std::collections::BTreeMap;

use crate::calendar::{Bounds, WINDOWS};

/// A value that can be summed and un-summed exactly.
pub trait Measure: Copy + Default + PartialEq {
    fn add(&mut self, other: &Self);
    fn sub(&mut self, other: &Self);
    fn is_zero(&self) -> bool;
}

impl Measure for i128 {
    fn add(&mut self, o: &Self) {
        *self += o;
    }
    fn sub(&mut self, o: &Self) {
        *self -= o;
    }
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

/// Facts keyed by `(second, id)`; facts with equal keys are merged.
///
/// Most ticks move no fact in or out of any window; two lower bounds let `advance` see that
/// without searching the facts, so a tick costs a few comparisons per cell.
#[derive(Debug, Clone)]
pub struct Windowed<V> {
    facts: BTreeMap<(i64, u64), V>,
    sums: [V; WINDOWS],
    lo: [i64; WINDOWS],
    hi: i64,
    /// No fact counted in window `w` is older than `first_in[w]` (`i64::MAX`: none is).
    first_in: [i64; WINDOWS],
    /// No fact later than `hi` is earlier than `next_future` (`i64::MAX`: none is).
    next_future: i64,
    /// No fact is older than this.
    oldest: i64,
}

impl<V: Measure> Windowed<V> {
    pub fn new(b: &Bounds) -> Self {
        Windowed {
            facts: BTreeMap::new(),
            sums: [V::default(); WINDOWS],
            lo: b.lo,
            hi: b.now,
            first_in: [i64::MAX; WINDOWS],
            next_future: i64::MAX,
            oldest: i64::MAX,
        }
    }

    pub fn sums(&self) -> &[V; WINDOWS] {
        &self.sums
    }

    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    pub fn len(&self) -> usize {
        self.facts.len()
    }

    /// Every fact kept, in time order: (second, id, value).
    pub fn facts(&self) -> impl Iterator<Item = (i64, u64, &V)> {
        self.facts.iter().map(|(&(t, id), v)| (t, id, v))
    }

    /// Adds a fact. Returns false when it is older than every window and so not kept.
    pub fn add(&mut self, ts: i64, id: u64, v: &V, b: &Bounds) -> bool {
        if ts < b.horizon {
            return false;
        }
        self.facts.entry((ts, id)).or_default().add(v);
        self.oldest = self.oldest.min(ts);
        if ts <= self.hi {
            for w in 0..WINDOWS {
                if self.lo[w] <= ts {
                    self.sums[w].add(v);
                    self.first_in[w] = self.first_in[w].min(ts);
                }
            }
        } else {
            self.next_future = self.next_future.min(ts);
        }
        true
    }

    /// Removes what an earlier `add` with the same key and value contributed. A fact that has
    /// already expired (or was never kept) changes nothing.
    pub fn sub(&mut self, ts: i64, id: u64, v: &V) {
        // One search for both the update and the removal.
        let std::collections::btree_map::Entry::Occupied(mut entry) = self.facts.entry((ts, id))
        else {
            return;
        };
        entry.get_mut().sub(v);
        if entry.get().is_zero() {
            entry.remove();
        }
        if ts <= self.hi {
            for (lo, sum) in self.lo.iter().zip(self.sums.iter_mut()) {
                if *lo <= ts {
                    sum.sub(v);
                }
            }
        }
    }

    /// Moves every window to `b`. Returns whether any sum changed.
    pub fn advance(&mut self, b: &Bounds) -> bool {
        let mut changed = false;
        if self.facts.is_empty() {
            self.lo = b.lo;
            self.hi = self.hi.max(b.now);
            if self.oldest == i64::MAX {
                // Emptied and reset before: every sum is zero.
                return false;
            }
            self.first_in = [i64::MAX; WINDOWS];
            self.next_future = i64::MAX;
            self.oldest = i64::MAX;
            return self.reset_sums();
        }
        if b.now > self.hi {
            if self.next_future <= b.now {
                for (&(ts, _), v) in self.facts.range((self.hi + 1, 0)..=(b.now, u64::MAX)) {
                    for w in 0..WINDOWS {
                        if self.lo[w] <= ts {
                            self.sums[w].add(v);
                            self.first_in[w] = self.first_in[w].min(ts);
                            changed = true;
                        }
                    }
                }
                self.next_future = self
                    .facts
                    .range((b.now + 1, 0)..)
                    .next()
                    .map_or(i64::MAX, |(k, _)| k.0);
            }
            self.hi = b.now;
        }
        for w in 0..WINDOWS {
            let new_lo = b.lo[w];
            if new_lo > self.lo[w] {
                if self.first_in[w] < new_lo {
                    for (&(ts, _), v) in self.facts.range((self.lo[w], 0)..(new_lo, 0)) {
                        if ts <= self.hi {
                            self.sums[w].sub(v);
                            changed = true;
                        }
                    }
                    self.first_in[w] = self
                        .facts
                        .range((new_lo, 0)..=(self.hi, u64::MAX))
                        .next()
                        .map_or(i64::MAX, |(k, _)| k.0);
                }
                self.lo[w] = new_lo;
            }
        }
        if self.oldest < b.horizon {
            while let Some(first) = self.facts.first_entry() {
                if first.key().0 >= b.horizon {
                    break;
                }
                first.remove();
            }
            self.oldest = self.first_ts();
        }
        changed
    }

    fn first_ts(&self) -> i64 {
        self.facts.first_key_value().map_or(i64::MAX, |(k, _)| k.0)
    }

    /// Removes and returns the facts older than `before`, without touching window sums; the
    /// caller re-adds them elsewhere (used to fold minute buckets into hour buckets).
    pub fn take_older_than(&mut self, before: i64) -> Vec<(i64, u64, V)> {
        let mut out = Vec::new();
        if self.oldest >= before {
            return out;
        }
        while let Some(first) = self.facts.first_entry() {
            if first.key().0 >= before {
                break;
            }
            let ((ts, id), v) = first.remove_entry();
            out.push((ts, id, v));
        }
        self.oldest = self.first_ts();
        for (ts, _, v) in &out {
            if *ts <= self.hi {
                for (lo, sum) in self.lo.iter().zip(self.sums.iter_mut()) {
                    if lo <= ts {
                        sum.sub(v);
                    }
                }
            }
        }
        out
    }

    fn reset_sums(&mut self) -> bool {
        let changed = self.sums.iter().any(|s| !s.is_zero());
        self.sums = [V::default(); WINDOWS];
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{Calendar, Window};

    impl Measure for i64 {
        fn add(&mut self, o: &Self) {
            *self += o;
        }
        fn sub(&mut self, o: &Self) {
            *self -= o;
        }
        fn is_zero(&self) -> bool {
            *self == 0
        }
    }

    #[test]
    fn fact_leaves_rolling_hour_exactly_one_hour_later() {
        let cal = Calendar::utc();
        let t0 = 1_790_000_000;
        let mut w = Windowed::<i64>::new(&cal.bounds(t0));
        assert!(w.add(t0, 1, &5, &cal.bounds(t0)));
        assert_eq!(w.sums()[Window::H1.index()], 5);
        w.advance(&cal.bounds(t0 + 3_599));
        assert_eq!(w.sums()[Window::H1.index()], 5);
        w.advance(&cal.bounds(t0 + 3_600));
        assert_eq!(w.sums()[Window::H1.index()], 0);
        assert_eq!(w.sums()[Window::H24.index()], 5);
    }

    #[test]
    fn future_fact_counts_once_the_clock_reaches_it() {
        let cal = Calendar::utc();
        let t0 = 1_790_000_000;
        let b = cal.bounds(t0);
        let mut w = Windowed::<i64>::new(&b);
        w.add(t0 + 60, 1, &1, &b);
        assert_eq!(w.sums()[0], 0);
        assert!(w.advance(&cal.bounds(t0 + 60)));
        assert_eq!(w.sums()[0], 1);
    }

    #[test]
    fn sub_of_an_expired_fact_changes_nothing() {
        let cal = Calendar::utc();
        let t0 = 1_790_000_000;
        let b = cal.bounds(t0);
        let mut w = Windowed::<i64>::new(&b);
        w.add(t0, 1, &1, &b);
        w.advance(&cal.bounds(t0 + 400 * 86_400));
        w.sub(t0, 1, &1);
        assert!(w.sums().iter().all(|s| *s == 0));
        assert!(w.is_empty());
    }
}
