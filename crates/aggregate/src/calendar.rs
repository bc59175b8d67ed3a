//! Windows and the fiscal calendar: pure functions from an instant to the start of each window.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

/// Number of windows every windowed metric is kept for.
pub const WINDOWS: usize = 17;

/// Windows ending now (rolling and to-date); the others end before now.
pub const CURRENT: usize = 9;

/// A window of time in the configured calendar: rolling (`1h` … `30d`) or to-date, both
/// ending now; a closed period (`yesterday` … `last_year`); or the previous week, month or
/// quarter up to the same point as the current one (`last_quarter_to_date`: as far into last
/// quarter as `qtd` is into this one, by elapsed share).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    H1,
    H24,
    D7,
    D30,
    Today,
    Wtd,
    Mtd,
    Qtd,
    Ytd,
    Yesterday,
    LastWeek,
    LastMonth,
    LastQuarter,
    LastYear,
    LastWeekToDate,
    LastMonthToDate,
    LastQuarterToDate,
}

/// The to-date windows that have a same-point window, in the order of
/// [`Window::LastWeekToDate`] and the next two.
pub const SAME_POINT: [(Window, Window); 3] = [
    (Window::Wtd, Window::LastWeekToDate),
    (Window::Mtd, Window::LastMonthToDate),
    (Window::Qtd, Window::LastQuarterToDate),
];

impl Window {
    pub const ALL: [Window; WINDOWS] = [
        Window::H1,
        Window::H24,
        Window::D7,
        Window::D30,
        Window::Today,
        Window::Wtd,
        Window::Mtd,
        Window::Qtd,
        Window::Ytd,
        Window::Yesterday,
        Window::LastWeek,
        Window::LastMonth,
        Window::LastQuarter,
        Window::LastYear,
        Window::LastWeekToDate,
        Window::LastMonthToDate,
        Window::LastQuarterToDate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Window::H1 => "1h",
            Window::H24 => "24h",
            Window::D7 => "7d",
            Window::D30 => "30d",
            Window::Today => "today",
            Window::Wtd => "wtd",
            Window::Mtd => "mtd",
            Window::Qtd => "qtd",
            Window::Ytd => "ytd",
            Window::Yesterday => "yesterday",
            Window::LastWeek => "last_week",
            Window::LastMonth => "last_month",
            Window::LastQuarter => "last_quarter",
            Window::LastYear => "last_year",
            Window::LastWeekToDate => "last_week_to_date",
            Window::LastMonthToDate => "last_month_to_date",
            Window::LastQuarterToDate => "last_quarter_to_date",
        }
    }

    pub fn from_label(s: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.label() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Length of a rolling window in seconds; `None` for the others.
    pub fn rolling_seconds(self) -> Option<i64> {
        match self {
            Window::H1 => Some(3_600),
            Window::H24 => Some(86_400),
            Window::D7 => Some(7 * 86_400),
            Window::D30 => Some(30 * 86_400),
            _ => None,
        }
    }

    /// Whether the window ends now (rolling and to-date windows).
    pub fn is_current(self) -> bool {
        self.index() < CURRENT
    }

    /// Whether the window is the previous period up to the same point as the current one.
    /// Only bookings, deals won and activities are published for these windows.
    pub fn is_same_point(self) -> bool {
        self >= Window::LastWeekToDate
    }

    /// The windows every windowed family is published for: all but the same-point ones.
    pub fn periods() -> impl Iterator<Item = Window> {
        Window::ALL.into_iter().filter(|w| !w.is_same_point())
    }

    /// The closed period before the current one of a to-date window.
    fn previous(self) -> Option<Window> {
        match self {
            Window::Today => Some(Window::Yesterday),
            Window::Wtd => Some(Window::LastWeek),
            Window::Mtd => Some(Window::LastMonth),
            Window::Qtd => Some(Window::LastQuarter),
            Window::Ytd => Some(Window::LastYear),
            _ => None,
        }
    }
}

