//! Ramp quotas: a new hire carries a share of the full quota for the first months of tenure.

use chrono::{Months, NaiveDate};
use rust_decimal::Decimal;

/// Percent of the full quota by month of tenure; from the month after the last one on, 100 %.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ramp {
    percents: Vec<Decimal>,
}

/// The ramp schedule is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ramp_percent[{index}] = {value}: each month's share must be within 0..=100 percent")]
pub struct RampError {
    pub index: usize,
    pub value: Decimal,
}

impl Ramp {
    /// A schedule such as `[25, 50, 75]`: 25 % of the quota in the first month of tenure,
    /// 50 % in the second, 75 % in the third, all of it afterwards. Empty: no ramp.
    pub fn new(percents: Vec<Decimal>) -> Result<Ramp, RampError> {
        if let Some((index, value)) = percents
            .iter()
            .enumerate()
            .find(|(_, p)| **p < Decimal::ZERO || **p > Decimal::ONE_HUNDRED)
        {
            return Err(RampError {
                index,
                value: *value,
            });
        }
        Ok(Ramp { percents })
    }

    /// Share (0..=1) of the full quota on day `d` for a rep hired on `hired`: 0 before the
    /// hiring day; in month `m` of tenure (the days from `hired` + m months on), the
    /// schedule's `m`-th share; 1 after the schedule.
    pub fn day_share(&self, hired: NaiveDate, d: NaiveDate) -> Decimal {
        if d < hired {
            return Decimal::ZERO;
        }
        for (m, p) in self.percents.iter().enumerate() {
            let next = hired
                .checked_add_months(Months::new(m as u32 + 1))
                .unwrap_or(NaiveDate::MAX);
            if d < next {
                return *p / Decimal::ONE_HUNDRED;
            }
        }
        Decimal::ONE
    }

    /// Share of the full quota over the days `[first, end)` of a period: the mean of the
    /// days' shares (each day of the period weighs the same). `None` when the rep is fully
    /// ramped for the whole period, or without a schedule. With one, the days of the period
    /// before the hiring day weigh 0: a rep hired in the middle of a quarter carries the
    /// quarter's quota from then on only.
    pub fn period_share(
        &self,
        hired: NaiveDate,
        first: NaiveDate,
        end: NaiveDate,
    ) -> Option<Decimal> {
        if self.percents.is_empty() {
            return None;
        }
        let fully = hired
            .checked_add_months(Months::new(self.percents.len() as u32))
            .unwrap_or(NaiveDate::MAX);
        if first >= fully || end <= first {
            return None;
        }
        let (mut sum, mut days) = (Decimal::ZERO, 0u32);
        for d in first.iter_days().take_while(|d| *d < end) {
            sum += self.day_share(hired, d);
            days += 1;
        }
        Some(sum / Decimal::from(days))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn ramp() -> Ramp {
        Ramp::new(vec![25.into(), 50.into(), 75.into()]).expect("valid")
    }

    #[test]
    fn months_of_tenure_count_from_the_hiring_day() {
        let r = ramp();
        let hired = d("2026-10-15");
        assert_eq!(r.day_share(hired, d("2026-10-14")), Decimal::ZERO);
        assert_eq!(
            r.day_share(hired, d("2026-10-15")),
            "0.25".parse().expect("decimal")
        );
        assert_eq!(
            r.day_share(hired, d("2026-11-14")),
            "0.25".parse().expect("decimal")
        );
        assert_eq!(
            r.day_share(hired, d("2026-11-15")),
            "0.5".parse().expect("decimal")
        );
        assert_eq!(
            r.day_share(hired, d("2027-01-14")),
            "0.75".parse().expect("decimal")
        );
        assert_eq!(r.day_share(hired, d("2027-01-15")), Decimal::ONE);
    }

    #[test]
    fn a_period_takes_the_mean_of_its_days() {
        let r = ramp();
        // Hired on Dec 1st: December at 25 %.
        assert_eq!(
            r.period_share(d("2026-12-01"), d("2026-12-01"), d("2027-01-01")),
            Some("0.25".parse().expect("decimal"))
        );
        // Hired on Nov 1st, quarter Oct–Dec: 31 days at 0, 30 at 25 %, 31 at 50 %, of 92.
        let want = (Decimal::from(30) * Decimal::new(25, 2)
            + Decimal::from(31) * Decimal::new(5, 1))
            / Decimal::from(92);
        assert_eq!(
            r.period_share(d("2026-11-01"), d("2026-10-01"), d("2027-01-01")),
            Some(want)
        );
        // Fully ramped before the period: none.
        assert_eq!(
            r.period_share(d("2026-01-01"), d("2026-10-01"), d("2027-01-01")),
            None
        );
        // No schedule: never in ramp, however recent the hire.
        let none = Ramp::default();
        assert_eq!(
            none.period_share(d("2026-12-01"), d("2026-12-01"), d("2027-01-01")),
            None
        );
    }

    #[test]
    fn rejects_shares_outside_0_to_100() {
        assert_eq!(
            Ramp::new(vec![50.into(), 101.into()]),
            Err(RampError {
                index: 1,
                value: 101.into()
            })
        );
        assert!(Ramp::new(vec![Decimal::from(-1)]).is_err());
        assert!(Ramp::new(vec![0.into(), 100.into()]).is_ok());
    }

    proptest! {
        /// The period share against a count of the days in each month of tenure.
        #[test]
        fn period_share_matches_a_count_by_month(
            hired_offset in 0i64..400,
            start_offset in 0i64..400,
            len in 1i64..120,
            percents in proptest::collection::vec(0u32..=100, 0..6),
        ) {
            let base = d("2025-06-01");
            let hired = base + chrono::Duration::days(hired_offset);
            let first = base + chrono::Duration::days(start_offset);
            let end = first + chrono::Duration::days(len);
            let r = Ramp::new(percents.iter().map(|p| Decimal::from(*p)).collect()).expect("valid");
            // Month boundaries of tenure, then count the period's days below each.
            let mut weighted = Decimal::ZERO;
            let mut day = first;
            while day < end {
                let share = if day < hired {
                    Decimal::ZERO
                } else {
                    let mut m = 0u32;
                    while hired.checked_add_months(Months::new(m + 1)).expect("date") <= day {
                        m += 1;
                    }
                    percents
                        .get(m as usize)
                        .map_or(Decimal::ONE, |p| Decimal::from(*p) / Decimal::ONE_HUNDRED)
                };
                weighted += share;
                day += chrono::Duration::days(1);
            }
            let want = weighted / Decimal::from(len);
            match r.period_share(hired, first, end) {
                Some(got) => prop_assert_eq!(got, want),
                None => prop_assert!(percents.is_empty() || want == Decimal::ONE),
            }
        }
    }
}
