//! The golden scenario, end to end on a real broker: amount changes, a reopening, an owner
//! change, a roster move, two currencies, duplicates, stale and late records, malformed
//! records and records near window edges; a service killed and restarted in the middle.
//! Every business series on `/metrics`, in Prometheus and on the metrics topic is compared
//! with values recomputed here from the raw records.

#![allow(clippy::needless_range_loop)] // the references index windows by number on purpose

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use salespulse_e2e::*;
use serde_json::json;

#[derive(Debug, Clone)]
struct Deal {
    event: String,
    deal: String,
    rep: String,
    team: Option<String>,
    stage: &'static str,
    amount: &'static str,
    currency: &'static str,
    created: i64,
    occurred: i64,
    closed: Option<i64>,
    expected: Option<NaiveDate>,
    /// The record's own forecast category, if it names one.
    category: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Activity {
    event: String,
    rep: String,
    team: Option<String>,
    kind: &'static str,
    at: i64,
    duration: Option<i64>,
}

fn rfc(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .expect("time")
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Deal {
    fn json(&self) -> Vec<u8> {
        let mut v = json!({
            "event_id": self.event, "deal_id": self.deal, "rep_id": self.rep, "stage": self.stage,
            "amount": self.amount, "currency": self.currency,
            "created_at": rfc(self.created), "occurred_at": rfc(self.occurred),
        });
        if let Some(t) = &self.team {
            v["team_id"] = json!(t);
        }
        if let Some(c) = self.closed {
            v["closed_at"] = json!(rfc(c));
        }
        if let Some(d) = self.expected {
            v["expected_close_date"] = json!(d.to_string());
        }
        if let Some(c) = self.category {
            v["forecast_category"] = json!(c);
        }
        serde_json::to_vec(&v).expect("json")
    }
}

impl Activity {
    fn json(&self) -> Vec<u8> {
        let mut v = json!({"event_id": self.event, "rep_id": self.rep, "kind": self.kind, "occurred_at": rfc(self.at)});
        if let Some(t) = &self.team {
            v["team_id"] = json!(t);
        }
        if let Some(d) = self.duration {
            v["duration_seconds"] = json!(d);
        }
        serde_json::to_vec(&v).expect("json")
    }
}

/// One expected series, independent of any output format.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    scope: &'static str,
    id: String,
    team: String,
    metric: &'static str,
    /// Extra labels, in the order the metric declares them.
    extra: Vec<(&'static str, String)>,
    window: Option<&'static str>,
    value: Decimal,
}

impl Expected {
    fn prom_key(&self) -> String {
        let mut labels: Vec<(&str, &str)> = Vec::new();
        if self.scope == "rep" {
            labels.push(("rep", &self.id));
        }
        match self.scope {
            "org" => {}
            "region" => labels.push(("region", &self.id)),
            _ => labels.push(("team", &self.team)),
        }
        for (k, v) in &self.extra {
            labels.push((k, v));
        }
        if let Some(w) = self.window {
            labels.push(("window", w));
        }
        metric_key(&format!("sales_{}_{}", self.scope, self.metric), &labels)
    }

    fn topic_key(&self) -> String {
        let mut labels = Vec::new();
        if self.scope == "rep" {
            labels.push(format!("team={}", self.team));
        }
        for (k, v) in &self.extra {
            labels.push(format!("{k}={v}"));
        }
        format!(
            "{}/{}/{}/{}/{}",
            self.scope,
            self.id,
            self.metric,
            labels.join(","),
            self.window.unwrap_or("")
        )
    }
}

const W: usize = 17;

const WINDOWS: [&str; W] = [
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

/// Windows from this index on are the same-point windows, published for bookings, deals won
/// and activities only.
const SAME_POINT_FROM: usize = 14;

/// First and last second of each window at `now` (UTC, fiscal year from January).
fn starts(now: i64) -> [(i64, i64); W] {
    let d = Utc
        .timestamp_opt(now, 0)
        .single()
        .expect("time")
        .date_naive();
    let mid = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp()
    };
    let month = |y: i32, m: i32| {
        NaiveDate::from_ymd_opt(
            y + (m - 1).div_euclid(12),
            ((m - 1).rem_euclid(12) + 1) as u32,
            1,
        )
        .expect("date")
    };
    let (y, m) = (d.year(), d.month() as i32);
    let qm = (m - 1) / 3 * 3 + 1;
    let monday = d - chrono::Duration::days(i64::from(d.weekday().num_days_from_monday()));
    let days = chrono::Duration::days;
    // (first day of the current period, of the previous one, of the next one)
    let periods = [
        (d, d - days(1), d + days(1)),
        (monday, monday - days(7), monday + days(7)),
        (month(y, m), month(y, m - 1), month(y, m + 1)),
        (month(y, qm), month(y, qm - 3), month(y, qm + 3)),
        (month(y, 1), month(y - 1, 1), month(y + 1, 1)),
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
            let (cur_len, prev_len) = (mid(next) - mid(cur), mid(cur) - mid(prev));
            let reach = i128::from(now - mid(cur)) * i128::from(prev_len) / i128::from(cur_len);
            out[SAME_POINT_FROM + k - 1] = (mid(prev), mid(prev) + reach as i64);
        }
    }
    out
}

/// Noon (UTC) of the first day of the quarter before the one of `now` (fiscal year from
/// January).
fn last_quarter_start(now: i64) -> i64 {
    let d = Utc
        .timestamp_opt(now, 0)
        .single()
        .expect("time")
        .date_naive();
    let q = NaiveDate::from_ymd_opt(d.year(), d.month0() / 3 * 3 + 1, 1).expect("date");
    let last = q.checked_sub_months(chrono::Months::new(3)).expect("date");
    last.and_hms_opt(12, 0, 0)
        .expect("noon")
        .and_utc()
        .timestamp()
}

/// The current week, month, quarter and year (UTC, fiscal year from January) as day ranges.
fn periods(now: i64) -> [(NaiveDate, NaiveDate); 4] {
    let d = Utc
        .timestamp_opt(now, 0)
        .single()
        .expect("time")
        .date_naive();
    let week = d - chrono::Duration::days(i64::from(d.weekday().num_days_from_monday()));
    let month = NaiveDate::from_ymd_opt(d.year(), d.month(), 1).expect("date");
    let quarter = NaiveDate::from_ymd_opt(d.year(), (d.month() - 1) / 3 * 3 + 1, 1).expect("date");
    let year = NaiveDate::from_ymd_opt(d.year(), 1, 1).expect("date");
    let plus = |d: NaiveDate, m: u32| d.checked_add_months(chrono::Months::new(m)).expect("date");
    [
        (week, week + chrono::Duration::days(7)),
        (month, plus(month, 1)),
        (quarter, plus(quarter, 3)),
        (year, plus(year, 12)),
    ]
}

fn rate(c: &str) -> Decimal {
    match c {
        "USD" => Decimal::ONE,
        "EUR" => "1.08".parse().expect("rate"),
        "GBP" => "1.27".parse().expect("rate"),
        other => panic!("no rate for {other}"),
    }
}

fn ratio(n: Decimal, d: Decimal) -> Option<Decimal> {
    (!d.is_zero())
        .then(|| (n / d).round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero))
}

const OPEN_STAGES: [&str; 4] = ["prospecting", "qualification", "proposal", "negotiation"];
const STALL_DAYS: [i64; 4] = [14, 21, 30, 30];

fn stage_index(stage: &str) -> Option<usize> {
    OPEN_STAGES.iter().position(|s| *s == stage)
}

fn default_category(stage: &str) -> &'static str {
    match stage {
        "prospecting" | "qualification" => "pipeline",
        "proposal" => "best_case",
        "negotiation" => "commit",
        "closed_won" => "closed",
        _ => "omitted",
    }
}

/// An open deal as the reference counts it.
#[derive(Debug, Clone)]
struct OpenDeal {
    stage: &'static str,
    amount: Decimal,
    entered: i64,
    expected: Option<NaiveDate>,
    category: &'static str,
}