/// How far the previous period reaches at the same point as the current one: for a current
/// period of `cur` seconds started at `since` and a previous one of `prev` seconds started at
/// `prev_lo`, the previous period counts up to `prev_lo + floor((now - since) × prev / cur)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SamePoint {
    pub since: i64,
    pub cur: i64,
    pub prev_lo: i64,
    pub prev: i64,
}

impl SamePoint {
    /// Last second of the previous period counted at `now`.
    pub fn hi(&self, now: i64) -> i64 {
        let elapsed = (now - self.since).max(0);
        // Periods are seconds long, so the product fits 64 bits; 128-bit division, far
        // slower, is left for a product that would not.
        if let Some(r) = elapsed.checked_mul(self.prev) {
            return self.prev_lo + r / self.cur.max(1);
        }
        let elapsed = i128::from(elapsed);
        let reach = elapsed * i128::from(self.prev) / i128::from(self.cur.max(1));
        saturate(i128::from(self.prev_lo) + reach)
    }

    /// The first second (at or after the current period's start) at which a fact at `ts` of
    /// the previous period is counted.
    pub fn reaches(&self, ts: i64) -> i64 {
        let d = (ts - self.prev_lo).max(0);
        let p = self.prev.max(1);
        // As in `hi`: 64 bits unless the product would not fit them.
        if let Some(n) = d.checked_mul(self.cur).and_then(|n| n.checked_add(p - 1)) {
            return self.since + n / p;
        }
        let d = i128::from(d);
        let (c, p) = (i128::from(self.cur), i128::from(self.prev.max(1)));
        let e = (d * c + p - 1) / p;
        saturate(i128::from(self.since) + e)
    }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// The configured calendar is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/Berlin)")]
    UnknownTimeZone(String),
    #[error("fiscal_year_start_month must be within 1..=12, got {0}")]
    FiscalMonth(u32),
    #[error("consistency_weeks must be within 2..=104, got {0}")]
    ConsistencySamples(u32),
}

/// Time zone and fiscal year; weeks start on Monday.
#[derive(Debug, Clone, Copy)]
pub struct Calendar {
    tz: Tz,
    fiscal_start_month: u32,
    /// Complete weeks a rep's consistency is measured over.
    consistency_weeks: u32,
    hours: Grid,
}

/// Where buckets of time start: every `step` seconds from `phase` (Unix seconds modulo
/// `step`).
///
/// A calendar's hours are local hours, not UTC ones, so that an hour bucket never straddles a
/// local midnight, also where the offset from UTC is not a whole number of hours (India +5:30,
/// Nepal +5:45). Where summer time moves the offset by half an hour (Lord Howe Island) no grid
/// of whole hours fits both offsets, and the step is half an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub step: i64,
    pub phase: i64,
}

impl Grid {
    pub const MINUTES: Grid = Grid { step: 60, phase: 0 };
    pub const UTC_HOURS: Grid = Grid {
        step: 3_600,
        phase: 0,
    };

    /// The grid of `tz`'s local hours, from its offsets over the years around now (the zone
    /// database's offsets of earlier centuries include local mean times of odd seconds).
    fn hours_of(tz: Tz) -> Grid {
        use chrono::Offset;
        let offsets = (2015..=2040)
            .flat_map(|y| (1..=12).map(move |m| (y, m)))
            .map(|(y, m)| {
                let at = NaiveDate::from_ymd_opt(y, m, 1)
                    .and_then(|d| d.and_hms_opt(12, 0, 0))
                    .unwrap_or_default();
                // Local midnights fall `-offset` seconds after a UTC midnight.
                i64::from(-tz.offset_from_utc_datetime(&at).fix().local_minus_utc())
            });
        let mut step = 3_600;
        let mut first = None;
        for o in offsets {
            let f = *first.get_or_insert(o);
            step = gcd(step, (o - f).abs());
        }
        Grid {
            step,
            phase: first.unwrap_or(0).rem_euclid(step),
        }
    }

