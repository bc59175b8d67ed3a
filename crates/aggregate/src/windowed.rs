//! Facts in time buckets with one running sum per window.
//!
//! Each bucket enters a window when the clock reaches its start and leaves when the window's
//! start passes it, so the cost of a record or of a clock tick does not depend on how long the
//! windows are: every bucket is added to and removed from each window at most once.
//!
//! Bucket starts lie on a fixed grid (a minute, a local hour: [`Grid`]), so buckets are kept in
//! a hash map rather than an ordered tree: adding to a bucket is one lookup, and the buckets
//! between two seconds are found by stepping through the starts between them (or, when that
//! range holds more starts than there are buckets, by looking at every bucket).
//!
//! Windows that end before now (closed periods, same-point windows) are summed afresh when
//! their start moves (at most once a day); a same-point window's end moves with the clock and
//! adds the buckets it reaches, like the current windows do.

use crate::calendar::{Bounds, Grid, CURRENT, WINDOWS};

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

/// Buckets keyed by their start (on a [`Grid`]) and their sums per window.
///
/// Most ticks move no bucket in or out of any window; two lower bounds let `advance` see that
/// without looking at the buckets, so a tick costs a few comparisons per cell.
#[derive(Debug, Clone)]
pub struct Windowed<V> {
    grid: Grid,
    facts: crate::FastMap<i64, V>,
    sums: [V; WINDOWS],
    lo: [i64; WINDOWS],
    hi: i64,
    /// No bucket counted in window `w` is older than `first_in[w]` (`i64::MAX`: none is).
    first_in: [i64; WINDOWS],
    /// No bucket later than `hi` is earlier than `next_future` (`i64::MAX`: none is).
    next_future: i64,
    /// No bucket is older than this.
    oldest: i64,
    /// Last second of each window ending before now (index `w - CURRENT`).
    past_hi: [i64; WINDOWS - CURRENT],
    /// No bucket after `past_hi` and in the window's period is earlier than this.
    past_next: [i64; WINDOWS - CURRENT],
}

