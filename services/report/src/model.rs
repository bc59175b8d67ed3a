//! From the published numbers to the report's tables and chart data: pure, no I/O.
//!
//! `sales.metrics` is compacted, so it holds the latest value of every series: the current
//! quarter as `qtd` and the last one, closed, as `last_quarter`. A report of the current
//! quarter is a report to date; a report of last quarter carries every correction made since.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{Datelike, Duration, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use salespulse_aggregate::{Calendar, Scope, Window};
use salespulse_publish::MetricRecord;
use salespulse_targets::{median, Period, PeriodType, Ramp, Target, TargetMetric};

/// The report cannot be made as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("{0} is not a quarter (expected a fiscal quarter such as 2026-Q3)")]
    NotAQuarter(Period),
    #[error(
        "{period} is neither the current quarter ({current}) nor the last one ({last}): sales.metrics keeps the latest value of every series, which covers those two quarters"
    )]
    OutOfRange {
        period: Period,
        current: Period,
        last: Period,
    },
    #[error("no team {0:?} in sales.metrics")]
    UnknownTeam(String),
}

/// Attainment buckets of the distribution chart: (label, lower bound in percent).
pub const BUCKETS: [(&str, u32); 5] = [
    ("below 50 %", 0),
    ("50–75 %", 50),
    ("75–100 %", 75),
    ("100–125 %", 100),
    ("125 % and above", 125),
];

/// One line of a table: a rep, a team or the org.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub id: String,
    /// The rep's name on the roster (its id when none); the team's or org's id.
    pub name: String,
    /// A rep's roster team; a team's own id.
    pub team: String,
    pub bookings: Decimal,
    pub won: Decimal,
    pub lost: Decimal,
    /// won / (won + lost); `None` when nothing closed.
    pub win_rate: Option<Decimal>,
    /// bookings / won.
    pub avg_deal: Option<Decimal>,
    /// Mean days from creation to close of the deals won.
    pub cycle_days: Option<Decimal>,
    pub pipeline_created: Decimal,
    pub activities: Decimal,
    /// The period's bookings target (a rep's ramped one).
    pub target: Option<Decimal>,
    /// Share of the full target a rep in ramp carries.
    pub ramp: Option<Decimal>,
    /// bookings / target.
    pub attainment: Option<Decimal>,
    /// 1 = most bookings, among the org's reps (reps) or teams (teams).
    pub rank: Option<usize>,
    /// Rank within the rep's team.
    pub team_rank: Option<usize>,
    /// Mean weekly bookings and their coefficient of variation, over the last complete weeks
    /// (reps); for a team the median of its reps' CVs.
    pub weekly_mean: Option<Decimal>,
    pub cv: Option<Decimal>,
    /// Reps with a target, reps at or above it, and their median attainment (teams, org).
    pub reps_with_target: usize,
    pub reps_attaining: usize,
    pub median_attainment: Option<Decimal>,
}

/// Weekly bookings of one team over the period's weeks (Mondays).
#[derive(Debug, Clone, PartialEq)]
pub struct TeamWeeks {
    pub team: String,
    pub bookings: Vec<Decimal>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub period: Period,
    /// The window the numbers come from: `qtd` (to date) or `last_quarter` (closed).
    pub window: Window,
    /// First and last day of the quarter.
    pub first: NaiveDate,
    pub last: NaiveDate,
    /// Only this team, when asked.
    pub team: Option<String>,
    pub currency: String,
    pub org: Option<Row>,
    pub teams: Vec<Row>,
    pub reps: Vec<Row>,
    /// Mondays of the weeks that touch the quarter.
    pub weeks: Vec<NaiveDate>,
    pub weekly: Vec<TeamWeeks>,
    /// Reps per attainment bucket (see [`BUCKETS`]).
    pub distribution: [usize; BUCKETS.len()],
    /// Newest `as_of` among the records used (RFC 3339).
    pub as_of: String,
}

/// What the report is made from, besides the records.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    pub period: Period,
    pub team: Option<&'a str>,
    /// The report's clock (Unix seconds): which quarter is current.
    pub now: i64,
    pub calendar: &'a Calendar,
    pub ramp: &'a Ramp,
    pub currency: &'a str,
}

/// Rounds a ratio as the services do: 6 places, half away from zero.
fn ratio(num: Decimal, den: Decimal) -> Option<Decimal> {
    if den <= Decimal::ZERO {
        return None;
    }
    num.checked_div(den).map(|r| {
        r.round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero)
            .normalize()
    })
}