    /// The start of the grid's bucket holding second `t`.
    pub fn start(&self, t: i64) -> i64 {
        t - (t - self.phase).rem_euclid(self.step)
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The first week (see [`Calendar::week_index`]) a rep hired on `d` works in full: the week of
/// `d` if it is a Monday, else the next.
pub fn first_full_week(d: NaiveDate) -> i64 {
    let days = i64::from(d.num_days_from_ce());
    let week = (days - 1 - i64::from(d.weekday().num_days_from_monday())).div_euclid(7);
    week + i64::from(d.weekday().num_days_from_monday() != 0)
}

/// The first day of the period `n` periods after (or before) the one of to-date window `w`
/// starting on `first`.
fn step(w: Window, first: NaiveDate, n: i32) -> NaiveDate {
    let months = |k: i32| {
        let m = chrono::Months::new(k.unsigned_abs());
        if k >= 0 {
            first.checked_add_months(m)
        } else {
            first.checked_sub_months(m)
        }
        .unwrap_or(first)
    };
    match w {
        Window::Today => first + Duration::days(i64::from(n)),
        Window::Wtd => first + Duration::days(7 * i64::from(n)),
        Window::Mtd => months(n),
        Window::Qtd => months(3 * n),
        _ => months(12 * n),
    }
}

/// Complete weeks a rep's consistency is measured over unless configured otherwise.
pub const CONSISTENCY_WEEKS: u32 = 12;

/// Fewest complete weeks whose weekly sums are kept: enough to cover last quarter whole
/// (14 weeks touch a quarter) until the end of the current one (13 more).
pub const KEPT_WEEKS: usize = 27;

/// Where each window starts and ends at one instant. A fact at second `t` is in window `w`
/// when `lo[w] <= t <= hi[w]`; rolling windows cover the `len` seconds ending at `now`, so a fact
/// leaves `1h` exactly one hour after it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub now: i64,
    pub lo: [i64; WINDOWS],
    /// Last second of each window: `now` for the current ones.
    pub hi: [i64; WINDOWS],
    /// How far each same-point window reaches (in the order of [`SAME_POINT`]).
    pub same: [SamePoint; SAME_POINT.len()],
    /// Earliest start among the windows and the weeks of consistency: older facts can never
    /// be counted again.
    pub horizon: i64,
    /// Earliest start among the windows other than `ytd` and `last_year`: before it, facts
    /// need not be told apart within their fiscal year (activities fold their hours there).
    pub hourly_since: i64,
    /// The current local week (see [`Calendar::week_index`]) and when the next one starts.
    pub week: i64,
    pub next_week: i64,
    /// Complete weeks of consistency (the configured number).
    pub weeks: usize,
    /// Complete weeks whose weekly sums are kept: those of consistency, and at least
    /// [`KEPT_WEEKS`] (last quarter's and this quarter's weeks, for weekly bookings).
    pub kept: usize,
    /// The calendar's local hours.
    pub hours: Grid,
}

/// The local weeks kept at one clock, each with its start: the week of a second found without a
/// time zone lookup.
#[derive(Debug, Clone, Default)]
pub struct Weeks {
    /// Number of the first week.
    first: i64,
    /// Start of each week from `first`, and of the week after the last.
    starts: Vec<i64>,
}

impl Weeks {
    /// [`Calendar::week_index`] of `t`, when `t` is in one of the weeks; `None` otherwise.
    pub fn week_of(&self, t: i64) -> Option<i64> {
        let (lo, hi) = (*self.starts.first()?, *self.starts.last()?);
        if t < lo || t >= hi {
            return None;
        }
        // A week is 7 days but for a summer-time change in it: a guess from the first start
        // is off by one week at most, near a week's start.
        let guess = ((t - lo) / (7 * 86_400)) as usize;
        let mut i = guess.min(self.starts.len() - 2);
        while i > 0 && t < self.starts[i] {
            i -= 1;
        }
        while t >= self.starts[i + 1] {
            i += 1;
        }
        Some(self.first + i as i64)
    }
}

impl Calendar {
    pub fn new(time_zone: &str, fiscal_year_start_month: u32) -> Result<Calendar, CalendarError> {
        let tz: Tz = time_zone
            .parse()
            .map_err(|_| CalendarError::UnknownTimeZone(time_zone.to_owned()))?;
        if !(1..=12).contains(&fiscal_year_start_month) {
            return Err(CalendarError::FiscalMonth(fiscal_year_start_month));
        }
        Ok(Calendar {
            tz,
            fiscal_start_month: fiscal_year_start_month,
            consistency_weeks: CONSISTENCY_WEEKS,
            hours: Grid::hours_of(tz),
        })
    }

