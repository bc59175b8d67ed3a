//! The configured calendar end to end: the deals and targets services run in a time zone
//! other than UTC with a fiscal year that does not start in January. Won deals placed a minute
//! either side of every to-date boundary (local midnight today, Monday, the 1st of the month,
//! the fiscal quarter and the fiscal year) must land in exactly the windows the calendar says,
//! and the targets service must name and measure the fiscal periods the same way.
//!
//! The boundaries are recomputed here from the time zone database, independently of the
//! services' calendar code. Each deal's amount is a distinct power of two, so every window's
//! bookings say exactly which deals it counted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{Datelike, Months, NaiveDate, SecondsFormat, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use salespulse_e2e::*;
use serde_json::json;

const DAY: i64 = 86_400;
/// Local times within this many seconds of midnight are avoided: no boundary passes while the
/// test runs, and no deal lies near a rolling window's edge even across a DST change.
const MARGIN: i64 = 90 * 60;

fn rfc(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .expect("time")
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// First instant of local date `d` (a DST change may skip midnight).
fn midnight(tz: Tz, d: NaiveDate) -> i64 {
    let m = d.and_hms_opt(0, 0, 0).expect("midnight");
    (0..=3)
        .find_map(|h| {
            tz.from_local_datetime(&(m + chrono::Duration::hours(h)))
                .earliest()
        })
        .expect("a local day has a first instant")
        .timestamp()
}

/// The calendar under test: a time zone far from both day boundaries now, and a fiscal year
/// whose current quarter is its third and starts off the calendar quarters.
struct Setup {
    tz: Tz,
    fiscal_start: u32,
    today: NaiveDate,
}

fn setup(now: i64) -> Setup {
    let tz = ["Asia/Kolkata", "Pacific/Auckland", "America/Los_Angeles"]
        .iter()
        .map(|n| n.parse::<Tz>().expect("known zone"))
        .find(|tz| {
            let local = tz.timestamp_opt(now, 0).single().expect("time");
            let secs = i64::from(local.num_seconds_from_midnight());
            secs > MARGIN && secs < DAY - MARGIN
        })
        .expect("one of three zones hours apart is far from midnight");
    let today = tz
        .timestamp_opt(now, 0)
        .single()
        .expect("time")
        .date_naive();
    let m = today.month();
    // A quarter starting this month, or last month when this month opens a calendar quarter;
    // the fiscal year began six or seven months before.
    let fiscal_start = if m % 3 == 1 {
        (m + 4) % 12 + 1
    } else {
        (m + 5) % 12 + 1
    };
    Setup {
        tz,
        fiscal_start,
        today,
    }
}

impl Setup {
    fn fiscal_year_start(&self) -> NaiveDate {
        let y = if self.today.month() >= self.fiscal_start {
            self.today.year()
        } else {
            self.today.year() - 1
        };
        NaiveDate::from_ymd_opt(y, self.fiscal_start, 1).expect("date")
    }

    /// Start date and number (1–4) of the current fiscal quarter.
    fn fiscal_quarter(&self) -> (NaiveDate, u32) {
        let fy = self.fiscal_year_start();
        let mut start = fy;
        let mut n = 1;
        while start.checked_add_months(Months::new(3)).expect("date") <= self.today {
            start = start.checked_add_months(Months::new(3)).expect("date");
            n += 1;
        }
        (start, n)
    }

    /// A fiscal year is named after the calendar year it ends in.
    fn fiscal_year_name(&self) -> i32 {
        let fy = self.fiscal_year_start();
        let last = fy.checked_add_months(Months::new(12)).expect("date") - chrono::Days::new(1);
        last.year()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_periods_follow_the_time_zone_and_fiscal_year() {
    require_broker();
    let now = Utc::now().timestamp();
    let cal = setup(now);
    let tz = cal.tz;
    let fy_start = cal.fiscal_year_start();
    let (q_start, q_n) = cal.fiscal_quarter();
    let fy_name = cal.fiscal_year_name();
    let fy_label = format!("FY{fy_name}");
    let q_label = format!("{fy_name}-Q{q_n}");
    assert_eq!(q_n, 3, "the setup puts today in the third fiscal quarter");

    let topics = Topics::unique("fiscal");
    let group = format!("g-{}", topics.suffix);
    for name in ["deals", "targets"] {
        set_service_env(name, "SALESPULSE_CALENDAR__TIME_ZONE", tz.name());
        set_service_env(
            name,
            "SALESPULSE_CALENDAR__FISCAL_YEAR_START_MONTH",
            &cal.fiscal_start.to_string(),
        );
    }
    // Calendar time makes the elapsed share easy to recompute here.
    set_service_env("targets", "SALESPULSE_CALENDAR__BUSINESS_DAYS", "false");
    let (dport, tport) = (free_port(), free_port());
    let mut deals = Service::start("deals", &topics, dport, &group);
    let mut targets = Service::start("targets", &topics, tport, &group);
    deals.wait_ready(Duration::from_secs(60)).await;
    targets.wait_ready(Duration::from_secs(60)).await;

    // Local boundaries, recomputed here.
    let today = midnight(tz, cal.today);
    let monday = midnight(
        tz,
        cal.today - chrono::Days::new(u64::from(cal.today.weekday().num_days_from_monday())),
    );
    let month = midnight(tz, cal.today.with_day(1).expect("date"));
    let quarter = midnight(tz, q_start);
    let year = midnight(tz, fy_start);
    let next_year = midnight(
        tz,
        fy_start.checked_add_months(Months::new(12)).expect("date"),
    );
    let next_quarter = midnight(
        tz,
        q_start.checked_add_months(Months::new(3)).expect("date"),
    );
    // Won deals a minute either side of each boundary, and inside and outside the rolling
    // windows; the last one is older than every window and counts nowhere.
    let closes = [
        today + 60,
        today - 60,
        monday - 60,
        month + 60,
        month - 60,
        quarter + 60,
        quarter - 60,
        year + 60,
        now - 23 * 3_600,
        now - 7 * DAY - 3_600,
        year - 60,
    ];
    let p = producer();
    for (i, closed) in closes.iter().enumerate() {
        let deal = format!("fiscal-{i}");
        let v = json!({"event_id": format!("fe{i}"), "deal_id": deal, "rep_id": "rep-f",
            "team_id": "team-f", "stage": "closed_won", "amount": (1u64 << i).to_string(),
            "currency": "USD", "created_at": rfc(closed - DAY), "occurred_at": rfc(*closed)});
        produce_json(&p, &topics.deals, &deal, &v).await;
    }
    let csv = format!(
        "scope,id,metric,kind,period,value,currency\n\
         org,org,bookings,,{fy_label},100000,USD\n\
         org,org,bookings,,{q_label},10000,USD\n"
    );
    let path = std::env::temp_dir().join(format!("{}-targets.csv", topics.suffix));
    std::fs::write(&path, csv).expect("csv written");
    let out = targets_import(&topics, &path)
        .output()
        .expect("import runs");
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What each window must hold: the deals closed between its start and now.
    let booked = |from: i64, t: i64| -> f64 {
        closes
            .iter()
            .enumerate()
            .filter(|(_, c)| **c >= from && **c <= t)
            .map(|(i, _)| (1u64 << i) as f64)
            .sum()
    };
    let windows = |t: i64| -> Vec<(&'static str, i64)> {
        vec![
            ("1h", t - 3_600 + 1),
            ("24h", t - DAY + 1),
            ("7d", t - 7 * DAY + 1),
            ("30d", t - 30 * DAY + 1),
            ("today", today),
            ("wtd", monday),
            ("mtd", month),
            ("qtd", quarter),
            ("ytd", year),
        ]
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (d_board, t_board) = loop {
        let t = Utc::now().timestamp();
        let d = parse_metrics(&deals.metrics().await);
        let tm = parse_metrics(&targets.metrics().await);
        let mut diffs = Vec::new();
        for (w, from) in windows(t) {
            let want = booked(from, t);
            let got = d
                .get(&metric_key("sales_org_bookings", &[("window", w)]))
                .copied()
                .unwrap_or(0.0);
            if got != want {
                diffs.push(format!(
                    "sales_org_bookings{{window={w}}}: got {got} ({got:b} as deals), want {want} ({:b})",
                    want as u64,
                    got = got as u64
                ));
            }
        }
        for (label, kind, from, to, target) in [
            (&fy_label, "year", year, next_year, 100_000.0),
            (&q_label, "quarter", quarter, next_quarter, 10_000.0),
        ] {
            let o = [
                ("metric", "bookings"),
                ("period", label.as_str()),
                ("period_type", kind),
            ];
            let attain = tm
                .get(&metric_key("sales_org_attainment_ratio", &o))
                .copied();
            let want = booked(from, t) / target;
            if attain.is_none_or(|a| (a - want).abs() > 1e-12) {
                diffs.push(format!(
                    "sales_org_attainment_ratio{o:?}: got {attain:?}, want {want}"
                ));
            }
            let share = tm
                .get(&metric_key(
                    "sales_period_elapsed_ratio",
                    &[("period", label.as_str()), ("period_type", kind)],
                ))
                .copied();
            let want = (t - from) as f64 / (to - from) as f64;
            if share.is_none_or(|s| (s - want).abs() > 2e-5) {
                diffs.push(format!(
                    "sales_period_elapsed_ratio{{period={label}}}: got {share:?}, want {want}"
                ));
            }
        }
        if diffs.is_empty() {
            break (d, tm);
        }
        assert!(
            Instant::now() < deadline,
            "{} ({}, fiscal year from month {}): windows and periods differ from the calendar:\n{}",
            tz.name(),
            cal.today,
            cal.fiscal_start,
            diffs.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let periods: BTreeMap<&str, f64> = [("year", &fy_label), ("quarter", &q_label)]
        .into_iter()
        .filter_map(|(k, l)| {
            t_board
                .get(&metric_key(
                    "sales_period_elapsed_ratio",
                    &[("period", l.as_str()), ("period_type", k)],
                ))
                .map(|v| (k, *v))
        })
        .collect();
    let ytd = d_board
        .get(&metric_key("sales_org_bookings", &[("window", "ytd")]))
        .copied()
        .unwrap_or_default();
    println!(
        "fiscal: {} ({}), fiscal year from month {} = {fy_label}, quarter {q_label}; \
         {} deals either side of local midnight, Monday, the month, the fiscal quarter and year: \
         all 9 windows hold exactly the deals in them (ytd {ytd}); elapsed {periods:?}; differences: 0",
        tz.name(),
        cal.today,
        cal.fiscal_start,
        closes.len()
    );
}