#[derive(Default)]
struct Sums {
    bookings: Decimal,
    won: Decimal,
    lost: Decimal,
    pipeline_created: Decimal,
    activities: Decimal,
}

impl Sums {
    fn add(&mut self, r: &MetricRecord) {
        match r.metric.as_str() {
            "bookings" => self.bookings += r.value,
            "deals_won" => self.won += r.value,
            "deals_lost" => self.lost += r.value,
            "pipeline_created" => self.pipeline_created += r.value,
            "activities" => self.activities += r.value,
            _ => {}
        }
    }

    /// `cycles`: Σ mean cycle seconds × won over the series with a sales cycle.
    fn row(&self, id: &str, name: &str, team: &str, cycles: Option<Decimal>) -> Row {
        let cycle = cycles.and_then(|c| ratio(c, self.won * Decimal::from(86_400)));
        Row {
            id: id.to_owned(),
            name: name.to_owned(),
            team: team.to_owned(),
            bookings: self.bookings,
            won: self.won,
            lost: self.lost,
            win_rate: ratio(self.won, self.won + self.lost),
            avg_deal: ratio(self.bookings, self.won).map(|d| d.round_dp(2)),
            cycle_days: cycle.map(|d| d.round_dp(1)),
            pipeline_created: self.pipeline_created,
            activities: self.activities,
            ..Row::default()
        }
    }
}

/// The quarter of `period` as the report may cover it: the window holding its numbers.
fn window_of(s: &Settings<'_>) -> Result<Window, ReportError> {
    if s.period.kind != PeriodType::Quarter {
        return Err(ReportError::NotAQuarter(s.period));
    }
    let current = Period::containing(PeriodType::Quarter, s.now, s.calendar);
    let (first, _) = current.days(s.calendar);
    let last = Period::containing(
        PeriodType::Quarter,
        s.calendar.local_midnight(first - Duration::days(1)),
        s.calendar,
    );
    if s.period == current {
        Ok(Window::Qtd)
    } else if s.period == last {
        Ok(Window::LastQuarter)
    } else {
        Err(ReportError::OutOfRange {
            period: s.period,
            current,
            last,
        })
    }
}

/// Builds the report from the latest record of every series and the targets.
pub fn build(
    records: &[MetricRecord],
    targets: &[Target],
    s: &Settings<'_>,
) -> Result<Report, ReportError> {
    let window = window_of(s)?;
    let (first, end) = s.period.days(s.calendar);
    let index = Index::new(records);
    if let Some(t) = s.team {
        if !index.teams.contains(t) {
            return Err(ReportError::UnknownTeam(t.to_owned()));
        }
    }
    let label = window.label();
    let subjects = Subjects::sum(records.iter().filter(|r| r.window == label), &index);
    let targets = Targets {
        all: targets,
        period: s.period,
    };
    let rep_rows = rep_rows(&subjects, &index, &targets, s, (first, end));
    let team_rows = team_rows(&subjects, &rep_rows, &targets, s.team);
    let org_row = match (&subjects.org, s.team) {
        (Some((sums, cycles)), None) => {
            let mut row = sums.row("org", "Org", "", *cycles);
            if let Some(t) = targets.of(Scope::Org, "org").or_else(|| targets.org_any()) {
                row.target = Some(t.value);
                row.attainment = ratio(row.bookings, t.value);
            }
            summarise_reps(&mut row, rep_rows.iter());
            Some(row)
        }
        _ => None,
    };
    // Weekly bookings per team: the weeks whose Monday falls from the week of the first day
    // up to the last day.
    let monday = |d: NaiveDate| d - Duration::days(i64::from(d.weekday().num_days_from_monday()));
    let last = end - Duration::days(1);
    let weeks: Vec<NaiveDate> = monday(first)
        .iter_weeks()
        .take_while(|w| *w <= last)
        .collect();
    let weekly = team_rows
        .iter()
        .map(|t| TeamWeeks {
            team: t.id.clone(),
            bookings: weeks.iter().map(|w| index.weekly(&t.id, *w)).collect(),
        })
        .collect();
    let as_of = records
        .iter()
        .filter(|r| r.window == label)
        .map(|r| r.as_of.as_str())
        .max()
        .unwrap_or_default()
        .to_owned();
    Ok(Report {
        period: s.period,
        window,
        first,
        last,
        team: s.team.map(str::to_owned),
        currency: s.currency.to_owned(),
        org: org_row,
        teams: team_rows,
        distribution: distribution(&rep_rows),
        reps: rep_rows,
        weeks,
        weekly,
        as_of,
    })
}

