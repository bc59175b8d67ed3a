//! How much of a period has elapsed: in business days (Monday to Friday in the calendar's
//! time zone, minus holidays) by default, or in calendar time.

use std::collections::BTreeSet;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use salespulse_aggregate::Calendar;

use crate::period::Period;

#[derive(Debug, Clone)]
pub struct Elapsed {
    cal: Calendar,
    business_days: bool,
    holidays: BTreeSet<NaiveDate>,
}

impl Elapsed {
    pub fn new(
        cal: Calendar,
        business_days: bool,
        holidays: impl IntoIterator<Item = NaiveDate>,
    ) -> Self {
        Elapsed {
            cal,
            business_days,
            holidays: holidays.into_iter().collect(),
        }
    }

    fn works(&self, d: NaiveDate) -> bool {
        !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && !self.holidays.contains(&d)
    }

    /// Share of `p` elapsed at `now` (Unix seconds), within 0..=1.
    pub fn share(&self, p: &Period, now: i64) -> f64 {
        let (start, end) = p.bounds(&self.cal);
        if now <= start {
            return 0.0;
        }
        if now >= end {
            return 1.0;
        }
        let calendar = (now - start) as f64 / (end - start) as f64;
        if !self.business_days {
            return calendar;
        }
        let (first, last) = p.days(&self.cal);
        let today = self.cal.local_date(now);
        let (mut total, mut done) = (0.0, 0.0);
        let mut d = first;
        while d < last {
            if self.works(d) {
                total += 1.0;
                if d < today {
                    done += 1.0;
                } else if d == today {
                    // Part of today: the share of the local day that has passed.
                    let s = self.cal.local_midnight(d);
                    let e = self.cal.local_midnight(d + Duration::days(1));
                    done += ((now - s) as f64 / (e - s).max(1) as f64).clamp(0.0, 1.0);
                }
            }
            d += Duration::days(1);
        }
        if total == 0.0 {
            calendar
        } else {
            done / total
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("time")
            .timestamp()
    }

    #[test]
    fn business_days_skip_weekends_and_holidays() {
        let cal = Calendar::utc();
        let week = Period::parse("2026-W48").expect("valid"); // Mon 23 – Sun 29 Nov 2026
        let e = Elapsed::new(cal, true, []);
        assert_eq!(e.share(&week, ts("2026-11-25T00:00:00Z")), 0.4);
        assert_eq!(e.share(&week, ts("2026-11-28T10:00:00Z")), 1.0);
        let thanksgiving = NaiveDate::from_ymd_opt(2026, 11, 26).expect("date");
        let e = Elapsed::new(cal, true, [thanksgiving]);
        assert_eq!(e.share(&week, ts("2026-11-27T00:00:00Z")), 0.75);
        assert_eq!(e.share(&week, ts("2026-11-27T12:00:00Z")), 0.875);
        let e = Elapsed::new(cal, false, []);
        assert_eq!(e.share(&week, ts("2026-11-26T12:00:00Z")), 0.5);
    }
}