impl<V: Measure> Windowed<V> {
    /// Buckets that start on `grid`.
    pub fn new(grid: Grid, b: &Bounds) -> Self {
        Windowed {
            grid: Grid {
                step: grid.step.max(1),
                phase: grid.phase,
            },
            facts: crate::FastMap::default(),
            sums: [V::default(); WINDOWS],
            lo: b.lo,
            hi: b.now,
            first_in: [i64::MAX; WINDOWS],
            next_future: i64::MAX,
            oldest: i64::MAX,
            past_hi: past_hi(b),
            past_next: [i64::MAX; WINDOWS - CURRENT],
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

    /// The start of the bucket holding second `t`.
    pub fn bucket(&self, t: i64) -> i64 {
        self.grid.start(t)
    }

    /// The first bucket start at or after `t`.
    pub fn first_start(&self, t: i64) -> i64 {
        let step = self.grid.step;
        t + (step - (t - self.grid.phase).rem_euclid(step)) % step
    }

    /// Every bucket kept, in time order: (start, value).
    pub fn facts(&self) -> Vec<(i64, V)> {
        let mut out: Vec<(i64, V)> = self.facts.iter().map(|(t, v)| (*t, *v)).collect();
        out.sort_unstable_by_key(|f| f.0);
        out
    }

    /// Adds `v` to the bucket holding second `t`. Returns false when the bucket is older than
    /// every window and so not kept.
    pub fn add(&mut self, t: i64, v: &V, b: &Bounds) -> bool {
        self.add_by(t, b, |s| s.add(v))
    }

    /// As [`Windowed::add`], with `add` applied to the bucket and to each window sum it is in:
    /// a record that changes one part of a value (one activity kind of a [`Measure`] of
    /// sixteen) touches only that part, not every part of up to 17 sums.
    pub fn add_by(&mut self, t: i64, b: &Bounds, add: impl Fn(&mut V)) -> bool {
        let ts = self.bucket(t);
        if ts < b.horizon {
            return false;
        }
        add(self.facts.entry(ts).or_default());
        self.oldest = self.oldest.min(ts);
        if ts <= self.hi {
            for w in 0..CURRENT {
                if self.lo[w] <= ts {
                    add(&mut self.sums[w]);
                    self.first_in[w] = self.first_in[w].min(ts);
                }
            }
        } else {
            self.next_future = self.next_future.min(ts);
        }
        for (k, (hi, next)) in self.past_hi.iter().zip(&mut self.past_next).enumerate() {
            if self.lo[CURRENT + k] <= ts {
                if ts <= *hi {
                    add(&mut self.sums[CURRENT + k]);
                } else {
                    *next = (*next).min(ts);
                }
            }
        }
        true
    }

    /// Starts of the buckets kept with `from <= start < to`, in time order.
    fn starts_in(&self, from: i64, to: i64) -> Vec<i64> {
        if from >= to || self.facts.is_empty() {
            return Vec::new();
        }
        let step = self.grid.step;
        let first = self.first_start(from);
        let starts = (to - first + step - 1) / step;
        if starts <= self.facts.len() as i64 {
            (0..starts.max(0))
                .map(|i| first + i * step)
                .filter(|t| self.facts.contains_key(t))
                .collect()
        } else {
            let mut out: Vec<i64> = self
                .facts
                .keys()
                .copied()
                .filter(|t| (from..to).contains(t))
                .collect();
            out.sort_unstable();
            out
        }
    }

    /// Start of the first bucket kept at or after `from` and at most `limit` (`i64::MAX`:
    /// none).
    fn first_from(&self, from: i64, limit: i64) -> i64 {
        if self.facts.is_empty() || from > limit {
            return i64::MAX;
        }
        let budget = self.facts.len() as i64;
        let mut t = self.first_start(from);
        for _ in 0..budget {
            if t > limit {
                return i64::MAX;
            }
            if self.facts.contains_key(&t) {
                return t;
            }
            t += self.grid.step;
        }
        self.facts
            .keys()
            .copied()
            .filter(|k| *k >= from && *k <= limit)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Moves every window to `b`. Returns whether any sum changed.
    pub fn advance(&mut self, b: &Bounds) -> bool {
        let mut changed = false;
        if self.facts.is_empty() {
            self.lo = b.lo;
            self.hi = self.hi.max(b.now);
            self.past_hi = past_hi(b);
            if self.oldest == i64::MAX {
                // Emptied and reset before: every sum is zero.
                return false;
            }
            self.first_in = [i64::MAX; WINDOWS];
            self.next_future = i64::MAX;
            self.oldest = i64::MAX;
            self.past_next = [i64::MAX; WINDOWS - CURRENT];
            return self.reset_sums();
        }
        changed |= self.advance_past(b);
        if b.now > self.hi {
            if self.next_future <= b.now {
                for ts in self.starts_in(self.hi + 1, b.now + 1) {
                    let v = self.facts[&ts];
                    for w in 0..CURRENT {
                        if self.lo[w] <= ts {
                            self.sums[w].add(&v);
                            self.first_in[w] = self.first_in[w].min(ts);
                            changed = true;
                        }
                    }
                }
                self.next_future = self.first_from(b.now + 1, i64::MAX);
            }
            self.hi = b.now;
        }
        for w in 0..CURRENT {
            let new_lo = b.lo[w];
            if new_lo > self.lo[w] {
                if self.first_in[w] < new_lo {
                    for ts in self.starts_in(self.lo[w], new_lo.min(self.hi + 1)) {
                        self.sums[w].sub(&self.facts[&ts]);
                        changed = true;
                    }
                    self.first_in[w] = self.first_from(new_lo, self.hi);
                }
                self.lo[w] = new_lo;
            }
        }
        if self.oldest < b.horizon {
            // Older than every window's start: counted nowhere.
            for ts in self.starts_in(self.oldest, b.horizon) {
                self.facts.remove(&ts);
            }
            self.oldest = self.first_from(b.horizon, i64::MAX);
        }
        changed
    }

    /// Moves the windows that end before now: a window whose start moved is summed afresh, a
    /// window whose end moved adds the buckets it reached.
    fn advance_past(&mut self, b: &Bounds) -> bool {
        let mut changed = false;
        for k in 0..WINDOWS - CURRENT {
            let w = CURRENT + k;
            let (lo, hi) = (b.lo[w], b.hi[w]);
            if lo != self.lo[w] {
                let mut sum = V::default();
                let mut next = i64::MAX;
                for (ts, v) in &self.facts {
                    if lo <= *ts && *ts <= hi {
                        sum.add(v);
                    } else if *ts > hi {
                        next = next.min(*ts);
                    }
                }
                changed |= sum != self.sums[w];
                self.sums[w] = sum;
                self.past_next[k] = next;
                self.lo[w] = lo;
                self.past_hi[k] = hi;
            } else if hi > self.past_hi[k] {
                if self.past_next[k] <= hi {
                    for ts in self.starts_in(self.past_hi[k] + 1, hi + 1) {
                        self.sums[w].add(&self.facts[&ts]);
                        changed = true;
                    }
                    self.past_next[k] = self.first_from(hi + 1, i64::MAX);
                }
                self.past_hi[k] = hi;
            }
        }
        changed
    }

    /// Removes and returns the buckets older than `before`, taking them out of the window sums;
    /// the caller re-adds them elsewhere (used to fold minute buckets into hour buckets).
    pub fn take_older_than(&mut self, before: i64) -> Vec<(i64, V)> {
        if self.oldest >= before {
            return Vec::new();
        }
        let mut out = Vec::new();
        for ts in self.starts_in(self.oldest, before) {
            if let Some(v) = self.facts.remove(&ts) {
                out.push((ts, v));
            }
        }
        self.oldest = self.first_from(before, i64::MAX);
        for (ts, v) in &out {
            for w in 0..WINDOWS {
                let hi = w.checked_sub(CURRENT).map_or(self.hi, |k| self.past_hi[k]);
                if self.lo[w] <= *ts && *ts <= hi {
                    self.sums[w].sub(v);
                }
            }
        }
        // `first_in` may now be earlier than any bucket kept: still a lower bound.
        out
    }

    /// Gives back the room of buckets taken out. A map that buckets leave as fast as new ones
    /// come (hours folded into years each quarter) would otherwise keep its largest size, and
    /// double it once the places its removals leave behind fill up.
    pub fn shrink_to_fit(&mut self) {
        self.facts.shrink_to_fit();
    }

    fn reset_sums(&mut self) -> bool {
        let changed = self.sums.iter().any(|s| !s.is_zero());
        self.sums = [V::default(); WINDOWS];
        changed
    }
}

/// Last second of each window ending before now.
fn past_hi(b: &Bounds) -> [i64; WINDOWS - CURRENT] {
    let mut out = [0; WINDOWS - CURRENT];
    out.copy_from_slice(&b.hi[CURRENT..]);
    out
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
    fn bucket_leaves_rolling_hour_exactly_one_hour_after_its_start() {
        let cal = Calendar::utc();
        let t0 = 1_790_000_040;
        let mut w = Windowed::<i64>::new(Grid::MINUTES, &cal.bounds(t0));
        assert!(w.add(t0 + 5, &5, &cal.bounds(t0 + 5)));
        assert_eq!(w.sums()[Window::H1.index()], 5);
        w.advance(&cal.bounds(t0 + 3_599));
        assert_eq!(w.sums()[Window::H1.index()], 5);
        w.advance(&cal.bounds(t0 + 3_600));
        assert_eq!(w.sums()[Window::H1.index()], 0);
        assert_eq!(w.sums()[Window::H24.index()], 5);
    }

    #[test]
    fn future_bucket_counts_once_the_clock_reaches_it() {
        let cal = Calendar::utc();
        let t0 = 1_790_000_040;
        let b = cal.bounds(t0);
        let mut w = Windowed::<i64>::new(Grid::MINUTES, &b);
        w.add(t0 + 60, &1, &b);
        assert_eq!(w.sums()[0], 0);
        assert!(w.advance(&cal.bounds(t0 + 60)));
        assert_eq!(w.sums()[0], 1);
    }

    #[test]
    fn a_long_jump_of_the_clock_looks_at_every_bucket_once() {
        let cal = Calendar::utc();
        let t0 = 1_790_000_040;
        let b = cal.bounds(t0);
        let mut w = Windowed::<i64>::new(Grid::UTC_HOURS, &b);
        for h in 0..48 {
            w.add(t0 - h * 3_600, &1, &b);
        }
        assert_eq!(w.sums()[Window::D7.index()], 48);
        // A year later, the hours are last year's; another year on, they are gone.
        w.advance(&cal.bounds(t0 + 400 * 86_400));
        assert_eq!(w.sums()[Window::LastYear.index()], 48);
        assert_eq!(w.sums()[Window::Ytd.index()], 0);
        w.advance(&cal.bounds(t0 + 800 * 86_400));
        assert!(w.sums().iter().all(|s| *s == 0));
        assert!(w.is_empty());
    }

    #[test]
    fn folded_buckets_leave_the_sums() {
        let cal = Calendar::utc();
        let t0 = 1_790_000_040;
        let b = cal.bounds(t0);
        let mut w = Windowed::<i64>::new(Grid::MINUTES, &b);
        w.add(t0 - 600, &2, &b);
        w.add(t0 - 60, &3, &b);
        let folded = w.take_older_than(t0 - 120);
        assert_eq!(folded, vec![(w.bucket(t0 - 600), 2)]);
        assert_eq!(w.sums()[Window::H1.index()], 3);
        assert_eq!(w.len(), 1);
    }
}
