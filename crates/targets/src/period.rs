//! Fiscal periods named the way sales operations names them: `FY2026`, `2026-Q4`, `2026-11`,
//! `2026-W48`. A fiscal year is named after the calendar year it ends in; quarters are fiscal
//! quarters of that year; months are calendar months; weeks are ISO weeks (Monday first).

use std::fmt;

use chrono::{Datelike, Duration, NaiveDate};
use salespulse_aggregate::{Calendar, Window};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeriodType {
    Year,
    Quarter,
    Month,
    Week,
}

impl PeriodType {
    pub const ALL: [PeriodType; 4] = [
        PeriodType::Year,
        PeriodType::Quarter,
        PeriodType::Month,
        PeriodType::Week,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PeriodType::Year => "year",
            PeriodType::Quarter => "quarter",
            PeriodType::Month => "month",
            PeriodType::Week => "week",
        }
    }

    /// The to-date window that measures the current period of this type.
    pub fn window(self) -> Window {
        match self {
            PeriodType::Year => Window::Ytd,
            PeriodType::Quarter => Window::Qtd,
            PeriodType::Month => Window::Mtd,
            PeriodType::Week => Window::Wtd,
        }
    }
}

/// A period: its type, its (fiscal, calendar or ISO) year and its number within the year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    pub kind: PeriodType,
    pub year: i32,
    /// Quarter 1–4, month 1–12 or ISO week 1–53; 0 for a year.
    pub n: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid period {0:?}: expected FY2026, 2026-Q4, 2026-11 or 2026-W48")]
pub struct PeriodError(pub String);

impl Period {
    pub fn parse(s: &str) -> Result<Period, PeriodError> {
        let err = || PeriodError(s.to_owned());
        let s = s.trim();
        if let Some(y) = s.strip_prefix("FY") {
            let year = y.parse().map_err(|_| err())?;
            return Period::checked(PeriodType::Year, year, 0).ok_or_else(err);
        }
        let (y, rest) = s.split_once('-').ok_or_else(err)?;
        let year: i32 = y.parse().map_err(|_| err())?;
        let (kind, n) = if let Some(q) = rest.strip_prefix('Q') {
            (PeriodType::Quarter, q.parse().map_err(|_| err())?)
        } else if let Some(w) = rest.strip_prefix('W') {
            (PeriodType::Week, w.parse().map_err(|_| err())?)
        } else {
            (PeriodType::Month, rest.parse().map_err(|_| err())?)
        };
        Period::checked(kind, year, n).ok_or_else(err)
    }

    fn checked(kind: PeriodType, year: i32, n: u32) -> Option<Period> {
        let ok = (1970..=9998).contains(&year)
            && match kind {
                PeriodType::Year => n == 0,
                PeriodType::Quarter => (1..=4).contains(&n),
                PeriodType::Month => (1..=12).contains(&n),
                PeriodType::Week => {
                    NaiveDate::from_isoywd_opt(year, n, chrono::Weekday::Mon).is_some()
                }
            };
        ok.then_some(Period { kind, year, n })
    }

    /// First and last-plus-one local day of the period.
    pub fn days(&self, cal: &Calendar) -> (NaiveDate, NaiveDate) {
        let fsm = cal.fiscal_start_month();
        let fy_start = |fy: i32| {
            let y = if fsm == 1 { fy } else { fy - 1 };
            NaiveDate::from_ymd_opt(y, fsm, 1).unwrap_or_default()
        };
        let add_months =
            |d: NaiveDate, m: u32| d.checked_add_months(chrono::Months::new(m)).unwrap_or(d);
        match self.kind {
            PeriodType::Year => {
                let s = fy_start(self.year);
                (s, add_months(s, 12))
            }
            PeriodType::Quarter => {
                let s = add_months(fy_start(self.year), 3 * (self.n - 1));
                (s, add_months(s, 3))
            }
            PeriodType::Month => {
                let s = NaiveDate::from_ymd_opt(self.year, self.n, 1).unwrap_or_default();
                (s, add_months(s, 1))
            }
            PeriodType::Week => {
                let s = NaiveDate::from_isoywd_opt(self.year, self.n, chrono::Weekday::Mon)
                    .unwrap_or_default();
                (s, s + Duration::days(7))
            }
        }
    }

