//! How a group of reps stands against its quarter bookings targets: how many reach 50, 75 and
//! 100 % of their target, and the median attainment. Exact: thresholds are compared without
//! dividing, and the median is a decimal.

use rust_decimal::Decimal;

/// Attainment thresholds of `sales_{team,org}_reps_attaining{threshold}`, in percent.
pub const ATTAINMENT_THRESHOLDS: [u32; 3] = [50, 75, 100];

/// One rep's actual against its target. Only reps with a target above 0 have an attainment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepAttainment {
    pub actual: Decimal,
    pub target: Decimal,
}

impl RepAttainment {
    /// `None` for a target of 0 (or less): such a rep has no attainment and is not counted.
    pub fn new(actual: Decimal, target: Decimal) -> Option<RepAttainment> {
        (target > Decimal::ZERO).then_some(RepAttainment { actual, target })
    }

    /// Whether actual / target ≥ `percent` %. Compared as actual × 100 ≥ target × percent so
    /// that a rep exactly at a threshold counts, whatever a division would round to.
    pub fn reaches(&self, percent: u32) -> bool {
        let hundred = Decimal::ONE_HUNDRED;
        match (
            self.actual.checked_mul(hundred),
            self.target.checked_mul(Decimal::from(percent)),
        ) {
            (Some(a), Some(t)) => a >= t,
            // Beyond Decimal's range only the ratio can be compared.
            _ => self.ratio() * hundred >= Decimal::from(percent),
        }
    }

    /// actual / target (to Decimal's 28 significant digits).
    pub fn ratio(&self) -> Decimal {
        self.actual.checked_div(self.target).unwrap_or(Decimal::MAX)
    }
}

/// The distribution of a non-empty group of reps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    /// Reps with a target (the denominator of the shares).
    pub reps: usize,
    /// Per threshold of [`ATTAINMENT_THRESHOLDS`], in that order: how many reps reach it.
    pub attaining: Vec<(u32, usize)>,
    /// Median attainment ratio: the middle one, or the mean of the two middle ones.
    pub median: Decimal,
}

impl Distribution {
    /// `None` for an empty group: no rep, no share and no median.
    pub fn of(reps: &[RepAttainment]) -> Option<Distribution> {
        let median = median(reps.iter().map(RepAttainment::ratio).collect())?;
        let attaining = ATTAINMENT_THRESHOLDS
            .into_iter()
            .map(|t| (t, reps.iter().filter(|r| r.reaches(t)).count()))
            .collect();
        Some(Distribution {
            reps: reps.len(),
            attaining,
            median,
        })
    }
}

/// The median of `values`; for an even count the mean of the two middle values.
pub fn median(mut values: Vec<Decimal>) -> Option<Decimal> {
    values.sort();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / Decimal::TWO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn rep(actual: &str, target: &str) -> RepAttainment {
        RepAttainment::new(d(actual), d(target)).expect("target above 0")
    }

    #[test]
    fn a_rep_exactly_at_a_threshold_reaches_it() {
        // 1/3 of 3 is exactly 1: a division would give 0.3333.. x 3 = 0.9999...
        let r = rep("1", "3");
        assert!(!r.reaches(50));
        // 150 of 300 = 50 %, 224.99 of 300 just under 75 %, 300 of 300 = 100 %.
        assert!(rep("150", "300").reaches(50));
        assert!(!rep("149.99", "300").reaches(50));
        assert!(!rep("224.99", "300").reaches(75));
        assert!(rep("225", "300").reaches(75));
        assert!(rep("300", "300").reaches(100));
        assert!(!rep("299.999", "300").reaches(100));
        // A negative actual (corrections) reaches nothing; a target of 0 is no attainment.
        assert!(!rep("-5", "300").reaches(50));
        assert!(RepAttainment::new(d("5"), Decimal::ZERO).is_none());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![d("0.7")]), Some(d("0.7")));
        assert_eq!(median(vec![d("0.9"), d("0.1"), d("0.5")]), Some(d("0.5")));
        // (0.5 + 0.8) / 2, the middle two of four in any order.
        assert_eq!(
            median(vec![d("1.2"), d("0.5"), d("0.1"), d("0.8")]),
            Some(d("0.65"))
        );
        // The mean of two ratios that are not short decimals is still the exact mean.
        assert_eq!(median(vec![d("0.25"), d("0.5")]), Some(d("0.375")));
    }

    #[test]
    fn distribution_counts_each_threshold_and_takes_the_median() {
        // Attainments 0.2, 0.5 (exactly), 0.75 (exactly), 0.9, 1.1.
        let reps = [
            rep("200", "1000"),
            rep("500", "1000"),
            rep("600", "800"),
            rep("900", "1000"),
            rep("1100", "1000"),
        ];
        let dist = Distribution::of(&reps).expect("reps");
        assert_eq!(dist.reps, 5);
        assert_eq!(dist.attaining, vec![(50, 4), (75, 3), (100, 1)]);
        assert_eq!(dist.median, d("0.75"));
        assert!(Distribution::of(&[]).is_none());
    }
}
