//! Weekly sums of the last complete weeks, for how consistent a rep is from week to week.

use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::Decimal;

use crate::calendar::Bounds;
use crate::series::{ratio, Metric, SeriesBuilder};

/// How many sums a week holds: the deals service keeps bookings (cents) and deals won, the
/// activities service its activities of every kind.
pub(crate) const SUMS: usize = 2;

/// Sums per local week for the kept complete weeks (see [`Bounds::kept`]), the current week
/// and the next (a record may be up to a few minutes ahead of the clock).
///
/// Slots are indexed by week number modulo their count; `week` is the current week, so the
/// slots hold weeks `week - kept ..= week + 1`. A fact of a week outside them is not kept: a
/// week is dropped as a whole when the clock leaves it behind, so a fact retracted after that
/// finds no week to leave, and the sums stay those of the facts still inside.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Weekly {
    week: i64,
    slots: Vec<[i128; SUMS]>,
}

impl Weekly {
    pub fn new(b: &Bounds) -> Self {
        Weekly {
            week: b.week,
            slots: Vec::new(),
        }
    }

    fn len(b: &Bounds) -> i64 {
        b.kept as i64 + 2
    }

    fn slot(week: i64, len: i64) -> usize {
        week.rem_euclid(len) as usize
    }

    /// Adds `v` (times `sign`) to week `week`, if it is kept.
    pub fn add(&mut self, week: i64, v: [i128; SUMS], sign: i128, b: &Bounds) {
        self.roll(b);
        let len = Self::len(b);
        if week < self.week - b.kept as i64 || week > self.week + 1 {
            return;
        }
        if self.slots.is_empty() {
            self.slots = vec![[0; SUMS]; len as usize];
        }
        let s = &mut self.slots[Self::slot(week, len)];
        for (acc, x) in s.iter_mut().zip(v) {
            *acc += x * sign;
        }
        // Nothing left (a fact moved to another owner): the cell may go.
        if sign < 0 && self.slots.iter().all(|s| s.iter().all(|x| *x == 0)) {
            self.slots = Vec::new();
        }
    }

    /// Moves to the clock's week, dropping the weeks left behind; returns whether it moved.
    pub fn roll(&mut self, b: &Bounds) -> bool {
        if b.week <= self.week {
            return false;
        }
        let len = Self::len(b);
        if !self.slots.is_empty() {
            // The weeks that enter, week + 2 ..= b.week + 1, take the slots of those that left.
            for w in (self.week + 2..=b.week + 1).take(len as usize) {
                self.slots[Self::slot(w, len)] = [0; SUMS];
            }
            if self.slots.iter().all(|s| s.iter().all(|x| *x == 0)) {
                self.slots = Vec::new();
            }
        }
        self.week = b.week;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds another's sums (a cell's part from another source) when both stand at the same
    /// week with the same weeks kept.
    pub fn add_weekly(&mut self, o: &Weekly) {
        if o.slots.is_empty() || o.week != self.week {
            return;
        }
        if self.slots.is_empty() {
            self.slots = o.slots.clone();
        } else if self.slots.len() == o.slots.len() {
            for (a, x) in self.slots.iter_mut().zip(&o.slots) {
                for (a, x) in a.iter_mut().zip(x) {
                    *a += x;
                }
            }
        }
    }

    /// Whether a week of consistency (see [`Bounds::weeks`]), the current or the next holds
    /// a fact.
    pub fn any_measured(&self, b: &Bounds) -> bool {
        let len = self.slots.len() as i64;
        len > 0
            && self.week == b.week
            && (b.week - b.weeks as i64..=b.week + 1)
                .any(|w| self.slots[Self::slot(w, len)].iter().any(|x| *x != 0))
    }

    /// The kept weeks' first sums, by week, for a snapshot (activities).
    pub fn saved(&self) -> Vec<(i64, i128)> {
        let len = self.slots.len() as i64;
        (self.week + 2 - len..=self.week + 1)
            .filter(|_| len > 0)
            .map(|w| (w, self.slots[Self::slot(w, len)][0]))
            .filter(|(_, v)| *v != 0)
            .collect()
    }