    pub fn utc() -> Calendar {
        Calendar {
            tz: Tz::UTC,
            fiscal_start_month: 1,
            consistency_weeks: CONSISTENCY_WEEKS,
            hours: Grid::UTC_HOURS,
        }
    }

    /// The same calendar, measuring consistency over `weeks` complete weeks.
    pub fn with_consistency_weeks(self, weeks: u32) -> Result<Calendar, CalendarError> {
        if !(2..=104).contains(&weeks) {
            return Err(CalendarError::ConsistencySamples(weeks));
        }
        Ok(Calendar {
            consistency_weeks: weeks,
            ..self
        })
    }

    /// Number of the local week (Monday to Sunday) containing `t`: consecutive weeks have
    /// consecutive numbers.
    pub fn week_index(&self, t: i64) -> i64 {
        let d = self.local_date(t);
        let monday =
            i64::from(d.num_days_from_ce()) - i64::from(d.weekday().num_days_from_monday());
        // Day 1 of the common era is a Monday.
        (monday - 1).div_euclid(7)
    }

    /// [`Self::week_index`] of `t`, without a time zone lookup when `t` is in the current week
    /// of `b` (most records are).
    pub fn week_at(&self, t: i64, b: &Bounds) -> i64 {
        if b.lo[Window::Wtd.index()] <= t && t < b.next_week {
            b.week
        } else {
            self.week_index(t)
        }
    }

    /// The starts of the weeks whose weekly sums are kept at `b`, for [`Weeks::week_of`].
    pub fn weeks(&self, b: &Bounds) -> Weeks {
        let first = b.week - b.kept as i64;
        Weeks {
            first,
            starts: (first..=b.week + 2).map(|w| self.week_start(w)).collect(),
        }
    }

