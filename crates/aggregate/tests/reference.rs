//! Property tests: the incremental core against a naive recomputation of every metric from
//! the full list of records.

#![allow(clippy::needless_range_loop)] // the references index windows by number on purpose

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use salespulse_aggregate::{
    ActivitiesCore, Calendar, Contribution, DealsCore, Merger, Outcome, SubjectSeries,
};
use salespulse_decode::{ActivityEvent, Contract, DealEvent, ForecastCategory};

const N0: i64 = 1_795_780_800; // 2026-11-27T12:00:00Z

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Step {
    Deal(DealRec),
    Activity(ActRec),
    Roster(usize, Option<usize>),
    Tick(i64),
}

#[derive(Debug, Clone)]
struct DealRec {
    event: u32,
    deal: usize,
    rep: usize,
    team: Option<usize>,
    stage: u8,
    cents: i64,
    created: i64,
    occurred: i64,
    closed: Option<i64>,
    /// Expected close date, days after N0's date.
    expected: Option<i64>,
    category: Option<ForecastCategory>,
}

#[derive(Debug, Clone)]
struct ActRec {
    event: u32,
    rep: usize,
    team: Option<usize>,
    kind: u8,
    at: i64,
    duration: Option<i64>,
}

/// The roster's name, region and hiring date of a rep in a team: some reps have none.
fn rep_info(rep: usize, team: usize) -> (Option<String>, Option<String>, Option<NaiveDate>) {
    let name = rep.is_multiple_of(2).then(|| format!("Rep Number {rep}"));
    let region = (team != 1).then(|| format!("region-{}", team % 2));
    let hired_at = (!rep.is_multiple_of(3))
        .then(|| NaiveDate::from_ymd_opt(2025, 1 + (rep % 12) as u32, 1 + team as u32))
        .flatten();
    (name, region, hired_at)
}

fn rep(i: usize) -> String {
    format!("r{i}")
}
fn team(i: usize) -> String {
    format!("t{i}")
}

fn arb_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        (N0 - 3 * 3600..N0 + 120),
        (N0 - 40 * 86_400..N0 + 120),
        (N0 - 400 * 86_400..N0),
    ]
}

fn arb_category() -> impl Strategy<Value = Option<ForecastCategory>> {
    prop::option::weighted(0.3, prop::sample::select(ForecastCategory::ALL.to_vec()))
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => ((0u32..8, 0usize..6, 0usize..4, prop::option::weighted(0.2, 0usize..3), 0u8..6,
              0i64..2_000_000, arb_time(), 0i64..5 * 86_400, prop::option::weighted(0.5, 0i64..86_400)),
              (prop::option::weighted(0.8, -120i64..200), arb_category()))
            .prop_map(|((event, deal, rep, team, stage, cents, created, dt, closed), (expected, category))| Step::Deal(DealRec {
                event, deal, rep, team, stage, cents, created,
                occurred: created + dt,
                closed: closed.map(|c| created + c),
                expected,
                category,
            })),
        4 => (0u32..80, 0usize..4, prop::option::weighted(0.2, 0usize..3), 0u8..5, arb_time(),
              prop::option::weighted(0.5, 0i64..7_200))
            .prop_map(|(event, rep, team, kind, at, duration)| Step::Activity(ActRec { event, rep, team, kind, at, duration })),
        1 => (0usize..4, prop::option::weighted(0.8, 0usize..3)).prop_map(|(r, t)| Step::Roster(r, t)),
        // Now and then more than a week passes, past the activities' duplicate window.
        1 => prop_oneof![4 => 0i64..2 * 86_400, 1 => 3 * 86_400i64..9 * 86_400].prop_map(Step::Tick),
    ]
}

/// Flattens series into `key -> value` so that two sets compare as maps.
fn flatten(subjects: &[SubjectSeries], into: &mut BTreeMap<String, Decimal>) {
    for s in subjects {
        for x in &s.series {
            into.insert(
                format!(
                    "{}|{}|{}|{}|{}|{}",
                    x.scope.label(),
                    x.id(),
                    x.team.as_deref().unwrap_or(""),
                    x.metric.name(),
                    x.extra
                        .iter()
                        .flatten()
                        .map(|e| &**e)
                        .collect::<Vec<_>>()
                        .join(","),
                    x.window.map(|w| w.label()).unwrap_or("")
                ),
                x.value,
            );
        }
    }
}

/// The keys on which two boards differ, with both values.
fn differences(got: &BTreeMap<String, Decimal>, want: &BTreeMap<String, Decimal>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    keys.into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .map(|k| format!("{k}: got {:?}, want {:?}", got.get(k), want.get(k)))
        .collect()
}

/// Applies incremental changes: a subject's series replace all its earlier ones.
fn apply_changes(board: &mut BTreeMap<String, Decimal>, changes: &[SubjectSeries]) {
    for s in changes {
        let prefix = match &s.subject {
            salespulse_aggregate::Subject::Rep(r) => format!("rep|{r}|"),
            salespulse_aggregate::Subject::Team(t) => format!("team|{t}|"),
            salespulse_aggregate::Subject::Region(g) => format!("region|{g}|"),
            salespulse_aggregate::Subject::Org => "org|org|".to_owned(),
        };
        board.retain(|k, _| !k.starts_with(&prefix));
        flatten(std::slice::from_ref(s), board);
    }
}

const W: usize = 17;

const WINDOW_LABELS: [&str; W] = [
    "1h",
    "24h",
    "7d",
    "30d",
    "today",
    "wtd",
    "mtd",
    "qtd",
    "ytd",
    "yesterday",
    "last_week",
    "last_month",
    "last_quarter",
    "last_year",
    "last_week_to_date",
    "last_month_to_date",
    "last_quarter_to_date",
];

/// Windows from this index on are same-point windows: only bookings, deals won and
/// activities are published for them.
const SAME_POINT_FROM: usize = 14;

/// First and last second of each window at `now`, UTC calendar, fiscal year from January:
/// computed directly.
fn starts(now: i64) -> [(i64, i64); W] {
    let d = Utc
        .timestamp_opt(now, 0)
        .single()
        .expect("valid")
        .date_naive();
    let mid = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("valid").and_utc().timestamp();
    let ymd = |y: i32, m: u32| NaiveDate::from_ymd_opt(y, m, 1).expect("valid");
    let q_month = (d.month() - 1) / 3 * 3 + 1;
    let monday = d - chrono::Duration::days(i64::from(d.weekday().num_days_from_monday()));
    // (first day of the current period, of the previous one, of the next one)
    let month = |y: i32, m: i32| {
        ymd(
            y + (m - 1).div_euclid(12),
            ((m - 1).rem_euclid(12) + 1) as u32,
        )
    };
    let (y, m, qm) = (d.year(), d.month() as i32, q_month as i32);
    let periods = [
        (
            d,
            d - chrono::Duration::days(1),
            d + chrono::Duration::days(1),
        ),
        (
            monday,
            monday - chrono::Duration::days(7),
            monday + chrono::Duration::days(7),
        ),
        (month(y, m), month(y, m - 1), month(y, m + 1)),
        (month(y, qm), month(y, qm - 3), month(y, qm + 3)),
        (ymd(y, 1), ymd(y - 1, 1), ymd(y + 1, 1)),
    ];
    let mut out = [(0, now); W];
    out[0].0 = now - 3599;
    out[1].0 = now - 86_399;
    out[2].0 = now - 7 * 86_400 + 1;
    out[3].0 = now - 30 * 86_400 + 1;
    for (k, (cur, prev, next)) in periods.into_iter().enumerate() {
        out[4 + k].0 = mid(cur);
        out[9 + k] = (mid(prev), mid(cur) - 1);
        if (1..=3).contains(&k) {
            // As far into the previous period as now is into this one, by elapsed share.
            let (since, cur_len, prev_len) = (mid(cur), mid(next) - mid(cur), mid(cur) - mid(prev));
            let reach = i128::from(now - since) * i128::from(prev_len) / i128::from(cur_len);
            out[SAME_POINT_FROM + k - 1] = (mid(prev), mid(prev) + reach as i64);
        }
    }
    out
}

/// Consistency is measured over this many complete weeks (the default).
const WEEKS: i64 = 12;