    /// Adds the complete weeks, oldest first, into `into` (`weeks` entries).
    pub fn merge_complete(&self, into: &mut Vec<[i128; SUMS]>, b: &Bounds) {
        into.resize(b.weeks, [0; SUMS]);
        if self.slots.is_empty() || self.week != b.week {
            return;
        }
        let len = Self::len(b);
        for (i, acc) in into.iter_mut().enumerate() {
            let week = b.week - b.weeks as i64 + i as i64;
            for (a, x) in acc.iter_mut().zip(self.slots[Self::slot(week, len)]) {
                *a += x;
            }
        }
    }
}

/// One weekly sum of every kept complete week and the current one, added over cells.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct WeekSums {
    /// The current week: `sums` ends with it.
    pub week: i64,
    pub sums: Vec<i128>,
}

impl WeekSums {
    /// Adds another's sums (a team's to its region's) when both stand at the same week.
    pub fn add(&mut self, o: &WeekSums) {
        if o.sums.is_empty() {
            return;
        }
        if self.sums.is_empty() {
            self.clone_from(o);
        } else if self.week == o.week && self.sums.len() == o.sums.len() {
            for (a, x) in self.sums.iter_mut().zip(&o.sums) {
                *a += x;
            }
        }
    }

    /// The weeks with a non-zero sum: (week, sum).
    pub fn nonzero(&self) -> impl Iterator<Item = (i64, i128)> + '_ {
        let first = self.week + 1 - self.sums.len() as i64;
        self.sums
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(move |(i, v)| (first + i as i64, *v))
    }
}

impl Weekly {
    /// Adds sum `k` of every kept complete week and the current one to `into`.
    pub fn add_to(&self, k: usize, into: &mut WeekSums) {
        if self.slots.is_empty() {
            return;
        }
        let len = self.slots.len() as i64;
        let n = (len - 1) as usize;
        if into.sums.is_empty() {
            into.week = self.week;
            into.sums = vec![0; n];
        }
        // Every cell rolls to the clock's week at each tick, so they agree.
        if into.week != self.week || into.sums.len() != n {
            return;
        }
        let first = self.week + 1 - n as i64;
        for (i, acc) in into.sums.iter_mut().enumerate() {
            *acc += self.slots[Self::slot(first + i as i64, len)][k];
        }
    }
}

/// One measure whose weekly consistency a service publishes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    /// The `metric` label: the family it measures.
    pub name: &'static str,
    /// Index in the weekly sums.
    pub sum: usize,
    /// In cents (money), else a count.
    pub money: bool,
}

pub(crate) const DEALS_MEASURED: &[Measured] = &[
    Measured {
        name: "bookings",
        sum: 0,
        money: true,
    },
    Measured {
        name: "deals_won",
        sum: 1,
        money: false,
    },
];

pub(crate) const ACTIVITIES_MEASURED: &[Measured] = &[Measured {
    name: "activities",
    sum: 0,
    money: false,
}];

/// Mean, standard deviation (of the population: the weeks are all there is) and their ratio
/// over `weeks`, of one measure. Money is in cents.
pub(crate) fn stats(values: &[i128]) -> Option<(Decimal, Decimal, Option<Decimal>)> {
    let n = i128::try_from(values.len()).ok().filter(|n| *n >= 2)?;
    let sum: i128 = values.iter().sum();
    let squares: i128 = values.iter().map(|v| v * v).sum();
    // n² × variance, exact in integers; the square root is the only rounding.
    let spread = n * squares - sum * sum;
    let sd_times_n = Decimal::from_f64((spread as f64).sqrt())?;
    let n_dec = Decimal::from_i128_with_scale(n, 0);
    let mean = Decimal::from_i128_with_scale(sum, 0) / n_dec;
    let sd = sd_times_n / n_dec;
    let cv = ratio(sd_times_n, Decimal::from_i128_with_scale(sum, 0));
    Some((mean, sd, cv))
}