type FlowFact = (i64, (&'static str, String), Decimal);

/// The flow facts of a deal's applied states (docs/metrics.md, "How deals move"), and when
/// it entered its current open stage.
fn deal_flow(states: &[(Deal, Option<i64>)]) -> (Vec<FlowFact>, Option<i64>) {
    let quarter = |d: NaiveDate| d.year() * 4 + d.month0() as i32 / 3;
    let mut facts: Vec<FlowFact> = Vec::new();
    let mut visit: Option<(&str, i64)> = None;
    let mut closed: Option<(&str, i64)> = None;
    let leave = |facts: &mut Vec<FlowFact>, stage: &str, entered: i64, at: i64, to: &str| {
        facts.push((at, ("stage_exited", format!("{stage},{to}")), Decimal::ONE));
        facts.push((
            at,
            ("stage_seconds", stage.to_owned()),
            Decimal::from((at - entered).max(0)),
        ));
    };
    for (i, (d, closed_at)) in states.iter().enumerate() {
        if stage_index(d.stage).is_none() {
            closed = Some((d.stage, closed_at.expect("closed states have a close time")));
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
                let to = if stage_index(d.stage) > stage_index(v) {
                    "advanced"
                } else {
                    "regressed"
                };
                leave(&mut facts, v, e, at, to);
                facts.push((at, ("stage_entered", d.stage.to_owned()), Decimal::ONE));
                visit = Some((d.stage, at));
            }
            None => {
                facts.push((at, ("stage_entered", d.stage.to_owned()), Decimal::ONE));
                visit = Some((d.stage, at));
            }
        }
        let prev = i.checked_sub(1).map(|p| &states[p].0);
        if let (false, Some(p)) = (reopened, prev) {
            if let (Some(a), Some(b)) = (p.expected, d.expected) {
                let amount = (d.amount.parse::<Decimal>().expect("amount") * rate(d.currency))
                    .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
                let (count, sum) = match quarter(b).cmp(&quarter(a)) {
                    std::cmp::Ordering::Greater => ("close_date_pushed", "pipeline_pushed"),
                    std::cmp::Ordering::Less => ("close_date_pulled_in", "pipeline_pulled_in"),
                    std::cmp::Ordering::Equal => continue,
                };
                facts.push((d.occurred, (count, String::new()), Decimal::ONE));
                facts.push((d.occurred, (sum, String::new()), amount));
            }
        }
    }
    if let (Some((kind, c)), Some((v, e))) = (closed, visit) {
        let to = if kind == "closed_won" { "won" } else { "lost" };
        leave(&mut facts, v, e, c, to);
        return (facts, None);
    }
    (facts, visit.map(|v| v.1))
}

type Put<'a> =
    dyn FnMut(&'static str, Vec<(&'static str, String)>, Option<&'static str>, Decimal) + 'a;

/// Stage funnel and close-date moves of one subject, from its flow sums.
fn flow_series(flows: &BTreeMap<(&'static str, String), [Decimal; W]>, put: &mut Put<'_>) {
    let get =
        |m: &'static str, l: String, w: usize| flows.get(&(m, l)).map_or(Decimal::ZERO, |x| x[w]);
    let any = |m: &'static str, l: String| {
        flows
            .get(&(m, l))
            .is_some_and(|x| x.iter().any(|v| !v.is_zero()))
    };
    let tos = ["advanced", "won", "lost", "regressed"];
    for stage in OPEN_STAGES {
        let used: Vec<&str> = tos
            .into_iter()
            .filter(|to| any("stage_exited", format!("{stage},{to}")))
            .collect();
        if used.is_empty() && !any("stage_entered", stage.to_owned()) {
            continue;
        }
        for (w, label) in WINDOWS.iter().enumerate().take(SAME_POINT_FROM) {
            let s = || vec![("stage", stage.to_owned())];
            put(
                "stage_entered",
                s(),
                Some(*label),
                get("stage_entered", stage.to_owned(), w),
            );
            let (mut left, mut converted) = (Decimal::ZERO, Decimal::ZERO);
            for to in tos {
                let n = get("stage_exited", format!("{stage},{to}"), w);
                left += n;
                if to == "advanced" || to == "won" {
                    converted += n;
                }
                if used.contains(&to) {
                    put(
                        "stage_exited",
                        vec![("stage", stage.to_owned()), ("to", to.to_owned())],
                        Some(*label),
                        n,
                    );
                }
            }
            if let Some(r) = ratio(converted, left) {
                put("stage_conversion_ratio", s(), Some(*label), r);
            }
            if let Some(r) = ratio(get("stage_seconds", stage.to_owned(), w), left) {
                put("stage_seconds", s(), Some(*label), r);
            }
        }
    }
    let moves = [
        "close_date_pushed",
        "close_date_pulled_in",
        "pipeline_pushed",
        "pipeline_pulled_in",
    ];
    if moves.iter().any(|m| any(m, String::new())) {
        for (w, label) in WINDOWS.iter().enumerate().take(SAME_POINT_FROM) {
            for m in moves {
                put(m, vec![], Some(*label), get(m, String::new(), w));
            }
        }
    }
}

/// Open deals by stage, their age in stage, stalled, overdue and undated, at `now`.
fn open_series(opens: &[OpenDeal], now: i64, put: &mut Put<'_>) {
    let minute = now - now.rem_euclid(60);
    let today = Utc
        .timestamp_opt(now, 0)
        .single()
        .expect("time")
        .date_naive();
    for (i, stage) in OPEN_STAGES.iter().enumerate() {
        let here: Vec<&OpenDeal> = opens.iter().filter(|o| o.stage == *stage).collect();
        if here.is_empty() {
            continue;
        }
        let s = || vec![("stage", stage.to_string())];
        let n = Decimal::from(here.len());
        put("open_deals", s(), None, n);
        let age: i64 = here.iter().map(|o| minute - o.entered).sum();
        put(
            "stage_age_seconds",
            s(),
            None,
            ratio(Decimal::from(age), n).expect("deals"),
        );
        let stalled: Vec<&&OpenDeal> = here
            .iter()
            .filter(|o| now - o.entered > STALL_DAYS[i] * 86_400)
            .collect();
        put("stalled_deals", s(), None, Decimal::from(stalled.len()));
        put(
            "stalled_pipeline",
            s(),
            None,
            stalled.iter().map(|o| o.amount).sum(),
        );
    }
    let overdue: Vec<&OpenDeal> = opens
        .iter()
        .filter(|o| o.expected.is_some_and(|e| e < today))
        .collect();
    put("overdue_deals", vec![], None, Decimal::from(overdue.len()));
    put(
        "overdue_pipeline",
        vec![],
        None,
        overdue.iter().map(|o| o.amount).sum(),
    );
    for c in ["pipeline", "best_case", "commit", "omitted"] {
        let v = opens
            .iter()
            .filter(|o| o.expected.is_none() && o.category == c)
            .map(|o| o.amount)
            .sum();
        put(
            "forecast_undated",
            vec![("category", c.to_owned())],
            None,
            v,
        );
    }
}

/// The forecast of the current fiscal month and quarter by category, and its roll-ups;
/// `closed` is the bookings of the month and of the quarter to date.
fn forecast_series(opens: &[OpenDeal], closed: [Decimal; 2], now: i64, put: &mut Put<'_>) {
    let today = Utc
        .timestamp_opt(now, 0)
        .single()
        .expect("time")
        .date_naive();
    let p = periods(now);
    let names = [
        format!("{}-{:02}", today.year(), today.month()),
        format!("{}-Q{}", today.year(), today.month0() / 3 + 1),
    ];
    for (j, (k, period_type)) in [(1, "month"), (2, "quarter")].into_iter().enumerate() {
        let (lo, hi) = p[k];
        let by = |c: &str| -> Decimal {
            if c == "closed" {
                return closed[j];
            }
            opens
                .iter()
                .filter(|o| o.category == c && o.expected.is_some_and(|e| lo <= e && e < hi))
                .map(|o| o.amount)
                .sum()
        };
        let labels = |first: (&'static str, &str)| {
            vec![
                (first.0, first.1.to_owned()),
                ("period_type", period_type.to_owned()),
                ("period", names[j].clone()),
            ]
        };
        for c in ["pipeline", "best_case", "commit", "omitted", "closed"] {
            put(
                "forecast_category_amount",
                labels(("category", c)),
                None,
                by(c),
            );
        }
        let commit = by("closed") + by("commit");
        let best = commit + by("best_case");
        let pipe = best + by("pipeline");
        for (r, v) in [("commit", commit), ("best_case", best), ("pipeline", pipe)] {
            put("forecast_rollup", labels(("rollup", r)), None, v);
        }
    }
}

/// A rep's name as the golden roster gives it: rep-b's record that moves it to team-y names
/// none.
fn roster_name(rep: &str, team: &str) -> String {
    if rep == "rep-b" && team == "team-y" {
        rep.to_owned()
    } else {
        rep.to_uppercase()
    }
}

/// Recomputes every business series from the raw records, the final roster and `now`.
fn reference(
    deals: &[Deal],
    acts: &[Activity],
    roster: &HashMap<String, String>,
    now: i64,
) -> Vec<Expected> {
    let lo = starts(now);
    // Regions: team-x's reps are in europe on the roster (rep-b's move names none); every
    // other team, in no region, is in `unassigned`.
    let region_of = |team: &str| {
        if team == "team-x" && roster.values().any(|t| t == "team-x") {
            "europe".to_owned()
        } else {
            "unassigned".to_owned()
        }
    };
    let eff = |rep: &str, team: &Option<String>| {
        team.clone()
            .or_else(|| roster.get(rep).cloned())
            .unwrap_or_else(|| "unassigned".into())
    };
    // Latest state of each deal, with its close time.
    let mut latest: BTreeMap<String, (Deal, Option<i64>, HashSet<String>)> = BTreeMap::new();
    // Every applied state of each deal, with its close time.
    let mut history: BTreeMap<String, Vec<(Deal, Option<i64>)>> = BTreeMap::new();
    for d in deals {
        match latest.get_mut(&d.deal) {
            Some((_, _, ids)) if ids.contains(&d.event) => {}
            Some((cur, _, ids)) if d.occurred < cur.occurred => {
                ids.insert(d.event.clone());
            }
            Some((cur, closed, ids)) => {
                ids.insert(d.event.clone());
                let was_closed = cur.stage.starts_with("closed");
                *closed = if d.stage.starts_with("closed") {
                    Some(
                        d.closed
                            .or(if was_closed { *closed } else { None })
                            .unwrap_or(d.occurred),
                    )
                } else {
                    None
                };
                *cur = d.clone();
                history
                    .entry(d.deal.clone())
                    .or_default()
                    .push((d.clone(), *closed));
            }
            None => {
                let closed = d
                    .stage
                    .starts_with("closed")
                    .then(|| d.closed.unwrap_or(d.occurred));
                latest.insert(
                    d.deal.clone(),
                    (d.clone(), closed, HashSet::from([d.event.clone()])),
                );
                history.insert(d.deal.clone(), vec![(d.clone(), closed)]);
            }
        }
    }
    type Key = (&'static str, String, String);
    #[derive(Default)]
    struct Acc {
        w: [[Decimal; 5]; W], // bookings, won, lost, cycle, created amount
        created: [i64; W],
        open: BTreeMap<&'static str, Decimal>,
        weighted: Decimal,
        /// Expected in the current week, month, quarter, year: amount and weighted amount.
        expected: [(Decimal, Decimal); 4],
        /// (metric, labels) -> window sums of the flow facts.
        flows: BTreeMap<(&'static str, String), [Decimal; W]>,
        opens: Vec<OpenDeal>,
        /// Bookings per week (see [`week_of`]) of the current and the 27 weeks before.
        weeks: BTreeMap<i64, Decimal>,
    }
    let mut accs: BTreeMap<Key, Acc> = BTreeMap::new();
    for (d, closed, _) in latest.values() {
        let (flow_facts, entered) = deal_flow(&history[&d.deal]);
        let team = eff(&d.rep, &d.team);
        let amount = (d.amount.parse::<Decimal>().expect("amount") * rate(d.currency))
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        let mut keys = vec![
            ("team", team.clone(), team.clone()),
            ("org", "org".to_owned(), String::new()),
            ("region", region_of(&team), String::new()),
        ];
        if roster.contains_key(&d.rep) {
            keys.push(("rep", d.rep.clone(), team.clone()));
        }
        for k in keys {
            let a = accs.entry(k).or_default();
            if let Some(c) = closed.filter(|_| d.stage == "closed_won") {
                if (week_of(now) - 27..=week_of(now)).contains(&week_of(c)) {
                    *a.weeks.entry(week_of(c)).or_default() += amount;
                }
            }
            for w in 0..W {
                let inw = |t: i64| lo[w].0 <= t && t <= lo[w].1;
                if inw(d.created) {
                    a.w[w][4] += amount;
                    a.created[w] += 1;
                }
                if let Some(c) = closed.filter(|c| inw(*c)) {
                    if d.stage == "closed_won" {
                        a.w[w][0] += amount;
                        a.w[w][1] += Decimal::ONE;
                        a.w[w][3] += Decimal::from(c - d.created);
                    } else {
                        a.w[w][2] += Decimal::ONE;
                    }
                }
            }
            let p = match d.stage {
                "prospecting" => Some("0.1"),
                "qualification" => Some("0.2"),
                "proposal" => Some("0.5"),
                "negotiation" => Some("0.8"),
                _ => None,
            };
            for (ts, key, v) in &flow_facts {
                let sums = a.flows.entry(key.clone()).or_insert([Decimal::ZERO; W]);
                for w in 0..W {
                    if lo[w].0 <= *ts && *ts <= lo[w].1 {
                        sums[w] += *v;
                    }
                }
            }
            if let Some(p) = p {
                let p = p.parse::<Decimal>().expect("p");
                a.opens.push(OpenDeal {
                    stage: d.stage,
                    amount,
                    entered: entered.expect("an open deal is in a stage"),
                    expected: d.expected,
                    category: match d.category.unwrap_or(default_category(d.stage)) {
                        "closed" => "commit",
                        c => c,
                    },
                });
                *a.open.entry(d.stage).or_default() += amount;
                a.weighted += amount * p;
                if let Some(e) = d.expected {
                    for (k, (lo, hi)) in periods(now).iter().enumerate() {
                        if *lo <= e && e < *hi {
                            a.expected[k].0 += amount;
                            a.expected[k].1 += amount * p;
                        }
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for ((scope, id, team), a) in accs {
        let mut put = |metric, extra, window, value: Decimal| {
            out.push(Expected {
                scope,
                id: id.clone(),
                team: team.clone(),
                metric,
                extra,
                window,
                value: value.normalize(),
            })
        };
        if scope != "rep" {
            for (week, v) in a.weeks.iter().filter(|(_, v)| !v.is_zero()) {
                // Week 0 starts on Monday 1970-01-05.
                let monday = NaiveDate::from_ymd_opt(1970, 1, 5).expect("date")
                    + chrono::Duration::days(7 * week);
                put(
                    "weekly_bookings",
                    vec![("week", monday.to_string())],
                    None,
                    *v,
                );
            }
        }
        if a.created.iter().any(|c| *c > 0)
            || a.w.iter().any(|w| !w[1].is_zero() || !w[2].is_zero())
        {
            for (i, w) in WINDOWS.iter().enumerate() {
                let x = a.w[i];
                put("bookings", vec![], Some(*w), x[0]);
                put("deals_won", vec![], Some(*w), x[1]);
                if i >= SAME_POINT_FROM {
                    continue;
                }
                put("deals_lost", vec![], Some(*w), x[2]);
                put("pipeline_created", vec![], Some(*w), x[4]);
                if let Some(r) = ratio(x[1], x[1] + x[2]) {
                    put("win_rate", vec![], Some(*w), r);
                }
                if let Some(r) = ratio(x[0], x[1]) {
                    put("avg_deal_size", vec![], Some(*w), r);
                }
                if let Some(r) = ratio(x[3], x[1]) {
                    put("sales_cycle_seconds", vec![], Some(*w), r);
                }
                if !x[1].is_zero() && x[3] > Decimal::ZERO {
                    let open = Decimal::from(a.opens.len());
                    let v = open * x[0] * x[1] * Decimal::from(86_400);
                    if let Some(r) = ratio(v, (x[1] + x[2]) * x[3]) {
                        put("pipeline_velocity", vec![], Some(*w), r);
                    }
                }
            }
        }
        flow_series(&a.flows, &mut put);
        if !a.open.is_empty() {
            for (s, v) in &a.open {
                put("open_pipeline", vec![("stage", s.to_string())], None, *v);
            }
            put("weighted_pipeline", vec![], None, a.weighted);
            for (k, period) in ["week", "month", "quarter", "year"].iter().enumerate() {
                put(
                    "pipeline_expected",
                    vec![("period_type", period.to_string())],
                    None,
                    a.expected[k].0,
                );
                put(
                    "weighted_pipeline_expected",
                    vec![("period_type", period.to_string())],
                    None,
                    a.expected[k].1,
                );
            }
            open_series(&a.opens, now, &mut put);
        }
        let any_window = a.created.iter().any(|c| *c > 0)
            || a.w.iter().any(|w| !w[1].is_zero() || !w[2].is_zero());
        if any_window || !a.open.is_empty() {
            let closed = [a.w[6][0], a.w[7][0]];
            forecast_series(&a.opens, closed, now, &mut put);
        }
    }
    // Activities: deduplicated by event id; one-minute buckets within 25 h, hour buckets older.
    let mut seen = HashSet::new();
    let mut counts: BTreeMap<(Key, &'static str), [i64; W]> = BTreeMap::new();
    let mut talk: BTreeMap<(Key, &'static str), [i64; W]> = BTreeMap::new();
    for a in acts {
        if !seen.insert(a.event.clone()) {
            continue;
        }
        let minute = a.at - a.at.rem_euclid(60);
        let bucket = if minute < now - 25 * 3600 {
            a.at - a.at.rem_euclid(3600)
        } else {
            minute
        };
        let team = eff(&a.rep, &a.team);
        let mut keys = vec![
            ("team", team.clone(), team.clone()),
            ("org", "org".to_owned(), String::new()),
            ("region", region_of(&team), String::new()),
        ];
        if roster.contains_key(&a.rep) {
            keys.push(("rep", a.rep.clone(), team.clone()));
        }
        for k in keys {
            let t = talk.entry((k.clone(), a.kind)).or_insert([0; W]);
            let c = counts.entry((k, a.kind)).or_insert([0; W]);
            for w in 0..W {
                if lo[w].0 <= bucket && bucket <= lo[w].1 {
                    c[w] += 1;
                    t[w] += a.duration.unwrap_or(0);
                }
            }
        }
    }
    for (metric, sums) in [("activities", counts), ("activity_seconds", talk)] {
        for (((scope, id, team), kind), c) in sums {
            if c.iter().all(|x| *x == 0) {
                continue;
            }
            for (i, w) in WINDOWS.iter().enumerate() {
                if i >= SAME_POINT_FROM && metric != "activities" {
                    continue;
                }
                out.push(Expected {
                    scope,
                    id: id.clone(),
                    team: team.clone(),
                    metric,
                    extra: vec![("kind", kind.to_string())],
                    window: Some(*w),
                    value: Decimal::from(c[i]),
                });
            }
        }
    }
    // Every rep on the roster belongs to its roster team, with its name (the golden roster
    // names each rep by its id in capitals, except rep-b after its move, which names none).
    for (rep, team) in roster {
        out.push(Expected {
            scope: "rep",
            id: rep.clone(),
            team: team.clone(),
            metric: "member",
            extra: vec![],
            window: None,
            value: Decimal::ONE,
        });
        let mut extra = vec![("name", roster_name(rep, team))];
        if team == "team-x" {
            extra.push(("region", "europe".to_owned()));
            extra.push(("hired_at", "2025-03-01".to_owned()));
        }
        out.push(Expected {
            scope: "rep",
            id: rep.clone(),
            team: team.clone(),
            metric: "info",
            extra,
            window: None,
            value: Decimal::ONE,
        });
        // Consistency over the last 12 complete UTC weeks: weekly bookings and deals won of
        // the rep's won deals (latest states), and its activities, under every team.
        let mut won: BTreeMap<i64, (i128, i128)> = BTreeMap::new();
        for (d, closed, _) in latest.values() {
            if let (true, true, Some(c)) = (&d.rep == rep, d.stage == "closed_won", closed) {
                let amount = (d.amount.parse::<Decimal>().expect("amount") * rate(d.currency))
                    .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
                let cents =
                    rust_decimal::prelude::ToPrimitive::to_i128(&(amount * Decimal::ONE_HUNDRED))
                        .expect("cents");
                let w = won.entry(week_of(*c)).or_default();
                w.0 += cents;
                w.1 += 1;
            }
        }
        let mut done: BTreeMap<i64, i128> = BTreeMap::new();
        let mut seen = HashSet::new();
        for a in acts.iter().filter(|a| &a.rep == rep) {
            if seen.insert(a.event.clone()) {
                *done.entry(week_of(a.at)).or_default() += 1;
            }
        }
        let hired = (team == "team-x")
            .then(|| NaiveDate::from_ymd_opt(2025, 3, 1))
            .flatten();
        for (measure, money, weekly) in [
            (
                "bookings",
                true,
                won.iter()
                    .map(|(w, v)| (*w, v.0))
                    .collect::<BTreeMap<_, _>>(),
            ),
            (
                "deals_won",
                false,
                won.iter().map(|(w, v)| (*w, v.1)).collect(),
            ),
            ("activities", false, done.clone()),
        ] {
            for (stat, value) in consistency(&weekly, now, hired, money) {
                out.push(Expected {
                    scope: "rep",
                    id: rep.clone(),
                    team: team.clone(),
                    metric: stat,
                    extra: vec![("metric", measure.to_owned())],
                    window: None,
                    value,
                });
            }
        }
    }
    out
}

/// UTC week of `t`, counted from Monday 1970-01-05.
fn week_of(t: i64) -> i64 {
    (t - 4 * 86_400).div_euclid(7 * 86_400)
}

/// Mean, population standard deviation and their ratio of the weekly values of the 12
/// complete weeks before `now`'s (from the first full week after `hired`), as the consistency
/// families give them: money in cents rounded to the cent, counts and the ratio to 6 places.
/// None while no week from 12 back to the next holds anything.
fn consistency(
    weekly: &BTreeMap<i64, i128>,
    now: i64,
    hired: Option<NaiveDate>,
    money: bool,
) -> Vec<(&'static str, Decimal)> {
    let cur = week_of(now);
    if !weekly.range(cur - 12..=cur + 1).any(|(_, v)| *v != 0) {
        return Vec::new();
    }
    let first = hired
        .map(|d| {
            let t = d.and_hms_opt(0, 0, 0).expect("valid").and_utc().timestamp();
            week_of(t) + i64::from(d.weekday() != chrono::Weekday::Mon)
        })
        .unwrap_or(cur - 12)
        .max(cur - 12);
    let values: Vec<i128> = (first..cur)
        .map(|w| weekly.get(&w).copied().unwrap_or(0))
        .collect();
    if values.len() < 2 {
        return Vec::new();
    }
    let n = values.len() as i128;
    let sum: i128 = values.iter().sum();
    let mean = Decimal::from_i128_with_scale(sum, 0) / Decimal::from(n as i64);
    let var: Decimal = values
        .iter()
        .map(|v| {
            let d = Decimal::from_i128_with_scale(*v, 0) - mean;
            d * d
        })
        .sum::<Decimal>()
        / Decimal::from(n as i64);
    let sd = Decimal::try_from(var.to_string().parse::<f64>().expect("f64").sqrt()).expect("sd");
    let round = |d: Decimal| {
        let (d, dp) = if money {
            (d / Decimal::ONE_HUNDRED, 2)
        } else {
            (d, 6)
        };
        d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero)
    };
    let mut out = vec![
        ("consistency_mean", round(mean)),
        ("consistency_stddev", round(sd)),
        ("consistency_samples", Decimal::from(n as i64)),
    ];
    if sum != 0 {
        out.push((
            "consistency_cv",
            (sd / mean).round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero),
        ));
    }
    out
}

fn business(m: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.into_iter()
        .filter(|(k, _)| {
            k.starts_with("sales_rep_")
                || k.starts_with("sales_team_")
                || k.starts_with("sales_region_")
                || k.starts_with("sales_org_")
        })
        .collect()
}

fn differences(got: &BTreeMap<String, f64>, want: &[Expected]) -> Vec<String> {
    let want: BTreeMap<String, f64> = want
        .iter()
        .map(|e| {
            (
                e.prom_key(),
                e.value.to_string().parse::<f64>().expect("f64"),
            )
        })
        .collect();
    let mut diffs = Vec::new();
    for (k, v) in &want {
        match got.get(k) {
            None => diffs.push(format!("missing {k} = {v}")),
            Some(g) if (g - v).abs() > 1e-9 * v.abs().max(1.0) => {
                diffs.push(format!("{k}: got {g}, want {v}"))
            }
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        diffs.push(format!("unexpected {k} = {}", got[k]));
    }
    diffs
}

/// Polls both services until their boards equal the reference at the time of the scrape.
async fn converge(
    services: &[&Service],
    deals: &[Deal],
    acts: &[Activity],
    roster: &HashMap<String, String>,
    within: Duration,
) -> Vec<Expected> {
    let deadline = Instant::now() + within;
    loop {
        let now = Utc::now().timestamp();
        let mut got = BTreeMap::new();
        for s in services {
            got.extend(business(parse_metrics(&s.metrics().await)));
        }
        let want = reference(deals, acts, roster, now);
        let want_after = reference(deals, acts, roster, Utc::now().timestamp());
        let diffs = differences(&got, &want);
        if diffs.is_empty() {
            return want;
        }
        if differences(&got, &want_after).is_empty() {
            return want_after;
        }
        if Instant::now() > deadline {
            panic!(
                "board differs from the reference ({} differences):\n{}",
                diffs.len(),
                diffs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_scenario_end_to_end() {
    require_broker();
    let topics = Topics::unique("golden");
    let group = format!("g-{}", topics.suffix);
    set_service_env("deals", "SALESPULSE_ALERTS__BIG_DEAL_AMOUNT", "1000");
    let (dport, aport) = (free_port(), free_port());
    let mut deals_svc = Service::start("deals", &topics, dport, &group);
    let mut acts_svc = Service::start("activities", &topics, aport, &group);
    deals_svc.wait_ready(Duration::from_secs(60)).await;
    acts_svc.wait_ready(Duration::from_secs(60)).await;

    let p = producer();
    let now = Utc::now().timestamp();
    let mut roster: HashMap<String, String> = HashMap::new();
    for (r, t) in [
        ("rep-a", "team-x"),
        ("rep-b", "team-x"),
        ("rep-c", "team-y"),
    ] {
        let mut v = json!({"rep_id": r, "team_id": t, "name": r.to_uppercase(), "active": true});
        if t == "team-x" {
            v["region"] = json!("europe");
            v["hired_at"] = json!("2025-03-01");
        }
        produce_json(&p, &topics.roster, r, &v).await;
        roster.insert(r.into(), t.into());
    }
    let deal =
        |event: &str, deal: &str, rep: &str, stage, amount, currency, created, occurred, closed| {
            Deal {
                event: event.into(),
                deal: deal.into(),
                rep: rep.into(),
                team: None,
                stage,
                amount,
                currency,
                created,
                occurred,
                closed,
                expected: None,
                category: None,
            }
        };
    let h = 3600;
    let today = Utc
        .timestamp_opt(now, 0)
        .single()
        .expect("time")
        .date_naive();
    let day = 86_400;
    // Noon of the 1st of last quarter (UTC, fiscal year from January): the quarter report's.
    let last_q = last_quarter_start(now);
    let mut deals = vec![
        // Wins of earlier weeks, for the reps' consistency (below the big-win amount).
        deal(
            "w1",
            "dw1",
            "rep-a",
            "closed_won",
            "900",
            "USD",
            now - 11 * day,
            now - 9 * day,
            Some(now - 9 * day),
        ),
        deal(
            "w2",
            "dw2",
            "rep-a",
            "closed_won",
            "500",
            "GBP",
            now - 18 * day,
            now - 16 * day,
            Some(now - 16 * day),
        ),
        deal(
            "w3",
            "dw3",
            "rep-c",
            "closed_won",
            "750.25",
            "EUR",
            now - 25 * day,
            now - 23 * day,
            Some(now - 23 * day),
        ),
        // Wins and a loss of last quarter, and a win of last year, for the closed-period
        // windows and the quarterly report.
        deal(
            "w4",
            "dw4",
            "rep-c",
            "closed_won",
            "410",
            "USD",
            last_q + 15 * day,
            last_q + 20 * day,
            Some(last_q + 20 * day),
        ),
        deal(
            "w6",
            "dw6",
            "rep-a",
            "closed_won",
            "900",
            "EUR",
            last_q + 30 * day,
            last_q + 40 * day,
            Some(last_q + 40 * day),
        ),
        deal(
            "l6",
            "dl6",
            "rep-a",
            "closed_lost",
            "300",
            "USD",
            last_q + 31 * day,
            last_q + 45 * day,
            Some(last_q + 45 * day),
        ),
        deal(
            "w5",
            "dw5",
            "rep-a",
            "closed_won",
            "320.50",
            "USD",
            now - 372 * day,
            now - 365 * day,
            Some(now - 365 * day),
        ),
        // d1: amount change, then won.
        deal(
            "e1",
            "d1",
            "rep-a",
            "prospecting",
            "1000",
            "USD",
            now - 5 * h,
            now - 5 * h,
            None,
        ),
        deal(
            "e2",
            "d1",
            "rep-a",
            "negotiation",
            "1500.50",
            "USD",
            now - 5 * h,
            now - 3 * h,
            None,
        ),
        deal(
            "e3",
            "d1",
            "rep-a",
            "closed_won",
            "1500.50",
            "USD",
            now - 5 * h,
            now - 2 * h,
            None,
        ),
        // d2 in euros: won, then reopened.
        deal(
            "e4",
            "d2",
            "rep-b",
            "closed_won",
            "1000",
            "EUR",
            now - 10 * h,
            now - 30 * 60,
            Some(now - 40 * 60),
        ),
        // Reopened, expected to close in more than a year: in no current period.
        Deal {
            expected: Some(today + chrono::Duration::days(400)),
            ..deal(
                "e5",
                "d2",
                "rep-b",
                "negotiation",
                "1000",
                "EUR",
                now - 10 * h,
                now - 20 * 60,
                None,
            )
        },
        // d3: owner change a -> c, then lost.
        deal(
            "e6",
            "d3",
            "rep-a",
            "proposal",
            "2000",
            "GBP",
            now - 2 * h,
            now - 2 * h,
            None,
        ),
        deal(
            "e7",
            "d3",
            "rep-c",
            "proposal",
            "2000",
            "GBP",
            now - 2 * h,
            now - h,
            None,
        ),
        // d4: won just inside the 1h window; it leaves the window while the test runs or after.
        deal(
            "e8",
            "d4",
            "rep-c",
            "closed_won",
            "333.33",
            "USD",
            now - 4 * h,
            now - 3000,
            Some(now - 3000),
        ),
        // d5: late record, closed three days ago.
        deal(
            "e9",
            "d5",
            "rep-a",
            "closed_won",
            "4200",
            "USD",
            now - 20 * 86_400,
            now - 3 * 86_400,
            Some(now - 3 * 86_400),
        ),
        // d7 through the funnel: advanced, moved back, re-entering a stage; its expected close
        // date pushed into a later quarter and pulled back, its category set by the rep.
        Deal {
            expected: Some(today + chrono::Duration::days(5)),
            ..deal(
                "e20",
                "d7",
                "rep-a",
                "prospecting",
                "700",
                "USD",
                now - 20 * 86_400,
                now - 20 * 86_400,
                None,
            )
        },
        Deal {
            expected: Some(today + chrono::Duration::days(5)),
            ..deal(
                "e21",
                "d7",
                "rep-a",
                "qualification",
                "700",
                "USD",
                now - 20 * 86_400,
                now - 12 * 86_400,
                None,
            )
        },
        Deal {
            expected: Some(today + chrono::Duration::days(100)),
            ..deal(
                "e22",
                "d7",
                "rep-a",
                "prospecting",
                "750",
                "USD",
                now - 20 * 86_400,
                now - 8 * 86_400,
                None,
            )
        },
        Deal {
            expected: Some(today + chrono::Duration::days(5)),
            category: Some("best_case"),
            ..deal(
                "e23",
                "d7",
                "rep-a",
                "qualification",
                "800",
                "USD",
                now - 20 * 86_400,
                now - 6 * 86_400,
                None,
            )
        },
        // d8: sixteen days in prospecting (stalled after 14), no expected close date.
        deal(
            "e24",
            "d8",
            "rep-b",
            "prospecting",
            "1200",
            "USD",
            now - 16 * 86_400,
            now - 16 * 86_400,
            None,
        ),
        // d11: a proposal won (and reopened into the same stage after the restart).
        deal(
            "e30",
            "d11",
            "rep-b",
            "proposal",
            "500",
            "USD",
            now - 3 * h,
            now - 3 * h,
            None,
        ),
        deal(
            "e31",
            "d11",
            "rep-b",
            "closed_won",
            "500",
            "USD",
            now - 3 * h,
            now - 2 * h,
            Some(now - 2 * h),
        ),
        // d10: a proposal whose expected close date has passed (overdue), marked commit.
        Deal {
            expected: Some(today - chrono::Duration::days(2)),
            category: Some("commit"),
            ..deal(
                "e25",
                "d10",
                "rep-c",
                "proposal",
                "310",
                "GBP",
                now - 3 * 86_400,
                now - 3 * 86_400,
                None,
            )
        },
    ];
    let act = |event: &str, rep: &str, kind, at| Activity {
        event: event.into(),
        rep: rep.into(),
        team: None,
        kind,
        at,
        duration: None,
    };
    let mut acts = vec![
        Activity {
            duration: Some(240),
            ..act("a1", "rep-a", "call", now - 300)
        },
        act("a2", "rep-a", "call", now - 200),
        act("a3", "rep-a", "email", now - 2 * h),
        Activity {
            duration: Some(1_800),
            ..act("a4", "rep-b", "meeting", now - 3590) // leaves 1h within seconds
        },
        act("a5", "rep-c", "demo", now - 2 * 86_400 - 1234), // an hour bucket
        act("week-a1", "rep-c", "call", now - 10 * 86_400),
        act("week-a2", "rep-a", "email", now - 17 * 86_400),
        act("week-a3", "rep-a", "email", now - 17 * 86_400 + 60),
        act("lq-a1", "rep-a", "call", last_q + 10 * 86_400),
        act("lq-a2", "rep-c", "demo", last_q + 33 * 86_400),
        Activity {
            team: Some("team-z".into()),
            ..act("a6", "rep-b", "call", now - 100)
        },
    ];
    for d in &deals {
        produce(&p, &topics.deals, Some(&d.deal), Some(&d.json())).await;
    }
    for a in &acts {
        produce(&p, &topics.activities, Some(&a.rep), Some(&a.json())).await;
    }
    converge(
        &[&deals_svc, &acts_svc],
        &deals,
        &acts,
        &roster,
        Duration::from_secs(30),
    )
    .await;
    println!(
        "phase 1: {} deal and {} activity records match the reference",
        deals.len(),
        acts.len()
    );

    // A crash and a clean restart in the middle of the stream. The deals service is killed
    // once it has committed what it read, so that the outcome counters below count exactly the
    // records after the restart; the numbers themselves are exact however late it dies.
    wait_committed(&group, &topics.deals, Duration::from_secs(20));
    deals_svc.kill();
    assert!(
        acts_svc.terminate().success(),
        "activities exits 0 on SIGTERM"
    );
    let mut deals_svc = Service::start("deals", &topics, dport, &group);
    let mut acts_svc = Service::start("activities", &topics, aport, &group);
    deals_svc.wait_ready(Duration::from_secs(60)).await;
    acts_svc.wait_ready(Duration::from_secs(60)).await;

    let phase2_deals = vec![
        deal(
            "e3",
            "d1",
            "rep-a",
            "closed_won",
            "1500.50",
            "USD",
            now - 5 * h,
            now - 2 * h,
            None,
        ), // duplicate
        deal(
            "e10",
            "d1",
            "rep-a",
            "prospecting",
            "1000",
            "USD",
            now - 5 * h,
            now - 4 * h,
            None,
        ), // stale
        deal(
            "e11",
            "d3",
            "rep-c",
            "closed_lost",
            "2000",
            "GBP",
            now - 2 * h,
            now - 60,
            None,
        ),
        // d11 reopened into the stage it was won from: the win is gone, the visit goes on.
        deal(
            "e32",
            "d11",
            "rep-b",
            "proposal",
            "500",
            "USD",
            now - 3 * h,
            now - 90,
            None,
        ),
        // d7 handed to rep-c mid-funnel: its whole history moves with it.
        Deal {
            expected: Some(today + chrono::Duration::days(5)),
            category: Some("best_case"),
            ..deal(
                "e26",
                "d7",
                "rep-c",
                "qualification",
                "800",
                "USD",
                now - 20 * 86_400,
                now - 300,
                None,
            )
        },
        // Expected to close today: in the current week, month, quarter and year.
        Deal {
            expected: Some(today),
            ..deal(
                "e12",
                "d6",
                "rep-b",
                "qualification",
                "999.99",
                "USD",
                now - 600,
                now - 600,
                None,
            )
        },
    ];
    let phase2_acts = vec![
        Activity {
            duration: Some(240),
            ..act("a1", "rep-a", "call", now - 300) // duplicate
        },
        act("a7", "rep-b", "email", now - 60),
    ];
    // rep-b moves to team-y: every number derived from the roster follows.
    let v = json!({"rep_id": "rep-b", "team_id": "team-y", "active": true});
    produce_json(&p, &topics.roster, "rep-b", &v).await;
    roster.insert("rep-b".into(), "team-y".into());
    for d in &phase2_deals {
        produce(&p, &topics.deals, Some(&d.deal), Some(&d.json())).await;
    }
    for a in &phase2_acts {
        produce(&p, &topics.activities, Some(&a.rep), Some(&a.json())).await;
    }
    let future = rfc(now + 3600);
    let malformed_deals: Vec<(&str, Vec<u8>, &str)> = vec![
        ("d9", b"{not json".to_vec(), "invalid_json"),
        ("d9", json!({"event_id":"m1","deal_id":"d9","rep_id":"rep-a","stage":"won","amount":"1","currency":"USD","created_at":rfc(now),"occurred_at":rfc(now)}).to_string().into_bytes(), "unknown_stage"),
        ("d9", json!({"event_id":"m2","deal_id":"d9","rep_id":"rep-a","stage":"proposal","amount":"-5","currency":"USD","created_at":rfc(now),"occurred_at":rfc(now)}).to_string().into_bytes(), "negative_amount"),
        ("d9", json!({"event_id":"m3","deal_id":"d9","rep_id":"rep-a","stage":"proposal","amount":"5","currency":"XYZ","created_at":rfc(now),"occurred_at":rfc(now)}).to_string().into_bytes(), "unknown_currency"),
        ("d9", json!({"event_id":"m4","deal_id":"d9","rep_id":"rep-a","stage":"proposal","amount":"5","currency":"USD","created_at":rfc(now),"occurred_at":future}).to_string().into_bytes(), "future_timestamp"),
        ("d9", json!({"event_id":"m5","deal_id":"d9","rep_id":"","stage":"proposal","amount":"5","currency":"USD","created_at":rfc(now),"occurred_at":rfc(now)}).to_string().into_bytes(), "empty_id"),
        ("d9", json!({"event_id":"m6","deal_id":"d9","rep_id":"rep-a","stage":"proposal","currency":"USD","created_at":rfc(now),"occurred_at":rfc(now)}).to_string().into_bytes(), "missing_field"),
        ("d9", json!({"event_id":"m9","deal_id":"d9","rep_id":"rep-a","stage":"proposal","amount":"5","currency":"USD","created_at":rfc(now),"occurred_at":rfc(now),"forecast_category":"maybe"}).to_string().into_bytes(), "unknown_forecast_category"),
    ];
    let malformed_acts: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "rep-a",
            json!({"event_id":"m7","rep_id":"rep-a","kind":"lunch","occurred_at":rfc(now)})
                .to_string()
                .into_bytes(),
            "unknown_kind",
        ),
        (
            "rep-a",
            json!({"event_id":"m8","rep_id":"rep-a","kind":"call","occurred_at":12})
                .to_string()
                .into_bytes(),
            "wrong_type",
        ),
    ];
    for (k, v, _) in &malformed_deals {
        produce(&p, &topics.deals, Some(k), Some(v)).await;
    }
    for (k, v, _) in &malformed_acts {
        produce(&p, &topics.activities, Some(k), Some(v)).await;
    }
    deals.extend(phase2_deals);
    acts.extend(phase2_acts);
    let want = converge(
        &[&deals_svc, &acts_svc],
        &deals,
        &acts,
        &roster,
        Duration::from_secs(40),
    )
    .await;
    println!(
        "phase 2 (after a SIGKILL, a SIGTERM and restarts): {} series match the reference",
        want.len()
    );

    // Outcomes of the live records after the restart.
    let dm = parse_metrics(&deals_svc.metrics().await);
    let am = parse_metrics(&acts_svc.metrics().await);
    let count = |m: &BTreeMap<String, f64>, topic: &str, outcome: &str| {
        m.get(&metric_key(
            "salespulse_events_total",
            &[
                ("outcome", outcome),
                ("service", if m == &dm { "deals" } else { "activities" }),
                ("topic", topic),
            ],
        ))
        .copied()
        .unwrap_or(0.0)
    };
    assert_eq!(count(&dm, &topics.deals, "duplicate"), 1.0);
    assert_eq!(count(&dm, &topics.deals, "stale"), 1.0);
    assert_eq!(count(&dm, &topics.deals, "applied"), 4.0);
    assert_eq!(
        count(&dm, &topics.deals, "rejected"),
        malformed_deals.len() as f64
    );
    assert_eq!(count(&am, &topics.activities, "duplicate"), 1.0);
    assert_eq!(
        count(&am, &topics.activities, "rejected"),
        malformed_acts.len() as f64
    );

    // Every rejected record is on the dead-letter topic, with its reason and position.
    let dlq = read_topic(&topics.deadletter);
    let mut reasons: Vec<String> = dlq.iter().map(|r| r.headers["reason"].clone()).collect();
    reasons.sort();
    let mut expected: Vec<String> = malformed_deals
        .iter()
        .chain(&malformed_acts)
        .map(|(_, _, r)| r.to_string())
        .collect();
    expected.sort();
    assert_eq!(reasons, expected, "dead-letter reasons");
    for r in &dlq {
        assert!(
            r.headers["source.topic"] == topics.deals
                || r.headers["source.topic"] == topics.activities
        );
        assert!(r.headers["source.offset"].parse::<i64>().is_ok());
        assert!(r.headers["source.partition"].parse::<i32>().is_ok());
        assert!(!r.headers["reason.detail"].is_empty());
        let original = malformed_deals
            .iter()
            .chain(&malformed_acts)
            .any(|(_, v, _)| Some(v) == r.value.as_ref());
        assert!(original, "dead letter keeps the original bytes");
    }
    println!("dead letters: {} records, reasons {:?}", dlq.len(), reasons);

    // Deals won for at least 1000 USD are celebrated once each, across the crash and restart:
    // d1 (1500.50 USD), d2 (1000 EUR = 1080 USD, later reopened) and d5 (4200 USD, late).
    let mut wins: Vec<String> = read_topic(&topics.celebrations)
        .into_iter()
        .map(|r| String::from_utf8(r.key.expect("keyed")).expect("utf-8 key"))
        .collect();
    wins.sort();
    assert_eq!(
        wins,
        ["big_win/d1", "big_win/d2", "big_win/d5"],
        "big wins exactly once"
    );

    // The exposition is valid.
    for (name, text) in [
        ("deals", deals_svc.metrics().await),
        ("activities", acts_svc.metrics().await),
    ] {
        let complaints = promtool_check(&text);
        assert!(
            complaints.trim().is_empty(),
            "promtool check metrics on {name}: {complaints}"
        );
    }

    // The metrics topic alone rebuilds the board: latest value per key, tombstones removed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut board: BTreeMap<String, Decimal> = BTreeMap::new();
        for r in read_topic(&topics.metrics) {
            let key = String::from_utf8(r.key.clone().expect("keyed")).expect("utf-8 key");
            match r.value {
                None => {
                    board.remove(&key);
                }
                Some(v) => {
                    let rec: serde_json::Value = serde_json::from_slice(&v).expect("json value");
                    let value: Decimal = rec["value"]
                        .as_str()
                        .expect("decimal string")
                        .parse()
                        .expect("decimal");
                    board.insert(key, value);
                }
            }
        }
        let now = Utc::now().timestamp();
        let want: BTreeMap<String, Decimal> = reference(&deals, &acts, &roster, now)
            .into_iter()
            .map(|e| (e.topic_key(), e.value))
            .collect();
        let norm: BTreeMap<String, Decimal> =
            board.into_iter().map(|(k, v)| (k, v.normalize())).collect();
        if norm == want {
            // Rep records carry the rep's name on the roster.
            let mut named = 0;
            for r in read_topic(&topics.metrics) {
                let Some(v) = r.value else { continue };
                let rec: serde_json::Value = serde_json::from_slice(&v).expect("json value");
                if rec["scope"] == "rep" && rec["id"] == "rep-a" {
                    assert_eq!(
                        rec["name"], "REP-A",
                        "rep-a's records carry its name: {rec}"
                    );
                    named += 1;
                }
                if rec["scope"] != "rep" {
                    assert!(
                        rec.get("name").is_none(),
                        "only rep records are named: {rec}"
                    );
                }
            }
            assert!(named > 0, "rep-a has records on the metrics topic");
            println!(
                "metrics topic: {} live keys rebuild the board exactly; {named} records of rep-a carry its name",
                norm.len()
            );
            break;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, v)| norm.get(*k) != Some(v))
                .take(20)
                .collect();
            let extra: Vec<_> = norm
                .keys()
                .filter(|k| !want.contains_key(*k))
                .take(20)
                .collect();
            panic!("metrics topic differs: missing/different {missing:?}, extra {extra:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    report_matches_the_reference(&topics, &deals, &acts, &roster).await;

    // Prometheus scrapes both services and holds the same org numbers.
    let prom = Prometheus::start(&[dport, aport], &topics.suffix);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = Utc::now().timestamp();
        let want: BTreeMap<String, f64> = reference(&deals, &acts, &roster, now)
            .into_iter()
            .filter(|e| e.scope != "rep" || e.metric == "bookings")
            .map(|e| (e.prom_key(), e.value.to_string().parse().expect("f64")))
            .collect();
        let mut got = BTreeMap::new();
        for (labels, v) in prom
            .query(r#"{__name__=~"sales_(org|team|region)_.*|sales_rep_bookings"}"#)
            .await
        {
            let name = labels["__name__"].clone();
            let l: Vec<(&str, &str)> = labels
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "job" | "instance"))
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            got.insert(metric_key(&name, &l), v);
        }
        let up = prom.query("up").await;
        if up.len() == 2 && up.iter().all(|(_, v)| *v == 1.0) && got == want {
            println!(
                "prometheus: both targets up, {} series equal the reference",
                got.len()
            );
            break;
        }
        if Instant::now() > deadline {
            let diffs: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .take(20)
                .collect();
            panic!("prometheus differs (up = {up:?}): {diffs:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(prom);
}

/// Runs `salespulse-report` for last quarter on the test's topics (metrics as the services
/// published them, and targets produced here) and returns what it wrote.
fn run_report(topics: &Topics, period: &str, format: &str, out: &std::path::Path) -> String {
    let output = with_config("salespulse-report")
        .args([
            "--bootstrap",
            &bootstrap(),
            "--period",
            period,
            "--format",
            format,
        ])
        .arg("--out")
        .arg(out)
        .envs(topics.env())
        .env("SALESPULSE_LOG__FORMAT", "text")
        .output()
        .expect("run salespulse-report");
    assert!(
        output.status.success(),
        "salespulse-report --format {format} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(out).expect("the report file")
}

/// The quarterly report of last quarter against the reference: every rep's and team's
/// bookings, deals, win rate, pipeline created, activities, attainment and rank, the org, and
/// each team's weekly bookings; then the HTML rendered by headless Chromium shows its charts.
async fn report_matches_the_reference(
    topics: &Topics,
    deals: &[Deal],
    acts: &[Activity],
    roster: &HashMap<String, String>,
) {
    let now = Utc::now().timestamp();
    let first = Utc
        .timestamp_opt(last_quarter_start(now), 0)
        .single()
        .expect("time")
        .date_naive();
    let period = format!("{}-Q{}", first.year(), first.month0() / 3 + 1);
    let targets = [
        ("team", "team-x", "2000"),
        ("rep", "rep-a", "1000"),
        ("rep", "rep-c", "4000"),
    ];
    let dir = std::env::temp_dir().join(format!("report-{}", topics.suffix));
    std::fs::create_dir_all(&dir).expect("report dir");
    let mut plan = String::from("scope,id,metric,kind,period,value,currency\n");
    for (scope, id, value) in targets {
        plan.push_str(&format!("{scope},{id},bookings,,{period},{value},USD\n"));
    }
    let plan_csv = dir.join("targets.csv");
    std::fs::write(&plan_csv, plan).expect("targets csv");
    let imported = targets_import(topics, &plan_csv)
        .output()
        .expect("import targets");
    assert!(
        imported.status.success(),
        "salespulse-targets import: {}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let csv = run_report(topics, &period, "csv", &dir.join("report.csv"));

    // The reference's last-quarter sums, per (scope, id) over every team of a rep.
    let want = reference(deals, acts, roster, now);
    let sum = |scope: &str, id: &str, metric: &str| -> Decimal {
        want.iter()
            .filter(|e| e.scope == scope && e.id == id && e.metric == metric)
            .filter(|e| e.window == Some("last_quarter"))
            .map(|e| e.value)
            .sum()
    };
    let ratio6 = |n: Decimal, d: Decimal| {
        (d > Decimal::ZERO).then(|| {
            (n / d)
                .round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero)
                .normalize()
        })
    };
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let rows: Vec<BTreeMap<&str, &str>> = lines
        .map(|l| header.iter().copied().zip(l.split(',')).collect())
        .collect();
    let dec = |r: &BTreeMap<&str, &str>, k: &str| -> Option<Decimal> {
        r.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().expect("decimal"))
    };
    let target = |scope: &str, id: &str| {
        targets
            .iter()
            .find(|t| t.0 == scope && t.1 == id)
            .map(|t| t.2.parse::<Decimal>().expect("target"))
    };
    let mut diffs = Vec::new();
    let mut check = |what: String, got: Option<Decimal>, want: Option<Decimal>| {
        if got.map(|d| d.normalize()) != want.map(|d| d.normalize()) {
            diffs.push(format!("{what}: report {got:?}, reference {want:?}"));
        }
    };
    let mut reps_seen = Vec::new();
    let mut rep_bookings = Vec::new();
    for r in &rows {
        let (level, id) = (r["level"], r["id"]);
        let scope = match level {
            "rep" | "team" | "org" => level,
            _ => continue,
        };
        let booked = sum(scope, id, "bookings");
        let (won, lost) = (sum(scope, id, "deals_won"), sum(scope, id, "deals_lost"));
        check(format!("{id} bookings"), dec(r, "bookings"), Some(booked));
        check(format!("{id} won"), dec(r, "deals_won"), Some(won));
        check(format!("{id} lost"), dec(r, "deals_lost"), Some(lost));
        check(
            format!("{id} win rate"),
            dec(r, "win_rate"),
            ratio6(won, won + lost),
        );
        check(
            format!("{id} pipeline created"),
            dec(r, "pipeline_created"),
            Some(sum(scope, id, "pipeline_created")),
        );
        check(
            format!("{id} activities"),
            dec(r, "activities"),
            Some(sum(scope, id, "activities")),
        );
        let t = target(scope, id);
        check(format!("{id} target"), dec(r, "target"), t);
        check(
            format!("{id} attainment"),
            dec(r, "attainment"),
            t.and_then(|t| ratio6(booked, t)),
        );
        if level == "rep" {
            reps_seen.push(id.to_owned());
            rep_bookings.push((id.to_owned(), booked, dec(r, "rank")));
        }
    }
    // Ranks: 1 + the reps with more bookings.
    for (id, booked, rank) in &rep_bookings {
        let above = rep_bookings.iter().filter(|(_, b, _)| b > booked).count();
        check(format!("{id} rank"), *rank, Some(Decimal::from(above + 1)));
    }
    // The reps: those on the roster with a last-quarter series.
    let mut roster_reps: Vec<String> = want
        .iter()
        .filter(|e| e.scope == "rep" && e.window == Some("last_quarter"))
        .map(|e| e.id.clone())
        .collect();
    roster_reps.sort();
    roster_reps.dedup();
    reps_seen.sort();
    assert_eq!(reps_seen, roster_reps, "the report's reps");
    assert!(
        rows.iter().any(|r| r["level"] == "org"),
        "the report has an org row"
    );
    // Weekly bookings per team: each week of the quarter, 0 where the reference has none.
    let mut weeks = 0;
    for r in rows.iter().filter(|r| r["level"] == "team_week") {
        weeks += 1;
        let (team, week) = (r["id"], r["name"]);
        let want_week: Decimal = want
            .iter()
            .filter(|e| e.scope == "team" && e.id == team && e.metric == "weekly_bookings")
            .filter(|e| e.extra.iter().any(|(k, v)| *k == "week" && v == week))
            .map(|e| e.value)
            .sum();
        check(
            format!("{team} week {week}"),
            dec(r, "bookings"),
            Some(want_week),
        );
    }
    assert!(weeks >= 13, "weekly rows for every team and week: {weeks}");
    let lq_booked = sum("org", "org", "bookings");
    assert!(
        lq_booked > Decimal::ZERO,
        "last quarter has bookings to report"
    );
    assert!(
        diffs.is_empty(),
        "the report differs from the reference:\n{}",
        diffs.join("\n")
    );
    println!(
        "report {period}: {} rows, {weeks} team weeks and org bookings {lq_booked} equal the reference",
        rows.len()
    );

    // Markdown and HTML; the HTML rendered by headless Chromium shows its three charts.
    let md = run_report(topics, &period, "md", &dir.join("report.md"));
    assert!(md.contains("## Weekly bookings per team"), "{md}");
    let html_path = dir.join("report.html");
    let html = run_report(topics, &period, "html", &html_path);
    assert_eq!(html.matches("<svg").count(), 3, "three charts");
    let png = dir.join("report.png");
    let status = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,3000",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html_path.display()))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run chromium (scripts/setup.sh installs it)");
    assert!(status.success(), "chromium renders the report");
    let counts = colour_counts(&png, &[(31, 119, 180), (44, 160, 44), (214, 39, 40)]);
    println!("report.png: pixels of the attainment bars, distribution bars, first team's line: {counts:?}");
    assert!(
        counts[0] > 500,
        "the attainment chart shows bars: {counts:?}"
    );
    assert!(
        counts[1] > 500,
        "the distribution chart shows bars: {counts:?}"
    );
    assert!(
        counts[2] > 50,
        "the weekly chart shows a team's line: {counts:?}"
    );
}

/// How many pixels of a PNG have each of the given colours exactly.
fn colour_counts(png: &std::path::Path, colours: &[(u8, u8, u8)]) -> Vec<usize> {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png).expect("the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let step = info.color_type.samples();
    let mut counts = vec![0; colours.len()];
    for px in buf[..info.buffer_size()].chunks_exact(step) {
        if step < 3 {
            continue;
        }
        if let Some(i) = colours.iter().position(|c| *c == (px[0], px[1], px[2])) {
            counts[i] += 1;
        }
    }
    counts
}