/// UTC week of `t`, counted from the Monday 1970-01-05 (an independent numbering: only
/// differences between weeks matter).
fn week_of(t: i64) -> i64 {
    (t - 4 * 86_400).div_euclid(7 * 86_400)
}

/// The first week a rep hired on `d` works in full.
fn first_full_week(d: NaiveDate) -> i64 {
    let t = d.and_hms_opt(0, 0, 0).expect("valid").and_utc().timestamp();
    week_of(t) + i64::from(d.weekday() != chrono::Weekday::Mon)
}

/// Activities and won deals older than this are out of every window and week.
fn horizon(now: i64) -> i64 {
    let first_week = (week_of(now) - WEEKS) * 7 * 86_400 + 4 * 86_400;
    starts(now)
        .into_iter()
        .map(|r| r.0)
        .min()
        .unwrap_or(0)
        .min(first_week)
}

/// Consistency series of one rep under its roster team: `weekly` maps weeks to sums per
/// measure; `measures` are (label, money).
fn consistency(
    out: &mut BTreeMap<String, Decimal>,
    now: i64,
    rep_key: &str,
    hired: Option<NaiveDate>,
    weekly: &BTreeMap<i64, Vec<i128>>,
    measures: &[(&str, bool)],
) {
    let cur = week_of(now);
    // Kept weeks: the complete ones, the current and the next.
    if !weekly
        .range(cur - WEEKS..=cur + 1)
        .any(|(_, v)| v.iter().any(|x| *x != 0))
    {
        return;
    }
    let first = hired.map_or(cur - WEEKS, first_full_week).max(cur - WEEKS);
    for (i, (name, money)) in measures.iter().enumerate() {
        let values: Vec<i128> = (first..cur)
            .map(|w| weekly.get(&w).map_or(0, |v| v[i]))
            .collect();
        if values.len() < 2 {
            continue;
        }
        let n = values.len() as i128;
        let sum: i128 = values.iter().sum();
        let squares: i128 = values.iter().map(|v| v * v).sum();
        let sd_n = Decimal::try_from(((n * squares - sum * sum) as f64).sqrt()).expect("finite");
        let nd = Decimal::from(n as i64);
        let round = |d: Decimal| {
            let (d, dp) = if *money {
                (d / Decimal::ONE_HUNDRED, 2)
            } else {
                (d, 6)
            };
            d.round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
                .normalize()
        };
        let mut put = |stat: &str, v: Decimal| {
            out.insert(format!("{rep_key}|consistency_{stat}|{name}|"), v);
        };
        put("mean", round(Decimal::from_i128_with_scale(sum, 0) / nd));
        put("stddev", round(sd_n / nd));
        if let Some(cv) = ratio(sd_n, Decimal::from_i128_with_scale(sum, 0)) {
            put("cv", cv);
        }
        put("samples", nd);
    }
}

fn ratio(n: Decimal, d: Decimal) -> Option<Decimal> {
    (!d.is_zero()).then(|| {
        (n / d)
            .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            .normalize()
    })
}

const TOS: [&str; 4] = ["advanced", "won", "lost", "regressed"];
const STALL_DAYS: [i64; 4] = [14, 21, 30, 30];
const DEFAULT_CATEGORY: [ForecastCategory; 6] = [
    ForecastCategory::Pipeline,
    ForecastCategory::Pipeline,
    ForecastCategory::BestCase,
    ForecastCategory::Commit,
    ForecastCategory::Closed,
    ForecastCategory::Omitted,
];

fn expected_date(days: i64) -> NaiveDate {
    Utc.timestamp_opt(N0, 0)
        .single()
        .expect("valid")
        .date_naive()
        + chrono::Duration::days(days)
}

/// An open deal as the reference counts it.
#[derive(Debug, Clone)]
struct OpenRef {
    stage: u8,
    amount: Decimal,
    entered: i64,
    expected: Option<NaiveDate>,
    category: ForecastCategory,
}