/// What the report looks up in the records besides the window's sums, each found once
/// rather than by a scan of every record per row: an org of 10,000 reps publishes millions
/// of series.
struct Index<'a> {
    /// Reps on the roster: name, roster team and hiring date.
    info: HashMap<&'a str, (&'a str, &'a str, Option<NaiveDate>)>,
    /// Teams with a series.
    teams: HashSet<&'a str>,
    /// Deals won of each series: (scope, id, team, window).
    won: HashMap<(&'a str, &'a str, &'a str, &'a str), Decimal>,
    /// A rep's bookings consistency: (rep, metric).
    consistency: HashMap<(&'a str, &'a str), Decimal>,
    /// A team's weekly bookings: (team, Monday).
    weekly: HashMap<(&'a str, &'a str), Decimal>,
}

impl<'a> Index<'a> {
    fn new(records: &'a [MetricRecord]) -> Index<'a> {
        let mut index = Index {
            info: HashMap::new(),
            teams: HashSet::new(),
            won: HashMap::new(),
            consistency: HashMap::new(),
            weekly: HashMap::new(),
        };
        for r in records {
            let (scope, id, metric) = (r.scope.as_str(), r.id.as_str(), r.metric.as_str());
            match (scope, metric) {
                ("rep", "info") => {
                    let name = r.labels.get("name").map_or(id, String::as_str);
                    let hired = r
                        .labels
                        .get("hired_at")
                        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
                    index.info.insert(id, (name, r.team.as_str(), hired));
                }
                ("rep", "consistency_mean" | "consistency_cv")
                    if r.labels.get("metric").map(String::as_str) == Some("bookings") =>
                {
                    index.consistency.entry((id, metric)).or_insert(r.value);
                }
                ("team", "weekly_bookings") => {
                    if let Some(week) = r.labels.get("week") {
                        *index.weekly.entry((id, week.as_str())).or_default() += r.value;
                    }
                }
                _ => {}
            }
            if scope == "team" {
                index.teams.insert(id);
            }
            if metric == "deals_won" {
                let key = (scope, id, r.team.as_str(), r.window.as_str());
                index.won.entry(key).or_insert(r.value);
            }
        }
        index
    }

    fn weekly(&self, team: &str, monday: NaiveDate) -> Decimal {
        let week = monday.to_string();
        self.weekly
            .get(&(team, week.as_str()))
            .copied()
            .unwrap_or_default()
    }
}

/// The window's sums per subject, and Σ mean cycle × deals won of the series with a sales
/// cycle (mean cycles weigh by the deals won of the same series). A rep's are over every
/// team its series sit under.
#[derive(Default)]
struct Subjects<'a> {
    reps: BTreeMap<&'a str, (Sums, Option<Decimal>)>,
    teams: BTreeMap<&'a str, (Sums, Option<Decimal>)>,
    org: Option<(Sums, Option<Decimal>)>,
}

impl<'a> Subjects<'a> {
    fn sum(in_window: impl Iterator<Item = &'a MetricRecord>, index: &Index<'_>) -> Subjects<'a> {
        let mut s = Subjects::default();
        for r in in_window {
            let entry = match r.scope.as_str() {
                "rep" => s.reps.entry(r.id.as_str()).or_default(),
                "team" => s.teams.entry(r.id.as_str()).or_default(),
                "org" => s.org.get_or_insert_with(Default::default),
                _ => continue,
            };
            entry.0.add(r);
            if r.metric == "sales_cycle_seconds" {
                let key = (
                    r.scope.as_str(),
                    r.id.as_str(),
                    r.team.as_str(),
                    r.window.as_str(),
                );
                let won = index.won.get(&key).copied().unwrap_or_default();
                *entry.1.get_or_insert(Decimal::ZERO) += r.value * won;
            }
        }
        s
    }
}

/// The period's bookings targets.
struct Targets<'a> {
    all: &'a [Target],
    period: Period,
}

impl Targets<'_> {
    fn of(&self, scope: Scope, id: &str) -> Option<&Target> {
        self.all
            .iter()
            .find(|t| t.scope == scope && t.id == id && self.is_bookings(t))
    }

    /// The org's target under whatever id it was set.
    fn org_any(&self) -> Option<&Target> {
        self.all
            .iter()
            .find(|t| t.scope == Scope::Org && self.is_bookings(t))
    }

    fn is_bookings(&self, t: &Target) -> bool {
        t.metric == TargetMetric::Bookings && t.kind.is_none() && t.period == self.period
    }

    /// The reps with a target of any metric this period.
    fn reps(&self) -> impl Iterator<Item = &str> {
        self.all
            .iter()
            .filter(|t| t.scope == Scope::Rep && t.period == self.period)
            .map(|t| t.id.as_str())
    }
}