    /// Unix seconds of the local midnight that starts week `week` (see [`Self::week_index`]).
    pub fn week_start(&self, week: i64) -> i64 {
        let days = i32::try_from(week * 7 + 1).unwrap_or(1);
        self.local_midnight(NaiveDate::from_num_days_from_ce_opt(days).unwrap_or_default())
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    pub fn fiscal_start_month(&self) -> u32 {
        self.fiscal_start_month
    }

    /// Start (Unix seconds) of window `w` at instant `now` (Unix seconds).
    pub fn start(&self, w: Window, now: i64) -> i64 {
        self.range(w, now).0
    }

    /// First and last second (Unix seconds) of window `w` at instant `now`.
    pub fn range(&self, w: Window, now: i64) -> (i64, i64) {
        let b = self.bounds(now);
        (b.lo[w.index()], b.hi[w.index()])
    }

    /// First day of the period of to-date window `w` containing the local date `local`.
    fn first_day(&self, w: Window, local: NaiveDate) -> NaiveDate {
        match w {
            Window::Today => local,
            Window::Wtd => {
                local - Duration::days(i64::from(local.weekday().num_days_from_monday()))
            }
            Window::Mtd => local.with_day(1).unwrap_or(local),
            Window::Qtd => {
                let (y, m) = self.fiscal_quarter_start(local.year(), local.month());
                NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(local)
            }
            _ => {
                let (y, m) = self.fiscal_year_start(local.year(), local.month());
                NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(local)
            }
        }
    }

    pub fn bounds(&self, now: i64) -> Bounds {
        let mut lo = [0; WINDOWS];
        let mut hi = [now; WINDOWS];
        let local = self.local_date(now);
        for w in Window::ALL.into_iter().take(CURRENT) {
            lo[w.index()] = match w.rolling_seconds() {
                Some(len) => now - len + 1,
                None => self.local_midnight(self.first_day(w, local)),
            };
        }
        let mut same = [SamePoint::default(); SAME_POINT.len()];
        for w in [
            Window::Today,
            Window::Wtd,
            Window::Mtd,
            Window::Qtd,
            Window::Ytd,
        ] {
            let first = self.first_day(w, local);
            let since = lo[w.index()];
            let prev_lo = self.local_midnight(step(w, first, -1));
            if let Some(closed) = w.previous() {
                lo[closed.index()] = prev_lo;
                hi[closed.index()] = since - 1;
            }
            if let Some(k) = SAME_POINT.iter().position(|(cur, _)| *cur == w) {
                let until = self.local_midnight(step(w, first, 1));
                same[k] = SamePoint {
                    since,
                    cur: until - since,
                    prev_lo,
                    prev: since - prev_lo,
                };
                let sp = SAME_POINT[k].1.index();
                lo[sp] = prev_lo;
                hi[sp] = same[k].hi(now);
            }
        }
        let week = self.week_index(now);
        let weeks = self.consistency_weeks as usize;
        let first_week = self.week_start(week - weeks as i64);
        let horizon = lo.iter().copied().min().unwrap_or(now).min(first_week);
        let hourly_since = Window::ALL
            .into_iter()
            .filter(|w| !matches!(w, Window::Ytd | Window::LastYear))
            .map(|w| lo[w.index()])
            .min()
            .unwrap_or(now);
        Bounds {
            now,
            lo,
            hi,
            same,
            horizon,
            hourly_since,
            week,
            next_week: self.week_start(week + 1),
            weeks,
            kept: weeks.max(KEPT_WEEKS),
            hours: self.hours,
        }
    }

    pub fn local_date(&self, t: i64) -> NaiveDate {
        self.tz
            .timestamp_opt(t, 0)
            .single()
            .map(|d| d.date_naive())
            .unwrap_or_default()
    }

    /// First month (year, month) of the fiscal year containing the given calendar month.
    pub fn fiscal_year_start(&self, year: i32, month: u32) -> (i32, u32) {
        if month >= self.fiscal_start_month {
            (year, self.fiscal_start_month)
        } else {
            (year - 1, self.fiscal_start_month)
        }
    }

    /// First month (year, month) of the fiscal quarter containing the given calendar month.
    pub fn fiscal_quarter_start(&self, year: i32, month: u32) -> (i32, u32) {
        let since = (month + 12 - self.fiscal_start_month) % 12;
        let start = (self.fiscal_start_month - 1 + since - since % 3) % 12 + 1;
        if start > month {
            (year - 1, start)
        } else {
            (year, start)
        }
    }

    /// A number for the fiscal quarter containing `d` that grows by one from each quarter to
    /// the next, so that two dates' quarters compare as the quarters do.
    pub fn fiscal_quarter_index(&self, d: NaiveDate) -> i32 {
        let months = d.year() * 12 + d.month0() as i32 - (self.fiscal_start_month as i32 - 1);
        months.div_euclid(3)
    }

    /// Names of the fiscal quarter and calendar month containing `d`, as sales operations
    /// names them (`2026-Q4`, `2026-11`): a fiscal year is named after the year it ends in.
    pub fn period_names(&self, d: NaiveDate) -> (String, String) {
        let fsm = self.fiscal_start_month;
        let start_year = if d.month() >= fsm {
            d.year()
        } else {
            d.year() - 1
        };
        let fy = if fsm == 1 { start_year } else { start_year + 1 };
        let q = (d.month() + 12 - fsm) % 12 / 3 + 1;
        (
            format!("{fy}-Q{q}"),
            format!("{}-{:02}", d.year(), d.month()),
        )
    }

    /// Unix seconds of local midnight; where a DST change skips midnight, the first instant
    /// of that day.
    pub fn local_midnight(&self, d: NaiveDate) -> i64 {
        let midnight: NaiveDateTime = d.and_hms_opt(0, 0, 0).unwrap_or_default();
        (0..=3)
            .find_map(|h| {
                self.tz
                    .from_local_datetime(&(midnight + Duration::hours(h)))
                    .earliest()
            })
            .map(|t| t.timestamp())
            .unwrap_or_else(|| midnight.and_utc().timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("valid test time")
            .timestamp()
    }

    /// The kept weeks give every second in them the week the time zone gives it, across
    /// summer-time changes, and no week outside them.
    #[test]
    fn kept_weeks_match_the_time_zone() {
        for zone in [
            "UTC",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kolkata",
        ] {
            let cal = Calendar::new(zone, 1).expect("valid zone");
            let b = cal.bounds(ts("2026-11-04T10:00:00Z"));
            let weeks = cal.weeks(&b);
            let first = cal.week_start(b.week - b.kept as i64);
            let end = cal.week_start(b.week + 2);
            // Every 10 minutes and the seconds either side of each week's start.
            let mut times: Vec<i64> = (first - 3_600..end + 3_600).step_by(600).collect();
            for w in b.week - b.kept as i64..=b.week + 2 {
                let s = cal.week_start(w);
                times.extend([s - 1, s, s + 1]);
            }
            for t in times {
                let want = (first..end).contains(&t).then(|| cal.week_index(t));
                assert_eq!(weeks.week_of(t), want, "{zone} at {t}");
            }
        }
    }

    #[test]
    fn local_hours_start_at_every_local_midnight() {
        for (zone, step, midnight) in [
            ("UTC", 3_600, "2026-11-27T00:00:00Z"),
            ("Europe/Berlin", 3_600, "2026-11-27T00:00:00+01:00"),
            ("Asia/Kolkata", 3_600, "2026-11-27T00:00:00+05:30"),
            ("Asia/Kathmandu", 3_600, "2026-11-27T00:00:00+05:45"),
            ("America/St_Johns", 3_600, "2026-07-01T00:00:00-02:30"),
            ("America/St_Johns", 3_600, "2026-11-27T00:00:00-03:30"),
            // Summer time moves the clock by half an hour: +10:30 in winter, +11 in summer.
            ("Australia/Lord_Howe", 1_800, "2026-07-01T00:00:00+10:30"),
            ("Australia/Lord_Howe", 1_800, "2026-11-27T00:00:00+11:00"),
        ] {
            let cal = Calendar::new(zone, 1).expect("a valid calendar");
            let grid = cal.bounds(ts(midnight)).hours;
            assert_eq!(grid.step, step, "{zone}");
            let m = ts(midnight);
            assert_eq!(grid.start(m), m, "{zone}: a bucket starts at {midnight}");
            assert_eq!(grid.start(m - 1), m - step, "{zone}");
            assert_eq!(grid.start(m + step - 1), m, "{zone}");
        }
    }

    #[test]
    fn rolling_window_excludes_a_fact_exactly_one_length_old() {
        let cal = Calendar::utc();
        let now = ts("2026-11-27T12:00:00Z");
        assert_eq!(cal.start(Window::H1, now), now - 3599);
    }

    #[test]
    fn to_date_windows_in_utc() {
        let cal = Calendar::utc();
        let now = ts("2026-11-27T12:34:56Z"); // a Friday
        assert_eq!(cal.start(Window::Today, now), ts("2026-11-27T00:00:00Z"));
        assert_eq!(cal.start(Window::Wtd, now), ts("2026-11-23T00:00:00Z"));
        assert_eq!(cal.start(Window::Mtd, now), ts("2026-11-01T00:00:00Z"));
        assert_eq!(cal.start(Window::Qtd, now), ts("2026-10-01T00:00:00Z"));
        assert_eq!(cal.start(Window::Ytd, now), ts("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn fiscal_year_starting_in_february() {
        let cal = Calendar::new("UTC", 2).expect("valid calendar");
        let jan = ts("2026-01-15T00:00:00Z");
        assert_eq!(cal.start(Window::Ytd, jan), ts("2025-02-01T00:00:00Z"));
        assert_eq!(cal.start(Window::Qtd, jan), ts("2025-11-01T00:00:00Z"));
        let may = ts("2026-05-15T00:00:00Z");
        assert_eq!(cal.start(Window::Qtd, may), ts("2026-05-01T00:00:00Z"));
        assert_eq!(cal.start(Window::Ytd, may), ts("2026-02-01T00:00:00Z"));
    }

    #[test]
    fn local_time_zone_moves_day_boundaries() {
        let cal = Calendar::new("America/New_York", 1).expect("valid calendar");
        // 03:00 UTC on the 27th is still the 26th in New York (UTC-5).
        let now = ts("2026-11-27T03:00:00Z");
        assert_eq!(cal.start(Window::Today, now), ts("2026-11-26T05:00:00Z"));
    }

    #[test]
    fn fiscal_quarters_follow_the_fiscal_year() {
        let cal = Calendar::new("UTC", 2).expect("valid calendar");
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        assert_eq!(
            cal.fiscal_quarter_index(d("2026-04-30")),
            cal.fiscal_quarter_index(d("2026-02-01"))
        );
        assert_eq!(
            cal.fiscal_quarter_index(d("2026-05-01")),
            cal.fiscal_quarter_index(d("2026-04-30")) + 1
        );
        assert_eq!(
            cal.fiscal_quarter_index(d("2026-02-01")),
            cal.fiscal_quarter_index(d("2026-01-31")) + 1
        );
        assert_eq!(
            cal.period_names(d("2026-01-15")),
            ("2026-Q4".to_owned(), "2026-01".to_owned())
        );
        assert_eq!(
            Calendar::utc().period_names(d("2026-11-27")),
            ("2026-Q4".to_owned(), "2026-11".to_owned())
        );
    }

    #[test]
    fn weeks_are_numbered_from_local_mondays() {
        let cal = Calendar::new("America/New_York", 1).expect("valid calendar");
        // Sunday 29 November 2026, 23:00 in New York, is Monday 04:00 UTC.
        let sunday_night = ts("2026-11-30T04:00:00Z");
        let monday = ts("2026-11-30T05:00:00Z");
        assert_eq!(cal.week_index(monday), cal.week_index(sunday_night) + 1);
        assert_eq!(cal.week_start(cal.week_index(monday)), monday);
        assert_eq!(
            cal.week_start(cal.week_index(monday) - 1),
            ts("2026-11-23T05:00:00Z")
        );
        let b = cal.bounds(monday + 3_600);
        assert_eq!(cal.week_at(monday, &b), b.week);
        assert_eq!(cal.week_at(monday - 1, &b), b.week - 1);
        assert_eq!(b.next_week, ts("2026-12-07T05:00:00Z"));
        assert_eq!(cal.week_at(b.next_week, &b), b.week + 1);
        // The horizon reaches back to last year's start, or to the first of the consistency
        // weeks when they reach further.
        let b = cal.bounds(ts("2027-01-05T12:00:00Z"));
        assert_eq!(b.weeks, 12);
        assert_eq!(b.horizon, ts("2026-01-01T05:00:00Z"));
        let long = cal.with_consistency_weeks(104).expect("valid");
        let b = long.bounds(ts("2027-01-05T12:00:00Z"));
        assert_eq!(b.horizon, cal.week_start(b.week - 104));
        assert!(cal.with_consistency_weeks(1).is_err());
    }

    #[test]
    fn closed_periods_end_where_the_current_ones_start() {
        let cal = Calendar::new("UTC", 2).expect("valid calendar");
        let now = ts("2026-05-13T09:30:00Z"); // a Wednesday in fiscal Q2 (May to July)
        let r = |w| cal.range(w, now);
        assert_eq!(
            r(Window::Yesterday),
            (ts("2026-05-12T00:00:00Z"), ts("2026-05-12T23:59:59Z"))
        );
        assert_eq!(
            r(Window::LastWeek),
            (ts("2026-05-04T00:00:00Z"), ts("2026-05-10T23:59:59Z"))
        );
        assert_eq!(
            r(Window::LastMonth),
            (ts("2026-04-01T00:00:00Z"), ts("2026-04-30T23:59:59Z"))
        );
        assert_eq!(
            r(Window::LastQuarter),
            (ts("2026-02-01T00:00:00Z"), ts("2026-04-30T23:59:59Z"))
        );
        assert_eq!(
            r(Window::LastYear),
            (ts("2025-02-01T00:00:00Z"), ts("2026-01-31T23:59:59Z"))
        );
        assert_eq!(r(Window::Qtd), (ts("2026-05-01T00:00:00Z"), now));
    }

    #[test]
    fn same_point_windows_reach_as_far_by_elapsed_share() {
        let cal = Calendar::utc();
        // Half of November (30 days) is 15 days; half of October (31 days) is 15.5 days.
        let now = ts("2026-11-16T00:00:00Z");
        assert_eq!(
            cal.range(Window::LastMonthToDate, now),
            (ts("2026-10-01T00:00:00Z"), ts("2026-10-16T12:00:00Z"))
        );
        // Three days into the week: three days into last week.
        let now = ts("2026-11-26T00:00:00Z");
        assert_eq!(
            cal.range(Window::LastWeekToDate, now),
            (ts("2026-11-16T00:00:00Z"), ts("2026-11-19T00:00:00Z"))
        );
        // The first second of a quarter counts the first second of the last.
        let now = ts("2026-10-01T00:00:00Z");
        assert_eq!(
            cal.range(Window::LastQuarterToDate, now),
            (ts("2026-07-01T00:00:00Z"), ts("2026-07-01T00:00:00Z"))
        );
        // The last second of a quarter counts the last quarter but for its rounding.
        let end = ts("2026-12-31T23:59:59Z");
        let (lo, hi) = cal.range(Window::LastQuarterToDate, end);
        assert_eq!(lo, ts("2026-07-01T00:00:00Z"));
        assert!(hi <= ts("2026-09-30T23:59:59Z") && hi > ts("2026-09-30T23:59:00Z"));
    }

    #[test]
    fn a_fact_is_reached_at_the_first_second_the_same_point_counts_it() {
        let cal = Calendar::new("Europe/Berlin", 1).expect("valid calendar");
        for now in [ts("2026-11-03T10:00:00Z"), ts("2027-03-30T10:00:00Z")] {
            let b = cal.bounds(now);
            for p in b.same {
                for d in [0, 1, 59, 3_600, p.prev / 3, p.prev / 2 + 7, p.prev - 1] {
                    let fact = p.prev_lo + d;
                    let at = p.reaches(fact);
                    assert!(p.hi(at) >= fact, "{p:?} {d}");
                    assert!(at == p.since || p.hi(at - 1) < fact, "{p:?} {d}");
                }
            }
        }
    }

    proptest::proptest! {
        /// The 64-bit arithmetic gives what exact 128-bit arithmetic gives, up to products
        /// that need the wide path.
        #[test]
        fn same_point_matches_wide_arithmetic(
            since in -4_000_000_000i64..4_000_000_000,
            cur in 1i64..40_000_000_000,
            prev in 1i64..40_000_000_000,
            back in 0i64..40_000_000_000,
            off in -1_000i64..80_000_000_000,
        ) {
            let p = SamePoint { since, cur, prev_lo: since - back, prev };
            let wide_hi = {
                let e = i128::from((since + off - p.since).max(0));
                p.prev_lo as i128 + e * i128::from(prev) / i128::from(cur)
            };
            let ts = p.prev_lo + off;
            let wide_reaches = {
                let d = i128::from((ts - p.prev_lo).max(0));
                i128::from(since) + (d * i128::from(cur) + i128::from(prev) - 1) / i128::from(prev)
            };
            // Seconds far past any calendar saturate instead; not compared here.
            let fits = |v: i128| v.unsigned_abs() < u128::from(u64::MAX / 4);
            proptest::prop_assume!(fits(wide_hi) && fits(wide_reaches));
            proptest::prop_assert_eq!(i128::from(p.hi(since + off)), wide_hi);
            proptest::prop_assert_eq!(i128::from(p.reaches(ts)), wide_reaches);
        }
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(Calendar::new("Mars/Olympus", 1).is_err());
        assert!(Calendar::new("UTC", 13).is_err());
    }
}