type FlowFact = (i64, (&'static str, String), Decimal);

/// The flow facts of one deal's applied states, by the rules of docs/metrics.md, and when the
/// deal entered its current open stage.
fn deal_flow(states: &[(DealRec, Option<i64>)]) -> (Vec<FlowFact>, Option<i64>) {
    let names = ["prospecting", "qualification", "proposal", "negotiation"];
    let quarter = |days: i64| {
        let d = expected_date(days);
        d.year() * 4 + d.month0() as i32 / 3
    };
    let mut facts: Vec<FlowFact> = Vec::new();
    // The open visit: (stage, entered); a closed deal keeps the visit it closed from.
    let mut visit: Option<(u8, i64)> = None;
    let mut closed: Option<(u8, i64)> = None;
    let leave = |facts: &mut Vec<FlowFact>, stage: u8, entered: i64, at: i64, to: &str| {
        let name = names[usize::from(stage)];
        facts.push((at, ("stage_exited", format!("{name},{to}")), Decimal::ONE));
        facts.push((
            at,
            ("stage_seconds", name.to_owned()),
            Decimal::from((at - entered).max(0)),
        ));
    };
    for (i, (d, closed_at)) in states.iter().enumerate() {
        if d.stage >= 4 {
            closed = Some((d.stage, closed_at.expect("a closed state has a close time")));
            continue;
        }
        let reopened = closed.take().is_some();
        let at = if i == 0 {
            d.created.min(d.occurred)
        } else {
            d.occurred
        };
        match visit {
            Some((v, _)) if v == d.stage => {}
            Some((v, e)) => {
                leave(
                    &mut facts,
                    v,
                    e,
                    at,
                    if d.stage > v { "advanced" } else { "regressed" },
                );
                facts.push((
                    at,
                    ("stage_entered", names[usize::from(d.stage)].to_owned()),
                    Decimal::ONE,
                ));
                visit = Some((d.stage, at));
            }
            None => {
                facts.push((
                    at,
                    ("stage_entered", names[usize::from(d.stage)].to_owned()),
                    Decimal::ONE,
                ));
                visit = Some((d.stage, at));
            }
        }
        let prev = i.checked_sub(1).map(|p| &states[p].0);
        if let (false, Some(p)) = (reopened, prev) {
            if let (Some(a), Some(b)) = (p.expected, d.expected) {
                let amount = Decimal::new(d.cents, 2);
                if quarter(b) > quarter(a) {
                    facts.push((
                        d.occurred,
                        ("close_date_pushed", String::new()),
                        Decimal::ONE,
                    ));
                    facts.push((d.occurred, ("pipeline_pushed", String::new()), amount));
                } else if quarter(b) < quarter(a) {
                    facts.push((
                        d.occurred,
                        ("close_date_pulled_in", String::new()),
                        Decimal::ONE,
                    ));
                    facts.push((d.occurred, ("pipeline_pulled_in", String::new()), amount));
                }
            }
        }
    }
    if let (Some((kind, c)), Some((v, e))) = (closed, visit) {
        leave(&mut facts, v, e, c, if kind == 4 { "won" } else { "lost" });
        return (facts, None);
    }
    (facts, visit.map(|v| v.1))
}

struct Reference {
    roster: HashMap<usize, usize>,
    deals: HashMap<usize, (DealRec, Option<i64>, Vec<u32>)>,
    /// Every applied state of each deal, with its close time.
    history: HashMap<usize, Vec<(DealRec, Option<i64>)>>,
    acts: Vec<ActRec>,
    /// Activity ids with the clock they were counted at: a repeat within 7 days (the default
    /// duplicate window) is a duplicate, a later one counts again.
    seen_acts: HashMap<u32, i64>,
    now: i64,
    max_horizon: i64,
}

impl Reference {
    /// The region of a team: the one its roster reps have (every rep of team `tK` has
    /// `region-{K % 2}`, but those of `t1`, none), else `unassigned`; none while no rep on the
    /// roster has a region.
    fn region_of(&self, team: &str) -> Option<String> {
        let with_region = |t: usize| rep_info(0, t).1.is_some();
        if !self.roster.values().any(|t| with_region(*t)) {
            return None;
        }
        let k = team.strip_prefix('t').and_then(|k| k.parse::<usize>().ok());
        Some(match k {
            Some(k) if with_region(k) && self.roster.values().any(|t| *t == k) => {
                format!("region-{}", k % 2)
            }
            _ => "unassigned".to_owned(),
        })
    }

    fn eff_team(&self, rep: usize, team: Option<usize>) -> String {
        team.or_else(|| self.roster.get(&rep).copied())
            .map(crate::team)
            .unwrap_or_else(|| "unassigned".into())
    }

    fn deals_board(&self) -> BTreeMap<String, Decimal> {
        let lo = starts(self.now);
        let probs =
            ["0.1", "0.2", "0.5", "0.8", "1", "0"].map(|p| p.parse::<Decimal>().expect("p"));
        let stage_names = ["prospecting", "qualification", "proposal", "negotiation"];
        let today = Utc
            .timestamp_opt(self.now, 0)
            .single()
            .expect("valid")
            .date_naive();
        // Current week, month, quarter and year as day ranges.
        let monday =
            today - chrono::Duration::days(i64::from(today.weekday().num_days_from_monday()));
        let month = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).expect("valid");
        let quarter =
            NaiveDate::from_ymd_opt(today.year(), today.month0() / 3 * 3 + 1, 1).expect("valid");
        let year = NaiveDate::from_ymd_opt(today.year(), 1, 1).expect("valid");
        let add_months =
            |d: NaiveDate, m: u32| d.checked_add_months(chrono::Months::new(m)).expect("valid");
        let periods = [
            (monday, monday + chrono::Duration::days(7)),
            (month, add_months(month, 1)),
            (quarter, add_months(quarter, 3)),
            (year, add_months(year, 12)),
        ];
        let month_name = format!("{}-{:02}", today.year(), today.month());
        let quarter_name = format!("{}-Q{}", today.year(), today.month0() / 3 + 1);
        #[derive(Default, Clone)]
        struct Acc {
            w: [[Decimal; 6]; W],
            /// (metric, labels) -> window sums of the flow facts
            flows: BTreeMap<(&'static str, String), [Decimal; W]>,
            open: Vec<OpenRef>,
            /// Bookings per week (see [`week_of`]) of the kept weeks.
            weeks: BTreeMap<i64, Decimal>,
        }
        let this_week = week_of(self.now);
        let mut accs: BTreeMap<(String, String, String), Acc> = BTreeMap::new();
        for (deal, (d, closed_at, _)) in &self.deals {
            let team = self.eff_team(d.rep, d.team);
            let mut targets = vec![
                ("team".to_owned(), team.clone(), team.clone()),
                ("org".into(), "org".into(), String::new()),
            ];
            if let Some(region) = self.region_of(&team) {
                targets.push(("region".into(), region, String::new()));
            }
            if self.roster.contains_key(&d.rep) {
                targets.push(("rep".into(), rep(d.rep), team.clone()));
            }
            let amount = Decimal::new(d.cents, 2);
            let mut facts: Vec<(i64, [Decimal; 6])> = vec![(
                d.created,
                [
                    Decimal::ZERO,
                    Decimal::ZERO,
                    Decimal::ZERO,
                    Decimal::ZERO,
                    amount,
                    Decimal::ONE,
                ],
            )];
            match (d.stage, closed_at) {
                (4, Some(c)) => facts.push((
                    *c,
                    [
                        amount,
                        Decimal::ONE,
                        Decimal::ZERO,
                        Decimal::from(c - d.created),
                        Decimal::ZERO,
                        Decimal::ZERO,
                    ],
                )),
                (5, Some(c)) => facts.push((
                    *c,
                    [
                        Decimal::ZERO,
                        Decimal::ZERO,
                        Decimal::ONE,
                        Decimal::ZERO,
                        Decimal::ZERO,
                        Decimal::ZERO,
                    ],
                )),
                _ => {}
            }
            let (flow_facts, visit) = deal_flow(&self.history[deal]);
            for t in targets {
                let acc = accs.entry(t).or_default();
                if let (4, Some(c)) = (d.stage, closed_at) {
                    // The current week and the 27 complete weeks before it are kept.
                    let week = week_of(*c);
                    if (this_week - 27..=this_week).contains(&week) {
                        *acc.weeks.entry(week).or_default() += amount;
                    }
                }
                for (ts, f) in &facts {
                    if *ts < self.max_horizon {
                        continue;
                    }
                    for w in 0..W {
                        if lo[w].0 <= *ts && *ts <= lo[w].1 {
                            for i in 0..6 {
                                acc.w[w][i] += f[i];
                            }
                        }
                    }
                }
                for (ts, key, v) in &flow_facts {
                    let sums = acc.flows.entry(key.clone()).or_insert([Decimal::ZERO; W]);
                    for w in 0..W {
                        if lo[w].0 <= *ts && *ts <= lo[w].1 {
                            sums[w] += *v;
                        }
                    }
                }
                if d.stage < 4 {
                    let category =
                        match d.category.unwrap_or(DEFAULT_CATEGORY[usize::from(d.stage)]) {
                            ForecastCategory::Closed => ForecastCategory::Commit,
                            c => c,
                        };
                    acc.open.push(OpenRef {
                        stage: d.stage,
                        amount,
                        entered: visit.expect("an open deal is in a visit"),
                        expected: d.expected.map(expected_date),
                        category,
                    });
                }
            }
        }
        let mut out = BTreeMap::new();
        for ((scope, id, team), acc) in accs {
            let any_w = acc
                .w
                .iter()
                .any(|w| !w[1].is_zero() || !w[2].is_zero() || !w[5].is_zero());
            let any_open = !acc.open.is_empty();
            let any_flow = acc.flows.values().any(|w| w.iter().any(|v| !v.is_zero()));
            let mut put = |metric: &str, extra: &str, window: &str, v: Decimal| {
                out.insert(
                    format!("{scope}|{id}|{team}|{metric}|{extra}|{window}"),
                    v.normalize(),
                );
            };
            if scope != "rep" {
                for (week, v) in acc.weeks.iter().filter(|(_, v)| !v.is_zero()) {
                    // Week 0 starts on Monday 1970-01-05.
                    let monday = NaiveDate::from_ymd_opt(1970, 1, 5).expect("valid")
                        + chrono::Duration::days(7 * week);
                    put("weekly_bookings", &monday.to_string(), "", *v);
                }
            }
            let open_count = Decimal::from(acc.open.len());
            if any_w {
                for (w, label) in WINDOW_LABELS.iter().enumerate() {
                    let x = acc.w[w];
                    put("bookings", "", label, x[0]);
                    put("deals_won", "", label, x[1]);
                    if w >= SAME_POINT_FROM {
                        continue;
                    }
                    put("deals_lost", "", label, x[2]);
                    put("pipeline_created", "", label, x[4]);
                    if let Some(r) = ratio(x[1], x[1] + x[2]) {
                        put("win_rate", "", label, r);
                    }
                    if let Some(r) = ratio(x[0], x[1]) {
                        put("avg_deal_size", "", label, r);
                    }
                    if let Some(r) = ratio(x[3], x[1]) {
                        put("sales_cycle_seconds", "", label, r);
                    }
                    // open x win rate x average deal size / mean cycle in days
                    if !x[1].is_zero() && x[3] > Decimal::ZERO {
                        let v = open_count * x[0] * x[1] * Decimal::from(86_400);
                        if let Some(r) = ratio(v, (x[1] + x[2]) * x[3]) {
                            put("pipeline_velocity", "", label, r);
                        }
                    }
                }
            }
            if any_flow {
                let get = |metric: &'static str, labels: String, w: usize| {
                    acc.flows
                        .get(&(metric, labels))
                        .map_or(Decimal::ZERO, |x| x[w])
                };
                let any = |metric: &'static str, labels: String| {
                    acc.flows
                        .get(&(metric, labels))
                        .is_some_and(|x| x.iter().any(|v| !v.is_zero()))
                };
                for name in stage_names {
                    let used: Vec<&str> = TOS
                        .into_iter()
                        .filter(|to| any("stage_exited", format!("{name},{to}")))
                        .collect();
                    if used.is_empty() && !any("stage_entered", name.to_owned()) {
                        continue;
                    }
                    for (w, label) in WINDOW_LABELS.iter().enumerate().take(SAME_POINT_FROM) {
                        put(
                            "stage_entered",
                            name,
                            label,
                            get("stage_entered", name.to_owned(), w),
                        );
                        let mut left = Decimal::ZERO;
                        let mut converted = Decimal::ZERO;
                        for to in TOS {
                            let n = get("stage_exited", format!("{name},{to}"), w);
                            left += n;
                            if to == "advanced" || to == "won" {
                                converted += n;
                            }
                            if used.contains(&to) {
                                put("stage_exited", &format!("{name},{to}"), label, n);
                            }
                        }
                        if let Some(r) = ratio(converted, left) {
                            put("stage_conversion_ratio", name, label, r);
                        }
                        if let Some(r) = ratio(get("stage_seconds", name.to_owned(), w), left) {
                            put("stage_seconds", name, label, r);
                        }
                    }
                }
                let moves = [
                    "close_date_pushed",
                    "pipeline_pushed",
                    "close_date_pulled_in",
                    "pipeline_pulled_in",
                ];
                if moves.iter().any(|m| any(m, String::new())) {
                    for (w, label) in WINDOW_LABELS.iter().enumerate().take(SAME_POINT_FROM) {
                        for m in moves {
                            put(m, "", label, get(m, String::new(), w));
                        }
                    }
                }
            }
            if any_open {
                let minute = self.now - self.now.rem_euclid(60);
                let mut weighted = Decimal::ZERO;
                for (s, name) in stage_names.iter().enumerate() {
                    let in_stage: Vec<&OpenRef> = acc
                        .open
                        .iter()
                        .filter(|o| usize::from(o.stage) == s)
                        .collect();
                    if in_stage.is_empty() {
                        continue;
                    }
                    let amount: Decimal = in_stage.iter().map(|o| o.amount).sum();
                    put("open_pipeline", name, "", amount);
                    weighted += amount * probs[s];
                    let n = Decimal::from(in_stage.len());
                    put("open_deals", name, "", n);
                    let ages: i64 = in_stage.iter().map(|o| minute - o.entered).sum();
                    put(
                        "stage_age_seconds",
                        name,
                        "",
                        ratio(Decimal::from(ages), n).expect("deals"),
                    );
                    let stalled: Vec<&&OpenRef> = in_stage
                        .iter()
                        .filter(|o| self.now - o.entered > STALL_DAYS[s] * 86_400)
                        .collect();
                    put("stalled_deals", name, "", Decimal::from(stalled.len()));
                    put(
                        "stalled_pipeline",
                        name,
                        "",
                        stalled.iter().map(|o| o.amount).sum(),
                    );
                }
                put("weighted_pipeline", "", "", weighted);
                let overdue: Vec<&OpenRef> = acc
                    .open
                    .iter()
                    .filter(|o| o.expected.is_some_and(|e| e < today))
                    .collect();
                put("overdue_deals", "", "", Decimal::from(overdue.len()));
                put(
                    "overdue_pipeline",
                    "",
                    "",
                    overdue.iter().map(|o| o.amount).sum(),
                );
                for (k, period) in ["week", "month", "quarter", "year"].iter().enumerate() {
                    let (a, b) = periods[k];
                    let inside = || {
                        acc.open
                            .iter()
                            .filter(move |o| o.expected.is_some_and(|e| a <= e && e < b))
                    };
                    put(
                        "pipeline_expected",
                        period,
                        "",
                        inside().map(|o| o.amount).sum(),
                    );
                    put(
                        "weighted_pipeline_expected",
                        period,
                        "",
                        inside()
                            .map(|o| o.amount * probs[usize::from(o.stage)])
                            .sum(),
                    );
                }
                for c in [
                    ForecastCategory::Pipeline,
                    ForecastCategory::BestCase,
                    ForecastCategory::Commit,
                    ForecastCategory::Omitted,
                ] {
                    put(
                        "forecast_undated",
                        c.label(),
                        "",
                        acc.open
                            .iter()
                            .filter(|o| o.expected.is_none() && o.category == c)
                            .map(|o| o.amount)
                            .sum(),
                    );
                }
            }
            if any_open || any_w {
                for (k, period_type, name, window) in [
                    (1, "month", &month_name, 6),
                    (2, "quarter", &quarter_name, 7),
                ] {
                    let (a, b) = periods[k];
                    let by = |c: ForecastCategory| -> Decimal {
                        if c == ForecastCategory::Closed {
                            return acc.w[window][0];
                        }
                        acc.open
                            .iter()
                            .filter(|o| {
                                o.category == c && o.expected.is_some_and(|e| a <= e && e < b)
                            })
                            .map(|o| o.amount)
                            .sum()
                    };
                    for c in ForecastCategory::ALL {
                        put(
                            "forecast_category_amount",
                            &format!("{},{period_type},{name}", c.label()),
                            "",
                            by(c),
                        );
                    }
                    let commit = by(ForecastCategory::Closed) + by(ForecastCategory::Commit);
                    let best = commit + by(ForecastCategory::BestCase);
                    let pipe = best + by(ForecastCategory::Pipeline);
                    for (r, v) in [("commit", commit), ("best_case", best), ("pipeline", pipe)] {
                        put(
                            "forecast_rollup",
                            &format!("{r},{period_type},{name}"),
                            "",
                            v,
                        );
                    }
                }
            }
        }
        // Every rep on the roster belongs to its roster team, with or without deals, and has
        // its name (else its id) and region.
        for (r, t) in &self.roster {
            out.insert(
                format!("rep|{}|{}|member||", rep(*r), team(*t)),
                Decimal::ONE,
            );
            let (name, region, hired_at) = rep_info(*r, *t);
            let labels = [
                Some(name.unwrap_or_else(|| rep(*r))),
                region,
                hired_at.map(|d| d.format("%Y-%m-%d").to_string()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(",");
            out.insert(
                format!("rep|{}|{}|info|{labels}|", rep(*r), team(*t)),
                Decimal::ONE,
            );
            // Weekly bookings (cents) and deals won of the rep's won deals, under every team.
            let mut weekly: BTreeMap<i64, Vec<i128>> = BTreeMap::new();
            for (d, closed_at, _) in self.deals.values() {
                if let (true, 4, Some(c)) = (d.rep == *r, d.stage, closed_at) {
                    let w = weekly.entry(week_of(*c)).or_insert_with(|| vec![0, 0]);
                    w[0] += i128::from(d.cents);
                    w[1] += 1;
                }
            }
            consistency(
                &mut out,
                self.now,
                &format!("rep|{}|{}", rep(*r), team(*t)),
                hired_at,
                &weekly,
                &[("bookings", true), ("deals_won", false)],
            );
        }
        out
    }

    fn activities_board(&self) -> BTreeMap<String, Decimal> {
        let lo = starts(self.now);
        let kinds = ["call", "email", "meeting", "demo", "task"];
        let mut accs: BTreeMap<(String, String, String), [[i64; W]; 5]> = BTreeMap::new();
        let mut talk: BTreeMap<(String, String, String), [[i64; W]; 5]> = BTreeMap::new();
        for a in &self.acts {
            let minute = a.at - a.at.rem_euclid(60);
            let bucket = if minute < self.now - 25 * 3600 {
                a.at - a.at.rem_euclid(3600)
            } else {
                minute
            };
            let team = self.eff_team(a.rep, a.team);
            let mut targets = vec![
                ("team".to_owned(), team.clone(), team.clone()),
                ("org".into(), "org".into(), String::new()),
            ];
            if let Some(region) = self.region_of(&team) {
                targets.push(("region".into(), region, String::new()));
            }
            if self.roster.contains_key(&a.rep) {
                targets.push(("rep".into(), rep(a.rep), team.clone()));
            }
            for t in targets {
                let secs = talk.entry(t.clone()).or_insert([[0; W]; 5]);
                let acc = accs.entry(t).or_insert([[0; W]; 5]);
                for w in 0..W {
                    if lo[w].0 <= bucket && bucket <= lo[w].1 {
                        acc[usize::from(a.kind)][w] += 1;
                        secs[usize::from(a.kind)][w] += a.duration.unwrap_or(0);
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        for (r, t) in &self.roster {
            let mut weekly: BTreeMap<i64, Vec<i128>> = BTreeMap::new();
            for a in self.acts.iter().filter(|a| a.rep == *r) {
                weekly.entry(week_of(a.at)).or_insert_with(|| vec![0])[0] += 1;
            }
            consistency(
                &mut out,
                self.now,
                &format!("rep|{}|{}", rep(*r), team(*t)),
                rep_info(*r, *t).2,
                &weekly,
                &[("activities", false)],
            );
        }
        for ((scope, id, team), acc) in accs {
            for (k, counts) in acc.iter().enumerate() {
                if counts.iter().all(|c| *c == 0) {
                    continue;
                }
                for (w, label) in WINDOW_LABELS.iter().enumerate() {
                    out.insert(
                        format!("{scope}|{id}|{team}|activities|{}|{label}", kinds[k]),
                        Decimal::from(counts[w]),
                    );
                }
            }
        }
        for ((scope, id, team), acc) in talk {
            for (k, secs) in acc.iter().enumerate() {
                if secs.iter().all(|c| *c == 0) {
                    continue;
                }
                for (w, label) in WINDOW_LABELS.iter().enumerate().take(SAME_POINT_FROM) {
                    out.insert(
                        format!("{scope}|{id}|{team}|activity_seconds|{}|{label}", kinds[k]),
                        Decimal::from(secs[w]),
                    );
                }
            }
        }
        out
    }
}

/// Source partitions and slots of the divided cores in [`Split`].
const SOURCES: usize = 3;
const SLOTS: u32 = 4;
const MERGERS: usize = 2;
/// The merger of each slot at first: every other slot.
const FIRST_OWNERS: [usize; SLOTS as usize] = [0, 1, 0, 1];

/// The slots `owner` gives merger `i`.
fn slots_of(owner: &[usize], i: usize) -> Vec<u32> {
    (0..SLOTS).filter(|s| owner[*s as usize] == i).collect()
}

/// The latest contribution per (slot, source, rep, team), as a compacted topic keeps it.
type Topic = BTreeMap<(u32, usize, String, Option<String>), Vec<u8>>;

/// The same records divided over source cores (deals by deal, activities by event id, as
/// repeats of a record share its key) whose cells a merger per slot sums, each building the
/// series of the subjects of its slot: the union of the mergers' series must be the single
/// core's.
struct Split {
    deals: Vec<DealsCore>,
    acts: Vec<ActivitiesCore>,
    deal_mergers: Vec<Merger>,
    act_mergers: Vec<Merger>,
    deal_topic: Topic,
    act_topic: Topic,
    deal_board: BTreeMap<String, Decimal>,
    act_board: BTreeMap<String, Decimal>,
    /// The merger that owns each slot.
    owner: Vec<usize>,
}

impl Split {
    fn new(contract: &Contract, now: i64) -> Split {
        let cal = Calendar::utc();
        Split {
            deals: (0..SOURCES)
                .map(|_| {
                    let mut c = DealsCore::new(contract, cal, now * 1000);
                    c.exchange(SLOTS);
                    c
                })
                .collect(),
            acts: (0..SOURCES)
                .map(|_| {
                    let mut c = ActivitiesCore::new(contract, cal, now * 1000);
                    c.exchange(SLOTS);
                    c
                })
                .collect(),
            deal_mergers: Self::mergers(
                || Merger::deals(contract, cal, now * 1000, SLOTS),
                &FIRST_OWNERS,
            ),
            act_mergers: Self::mergers(
                || Merger::activities(contract, cal, now * 1000, SLOTS),
                &FIRST_OWNERS,
            ),
            deal_topic: Topic::new(),
            act_topic: Topic::new(),
            deal_board: BTreeMap::new(),
            act_board: BTreeMap::new(),
            owner: FIRST_OWNERS.to_vec(),
        }
    }

    /// A merger per owner, each owning the slots `owner` gives it (at first every other slot):
    /// a merger holds the parts sent to each of its slots, and a withdrawal from one of them
    /// leaves the others.
    fn mergers(new: impl Fn() -> Merger, owner: &[usize]) -> Vec<Merger> {
        (0..MERGERS)
            .map(|i| {
                let mut m = new();
                m.set_owned(slots_of(owner, i));
                m
            })
            .collect()
    }

    /// The mergers trade slots as instances do at a rebalance that keeps what is unchanged:
    /// each forgets the slots it gives up and reads those it takes from the topic.
    fn reassign(&mut self, owner: Vec<usize>) -> Result<(), TestCaseError> {
        for (topic, mergers) in [
            (&self.deal_topic, &mut self.deal_mergers),
            (&self.act_topic, &mut self.act_mergers),
        ] {
            for (i, m) in mergers.iter_mut().enumerate() {
                let (old, new) = (slots_of(&self.owner, i), slots_of(&owner, i));
                let kept: Vec<u32> = new.iter().copied().filter(|s| old.contains(s)).collect();
                m.keep_slots(&kept);
                m.set_owned(new.clone());
                for ((slot, source, rp, t), v) in topic {
                    if new.contains(slot) && !old.contains(slot) {
                        let c = Contribution {
                            slot: *slot,
                            rep: rp.as_str().into(),
                            team: t.as_deref().map(Into::into),
                            value: Some(v.clone()),
                        };
                        m.apply(&c, *source as u32)
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    }
                }
            }
        }
        self.owner = owner;
        self.refill_boards();
        Ok(())
    }

    /// The boards as the mergers' subjects show now, as after a take-over.
    fn refill_boards(&mut self) {
        self.deal_board.clear();
        for m in &mut self.deal_mergers {
            flatten(&m.snapshot(), &mut self.deal_board);
        }
        self.act_board.clear();
        for m in &mut self.act_mergers {
            flatten(&m.snapshot(), &mut self.act_board);
        }
    }

    fn roster(&mut self, r: &HashMap<usize, usize>, rp: usize) {
        let cores_d = self.deals.iter_mut();
        for c in cores_d {
            match r.get(&rp) {
                Some(t) => {
                    c.roster_upsert(&rep(rp), &team(*t));
                    let (name, region, hired_at) = rep_info(rp, *t);
                    c.roster_info(&rep(rp), name.as_deref(), region.as_deref(), hired_at);
                }
                None => c.roster_remove(&rep(rp)),
            }
        }
        for c in &mut self.acts {
            match r.get(&rp) {
                Some(t) => {
                    c.roster_upsert(&rep(rp), &team(*t));
                    let (name, region, hired_at) = rep_info(rp, *t);
                    c.roster_info(&rep(rp), name.as_deref(), region.as_deref(), hired_at);
                }
                None => c.roster_remove(&rep(rp)),
            }
        }
        for m in self.deal_mergers.iter_mut().chain(&mut self.act_mergers) {
            match r.get(&rp) {
                Some(t) => {
                    m.roster_upsert(&rep(rp), &team(*t));
                    let (name, region, hired_at) = rep_info(rp, *t);
                    m.roster_info(&rep(rp), name.as_deref(), region.as_deref(), hired_at);
                }
                None => m.roster_remove(&rep(rp)),
            }
        }
    }

    fn tick(&mut self, now: i64) {
        self.deals.iter_mut().for_each(|c| c.tick(now * 1000));
        self.acts.iter_mut().for_each(|c| c.tick(now * 1000));
        for m in self.deal_mergers.iter_mut().chain(&mut self.act_mergers) {
            m.tick(now * 1000);
        }
    }

    fn send(
        topic: &mut Topic,
        mergers: &mut [Merger],
        owner: &[usize],
        source: usize,
        cs: Vec<Contribution>,
    ) {
        for c in cs {
            let key = (
                c.slot,
                source,
                c.rep.to_string(),
                c.team.as_deref().map(str::to_owned),
            );
            match &c.value {
                Some(v) => topic.insert(key, v.clone()),
                None => topic.remove(&key),
            };
            mergers[owner[c.slot as usize]]
                .apply(&c, source as u32)
                .expect("a contribution decodes");
        }
    }

    /// Sends what the sources changed and applies the mergers' changes to the boards.
    fn flush(&mut self) {
        for (i, c) in self.deals.iter_mut().enumerate() {
            Self::send(
                &mut self.deal_topic,
                &mut self.deal_mergers,
                &self.owner,
                i,
                c.drain_contributions(),
            );
        }
        for (i, c) in self.acts.iter_mut().enumerate() {
            Self::send(
                &mut self.act_topic,
                &mut self.act_mergers,
                &self.owner,
                i,
                c.drain_contributions(),
            );
        }
        for m in &mut self.deal_mergers {
            apply_changes(&mut self.deal_board, &m.drain_changes());
        }
        for m in &mut self.act_mergers {
            apply_changes(&mut self.act_board, &m.drain_changes());
        }
    }

    /// Restarts every source from its saved state and every merger from the topic, as
    /// instances taking partitions over do.
    fn restart(&mut self, contract: &Contract, r: &Reference) -> Result<(), TestCaseError> {
        let cal = Calendar::utc();
        for c in &mut self.deals {
            let saved = c.save();
            *c = DealsCore::new(contract, cal, r.now * 1000);
            c.exchange(SLOTS);
            c.begin_recovery();
            c.restore(&saved)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        for c in &mut self.acts {
            let saved = c.save();
            *c = ActivitiesCore::new(contract, cal, r.now * 1000);
            c.exchange(SLOTS);
            c.begin_recovery();
            c.restore(&saved)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        self.deal_mergers = Self::mergers(
            || Merger::deals(contract, cal, r.now * 1000, SLOTS),
            &self.owner,
        );
        self.act_mergers = Self::mergers(
            || Merger::activities(contract, cal, r.now * 1000, SLOTS),
            &self.owner,
        );
        let reps: Vec<usize> = r.roster.keys().copied().collect();
        for rp in reps {
            self.roster(&r.roster, rp);
        }
        for (topic, mergers) in [
            (&self.deal_topic, &mut self.deal_mergers),
            (&self.act_topic, &mut self.act_mergers),
        ] {
            for ((slot, source, rp, t), v) in topic {
                let c = Contribution {
                    slot: *slot,
                    rep: rp.as_str().into(),
                    team: t.as_deref().map(Into::into),
                    value: Some(v.clone()),
                };
                mergers[self.owner[*slot as usize]]
                    .apply(&c, *source as u32)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
        self.deals.iter_mut().for_each(DealsCore::end_recovery);
        self.acts.iter_mut().for_each(ActivitiesCore::end_recovery);
        self.refill_boards();
        Ok(())
    }

    /// Mergers filled from what every source's cells add up to now (as an instance that
    /// holds every input partition fills its own, without reading the topic) show the same
    /// numbers as those fed by the topic.
    fn check_from_sources(
        &mut self,
        contract: &Contract,
        r: &Reference,
        want_deals: &BTreeMap<String, Decimal>,
        want_acts: &BTreeMap<String, Decimal>,
    ) -> Result<(), TestCaseError> {
        let cal = Calendar::utc();
        let mut deal_mergers = Self::mergers(
            || Merger::deals(contract, cal, r.now * 1000, SLOTS),
            &self.owner,
        );
        let mut act_mergers = Self::mergers(
            || Merger::activities(contract, cal, r.now * 1000, SLOTS),
            &self.owner,
        );
        for m in deal_mergers.iter_mut().chain(&mut act_mergers) {
            for (rp, t) in &r.roster {
                m.roster_upsert(&rep(*rp), &team(*t));
                let (name, region, hired_at) = rep_info(*rp, *t);
                m.roster_info(&rep(*rp), name.as_deref(), region.as_deref(), hired_at);
            }
        }
        let own = |mergers: &mut [Merger], source: usize, cs: Vec<Contribution>| {
            for c in cs {
                mergers[self.owner[c.slot as usize]]
                    .apply(&c, source as u32)
                    .expect("an own contribution decodes");
            }
        };
        for (i, c) in self.deals.iter_mut().enumerate() {
            own(&mut deal_mergers, i, c.all_contributions());
        }
        for (i, c) in self.acts.iter_mut().enumerate() {
            own(&mut act_mergers, i, c.all_contributions());
        }
        for (mergers, want, what) in [
            (&mut deal_mergers, want_deals, "deals"),
            (&mut act_mergers, want_acts, "activities"),
        ] {
            let mut snap = BTreeMap::new();
            for m in mergers.iter_mut() {
                flatten(&m.snapshot(), &mut snap);
            }
            prop_assert_eq!(
                differences(&snap, want),
                Vec::<String>::new(),
                "{} merged from the sources' own cells",
                what
            );
        }
        Ok(())
    }

    fn check(
        &mut self,
        want_deals: &BTreeMap<String, Decimal>,
        want_acts: &BTreeMap<String, Decimal>,
    ) -> Result<(), TestCaseError> {
        let mut snap = BTreeMap::new();
        for m in &mut self.deal_mergers {
            flatten(&m.snapshot(), &mut snap);
        }
        prop_assert_eq!(
            differences(&snap, want_deals),
            Vec::<String>::new(),
            "divided deal snapshot"
        );
        prop_assert_eq!(
            differences(&self.deal_board, want_deals),
            Vec::<String>::new(),
            "divided deal changes replayed"
        );
        let mut snap = BTreeMap::new();
        for m in &mut self.act_mergers {
            flatten(&m.snapshot(), &mut snap);
        }
        prop_assert_eq!(
            differences(&snap, want_acts),
            Vec::<String>::new(),
            "divided activity snapshot"
        );
        prop_assert_eq!(
            differences(&self.act_board, want_acts),
            Vec::<String>::new(),
            "divided activity changes replayed"
        );
        Ok(())
    }
}

/// Runs the steps; at step `restart_at` both cores are saved, dropped, and restored into new
/// cores that know only the current roster, as a restarted service would.
fn run(
    steps: &[Step],
    restart_at: Option<usize>,
    reassign_at: Option<(usize, Vec<usize>)>,
) -> Result<(), TestCaseError> {
    let contract = Contract::default();
    let mut deals = DealsCore::new(&contract, Calendar::utc(), N0 * 1000);
    let mut acts = ActivitiesCore::new(&contract, Calendar::utc(), N0 * 1000);
    let mut r = Reference {
        roster: HashMap::new(),
        deals: HashMap::new(),
        history: HashMap::new(),
        acts: Vec::new(),
        seen_acts: HashMap::new(),
        now: N0,
        max_horizon: 0,
    };
    let mut deal_board = BTreeMap::new();
    let mut act_board = BTreeMap::new();
    let mut split = Split::new(&contract, N0);
    for (i, step) in steps.iter().enumerate() {
        if let Some((_, owner)) = reassign_at.as_ref().filter(|(at, _)| *at == i) {
            split.reassign(owner.clone())?;
        }
        if restart_at == Some(i) {
            split.restart(&contract, &r)?;
            let (saved_deals, saved_acts) = (deals.save(), acts.save());
            deals = DealsCore::new(&contract, Calendar::utc(), r.now * 1000);
            acts = ActivitiesCore::new(&contract, Calendar::utc(), r.now * 1000);
            // As a service does: the snapshot first, then the whole roster.
            deals
                .restore(&saved_deals)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            acts.restore(&saved_acts)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (rp, t) in &r.roster {
                deals.roster_upsert(&rep(*rp), &team(*t));
                acts.roster_upsert(&rep(*rp), &team(*t));
                let (name, region, hired_at) = rep_info(*rp, *t);
                deals.roster_info(&rep(*rp), name.as_deref(), region.as_deref(), hired_at);
                acts.roster_info(&rep(*rp), name.as_deref(), region.as_deref(), hired_at);
            }
            // As a service taking over does: its board is what the restored core shows, and a
            // subject it does not show (a region of the old roster) is gone.
            deal_board.clear();
            flatten(&deals.snapshot(), &mut deal_board);
            act_board.clear();
            flatten(&acts.snapshot(), &mut act_board);
        }
        match step {
            Step::Deal(d) => {
                let ev = DealEvent {
                    event_id: Cow::Owned(format!("d{}-{}", d.deal, d.event)),
                    deal_id: Cow::Owned(format!("deal{}", d.deal)),
                    rep_id: Cow::Owned(rep(d.rep)),
                    team_id: d.team.map(|t| Cow::Owned(team(t))),
                    stage: d.stage,
                    amount: Decimal::new(d.cents, 2),
                    created_at: d.created * 1000,
                    occurred_at: d.occurred * 1000,
                    closed_at: d.closed.map(|c| c * 1000),
                    expected_close_date: d.expected.map(expected_date),
                    forecast_category: d.category.unwrap_or(DEFAULT_CATEGORY[usize::from(d.stage)]),
                };
                let got = deals.apply(&ev);
                let got_split = split.deals[d.deal % SOURCES].apply(&ev);
                prop_assert_eq!(got, got_split, "divided deal outcome of {:?}", d);
                // Reference: dedup on every id the deal has seen, stale on occurred_at.
                let want = match r.deals.get_mut(&d.deal) {
                    Some((_, _, ids)) if ids.contains(&d.event) => Outcome::Duplicate,
                    Some((prev, _, ids)) if d.occurred < prev.occurred => {
                        ids.push(d.event);
                        Outcome::Stale
                    }
                    Some((prev, prev_closed, ids)) => {
                        ids.push(d.event);
                        let closed = if d.stage >= 4 {
                            Some(d.closed.or(*prev_closed).unwrap_or(d.occurred))
                        } else {
                            None
                        };
                        let closed = if d.stage >= 4 && d.closed.is_none() && prev.stage < 4 {
                            Some(d.occurred)
                        } else {
                            closed
                        };
                        *prev = d.clone();
                        *prev_closed = closed;
                        r.history
                            .entry(d.deal)
                            .or_default()
                            .push((d.clone(), closed));
                        Outcome::Applied
                    }
                    None => {
                        let closed = (d.stage >= 4).then(|| d.closed.unwrap_or(d.occurred));
                        r.deals.insert(d.deal, (d.clone(), closed, vec![d.event]));
                        r.history.insert(d.deal, vec![(d.clone(), closed)]);
                        Outcome::Applied
                    }
                };
                prop_assert_eq!(got, want, "deal outcome of {:?}", d);
            }
            Step::Activity(a) => {
                let ev = ActivityEvent {
                    event_id: Cow::Owned(format!("a{}", a.event)),
                    rep_id: Cow::Owned(rep(a.rep)),
                    team_id: a.team.map(|t| Cow::Owned(team(t))),
                    kind: a.kind,
                    occurred_at: a.at * 1000,
                    deal_id: None,
                    duration_seconds: a.duration,
                };
                let horizon = horizon(r.now);
                let got = acts.apply(&ev);
                let got_split = split.acts[a.event as usize % SOURCES].apply(&ev);
                prop_assert_eq!(got, got_split, "divided activity outcome of {:?}", a);
                let want = if a.at < horizon {
                    Outcome::Stale
                } else if r
                    .seen_acts
                    .get(&a.event)
                    .is_some_and(|t| r.now - t < 7 * 86_400)
                {
                    Outcome::Duplicate
                } else {
                    r.seen_acts.insert(a.event, r.now);
                    r.acts.push(a.clone());
                    Outcome::Applied
                };
                prop_assert_eq!(got, want, "activity outcome of {:?}", a);
            }
            Step::Roster(rp, t) => match t {
                Some(t) => {
                    deals.roster_upsert(&rep(*rp), &team(*t));
                    acts.roster_upsert(&rep(*rp), &team(*t));
                    let (name, region, hired_at) = rep_info(*rp, *t);
                    deals.roster_info(&rep(*rp), name.as_deref(), region.as_deref(), hired_at);
                    acts.roster_info(&rep(*rp), name.as_deref(), region.as_deref(), hired_at);
                    r.roster.insert(*rp, *t);
                    split.roster(&r.roster, *rp);
                }
                None => {
                    deals.roster_remove(&rep(*rp));
                    acts.roster_remove(&rep(*rp));
                    r.roster.remove(rp);
                    split.roster(&r.roster, *rp);
                }
            },
            Step::Tick(dt) => {
                r.now += dt;
                r.max_horizon = starts(r.now).into_iter().map(|r| r.0).min().unwrap_or(0);
                deals.tick(r.now * 1000);
                acts.tick(r.now * 1000);
                split.tick(r.now);
            }
        }
        split.flush();
        apply_changes(&mut deal_board, &deals.drain_changes());
        apply_changes(&mut act_board, &acts.drain_changes());
    }
    // Every rep series carries the rep's name on the roster.
    for subject in deals.snapshot().iter().chain(acts.snapshot().iter()) {
        for x in &subject.series {
            let want = match (&x.scope, x.rep.as_deref()) {
                (salespulse_aggregate::Scope::Rep, Some(id)) => {
                    let i: usize = id[1..].parse().expect("rep id");
                    rep_info(i, r.roster[&i]).0
                }
                _ => None,
            };
            prop_assert_eq!(x.name.as_deref(), want.as_deref(), "name of {:?}", x);
        }
    }
    split.check(&r.deals_board(), &r.activities_board())?;
    split.check_from_sources(&contract, &r, &r.deals_board(), &r.activities_board())?;
    let mut snap = BTreeMap::new();
    flatten(&deals.snapshot(), &mut snap);
    let want = r.deals_board();
    prop_assert_eq!(
        differences(&snap, &want),
        Vec::<String>::new(),
        "deal snapshot"
    );
    prop_assert_eq!(
        differences(&deal_board, &want),
        Vec::<String>::new(),
        "deal changes replayed"
    );
    let mut snap = BTreeMap::new();
    flatten(&acts.snapshot(), &mut snap);
    let want = r.activities_board();
    prop_assert_eq!(
        differences(&snap, &want),
        Vec::<String>::new(),
        "activity snapshot"
    );
    prop_assert_eq!(
        differences(&act_board, &want),
        Vec::<String>::new(),
        "activity changes replayed"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn core_matches_naive_recomputation(steps in prop::collection::vec(arb_step(), 1..120)) {
        run(&steps, None, None)?;
    }

    /// Saving and restoring at any point changes no number, and remembered event ids keep
    /// recognising duplicates afterwards.
    #[test]
    fn restored_core_matches_naive_recomputation(
        steps in prop::collection::vec(arb_step(), 1..120),
        at in any::<prop::sample::Index>(),
    ) {
        let at = at.index(steps.len());
        run(&steps, Some(at), None)?;
    }

    /// Mergers that trade slots at any point, each forgetting what it gives up and reading what
    /// it takes from the topic, change no number: what a divided instance that keeps its merger
    /// across a rebalance relies on.
    #[test]
    fn mergers_that_trade_slots_match_naive_recomputation(
        steps in prop::collection::vec(arb_step(), 1..120),
        at in any::<prop::sample::Index>(),
        owner in prop::collection::vec(0..MERGERS, SLOTS as usize),
    ) {
        let at = at.index(steps.len());
        run(&steps, None, Some((at, owner)))?;
    }
}

#[test]
fn amount_change_reopening_and_owner_change_move_the_numbers() {
    let steps = vec![
        Step::Roster(0, Some(0)),
        Step::Roster(1, Some(1)),
        Step::Deal(DealRec {
            event: 1,
            deal: 0,
            rep: 0,
            team: None,
            stage: 4,
            cents: 10_000,
            created: N0 - 3600,
            occurred: N0 - 60,
            closed: None,
            expected: None,
            category: None,
        }),
        Step::Deal(DealRec {
            event: 2,
            deal: 0,
            rep: 0,
            team: None,
            stage: 4,
            cents: 25_000,
            created: N0 - 3600,
            occurred: N0 - 50,
            closed: None,
            expected: None,
            category: None,
        }),
        Step::Deal(DealRec {
            event: 3,
            deal: 0,
            rep: 0,
            team: None,
            stage: 2,
            cents: 25_000,
            created: N0 - 3600,
            occurred: N0 - 40,
            closed: None,
            expected: None,
            category: None,
        }),
        Step::Deal(DealRec {
            event: 4,
            deal: 0,
            rep: 1,
            team: None,
            stage: 4,
            cents: 30_000,
            created: N0 - 3600,
            occurred: N0 - 30,
            closed: None,
            expected: None,
            category: None,
        }),
        Step::Deal(DealRec {
            event: 4,
            deal: 0,
            rep: 1,
            team: None,
            stage: 4,
            cents: 30_000,
            created: N0 - 3600,
            occurred: N0 - 30,
            closed: None,
            expected: None,
            category: None,
        }),
        Step::Deal(DealRec {
            event: 5,
            deal: 0,
            rep: 0,
            team: None,
            stage: 5,
            cents: 1,
            created: N0 - 3600,
            occurred: N0 - 45,
            closed: None,
            expected: None,
            category: None,
        }),
        Step::Roster(1, Some(2)),
        Step::Tick(30),
    ];
    run(&steps, None, None).expect("matches the reference");
}

/// A deal's way through the funnel: created in a later stage, advanced, moved back,
/// re-entering a stage, handed to another rep mid-funnel, its close date pushed across a
/// quarter boundary and pulled back, dropped, won, reopened, with a late, a stale and a
/// repeated record on the way, and a deal with no expected close date.
#[test]
fn a_deal_through_the_funnel_matches_the_reference() {
    let at = |event: u32, rep: usize, stage: u8, occurred: i64, expected: Option<i64>| {
        Step::Deal(DealRec {
            event,
            deal: 0,
            rep,
            team: None,
            stage,
            cents: 50_000 + i64::from(event),
            created: N0 - 20 * 86_400,
            occurred,
            closed: None,
            expected,
            category: (event == 3).then_some(ForecastCategory::Commit),
        })
    };
    let steps = vec![
        Step::Roster(0, Some(0)),
        Step::Roster(1, Some(1)),
        at(0, 0, 1, N0 - 19 * 86_400, Some(10)),
        at(1, 0, 2, N0 - 15 * 86_400, Some(10)),
        at(2, 0, 1, N0 - 12 * 86_400, Some(40)),
        at(3, 0, 2, N0 - 9 * 86_400, Some(40)),
        at(4, 1, 3, N0 - 5 * 86_400, Some(5)),
        at(5, 1, 3, N0 - 6 * 86_400, Some(90)), // stale: older than what is applied
        at(4, 1, 3, N0 - 4 * 86_400, Some(90)), // a repeated event id
        at(6, 1, 4, N0 - 3 * 86_400, Some(5)),
        at(7, 1, 2, N0 - 2 * 86_400, Some(5)), // reopened
        Step::Tick(3_600),
        Step::Deal(DealRec {
            event: 0,
            deal: 1,
            rep: 0,
            team: None,
            stage: 3,
            cents: 7_000,
            created: N0 - 40 * 86_400,
            occurred: N0 - 39 * 86_400,
            closed: None,
            expected: None,
            category: None,
        }),
        Step::Tick(60),
    ];
    run(&steps, None, None).expect("matches the reference");
    run(&steps, Some(7), None).expect("matches the reference across a restart");
}

/// An activity id is remembered for the duplicate window after it was counted, however often
/// the remembered ids are pruned meanwhile and across a restart; a repeat after the window
/// counts again, and is then remembered afresh.
#[test]
fn a_repeated_activity_is_a_duplicate_within_the_window_and_counts_again_after_it() {
    let window = 7 * 86_400;
    let day = 86_400;
    let repeat = || {
        Step::Activity(ActRec {
            event: 1,
            rep: 0,
            team: None,
            kind: 0,
            at: N0 - 3_600,
            duration: None,
        })
    };
    let steps = vec![
        Step::Roster(0, Some(0)),
        repeat(),
        Step::Tick(day),
        repeat(),
        Step::Tick(window - day - 60),
        repeat(),
        Step::Tick(60),
        repeat(),
        Step::Tick(3 * day),
        repeat(),
    ];
    run(&steps, None, None).expect("matches the reference");
    run(&steps, Some(4), None).expect("matches the reference across a restart");

    // The same, checked by hand against the core alone.
    let contract = Contract::default();
    assert_eq!(contract.duplicate_window_seconds, window);
    let mut acts = ActivitiesCore::new(&contract, Calendar::utc(), N0 * 1000);
    let ev = ActivityEvent {
        event_id: Cow::Borrowed("a1"),
        rep_id: Cow::Borrowed("r0"),
        team_id: None,
        kind: 0,
        occurred_at: (N0 - 3_600) * 1000,
        deal_id: None,
        duration_seconds: None,
    };
    let mut outcomes = vec![acts.apply(&ev)];
    for dt in [day, window - day - 60, 60, 3 * day] {
        let now = acts.bounds().now + dt;
        // Hourly steps, so that the remembered ids are pruned on the way.
        let mut t = acts.bounds().now;
        while t < now {
            t = (t + 3_600).min(now);
            acts.tick(t * 1000);
        }
        outcomes.push(acts.apply(&ev));
    }
    use Outcome::{Applied, Duplicate};
    assert_eq!(
        outcomes,
        [Applied, Duplicate, Duplicate, Applied, Duplicate]
    );
}

/// Days, weeks and months are the calendar's local ones in every time zone, also where the
/// offset from UTC is not a whole number of hours (India, Nepal, South Australia,
/// Newfoundland, Lord Howe Island, whose summer time moves the clock by half an hour): once
/// an activity is older than the minute buckets, it still counts on its own local day. The
/// reference takes each activity's local date from the time zone database.
#[test]
fn local_days_weeks_and_months_hold_their_own_activities_in_every_time_zone() {
    use chrono::Duration;
    let contract = Contract::default();
    let span_days = 75;
    for zone in [
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Adelaide",
        "America/St_Johns",
        "Australia/Lord_Howe",
        "Europe/Berlin",
        "UTC",
    ] {
        let tz: chrono_tz::Tz = zone.parse().expect("a zone of the database");
        let local_date = |t: i64| {
            tz.timestamp_opt(t, 0)
                .single()
                .expect("an instant")
                .date_naive()
        };
        let midnight = |d: NaiveDate| {
            tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
                .earliest()
                .expect("a local midnight")
                .timestamp()
        };
        let cal = Calendar::new(zone, 1).expect("a valid calendar");
        let start = N0 - span_days * 86_400;
        // Activities on both sides of every local midnight of the span, a second to an hour
        // away from it.
        let mut times = Vec::new();
        for day in 1..=span_days {
            let m = midnight(local_date(start) + Duration::days(day));
            for d in [
                -3_599, -1_801, -1_799, -900, -60, -1, 0, 1, 60, 899, 1_799, 1_801,
            ] {
                times.push(m + d);
            }
        }
        times.retain(|t| *t <= N0);
        times.sort_unstable();
        // The clock moves with the activities, as a live service's does.
        let mut acts = ActivitiesCore::new(&contract, cal, start * 1000);
        for (i, t) in times.iter().enumerate() {
            acts.tick(t * 1000);
            let ev = ActivityEvent {
                event_id: Cow::Owned(format!("a{i}")),
                rep_id: Cow::Borrowed("r0"),
                team_id: Some(Cow::Borrowed("t0")),
                kind: 0,
                occurred_at: t * 1000,
                deal_id: None,
                duration_seconds: None,
            };
            assert_eq!(acts.apply(&ev), Outcome::Applied);
        }
        for now in [
            N0,
            N0 + 3 * 3_600 + 1_234,
            N0 + 86_400 + 1_800,
            N0 + 9 * 86_400 + 2_700,
        ] {
            acts.tick(now * 1000);
            let mut board = BTreeMap::new();
            flatten(&acts.snapshot(), &mut board);
            let today = local_date(now);
            let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
            let month = today.with_day(1).expect("the first of the month");
            let last_month = month
                .checked_sub_months(chrono::Months::new(1))
                .expect("last month");
            let within = |from: NaiveDate, until: NaiveDate| {
                times
                    .iter()
                    .filter(|t| **t <= now && (from..until).contains(&local_date(**t)))
                    .count()
            };
            let tomorrow = today + Duration::days(1);
            for (label, want) in [
                ("today", within(today, tomorrow)),
                ("yesterday", within(today - Duration::days(1), today)),
                ("wtd", within(monday, tomorrow)),
                ("last_week", within(monday - Duration::days(7), monday)),
                ("mtd", within(month, tomorrow)),
                ("last_month", within(last_month, month)),
            ] {
                let got = board
                    .get(&format!("org|org||activities|call|{label}"))
                    .copied()
                    .unwrap_or_default();
                assert_eq!(
                    got,
                    Decimal::from(want),
                    "{zone}, {label} at {now}: the core counts {got}, the local dates {want}"
                );
            }
        }
    }
}