/// Reps on the roster with a series or a target, in the team asked for, ranked in the org
/// and in their team.
fn rep_rows(
    subjects: &Subjects<'_>,
    index: &Index<'_>,
    targets: &Targets<'_>,
    s: &Settings<'_>,
    (first, end): (NaiveDate, NaiveDate),
) -> Vec<Row> {
    let mut ids: BTreeSet<&str> = subjects.reps.keys().copied().collect();
    ids.extend(targets.reps());
    let mut rows = Vec::new();
    for id in ids {
        let Some((name, team, hired)) = index.info.get(id).copied() else {
            continue;
        };
        if s.team.is_some_and(|w| w != team) {
            continue;
        }
        let empty = (Sums::default(), None);
        let (sums, cycles) = subjects.reps.get(id).unwrap_or(&empty);
        let mut row = sums.row(id, name, team, *cycles);
        if let Some(t) = targets.of(Scope::Rep, id) {
            let share = hired.and_then(|h| s.ramp.period_share(h, first, end));
            let target = match share {
                Some(sh) => {
                    (t.value * sh).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
                }
                None => t.value,
            };
            row.target = Some(target);
            row.ramp = share;
            row.attainment = ratio(row.bookings, target);
        }
        row.weekly_mean = index.consistency.get(&(id, "consistency_mean")).copied();
        row.cv = index.consistency.get(&(id, "consistency_cv")).copied();
        rows.push(row);
    }
    rank(&mut rows, |r| &mut r.rank, |_| true);
    let team_names: BTreeSet<String> = rows.iter().map(|r| r.team.clone()).collect();
    for t in &team_names {
        rank(&mut rows, |r| &mut r.team_rank, |r| r.team == *t);
    }
    rows.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| a.id.cmp(&b.id)));
    rows
}

/// Teams with a series, in the team asked for, ranked, with their reps summarised.
fn team_rows(
    subjects: &Subjects<'_>,
    rep_rows: &[Row],
    targets: &Targets<'_>,
    only: Option<&str>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (id, (sums, cycles)) in &subjects.teams {
        if only.is_some_and(|w| w != *id) {
            continue;
        }
        let mut row = sums.row(id, id, id, *cycles);
        if let Some(t) = targets.of(Scope::Team, id) {
            row.target = Some(t.value);
            row.attainment = ratio(row.bookings, t.value);
        }
        summarise_reps(&mut row, rep_rows.iter().filter(|r| r.team == *id));
        rows.push(row);
    }
    rank(&mut rows, |r| &mut r.rank, |_| true);
    rows.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| a.id.cmp(&b.id)));
    rows
}

/// Reps per attainment bucket (see [`BUCKETS`]).
fn distribution(reps: &[Row]) -> [usize; BUCKETS.len()] {
    let mut out = [0; BUCKETS.len()];
    for a in reps.iter().filter_map(|r| r.attainment) {
        let pct = a * Decimal::ONE_HUNDRED;
        let i = BUCKETS
            .iter()
            .rposition(|(_, lo)| pct >= Decimal::from(*lo))
            .unwrap_or(0);
        out[i] += 1;
    }
    out
}

/// Ranks the rows that `among` selects by bookings, most first; equal bookings share a rank.
fn rank(
    rows: &mut [Row],
    slot: impl Fn(&mut Row) -> &mut Option<usize>,
    among: impl Fn(&Row) -> bool,
) {
    let mut order: Vec<(Decimal, usize)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| among(r))
        .map(|(i, r)| (r.bookings, i))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut prev: Option<(Decimal, usize)> = None;
    for (pos, (v, i)) in order.into_iter().enumerate() {
        let r = match prev {
            Some((pv, pr)) if pv == v => pr,
            _ => pos + 1,
        };
        *slot(&mut rows[i]) = Some(r);
        prev = Some((v, r));
    }
}

/// A team's or the org's view of its reps: with a target, at or above it, median attainment
/// and median bookings CV.
fn summarise_reps<'a>(row: &mut Row, reps: impl Iterator<Item = &'a Row>) {
    let reps: Vec<&Row> = reps.collect();
    let attained: Vec<Decimal> = reps.iter().filter_map(|r| r.attainment).collect();
    row.reps_with_target = attained.len();
    row.reps_attaining = attained.iter().filter(|a| **a >= Decimal::ONE).count();
    row.median_attainment = median(attained.clone());
    let cvs: Vec<Decimal> = reps.iter().filter_map(|r| r.cv).collect();
    row.cv = median(cvs);
}

#[cfg(test)]
mod tests;