    /// Start and end (Unix seconds, end exclusive) in the calendar's time zone.
    pub fn bounds(&self, cal: &Calendar) -> (i64, i64) {
        let (s, e) = self.days(cal);
        (cal.local_midnight(s), cal.local_midnight(e))
    }

    /// The period of `kind` that contains instant `t`.
    pub fn containing(kind: PeriodType, t: i64, cal: &Calendar) -> Period {
        let d = cal.local_date(t);
        match kind {
            PeriodType::Week => {
                let w = d.iso_week();
                Period {
                    kind,
                    year: w.year(),
                    n: w.week(),
                }
            }
            PeriodType::Month => Period {
                kind,
                year: d.year(),
                n: d.month(),
            },
            PeriodType::Year | PeriodType::Quarter => {
                let fsm = cal.fiscal_start_month();
                let since = (d.month() + 12 - fsm) % 12;
                let start_year = if d.month() >= fsm {
                    d.year()
                } else {
                    d.year() - 1
                };
                let fy = if fsm == 1 { start_year } else { start_year + 1 };
                match kind {
                    PeriodType::Year => Period {
                        kind,
                        year: fy,
                        n: 0,
                    },
                    _ => Period {
                        kind,
                        year: fy,
                        n: since / 3 + 1,
                    },
                }
            }
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PeriodType::Year => write!(f, "FY{}", self.year),
            PeriodType::Quarter => write!(f, "{}-Q{}", self.year, self.n),
            PeriodType::Month => write!(f, "{}-{:02}", self.year, self.n),
            PeriodType::Week => write!(f, "{}-W{:02}", self.year, self.n),
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
    fn labels_round_trip() {
        for s in ["FY2026", "2026-Q4", "2026-11", "2026-W48", "2026-W01"] {
            assert_eq!(Period::parse(s).expect(s).to_string(), s);
        }
        for bad in [
            "FY", "2026-Q5", "2026-13", "2026-W54", "26-11", "2026/11", "",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn calendar_fiscal_year() {
        let cal = Calendar::utc();
        let now = ts("2026-11-27T12:00:00Z");
        assert_eq!(
            Period::containing(PeriodType::Quarter, now, &cal).to_string(),
            "2026-Q4"
        );
        assert_eq!(
            Period::containing(PeriodType::Week, now, &cal).to_string(),
            "2026-W48"
        );
        let q = Period::parse("2026-Q4").expect("valid");
        assert_eq!(
            q.bounds(&cal),
            (ts("2026-10-01T00:00:00Z"), ts("2027-01-01T00:00:00Z"))
        );
        let w = Period::parse("2026-W48").expect("valid");
        assert_eq!(
            w.bounds(&cal),
            (ts("2026-11-23T00:00:00Z"), ts("2026-11-30T00:00:00Z"))
        );
    }

    #[test]
    fn fiscal_year_starting_in_february_is_named_by_its_end() {
        let cal = Calendar::new("UTC", 2).expect("calendar");
        let now = ts("2026-11-27T12:00:00Z");
        assert_eq!(
            Period::containing(PeriodType::Year, now, &cal).to_string(),
            "FY2027"
        );
        // Nov 2026 is the 10th fiscal month: Q4 runs Nov–Jan.
        assert_eq!(
            Period::containing(PeriodType::Quarter, now, &cal).to_string(),
            "2027-Q4"
        );
        let fy = Period::parse("FY2027").expect("valid");
        assert_eq!(
            fy.bounds(&cal),
            (ts("2026-02-01T00:00:00Z"), ts("2027-02-01T00:00:00Z"))
        );
        let q4 = Period::parse("2027-Q4").expect("valid");
        assert_eq!(
            q4.bounds(&cal),
            (ts("2026-11-01T00:00:00Z"), ts("2027-02-01T00:00:00Z"))
        );
    }

    #[test]
    fn the_current_period_starts_where_its_to_date_window_starts() {
        let cal = Calendar::new("Europe/Berlin", 4).expect("calendar");
        for t in [
            ts("2026-11-27T12:00:00Z"),
            ts("2026-03-31T23:30:00Z"),
            ts("2027-01-01T00:00:00Z"),
        ] {
            for k in PeriodType::ALL {
                let p = Period::containing(k, t, &cal);
                assert_eq!(p.bounds(&cal).0, cal.start(k.window(), t), "{p} at {t}");
                assert!(p.bounds(&cal).1 > t);
            }
        }
    }
}