/// Pushes a rep's consistency series: over the complete weeks in `weeks` (oldest first) from
/// `first` on (the weeks before a rep was hired do not count), for each measure.
pub(crate) fn push_consistency(
    measured: &[Measured],
    weeks: &[[i128; SUMS]],
    first: usize,
    names: &[std::sync::Arc<str>],
    b: &mut SeriesBuilder<'_>,
) {
    let used = weeks.get(first..).unwrap_or_default();
    for (m, name) in measured.iter().zip(names) {
        let values: Vec<i128> = used.iter().map(|w| w[m.sum]).collect();
        let Some((mean, sd, cv)) = stats(&values) else {
            continue;
        };
        let scale = |d: Decimal| {
            let d = if m.money { d / Decimal::ONE_HUNDRED } else { d };
            d.round_dp_with_strategy(
                if m.money { 2 } else { crate::series::RATIO_DP },
                rust_decimal::RoundingStrategy::MidpointAwayFromZero,
            )
            .normalize()
        };
        let extra = [Some(name), None, None];
        b.push_labels(Metric::ConsistencyMean, None, extra, scale(mean));
        b.push_labels(Metric::ConsistencyStddev, None, extra, scale(sd));
        if let Some(cv) = cv {
            b.push_labels(Metric::ConsistencyCv, None, extra, cv);
        }
        b.push_labels(
            Metric::ConsistencySamples,
            None,
            extra,
            Decimal::from(values.len().to_u64().unwrap_or_default()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Calendar;

    #[test]
    fn keeps_the_complete_weeks_and_drops_those_left_behind() {
        let cal = Calendar::utc().with_consistency_weeks(3).expect("valid");
        let t0 = 1_795_780_800; // Friday 2026-11-27
        let mut b0 = cal.bounds(t0);
        // Kept weeks are those of consistency here (at least 27 in a service).
        b0.kept = 3;
        let mut w = Weekly::new(&b0);
        for (back, v) in [(0, 1), (1, 10), (2, 100), (3, 1000), (4, 10_000)] {
            w.add(b0.week - back, [v, 1], 1, &b0);
        }
        let mut got = Vec::new();
        w.merge_complete(&mut got, &b0);
        // Three complete weeks, oldest first; four weeks back is not kept.
        assert_eq!(got, vec![[1000, 1], [100, 1], [10, 1]]);
        // A week later: the current week became complete, the oldest left.
        let mut b1 = cal.bounds(t0 + 7 * 86_400);
        b1.kept = 3;
        w.add(b1.week - 4, [1000, 1], -1, &b1); // retracting a dropped week: nothing
        let mut got = Vec::new();
        w.merge_complete(&mut got, &b1);
        assert_eq!(got, vec![[100, 1], [10, 1], [1, 1]]);
        // Much later: everything left.
        let mut b2 = cal.bounds(t0 + 70 * 86_400);
        b2.kept = 3;
        assert!(w.roll(&b2));
        assert!(w.is_empty());
    }

    #[test]
    fn week_sums_end_with_the_current_week() {
        let cal = Calendar::utc();
        let b = cal.bounds(1_795_780_800);
        let mut w = Weekly::new(&b);
        w.add(b.week, [5, 1], 1, &b);
        w.add(b.week - 27, [7, 1], 1, &b);
        w.add(b.week - 28, [9, 1], 1, &b); // not kept
        let mut sums = WeekSums::default();
        w.add_to(0, &mut sums);
        w.add_to(0, &mut sums);
        assert_eq!(sums.sums.len(), 28);
        let got: Vec<(i64, i128)> = sums.nonzero().collect();
        assert_eq!(got, vec![(b.week - 27, 14), (b.week, 10)]);
    }

    #[test]
    fn mean_deviation_and_ratio() {
        let (mean, sd, cv) = stats(&[2, 4, 4, 4, 5, 5, 7, 9]).expect("stats");
        assert_eq!((mean, sd), (Decimal::from(5), Decimal::from(2)));
        assert_eq!(cv, Some(Decimal::new(4, 1)));
        assert_eq!(stats(&[0, 0, 0]).map(|s| s.2), Some(None));
        assert!(stats(&[5]).is_none());
    }
}
