//! The targets board: targets from `sales.targets`, actuals from `sales.metrics`, and every
//! series derived from them at one instant.

use std::collections::{BTreeMap, HashMap};

use compact_str::{format_compact, CompactString, ToCompactString};
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::{Decimal, RoundingStrategy};
use salespulse_aggregate::{Calendar, Scope, Window, RATIO_DP};

use crate::distribution::{Distribution, RepAttainment};
use crate::elapsed::Elapsed;
use crate::period::{Period, PeriodType};
use crate::plan::Plan;
use crate::ramp::Ramp;
use crate::target::{Target, TargetMetric};

/// A map looked up per series of a tick: a fast hash, not one that resists chosen keys (the
/// keys are the org's own names, already on the board).
type Fast<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One actual value as published on `sales.metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actual {
    pub scope: Scope,
    pub id: String,
    pub team: String,
    pub metric: TargetMetric,
    pub kind: Option<String>,
    pub window: Window,
    pub value: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Idx {
    scope: Scope,
    id: String,
    metric: TargetMetric,
    kind: Option<String>,
    window: Window,
}

/// One output series.
///
/// Its names are held inline up to 24 bytes, as ids, periods and family names are: a large
/// org's tick builds millions of these, and a heap string each was most of its time.
#[derive(Debug, Clone, PartialEq)]
pub struct Out {
    pub family: CompactString,
    pub labels: Vec<(&'static str, CompactString)>,
    pub value: f64,
}

/// Metrics ranked on the leaderboards.
pub const RANKED: [TargetMetric; 3] = [
    TargetMetric::Bookings,
    TargetMetric::DealsWon,
    TargetMetric::Activities,
];

/// Open pipeline expected to close in the current period of one type, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub scope: Scope,
    pub id: String,
    pub period_type: PeriodType,
    /// Weighted by stage probability, or not.
    pub weighted: bool,
    pub value: Decimal,
}

type ExpectedIdx = (Scope, String, PeriodType, bool);

/// One value of the deals service's `forecast_rollup{rollup, period_type, period}`, as
/// published: the forecast of one rollup (`commit`, `best_case`, `pipeline`) for one fiscal
/// period (its type is the `period_type` label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    pub scope: Scope,
    pub id: String,
    pub rollup: String,
    pub period: Period,
    pub value: Decimal,
}

/// Subject and period of a forecast rollup; the rollups of it are keyed by name below.
type RollupIdx = (Scope, String, Period);

#[derive(Debug, Default)]
pub struct TargetsBoard {
    targets: HashMap<String, Target>,
    actuals: HashMap<String, (Idx, String, Decimal)>,
    index: HashMap<Idx, Decimal>,
    /// How many series (keys of `actuals`) add up to each entry of `index`.
    keys_of: HashMap<Idx, u32>,
    expected_by_key: HashMap<String, (ExpectedIdx, Decimal)>,
    expected: HashMap<ExpectedIdx, Decimal>,
    /// Forecast rollup records by key: where they count, the rollup, and their value.
    rollups_by_key: HashMap<String, (RollupIdx, String, Decimal)>,
    /// Forecast rollups per subject and period, by rollup: the sum over the subject's records
    /// (a rep's series under every team) and how many records there are. A rollup stays while
    /// any record of it does, even when they add up to 0.
    rollups: HashMap<RollupIdx, BTreeMap<String, (Decimal, usize)>>,
    /// Compensation plans by key (`{rep}/{period_type}`).
    plans: HashMap<String, Plan>,
    /// Roster membership records by key: the rep, its team, and when the record came.
    members: HashMap<String, (String, String, u64)>,
    arrivals: u64,
    /// Hiring dates from the roster's info records by key: the rep, the date, and when the
    /// record came.
    hired: HashMap<String, (String, chrono::NaiveDate, u64)>,
    /// The ramp schedule of new hires' quotas.
    ramp: Ramp,
    /// The windows whose ranks, team shares, region ranks and activities per win are
    /// computed (empty: every window). See [`TargetsBoard::show_windows`].
    windows: Vec<Window>,
}

/// Of roster records (rep, value, arrival), the value of each rep's latest.
fn latest_per_rep<'a, V: Copy>(
    records: impl Iterator<Item = (&'a str, V, u64)>,
) -> Fast<&'a str, V> {
    let mut latest: Fast<&str, (V, u64)> = Fast::default();
    for (rep, v, seq) in records {
        let e = latest.entry(rep).or_insert((v, seq));
        if seq > e.1 {
            *e = (v, seq);
        }
    }
    latest.into_iter().map(|(r, (v, _))| (r, v)).collect()
}

fn f(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

/// `num / den` rounded to [`RATIO_DP`] places (half away from zero), as the deals and
/// activities services round theirs; `None` unless `den` > 0.
fn ratio(num: Decimal, den: Decimal) -> Option<f64> {
    if den <= Decimal::ZERO {
        return None;
    }
    num.checked_div(den).map(|r| {
        f(
            r.round_dp_with_strategy(RATIO_DP, RoundingStrategy::MidpointAwayFromZero)
                .normalize(),
        )
    })
}

/// The labels that name a subject: `rep` and its (roster) `team`, `team`, `region`, or none
/// for the org.
fn subject_labels(
    scope: Scope,
    id: &str,
    teams: &Fast<&str, &str>,
) -> Vec<(&'static str, CompactString)> {
    match scope {
        Scope::Rep => {
            let team = teams
                .get(id)
                .copied()
                .unwrap_or(salespulse_aggregate::UNASSIGNED);
            vec![("rep", id.into()), ("team", team.into())]
        }
        Scope::Team => vec![("team", id.into())],
        Scope::Region => vec![("region", id.into())],
        Scope::Org => Vec::new(),
    }
}

/// The distribution series of one team (`subject` = its `team` label) or of the org.
fn push_distribution(
    scope: Scope,
    subject: Vec<(&'static str, CompactString)>,
    reps: &[RepAttainment],
    out: &mut Vec<Out>,
) {
    let Some(dist) = Distribution::of(reps) else {
        return;
    };
    let family = |name: &str| format_compact!("sales_{}_{name}", scope.label());
    let reps_with_target = Decimal::from(dist.reps);
    for (threshold, n) in &dist.attaining {
        let mut labels = subject.clone();
        labels.push(("threshold", threshold.to_compact_string()));
        out.push(Out {
            family: family("reps_attaining"),
            labels: labels.clone(),
            value: *n as f64,
        });
        out.push(Out {
            family: family("reps_attaining_ratio"),
            labels,
            value: ratio(Decimal::from(*n), reps_with_target).unwrap_or_default(),
        });
    }
    out.push(Out {
        family: family("attainment_median"),
        labels: subject,
        value: f(dist.median),
    });
}

impl TargetsBoard {
    /// How many targets are stored, for every period, shown or not.
    pub fn targets(&self) -> usize {
        self.targets.len()
    }

    /// How many compensation plans are stored (one per rep and period type).
    pub fn plans(&self) -> usize {
        self.plans.len()
    }

    /// Applies one record of `sales.plans`; `None` is a tombstone (or an unusable record).
    pub fn set_plan(&mut self, key: &str, p: Option<Plan>) {
        match p {
            Some(p) => {
                self.plans.insert(key.to_owned(), p);
            }
            None => {
                self.plans.remove(key);
            }
        }
    }

    /// Sets the ramp schedule that scales the targets of reps in their first months.
    pub fn set_ramp(&mut self, ramp: Ramp) {
        self.ramp = ramp;
    }

    /// Computes the window-labelled series (ranks, team shares, region ranks, activities per
    /// win) only for `windows` (empty: every window), as `[expose] windows` narrows
    /// `/metrics`. With 10,000 reps those are most of a tick's series and of its time. The
    /// reps' quarter-to-date ranks are computed whatever the windows: the new-leader
    /// celebration is decided on them, and the exposition leaves them out when not shown.
    pub fn show_windows(&mut self, windows: impl IntoIterator<Item = Window>) {
        self.windows = windows.into_iter().collect();
    }

    /// Whether series of window `w` are computed.
    fn shows(&self, w: Window) -> bool {
        self.windows.is_empty() || self.windows.contains(&w)
    }

    /// Applies one roster info record of `sales.metrics`: a rep's hiring date (`None`: a
    /// tombstone, or a record without one).
    pub fn set_hired(&mut self, key: &str, h: Option<(String, chrono::NaiveDate)>) {
        match h {
            Some((rep, date)) => {
                self.arrivals += 1;
                self.hired
                    .insert(key.to_owned(), (rep, date, self.arrivals));
            }
            None => {
                self.hired.remove(key);
            }
        }
    }

    /// Each rep's hiring date, from its latest info record.
    fn hiring_dates(&self) -> Fast<&str, chrono::NaiveDate> {
        latest_per_rep(
            self.hired
                .values()
                .map(|(rep, d, seq)| (rep.as_str(), *d, *seq)),
        )
    }

    /// The target a subject carries for `t`'s period: a rep in ramp carries the ramp's share
    /// of it (rounded to the cent, half away from zero), returned with the share.
    fn quota(
        &self,
        t: &Target,
        hired: &Fast<&str, chrono::NaiveDate>,
        cal: &Calendar,
    ) -> (Decimal, Option<Decimal>) {
        let share = (t.scope == Scope::Rep)
            .then(|| hired.get(t.id.as_str()))
            .flatten()
            .and_then(|h| {
                let (first, end) = t.period.days(cal);
                self.ramp.period_share(*h, first, end)
            });
        match share {
            Some(s) => (
                (t.value * s).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero),
                Some(s),
            ),
            None => (t.value, None),
        }
    }

    pub fn set_target(&mut self, key: &str, t: Option<Target>) {
        match t {
            Some(t) => {
                self.targets.insert(key.to_owned(), t);
            }
            None => {
                self.targets.remove(key);
            }
        }
    }

    /// Applies one record of `sales.metrics` (by its key); `None` is a tombstone.
    pub fn set_actual(&mut self, key: &str, a: Option<Actual>) {
        if let Some((idx, _, v)) = self.actuals.remove(key) {
            // The subject keeps its total while any series holds one, even a total of 0: a
            // rep with nothing booked still ranks, whatever order its series came in.
            let left = self.keys_of.get_mut(&idx).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0) {
                self.keys_of.remove(&idx);
                self.index.remove(&idx);
            } else if let Some(sum) = self.index.get_mut(&idx) {
                *sum -= v;
            }
        }
        if let Some(a) = a {
            let idx = Idx {
                scope: a.scope,
                id: a.id,
                metric: a.metric,
                kind: a.kind,
                window: a.window,
            };
            *self.index.entry(idx.clone()).or_default() += a.value;
            *self.keys_of.entry(idx.clone()).or_default() += 1;
            self.actuals.insert(key.to_owned(), (idx, a.team, a.value));
        }
    }

    fn actual(
        &self,
        scope: Scope,
        id: &str,
        metric: TargetMetric,
        kind: Option<&str>,
        window: Window,
    ) -> Decimal {
        self.index
            .get(&Idx {
                scope,
                id: id.to_owned(),
                metric,
                kind: kind.map(str::to_owned),
                window,
            })
            .copied()
            .unwrap_or_default()
    }

    /// Applies one expected-pipeline record of `sales.metrics`; `None` is a tombstone.
    pub fn set_expected(&mut self, key: &str, e: Option<Expected>) {
        if let Some((idx, v)) = self.expected_by_key.remove(key) {
            if let Some(sum) = self.expected.get_mut(&idx) {
                *sum -= v;
                if sum.is_zero() {
                    self.expected.remove(&idx);
                }
            }
        }
        if let Some(e) = e {
            let idx = (e.scope, e.id, e.period_type, e.weighted);
            *self.expected.entry(idx.clone()).or_default() += e.value;
            self.expected_by_key.insert(key.to_owned(), (idx, e.value));
        }
    }

    /// Applies one `forecast_rollup` record of `sales.metrics`; `None` is a tombstone.
    pub fn set_rollup(&mut self, key: &str, r: Option<Rollup>) {
        if let Some((idx, rollup, v)) = self.rollups_by_key.remove(key) {
            if let Some(by_rollup) = self.rollups.get_mut(&idx) {
                if let Some((sum, n)) = by_rollup.get_mut(&rollup) {
                    *sum -= v;
                    *n -= 1;
                    if *n == 0 {
                        by_rollup.remove(&rollup);
                    }
                }
                if by_rollup.is_empty() {
                    self.rollups.remove(&idx);
                }
            }
        }
        if let Some(r) = r {
            let idx = (r.scope, r.id, r.period);
            let (sum, n) = self
                .rollups
                .entry(idx.clone())
                .or_default()
                .entry(r.rollup.clone())
                .or_default();
            *sum += r.value;
            *n += 1;
            self.rollups_by_key
                .insert(key.to_owned(), (idx, r.rollup, r.value));
        }
    }

    /// Applies one membership record of `sales.metrics` (`rep`, `team`); `None` is a tombstone.
    pub fn set_member(&mut self, key: &str, m: Option<(String, String)>) {
        match m {
            Some((rep, team)) => {
                self.arrivals += 1;
                self.members
                    .insert(key.to_owned(), (rep, team, self.arrivals));
            }
            None => {
                self.members.remove(key);
            }
        }
    }

    fn expected_sum(&self, scope: Scope, id: &str, p: PeriodType, weighted: bool) -> Decimal {
        self.expected
            .get(&(scope, id.to_owned(), p, weighted))
            .copied()
            .unwrap_or_default()
    }

    /// Team of each rep: the roster's, from the membership records; for a rep without one
    /// (an activities-only deployment), the team most of its rep-scope actuals carry.
    ///
    /// A rep's series can sit under several teams (a deal or activity may name its own team,
    /// and those stay where they were when the roster moves the rep), so the actuals alone
    /// can keep a rep under a team it left. Ties go to the first team by name, so the choice
    /// is the same every tick and in every process. While a move is being published a rep can
    /// briefly have two membership records; the latest one counts.
    fn rep_teams(&self) -> Fast<&str, &str> {
        let roster = latest_per_rep(
            self.members
                .values()
                .map(|(rep, team, seq)| (rep.as_str(), team.as_str(), *seq)),
        );
        let mut teams = self.majority_teams(|rep| !roster.contains_key(rep));
        teams.extend(roster);
        teams
    }

    /// The team most of each rep's rep-scope actuals carry, for the reps `wanted`.
    fn majority_teams(&self, wanted: impl Fn(&str) -> bool) -> Fast<&str, &str> {
        let mut votes: Fast<&str, BTreeMap<&str, usize>> = Fast::default();
        for (i, team, _) in self.actuals.values() {
            if i.scope == Scope::Rep && wanted(&i.id) {
                *votes
                    .entry(i.id.as_str())
                    .or_default()
                    .entry(team.as_str())
                    .or_default() += 1;
            }
        }
        votes
            .into_iter()
            .filter_map(|(rep, teams)| {
                let most = teams.values().copied().max()?;
                teams
                    .into_iter()
                    .find(|(_, n)| *n == most)
                    .map(|(team, _)| (rep, team))
            })
            .collect()
    }

    /// Every series at `now` (Unix seconds).
    ///
    /// Only the current period of each type is shown: of a plan loaded for the whole year
    /// (the year, its quarters, months and weeks), the targets of the year, quarter, month
    /// and week that contain `now`, and the elapsed share of those four periods. The other
    /// targets stay stored and take over when their period starts, so a query that adds or
    /// picks across the periods of one type (`sum by (team) (sales_team_target{period_type=
    /// "quarter"})`) reads the current period's numbers.
    pub fn series(&self, now: i64, cal: &Calendar, elapsed: &Elapsed) -> Vec<Out> {
        let mut out = Vec::new();
        let teams = self.rep_teams();
        let hired = self.hiring_dates();
        // Reps in ramp, by period: one share per rep and period, whatever the metric.
        let mut ramps: BTreeMap<(&str, Period), Decimal> = BTreeMap::new();
        let periods: BTreeMap<Period, f64> = PeriodType::ALL
            .into_iter()
            .map(|k| {
                let p = Period::containing(k, now, cal);
                (p, elapsed.share(&p, now))
            })
            .collect();
        let mut targets: Vec<&Target> = self
            .targets
            .values()
            .filter(|t| periods.contains_key(&t.period))
            .collect();
        targets.sort_by(|a, b| {
            (a.scope, &a.id, a.metric, &a.kind, a.period)
                .cmp(&(b.scope, &b.id, b.metric, &b.kind, b.period))
        });
        for t in targets {
            let share = periods.get(&t.period).copied().unwrap_or_default();
            let subject = subject_labels(t.scope, &t.id, &teams);
            let mut labels = subject.clone();
            labels.push(("metric", t.metric.name().into()));
            if let Some(k) = &t.kind {
                labels.push(("kind", k.as_str().into()));
            }
            labels.push(("period", t.period.to_compact_string()));
            labels.push(("period_type", t.period.kind.label().into()));
            let mut push = |name: &str, value: f64| {
                out.push(Out {
                    family: format_compact!("sales_{}_{name}", t.scope.label()),
                    labels: labels.clone(),
                    value,
                });
            };
            let (quota, ramp) = self.quota(t, &hired, cal);
            if let Some(share) = ramp {
                ramps.insert((t.id.as_str(), t.period), share);
            }
            push("target", f(quota));
            // The actual is the current period's to-date window.
            let actual = self.actual(
                t.scope,
                &t.id,
                t.metric,
                t.kind.as_deref(),
                t.period.kind.window(),
            );
            let target = f(quota);
            let actual = f(actual);
            let expected = target * share;
            if target > 0.0 {
                push("attainment_ratio", actual / target);
            }
            push("expected_to_date", expected);
            if expected > 0.0 {
                push("pace_ratio", actual / expected);
            }
            push("gap", (target - actual).max(0.0));
            if share > 0.0 {
                push("projected", actual / share);
            }
            // Forecast and coverage weigh money in the pipeline: bookings targets only.
            if t.metric == TargetMetric::Bookings {
                let kind = t.period.kind;
                let weighted = f(self.expected_sum(t.scope, &t.id, kind, true));
                let open = f(self.expected_sum(t.scope, &t.id, kind, false));
                push("forecast", actual + weighted);
                let gap = target - actual;
                if gap > 0.0 {
                    push("pipeline_coverage", open / gap);
                }
                if matches!(kind, PeriodType::Month | PeriodType::Quarter) {
                    self.forecast_coverage(t, &subject, &mut out);
                }
            }
        }
        let quarter = Period::containing(PeriodType::Quarter, now, cal);
        for ((rep, period), share) in ramps {
            let mut labels = subject_labels(Scope::Rep, rep, &teams);
            labels.push(("period", period.to_compact_string()));
            labels.push(("period_type", period.kind.label().into()));
            out.push(Out {
                family: "sales_rep_ramp_ratio".into(),
                labels,
                value: f(share),
            });
        }
        self.attainment_distribution(quarter, &teams, &hired, cal, &mut out);
        self.commissions(&periods, &teams, &hired, cal, &mut out);
        self.activities_per_win(&teams, &mut out);
        for (p, share) in &periods {
            out.push(Out {
                family: "sales_period_elapsed_ratio".into(),
                labels: vec![
                    ("period", p.to_compact_string()),
                    ("period_type", p.kind.label().into()),
                ],
                value: *share,
            });
        }
        self.leaderboards(&teams, &mut out);
        out
    }

    /// `sales_*_forecast_coverage{rollup, period_type, period}` of one current bookings
    /// target: each forecast rollup the deals service publishes for the target's subject and
    /// period / the target. None without a rollup, or when the target is 0.
    fn forecast_coverage(
        &self,
        t: &Target,
        subject: &[(&'static str, CompactString)],
        out: &mut Vec<Out>,
    ) {
        let Some(by_rollup) = self.rollups.get(&(t.scope, t.id.clone(), t.period)) else {
            return;
        };
        for (rollup, (sum, _)) in by_rollup {
            let Some(value) = ratio(*sum, t.value) else {
                continue;
            };
            let mut labels = subject.to_vec();
            labels.push(("rollup", rollup.as_str().into()));
            labels.push(("period_type", t.period.kind.label().into()));
            labels.push(("period", t.period.to_compact_string()));
            out.push(Out {
                family: format_compact!("sales_{}_forecast_coverage", t.scope.label()),
                labels,
                value,
            });
        }
    }

    /// `sales_{team,org}_reps_attaining{threshold}`, `..._reps_attaining_ratio{threshold}` and
    /// `..._attainment_median`: of the reps with a bookings target above 0 for `quarter` (the
    /// current one), how many reach each threshold, their share, and the median attainment;
    /// per roster team and for the org. Reps without such a target are left out entirely, so a
    /// team without one has no series.
    fn attainment_distribution(
        &self,
        quarter: Period,
        teams: &Fast<&str, &str>,
        hired: &Fast<&str, chrono::NaiveDate>,
        cal: &Calendar,
        out: &mut Vec<Out>,
    ) {
        let mut by_team: BTreeMap<&str, Vec<RepAttainment>> = BTreeMap::new();
        let mut org = Vec::new();
        let mut quotas: Vec<(&String, &Target)> = self
            .targets
            .iter()
            .filter(|(_, t)| {
                t.scope == Scope::Rep && t.metric == TargetMetric::Bookings && t.period == quarter
            })
            .collect();
        // Several keys could hold one rep's target (a record produced by hand under another
        // key): each rep counts once, with the first by key, the same one every tick.
        quotas.sort_by_key(|(key, _)| *key);
        let mut seen = std::collections::HashSet::new();
        for (_, t) in quotas {
            if !seen.insert(t.id.as_str()) {
                continue;
            }
            // The quarter-to-date bookings, under every team, as for the rep's attainment.
            let actual = self.actual(Scope::Rep, &t.id, t.metric, None, Window::Qtd);
            let Some(r) = RepAttainment::new(actual, self.quota(t, hired, cal).0) else {
                continue;
            };
            let team = teams
                .get(t.id.as_str())
                .copied()
                .unwrap_or(salespulse_aggregate::UNASSIGNED);
            by_team.entry(team).or_default().push(r);
            org.push(r);
        }
        for (team, reps) in &by_team {
            push_distribution(Scope::Team, vec![("team", (*team).into())], reps, out);
        }
        push_distribution(Scope::Org, Vec::new(), &org, out);
    }

    /// `sales_rep_commission_earned{period_type, period}` and `..._commission_projected`: what
    /// each rep's plan pays at its attainment to date and at its projected attainment (the
    /// run rate: actual / elapsed share), for the current period of the plan's type. None
    /// without a quota (the rep's target for the plan's metric and period) above 0; no
    /// projection before the period has begun.
    fn commissions(
        &self,
        periods: &BTreeMap<Period, f64>,
        teams: &Fast<&str, &str>,
        hired: &Fast<&str, chrono::NaiveDate>,
        cal: &Calendar,
        out: &mut Vec<Out>,
    ) {
        let quotas = self.rep_quotas(periods, hired, cal);
        let mut plans: Vec<(&String, &Plan)> = self.plans.iter().collect();
        // A rep's plan of one period type is keyed by both; a record produced by hand under
        // another key could give a second one: the first by key counts, every tick the same.
        plans.sort_by_key(|(key, _)| *key);
        let mut seen = std::collections::HashSet::new();
        for (_, plan) in plans {
            if !seen.insert((plan.rep.as_str(), plan.period_type)) {
                continue;
            }
            let Some((period, share)) = periods.iter().find(|(p, _)| p.kind == plan.period_type)
            else {
                continue;
            };
            let Some(quota) = quotas
                .get(&(plan.rep.as_str(), plan.metric, *period))
                .filter(|q| **q > Decimal::ZERO)
            else {
                continue;
            };
            let actual = self.actual(
                Scope::Rep,
                &plan.rep,
                plan.metric,
                None,
                period.kind.window(),
            );
            let mut labels = subject_labels(Scope::Rep, &plan.rep, teams);
            labels.push(("period_type", period.kind.label().into()));
            labels.push(("period", period.to_compact_string()));
            let mut push = |family: &str, attainment: Option<Decimal>| {
                if let Some(pay) = attainment.and_then(|a| plan.payout_cents(a)) {
                    out.push(Out {
                        family: family.into(),
                        labels: labels.clone(),
                        value: f(pay),
                    });
                }
            };
            push("sales_rep_commission_earned", actual.checked_div(*quota));
            // The run rate of `projected`, in decimals: actual / (quota × elapsed share).
            let projected = Decimal::from_f64(*share)
                .filter(|s| *s > Decimal::ZERO)
                .and_then(|s| quota.checked_mul(s))
                .and_then(|d| actual.checked_div(d));
            push("sales_rep_commission_projected", projected);
        }
    }

    /// Every rep's target of a current period, by rep, metric and period (not activities,
    /// which no plan uses); of several keys holding one, the first by key.
    fn rep_quotas(
        &self,
        periods: &BTreeMap<Period, f64>,
        hired: &Fast<&str, chrono::NaiveDate>,
        cal: &Calendar,
    ) -> HashMap<(&str, TargetMetric, Period), Decimal> {
        let mut targets: Vec<(&String, &Target)> = self
            .targets
            .iter()
            .filter(|(_, t)| {
                t.scope == Scope::Rep && t.kind.is_none() && periods.contains_key(&t.period)
            })
            .collect();
        targets.sort_by_key(|(key, _)| *key);
        let mut quotas = HashMap::new();
        for (_, t) in targets {
            quotas
                .entry((t.id.as_str(), t.metric, t.period))
                .or_insert_with(|| self.quota(t, hired, cal).0);
        }
        quotas
    }

    /// `sales_*_activities_per_win{window}`: the subject's activities of every kind / its
    /// deals won, per window (a rep's under every team); none in a window without a win.
    fn activities_per_win(&self, teams: &Fast<&str, &str>, out: &mut Vec<Out>) {
        let mut won: Fast<(Scope, &str, Window), Decimal> = Fast::default();
        let mut activities: Fast<(Scope, &str, Window), Decimal> = Fast::default();
        for (idx, v) in self.index.iter().filter(|(idx, _)| self.shows(idx.window)) {
            let at = (idx.scope, idx.id.as_str(), idx.window);
            match idx.metric {
                TargetMetric::DealsWon => *won.entry(at).or_default() += *v,
                TargetMetric::Activities => *activities.entry(at).or_default() += *v,
                TargetMetric::Bookings | TargetMetric::PipelineCreated => {}
            }
        }
        let mut won: Vec<((Scope, &str, Window), Decimal)> = won.into_iter().collect();
        won.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for ((scope, id, window), won) in won {
            let done = activities
                .get(&(scope, id, window))
                .copied()
                .unwrap_or_default();
            let Some(value) = ratio(done, won) else {
                continue;
            };
            let mut labels = subject_labels(scope, id, teams);
            labels.push(("window", window.label().into()));
            out.push(Out {
                family: format_compact!("sales_{}_activities_per_win", scope.label()),
                labels,
                value,
            });
        }
    }

    /// Ranks (1 = top, equal values share a rank) within the team and the org, and each rep's
    /// share of the team total, per ranked metric and window.
    ///
    /// The reps are numbered once in name order, so that the 3 × 17 boards each sort and
    /// group numbers rather than names: with 10,000 reps that is half a million values a tick.
    fn leaderboards(&self, teams: &Fast<&str, &str>, out: &mut Vec<Out>) {
        let ranked = |idx: &Idx| {
            idx.scope == Scope::Rep
                && RANKED.contains(&idx.metric)
                && (idx.window == Window::Qtd || self.shows(idx.window))
        };
        let mut reps: Vec<&str> = self
            .index
            .keys()
            .filter(|idx| ranked(idx))
            .map(|idx| idx.id.as_str())
            .collect();
        reps.sort_unstable();
        reps.dedup();
        let number: Fast<&str, usize> = reps.iter().enumerate().map(|(n, r)| (*r, n)).collect();
        // Team numbers in name order too; a rep's team by its number.
        let team_name = |rep: &str| {
            teams
                .get(rep)
                .copied()
                .unwrap_or(salespulse_aggregate::UNASSIGNED)
        };
        let mut team_names: Vec<&str> = reps.iter().map(|r| team_name(r)).collect();
        team_names.sort_unstable();
        team_names.dedup();
        let team_of: Vec<usize> = reps
            .iter()
            .map(|r| team_names.binary_search(&team_name(r)).unwrap_or_default())
            .collect();
        // Each board's values by rep number, summed over the series (kinds) of a rep.
        let mut boards: BTreeMap<(TargetMetric, Window), Vec<Option<Decimal>>> = BTreeMap::new();
        for (idx, v) in &self.index {
            if !ranked(idx) {
                continue;
            }
            let Some(n) = number.get(idx.id.as_str()) else {
                continue;
            };
            let values = boards
                .entry((idx.metric, idx.window))
                .or_insert_with(|| vec![None; reps.len()]);
            *values[*n].get_or_insert(Decimal::ZERO) += *v;
        }
        // Rep numbers sorted by value, highest first, then by name (the number); each with
        // its rank, equal values being next to each other and sharing the first one's.
        fn rank(members: &mut [(usize, Decimal)]) -> impl Iterator<Item = (usize, usize)> + '_ {
            members.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut run: Option<(Decimal, usize)> = None;
            members.iter().enumerate().map(move |(i, (rep, v))| {
                let r = match run {
                    Some((x, r)) if x == *v => r,
                    _ => i + 1,
                };
                run = Some((*v, r));
                (*rep, r)
            })
        }
        // An org rank, a team rank and a team share a value.
        let values = boards.values().flatten().filter(|v| v.is_some()).count();
        out.reserve(3 * values);
        let mut by_team: Vec<Vec<(usize, Decimal)>> = vec![Vec::new(); team_names.len()];
        for ((metric, window), values) in boards {
            let mut all: Vec<(usize, Decimal)> = values
                .iter()
                .enumerate()
                .filter_map(|(n, v)| v.map(|v| (n, v)))
                .collect();
            for members in &mut by_team {
                members.clear();
            }
            for (n, v) in &all {
                by_team[team_of[*n]].push((*n, *v));
            }
            // Room for `among` too: a rank's labels are allocated once.
            let base = |rep: usize| {
                let mut labels = Vec::with_capacity(5);
                labels.extend([
                    ("rep", reps[rep].into()),
                    ("team", team_names[team_of[rep]].into()),
                    ("metric", metric.name().into()),
                    ("window", window.label().into()),
                ]);
                labels
            };
            for (rep, r) in rank(&mut all) {
                let mut labels = base(rep);
                labels.push(("among", "org".into()));
                out.push(Out {
                    family: "sales_rep_rank".into(),
                    labels,
                    value: r as f64,
                });
            }
            for members in &mut by_team {
                if members.is_empty() {
                    continue;
                }
                let total: Decimal = members.iter().map(|(_, v)| *v).sum();
                let shares: Vec<(usize, Decimal)> = members.clone();
                for (rep, r) in rank(members) {
                    let mut labels = base(rep);
                    labels.push(("among", "team".into()));
                    out.push(Out {
                        family: "sales_rep_rank".into(),
                        labels,
                        value: r as f64,
                    });
                }
                // The quarter-to-date board is computed for its ranks even when not shown.
                if total > Decimal::ZERO && self.shows(window) {
                    for (rep, v) in shares {
                        out.push(Out {
                            family: "sales_rep_team_share".into(),
                            labels: base(rep),
                            value: f(v / total),
                        });
                    }
                }
            }
        }
        self.region_ranks(out);
    }

    /// `sales_region_rank{region, metric, window}`: the regions ranked by their totals (1 =
    /// top; equal totals share a rank), per ranked metric and window.
    fn region_ranks(&self, out: &mut Vec<Out>) {
        let mut values: BTreeMap<(TargetMetric, Window), Vec<(&str, Decimal)>> = BTreeMap::new();
        let mut totals: HashMap<(TargetMetric, Window, &str), Decimal> = HashMap::new();
        for (idx, v) in &self.index {
            if idx.scope == Scope::Region && RANKED.contains(&idx.metric) && self.shows(idx.window)
            {
                *totals
                    .entry((idx.metric, idx.window, idx.id.as_str()))
                    .or_default() += *v;
            }
        }
        for ((metric, window, region), v) in totals {
            values
                .entry((metric, window))
                .or_default()
                .push((region, v));
        }
        for ((metric, window), regions) in values {
            for (region, v) in &regions {
                let rank = 1 + regions.iter().filter(|(_, x)| x > v).count();
                out.push(Out {
                    family: "sales_region_rank".into(),
                    labels: vec![
                        ("region", (*region).into()),
                        ("metric", metric.name().into()),
                        ("window", window.label().into()),
                    ],
                    value: rank as f64,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::TargetRules;

    fn ts(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("time")
            .timestamp()
    }

    fn rules() -> TargetRules {
        TargetRules {
            kinds: ["call".to_owned()].into_iter().collect(),
            reporting_currency: "USD".into(),
            rates: [
                ("USD".to_owned(), Decimal::ONE),
                ("EUR".to_owned(), Decimal::new(108, 2)),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn actual(rep: &str, team: &str, metric: TargetMetric, window: Window, v: i64) -> Actual {
        Actual {
            scope: Scope::Rep,
            id: rep.into(),
            team: team.into(),
            metric,
            kind: None,
            window,
            value: Decimal::from(v),
        }
    }

    fn get<'a>(out: &'a [Out], family: &str, labels: &[(&str, &str)]) -> Option<&'a Out> {
        out.iter().find(|o| {
            o.family == family
                && labels
                    .iter()
                    .all(|(k, v)| o.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
        })
    }

    #[test]
    fn attainment_pace_gap_and_projection() {
        let cal = Calendar::utc();
        let mut b = TargetsBoard::default();
        let t = rules()
            .from_fields("rep", "a", "bookings", None, "2026-Q4", "1000", Some("EUR"))
            .expect("valid");
        assert_eq!(t.value, Decimal::from(1080));
        b.set_target(&t.key(), Some(t));
        b.set_actual(
            "k1",
            Some(actual(
                "a",
                "emea",
                TargetMetric::Bookings,
                Window::Qtd,
                540,
            )),
        );
        let now = ts("2026-11-15T12:00:00Z");
        let e = Elapsed::new(cal, false, []);
        let share = e.share(&Period::parse("2026-Q4").expect("valid"), now);
        let out = b.series(now, &cal, &e);
        let l = [("rep", "a"), ("team", "emea"), ("period", "2026-Q4")];
        assert_eq!(
            get(&out, "sales_rep_target", &l).map(|o| o.value),
            Some(1080.0)
        );
        assert_eq!(
            get(&out, "sales_rep_attainment_ratio", &l).map(|o| o.value),
            Some(0.5)
        );
        assert_eq!(get(&out, "sales_rep_gap", &l).map(|o| o.value), Some(540.0));
        let pace = get(&out, "sales_rep_pace_ratio", &l)
            .map(|o| o.value)
            .expect("pace");
        assert!((pace - 540.0 / (1080.0 * share)).abs() < 1e-9);
        let proj = get(&out, "sales_rep_projected", &l)
            .map(|o| o.value)
            .expect("projected");
        assert!((proj - 540.0 / share).abs() < 1e-9);
        // A past or future period is stored, not shown.
        for period in ["2026-Q3", "2027-Q1"] {
            let other = rules()
                .from_fields("rep", "a", "bookings", None, period, "10", None)
                .expect("valid");
            b.set_target(&other.key(), Some(other));
        }
        assert_eq!(b.targets(), 3);
        let out = b.series(now, &cal, &e);
        for period in ["2026-Q3", "2027-Q1"] {
            assert!(get(&out, "sales_rep_target", &[("period", period)]).is_none());
            assert!(get(&out, "sales_rep_attainment_ratio", &[("period", period)]).is_none());
            assert!(get(&out, "sales_period_elapsed_ratio", &[("period", period)]).is_none());
        }
        assert_eq!(
            get(&out, "sales_rep_target", &l).map(|o| o.value),
            Some(1080.0)
        );
    }

    #[test]
    fn at_a_quarter_boundary_the_new_quarter_takes_over() {
        let cal = Calendar::utc();
        let e = Elapsed::new(cal, false, []);
        let mut b = TargetsBoard::default();
        for (period, value) in [("2026-Q4", "1000"), ("2027-Q1", "2000")] {
            let t = rules()
                .from_fields("team", "x", "bookings", None, period, value, None)
                .expect("valid");
            b.set_target(&t.key(), Some(t));
        }
        let team_actual = |v: i64| Actual {
            scope: Scope::Team,
            id: "x".into(),
            team: "x".into(),
            metric: TargetMetric::Bookings,
            kind: None,
            window: Window::Qtd,
            value: Decimal::from(v),
        };
        b.set_actual("k", Some(team_actual(500)));
        let last = ts("2026-12-31T23:59:59Z");
        let out = b.series(last, &cal, &e);
        let q4 = [("team", "x"), ("period", "2026-Q4")];
        let q1 = [("team", "x"), ("period", "2027-Q1")];
        assert_eq!(
            get(&out, "sales_team_attainment_ratio", &q4).map(|o| o.value),
            Some(0.5)
        );
        assert!(get(&out, "sales_team_attainment_ratio", &q1).is_none());
        // The deals service's qtd window restarts at the boundary; the next record says 0.
        b.set_actual("k", Some(team_actual(0)));
        let first = ts("2027-01-01T00:00:00Z");
        let out = b.series(first, &cal, &e);
        assert!(get(&out, "sales_team_attainment_ratio", &q4).is_none());
        assert!(get(&out, "sales_team_target", &q4).is_none());
        assert_eq!(
            get(&out, "sales_team_target", &q1).map(|o| o.value),
            Some(2000.0)
        );
        assert_eq!(
            get(&out, "sales_team_attainment_ratio", &q1).map(|o| o.value),
            Some(0.0)
        );
        assert_eq!(
            get(&out, "sales_team_gap", &q1).map(|o| o.value),
            Some(2000.0)
        );
        let elapsed = get(&out, "sales_period_elapsed_ratio", &[("period", "2027-Q1")]);
        assert_eq!(elapsed.map(|o| o.value), Some(0.0));
    }

    #[test]
    fn a_rep_with_nothing_booked_ranks_whatever_order_its_series_came_in() {
        let cal = Calendar::utc();
        let zero = |team| {
            Some(actual(
                "a",
                team,
                TargetMetric::Bookings,
                Window::LastMonth,
                0,
            ))
        };
        let ranked = |b: &TargetsBoard| {
            get(
                &b.series(
                    ts("2026-11-15T12:00:00Z"),
                    &cal,
                    &Elapsed::new(cal, true, []),
                ),
                "sales_rep_rank",
                &[("rep", "a"), ("among", "org"), ("window", "last_month")],
            )
            .map(|o| o.value)
        };
        // Two series of 0 (under two teams), one of them retracted: the other still counts.
        let mut b = TargetsBoard::default();
        b.set_actual("x", zero("x"));
        b.set_actual("y", zero("y"));
        b.set_actual("x", None);
        assert_eq!(ranked(&b), Some(1.0));
        // A series replaced by its new value of 0 keeps the rep too.
        let mut b = TargetsBoard::default();
        b.set_actual(
            "x",
            Some(actual(
                "a",
                "x",
                TargetMetric::Bookings,
                Window::LastMonth,
                5,
            )),
        );
        b.set_actual("x", zero("x"));
        assert_eq!(ranked(&b), Some(1.0));
        b.set_actual("x", None);
        assert_eq!(ranked(&b), None);
    }

    #[test]
    fn ranks_share_ties_and_team_share_sums_to_one() {
        let cal = Calendar::utc();
        let mut b = TargetsBoard::default();
        b.set_actual(
            "1",
            Some(actual("a", "x", TargetMetric::Bookings, Window::Today, 300)),
        );
        b.set_actual(
            "2",
            Some(actual("b", "x", TargetMetric::Bookings, Window::Today, 300)),
        );
        b.set_actual(
            "3",
            Some(actual("c", "y", TargetMetric::Bookings, Window::Today, 100)),
        );
        b.set_actual(
            "4",
            Some(actual("d", "x", TargetMetric::Bookings, Window::Today, 400)),
        );
        let out = b.series(
            ts("2026-11-15T12:00:00Z"),
            &cal,
            &Elapsed::new(cal, true, []),
        );
        let rank = |rep: &str, among: &str| {
            get(
                &out,
                "sales_rep_rank",
                &[("rep", rep), ("among", among), ("window", "today")],
            )
            .map(|o| o.value)
        };
        assert_eq!(rank("d", "org"), Some(1.0));
        assert_eq!(rank("a", "org"), Some(2.0));
        assert_eq!(rank("b", "org"), Some(2.0));
        assert_eq!(rank("c", "org"), Some(4.0));
        assert_eq!(rank("c", "team"), Some(1.0));
        let share: f64 = out
            .iter()
            .filter(|o| {
                o.family == "sales_rep_team_share" && o.labels.contains(&("team", "x".into()))
            })
            .map(|o| o.value)
            .sum();
        assert!((share - 1.0).abs() < 1e-12);
        // A tombstone removes the actual.
        b.set_actual("4", None);
        let out = b.series(
            ts("2026-11-15T12:00:00Z"),
            &cal,
            &Elapsed::new(cal, true, []),
        );
        assert!(get(&out, "sales_rep_rank", &[("rep", "d")]).is_none());
    }

    proptest::proptest! {
        /// Every rank and share against a recount from the actuals: a rank is one more than
        /// the reps with a larger total, in the org or the rep's roster team.
        #[test]
        fn leaderboards_match_a_recount(
            series in proptest::collection::vec((0usize..12, 0usize..3, 0usize..3, 0i64..5), 0..80),
            roster in proptest::collection::vec(0usize..3, 12),
        ) {
            let cal = Calendar::utc();
            let windows = [Window::Today, Window::Qtd, Window::Ytd];
            let mut b = TargetsBoard::default();
            for (rep, team) in roster.iter().enumerate() {
                b.set_member(&format!("m{rep}"), Some((format!("r{rep}"), format!("t{team}"))));
            }
            let mut totals: BTreeMap<(TargetMetric, Window, usize), Decimal> = BTreeMap::new();
            for (n, (rep, metric, window, v)) in series.iter().enumerate() {
                let (metric, window) = (RANKED[*metric], windows[*window]);
                // A series' own team does not count: the roster's does.
                let a = actual(&format!("r{rep}"), "elsewhere", metric, window, *v);
                b.set_actual(&n.to_string(), Some(a));
                *totals.entry((metric, window, *rep)).or_default() += Decimal::from(*v);
            }
            let out = b.series(ts("2026-11-15T12:00:00Z"), &cal, &Elapsed::new(cal, true, []));
            let ranks = out.iter().filter(|o| o.family == "sales_rep_rank").count();
            proptest::prop_assert_eq!(ranks, 2 * totals.len());
            for ((metric, window, rep), v) in &totals {
                let board = totals.iter().filter(|((m, w, _), _)| m == metric && w == window);
                let team_of = |r: usize| roster[r];
                let above_org = board.clone().filter(|(_, x)| *x > v).count();
                let above_team = board
                    .clone()
                    .filter(|((_, _, r), x)| team_of(*r) == team_of(*rep) && *x > v)
                    .count();
                let total: Decimal = board
                    .filter(|((_, _, r), _)| team_of(*r) == team_of(*rep))
                    .map(|(_, x)| *x)
                    .sum();
                let (rep, team) = (format!("r{rep}"), format!("t{}", team_of(*rep)));
                let labels = |among: &'static str| {
                    vec![
                        ("rep", rep.as_str()),
                        ("team", team.as_str()),
                        ("metric", metric.name()),
                        ("window", window.label()),
                        ("among", among),
                    ]
                };
                let value = |family: &str, labels: &[(&str, &str)]| {
                    get(&out, family, labels).map(|o| o.value)
                };
                proptest::prop_assert_eq!(
                    value("sales_rep_rank", &labels("org")),
                    Some((above_org + 1) as f64)
                );
                proptest::prop_assert_eq!(
                    value("sales_rep_rank", &labels("team")),
                    Some((above_team + 1) as f64)
                );
                let share = value("sales_rep_team_share", &labels("org")[..4]);
                if total > Decimal::ZERO {
                    proptest::prop_assert_eq!(share, Some(f(*v / total)));
                } else {
                    proptest::prop_assert_eq!(share, None);
                }
            }
        }
    }

    #[test]
    fn a_rep_with_series_under_two_teams_is_shown_under_the_team_most_carry() {
        let cal = Calendar::utc();
        let now = ts("2026-11-15T12:00:00Z");
        // Two series under the roster team y, one left under x by a deal that named x.
        let mut b = TargetsBoard::default();
        b.set_actual(
            "1",
            Some(actual("a", "x", TargetMetric::Bookings, Window::Qtd, 300)),
        );
        b.set_actual(
            "2",
            Some(actual("a", "y", TargetMetric::Bookings, Window::Qtd, 100)),
        );
        b.set_actual(
            "3",
            Some(actual("a", "y", TargetMetric::DealsWon, Window::Qtd, 1)),
        );
        let t = rules()
            .from_fields("rep", "a", "bookings", None, "2026-Q4", "1000", None)
            .expect("valid");
        b.set_target("t", Some(t));
        let elapsed = Elapsed::new(cal, false, []);
        for _ in 0..5 {
            let out = b.series(now, &cal, &elapsed);
            let o = get(&out, "sales_rep_attainment_ratio", &[("rep", "a")]).expect("series");
            assert!(o.labels.contains(&("team", "y".into())), "{:?}", o.labels);
            // Attainment counts the rep's bookings under every team.
            assert!((o.value - 0.4).abs() < 1e-12);
        }
        // A tie goes to the first team by name.
        b.set_actual("3", None);
        let out = b.series(now, &cal, &elapsed);
        let o = get(&out, "sales_rep_attainment_ratio", &[("rep", "a")]).expect("series");
        assert!(o.labels.contains(&("team", "x".into())), "{:?}", o.labels);
    }

    #[test]
    fn a_rep_is_shown_under_its_roster_team_once_membership_is_published() {
        let cal = Calendar::utc();
        let now = ts("2026-11-15T12:00:00Z");
        let elapsed = Elapsed::new(cal, false, []);
        // Most of the rep's series are still under x, the team it left for z.
        let mut b = TargetsBoard::default();
        for (key, metric) in [("1", TargetMetric::Bookings), ("2", TargetMetric::DealsWon)] {
            b.set_actual(key, Some(actual("a", "x", metric, Window::Qtd, 2)));
        }
        b.set_actual(
            "3",
            Some(actual("a", "z", TargetMetric::Bookings, Window::Qtd, 1)),
        );
        let t = rules()
            .from_fields("rep", "a", "bookings", None, "2026-Q4", "10", None)
            .expect("valid");
        b.set_target("t", Some(t));
        let team_of = |b: &TargetsBoard| {
            let out = b.series(now, &cal, &elapsed);
            let o = get(&out, "sales_rep_attainment_ratio", &[("rep", "a")]).expect("series");
            (
                o.labels
                    .iter()
                    .find(|(n, _)| *n == "team")
                    .map(|(_, v)| v.clone()),
                o.value,
            )
        };
        assert_eq!(team_of(&b), (Some("x".into()), 0.3));
        b.set_member("m-z", Some(("a".into(), "z".into())));
        assert_eq!(team_of(&b), (Some("z".into()), 0.3));
        // During the next move both records exist for a moment: the newer one counts.
        b.set_member("m-y", Some(("a".into(), "y".into())));
        assert_eq!(team_of(&b).0.as_deref(), Some("y"));
        b.set_member("m-z", None);
        assert_eq!(team_of(&b).0.as_deref(), Some("y"));
        // Without membership the actuals decide again.
        b.set_member("m-y", None);
        assert_eq!(team_of(&b).0.as_deref(), Some("x"));
    }

    fn activity(scope: Scope, id: &str, team: &str, kind: &str, window: Window, v: i64) -> Actual {
        Actual {
            scope,
            id: id.into(),
            team: team.into(),
            metric: TargetMetric::Activities,
            kind: Some(kind.into()),
            window,
            value: Decimal::from(v),
        }
    }

    fn won(scope: Scope, id: &str, team: &str, window: Window, v: i64) -> Actual {
        Actual {
            scope,
            id: id.into(),
            team: team.into(),
            metric: TargetMetric::DealsWon,
            kind: None,
            window,
            value: Decimal::from(v),
        }
    }

    /// Every series of `family`, as (labels, value), in output order.
    fn all(out: &[Out], family: &str) -> Vec<(Vec<(&'static str, CompactString)>, f64)> {
        out.iter()
            .filter(|o| o.family == family)
            .map(|o| (o.labels.clone(), o.value))
            .collect()
    }

    fn labels(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, CompactString)> {
        pairs.iter().map(|(k, v)| (*k, (*v).into())).collect()
    }

    #[test]
    fn activities_per_win_divides_every_kind_by_the_wins_of_the_window() {
        let cal = Calendar::utc();
        let now = ts("2026-11-15T12:00:00Z");
        let elapsed = Elapsed::new(cal, false, []);
        let mut b = TargetsBoard::default();
        // Rep a is on team z's roster; some of its series still sit under x, which it left.
        b.set_member("m", Some(("a".into(), "z".into())));
        b.set_actual(
            "a/won/x/qtd",
            Some(won(Scope::Rep, "a", "x", Window::Qtd, 2)),
        );
        b.set_actual(
            "a/won/z/qtd",
            Some(won(Scope::Rep, "a", "z", Window::Qtd, 1)),
        );
        b.set_actual(
            "a/call/x/qtd",
            Some(activity(Scope::Rep, "a", "x", "call", Window::Qtd, 4)),
        );
        b.set_actual(
            "a/email/z/qtd",
            Some(activity(Scope::Rep, "a", "z", "email", Window::Qtd, 3)),
        );
        // Today: activities but no win (the deals service publishes the 0).
        b.set_actual(
            "a/won/z/today",
            Some(won(Scope::Rep, "a", "z", Window::Today, 0)),
        );
        b.set_actual(
            "a/call/x/today",
            Some(activity(Scope::Rep, "a", "x", "call", Window::Today, 5)),
        );
        // Month to date: wins but no activity at all.
        b.set_actual(
            "a/won/z/mtd",
            Some(won(Scope::Rep, "a", "z", Window::Mtd, 2)),
        );
        // Rep b: activities, never a win.
        b.set_actual(
            "b/call/qtd",
            Some(activity(Scope::Rep, "b", "z", "call", Window::Qtd, 9)),
        );
        // Team x and the org.
        b.set_actual(
            "x/won/qtd",
            Some(won(Scope::Team, "x", "x", Window::Qtd, 4)),
        );
        b.set_actual(
            "x/call/qtd",
            Some(activity(Scope::Team, "x", "x", "call", Window::Qtd, 10)),
        );
        b.set_actual(
            "org/won/qtd",
            Some(won(Scope::Org, "org", "", Window::Qtd, 3)),
        );
        b.set_actual(
            "org/call/qtd",
            Some(activity(Scope::Org, "org", "", "call", Window::Qtd, 1)),
        );
        b.set_actual(
            "org/meeting/qtd",
            Some(activity(Scope::Org, "org", "", "meeting", Window::Qtd, 1)),
        );
        let out = b.series(now, &cal, &elapsed);
        // Rep a: (4 + 3) / (2 + 1) = 2.333333 (6 places), under its roster team; mtd: 0 / 2.
        assert_eq!(
            all(&out, "sales_rep_activities_per_win"),
            vec![
                (
                    labels(&[("rep", "a"), ("team", "z"), ("window", "mtd")]),
                    0.0
                ),
                (
                    labels(&[("rep", "a"), ("team", "z"), ("window", "qtd")]),
                    2.333333
                ),
            ]
        );
        // Team x: 10 / 4.
        assert_eq!(
            all(&out, "sales_team_activities_per_win"),
            vec![(labels(&[("team", "x"), ("window", "qtd")]), 2.5)]
        );
        // Org: (1 + 1) / 3 = 0.666667, rounded half away from zero.
        assert_eq!(
            all(&out, "sales_org_activities_per_win"),
            vec![(labels(&[("window", "qtd")]), 0.666667)]
        );
        // A tombstone takes its wins away: rep a has 7 activities / 1 win.
        b.set_actual("a/won/x/qtd", None);
        let out = b.series(now, &cal, &elapsed);
        let l = [("rep", "a"), ("window", "qtd")];
        assert_eq!(
            get(&out, "sales_rep_activities_per_win", &l).map(|o| o.value),
            Some(7.0)
        );
        // No win left in the window: the series goes.
        b.set_actual(
            "a/won/z/qtd",
            Some(won(Scope::Rep, "a", "z", Window::Qtd, 0)),
        );
        let out = b.series(now, &cal, &elapsed);
        assert!(get(&out, "sales_rep_activities_per_win", &l).is_none());
    }

    fn rollup(scope: Scope, id: &str, rollup: &str, period: &str, v: i64) -> Rollup {
        Rollup {
            scope,
            id: id.into(),
            rollup: rollup.into(),
            period: Period::parse(period).expect("valid"),
            value: Decimal::from(v),
        }
    }

    #[test]
    fn attainment_distribution_per_roster_team_and_for_the_org() {
        let cal = Calendar::utc();
        let now = ts("2026-11-15T12:00:00Z");
        let elapsed = Elapsed::new(cal, false, []);
        let mut b = TargetsBoard::default();
        fn target(b: &mut TargetsBoard, rep: &str, metric: &str, period: &str, v: &str) {
            let t = rules()
                .from_fields("rep", rep, metric, None, period, v, None)
                .expect("valid");
            b.set_target(&t.key(), Some(t));
        }
        // Team x: a at exactly 50 %, b at exactly 75 %, c at 112.5 %, d at 10 %.
        target(&mut b, "a", "bookings", "2026-Q4", "1000");
        target(&mut b, "b", "bookings", "2026-Q4", "800");
        target(&mut b, "c", "bookings", "2026-Q4", "400");
        target(&mut b, "d", "bookings", "2026-Q4", "1000");
        // Team y, one rep: f at exactly 100 %.
        target(&mut b, "f", "bookings", "2026-Q4", "300");
        // Team z has no rep with a current quarter bookings target above 0: g's is last
        // quarter's, h's is 0, i's is on deals won.
        target(&mut b, "g", "bookings", "2026-Q3", "100");
        target(&mut b, "h", "bookings", "2026-Q4", "0");
        target(&mut b, "i", "deals_won", "2026-Q4", "3");
        for (rep, team) in [
            ("a", "x"),
            ("b", "x"),
            ("c", "x"),
            ("d", "x"),
            ("e", "x"),
            ("f", "y"),
            ("g", "z"),
            ("h", "z"),
            ("i", "z"),
        ] {
            b.set_member(&format!("m/{rep}"), Some((rep.into(), team.into())));
        }
        fn qtd(b: &mut TargetsBoard, key: &str, rep: &str, team: &str, v: i64) {
            b.set_actual(
                key,
                Some(actual(rep, team, TargetMetric::Bookings, Window::Qtd, v)),
            );
        }
        qtd(&mut b, "a", "a", "x", 500);
        qtd(&mut b, "b", "b", "x", 600);
        qtd(&mut b, "c", "c", "x", 450);
        qtd(&mut b, "d", "d", "x", 100);
        // e has bookings but no target: not counted.
        qtd(&mut b, "e", "e", "x", 5000);
        // f's bookings sit mostly under x (a deal that named x); the roster puts f in y, and
        // its attainment counts them all: (120 + 80 + 100) / 300.
        qtd(&mut b, "f1", "f", "x", 120);
        qtd(&mut b, "f2", "f", "x", 80);
        qtd(&mut b, "f3", "f", "y", 100);
        qtd(&mut b, "g", "g", "z", 100);
        qtd(&mut b, "h", "h", "z", 100);
        let out = b.series(now, &cal, &elapsed);
        let by_threshold = |family: &str, team: Option<&str>| -> Vec<(String, f64)> {
            all(&out, family)
                .into_iter()
                .filter(|(l, _)| {
                    l.iter()
                        .find(|(k, _)| *k == "team")
                        .map(|(_, v)| v.as_str())
                        == team
                })
                .map(|(l, v)| {
                    let t = l
                        .iter()
                        .find(|(k, _)| *k == "threshold")
                        .expect("threshold");
                    (t.1.to_string(), v)
                })
                .collect()
        };
        let th = |v: [f64; 3]| -> Vec<(String, f64)> {
            ["50", "75", "100"]
                .iter()
                .zip(v)
                .map(|(t, v)| ((*t).to_owned(), v))
                .collect()
        };
        // Team x: 4 reps; 3 at 50 % or more (a exactly), 2 at 75 % (b exactly), 1 at 100 %.
        assert_eq!(
            by_threshold("sales_team_reps_attaining", Some("x")),
            th([3.0, 2.0, 1.0])
        );
        assert_eq!(
            by_threshold("sales_team_reps_attaining_ratio", Some("x")),
            th([0.75, 0.5, 0.25])
        );
        // Median of 0.1, 0.5, 0.75, 1.125: (0.5 + 0.75) / 2.
        let median = |team: &str| {
            get(&out, "sales_team_attainment_median", &[("team", team)]).map(|o| o.value)
        };
        assert_eq!(median("x"), Some(0.625));
        // Team y, one rep exactly at 100 %: every threshold, all of the team, median 1.
        assert_eq!(
            by_threshold("sales_team_reps_attaining", Some("y")),
            th([1.0, 1.0, 1.0])
        );
        assert_eq!(
            by_threshold("sales_team_reps_attaining_ratio", Some("y")),
            th([1.0, 1.0, 1.0])
        );
        assert_eq!(median("y"), Some(1.0));
        assert_eq!(median("z"), None);
        assert!(get(&out, "sales_team_reps_attaining", &[("team", "z")]).is_none());
        // The org: a, b, c, d and f; 4 / 5, 3 / 5, 2 / 5; median of 0.1, 0.5, 0.75, 1, 1.125.
        assert_eq!(
            by_threshold("sales_org_reps_attaining", None),
            th([4.0, 3.0, 2.0])
        );
        assert_eq!(
            by_threshold("sales_org_reps_attaining_ratio", None),
            th([0.8, 0.6, 0.4])
        );
        assert_eq!(
            all(&out, "sales_org_attainment_median"),
            vec![(Vec::new(), 0.75)]
        );
        // One share rounds like every ratio: 1 of 3 reps is 0.333333.
        b.set_target("rep/c/bookings/2026-Q4", None);
        b.set_target("rep/d/bookings/2026-Q4", None);
        target(&mut b, "d", "bookings", "2026-Q4", "100");
        let out = b.series(now, &cal, &elapsed);
        assert_eq!(
            get(
                &out,
                "sales_team_reps_attaining_ratio",
                &[("team", "x"), ("threshold", "100")]
            )
            .map(|o| o.value),
            Some(0.333333)
        );
        // No rep with a target: no org series either.
        let empty = TargetsBoard::default().series(now, &cal, &elapsed);
        assert!(all(&empty, "sales_org_reps_attaining").is_empty());
        assert!(all(&empty, "sales_org_attainment_median").is_empty());
    }

    /// Plans from the rows of a CSV file (see docs/targets.md), stored under their keys.
    fn load_plans(b: &mut TargetsBoard, csv: &[[&str; 12]]) {
        let rows: Vec<crate::PlanRow> = csv
            .iter()
            .enumerate()
            .map(|(i, f)| crate::PlanRow {
                line: i as u64 + 2,
                plan: f[0].into(),
                reps: f[1].into(),
                otv: f[2].into(),
                currency: f[3].into(),
                metric: f[4].into(),
                period_type: f[5].into(),
                tier_from: f[6].into(),
                tier_to: f[7].into(),
                rate: f[8].into(),
                decelerator_below: f[9].into(),
                decelerator_factor: f[10].into(),
                cap: f[11].into(),
            })
            .collect();
        for (plan, _) in crate::plans_from_rows(&rows, &rules()).expect("valid plans") {
            b.set_plan(&plan.key(), Some(plan));
        }
    }

    /// Narrowed to some windows, the board computes the window-labelled series of those
    /// windows only, each as the whole board computes it, and the reps' quarter-to-date ranks
    /// whatever the windows; every other series is unchanged.
    #[test]
    fn shown_windows_narrow_the_window_series_and_keep_the_qtd_ranks() {
        let cal = Calendar::utc();
        let elapsed = Elapsed::new(cal, false, []);
        let now = ts("2026-11-16T12:00:00Z");
        let t = rules()
            .from_fields("rep", "a", "bookings", None, "2026-Q4", "1000", None)
            .expect("a rep target");
        let mut b = TargetsBoard::default();
        b.set_target(&t.key(), Some(t));
        let windows = [Window::Today, Window::Mtd, Window::Qtd, Window::Ytd];
        for (n, w) in windows.into_iter().enumerate() {
            let v = 10 * (n as i64 + 1);
            for (rep, team, extra) in [("a", "x", 5), ("b", "x", 0), ("c", "y", 7)] {
                let key = |m: &str| format!("{rep}/{m}/{}", w.label());
                let booked = actual(rep, team, TargetMetric::Bookings, w, v + extra);
                b.set_actual(&key("bookings"), Some(booked));
                b.set_actual(&key("won"), Some(won(Scope::Rep, rep, team, w, 1 + extra)));
                let calls = activity(Scope::Rep, rep, team, "call", w, v);
                b.set_actual(&key("call"), Some(calls));
            }
            for (region, x) in [("europe", 3), ("americas", 4)] {
                let r = Actual {
                    scope: Scope::Region,
                    id: region.into(),
                    team: String::new(),
                    metric: TargetMetric::Bookings,
                    kind: None,
                    window: w,
                    value: Decimal::from(v * x),
                };
                b.set_actual(&format!("{region}/{}", w.label()), Some(r));
            }
        }
        let key = |o: &Out| format!("{} {:?} {}", o.family, o.labels, o.value);
        let window = |o: &Out| {
            o.labels
                .iter()
                .find(|(n, _)| *n == "window")
                .map(|(_, v)| v.to_string())
        };
        let whole: Vec<Out> = b.series(now, &cal, &elapsed);
        b.show_windows([Window::Today, Window::Ytd]);
        let narrowed: Vec<Out> = b.series(now, &cal, &elapsed);
        let qtd_rank =
            |o: &Out| o.family == "sales_rep_rank" && window(o).as_deref() == Some("qtd");
        let mut want: Vec<String> = whole
            .iter()
            .filter(|o| match window(o).as_deref() {
                None | Some("today" | "ytd") => true,
                Some(_) => qtd_rank(o),
            })
            .map(key)
            .collect();
        let mut got: Vec<String> = narrowed.iter().map(key).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        for family in [
            "sales_rep_rank",
            "sales_rep_team_share",
            "sales_region_rank",
            "sales_rep_activities_per_win",
        ] {
            for w in ["today", "ytd"] {
                assert!(
                    narrowed
                        .iter()
                        .any(|o| o.family == family && window(o).as_deref() == Some(w)),
                    "{family} of {w} shown"
                );
            }
            assert!(
                whole
                    .iter()
                    .any(|o| o.family == family && window(o).as_deref() == Some("mtd")),
                "{family} of mtd on the whole board"
            );
        }
        assert!(narrowed.iter().any(qtd_rank), "the qtd ranks are kept");
        assert!(narrowed.iter().any(|o| o.family == "sales_rep_target"));
    }

    #[test]
    fn regions_have_targets_attainment_and_ranks() {
        let cal = Calendar::utc();
        let elapsed = Elapsed::new(cal, false, []);
        let now = ts("2026-11-16T00:00:00Z");
        let mut b = TargetsBoard::default();
        let t = rules()
            .from_fields(
                "region", "europe", "bookings", None, "2026-Q4", "1000", None,
            )
            .expect("a region target");
        b.set_target(&t.key(), Some(t));
        let region = |id: &str, metric: TargetMetric, v: i64| Actual {
            scope: Scope::Region,
            id: id.into(),
            team: String::new(),
            metric,
            kind: None,
            window: Window::Qtd,
            value: Decimal::from(v),
        };
        b.set_actual("e", Some(region("europe", TargetMetric::Bookings, 250)));
        b.set_actual("a", Some(region("americas", TargetMetric::Bookings, 900)));
        b.set_actual("p", Some(region("asia", TargetMetric::Bookings, 250)));
        let out = b.series(now, &cal, &elapsed);
        let l = [("region", "europe"), ("period", "2026-Q4")];
        assert_eq!(
            get(&out, "sales_region_target", &l).map(|o| o.value),
            Some(1000.0)
        );
        assert_eq!(
            get(&out, "sales_region_attainment_ratio", &l).map(|o| o.value),
            Some(0.25)
        );
        let rank = |r: &str| {
            get(
                &out,
                "sales_region_rank",
                &[("region", r), ("window", "qtd")],
            )
            .map(|o| o.value)
        };
        assert_eq!(
            (rank("americas"), rank("europe"), rank("asia")),
            (Some(1.0), Some(2.0), Some(2.0))
        );
        assert!(rules()
            .from_fields("galaxy", "x", "bookings", None, "2026-Q4", "1", None)
            .is_err());
    }

    #[test]
    fn a_rep_in_ramp_carries_its_share_of_the_target_everywhere() {
        let cal = Calendar::utc();
        let elapsed = Elapsed::new(cal, false, []);
        let now = ts("2026-11-16T00:00:00Z");
        let mut b = TargetsBoard::default();
        b.set_ramp(Ramp::new(vec![25.into(), 50.into(), 75.into()]).expect("valid"));
        let date = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        // n was hired on 1 November: November at 25 %; Q4 = 31 days at 0, 30 at 25 % and 31
        // at 50 % of 92 days. o was hired two years ago: fully ramped.
        b.set_hired("info/n", Some(("n".into(), date("2026-11-01"))));
        b.set_hired("info/o", Some(("o".into(), date("2024-11-01"))));
        for (rep, period, value) in [
            ("n", "2026-Q4", "9200"),
            ("n", "2026-11", "4000"),
            ("o", "2026-Q4", "9200"),
        ] {
            let t = rules()
                .from_fields("rep", rep, "bookings", None, period, value, None)
                .expect("valid");
            b.set_target(&t.key(), Some(t));
        }
        load_plans(
            &mut b,
            &[[
                "ae", "n", "10000", "", "", "quarter", "0", "", "1", "", "", "",
            ]],
        );
        for rep in ["n", "o"] {
            b.set_member(&format!("m/{rep}"), Some((rep.into(), "x".into())));
            b.set_actual(
                rep,
                Some(actual(rep, "x", TargetMetric::Bookings, Window::Qtd, 1550)),
            );
        }
        b.set_actual(
            "n-mtd",
            Some(actual("n", "x", TargetMetric::Bookings, Window::Mtd, 500)),
        );
        let out = b.series(now, &cal, &elapsed);
        let q = [("rep", "n"), ("period", "2026-Q4")];
        let m = [("rep", "n"), ("period", "2026-11")];
        let value = |family: &str, l: &[(&str, &str)]| get(&out, family, l).map(|o| o.value);
        // 9200 x (30 x 0.25 + 31 x 0.5) / 92 = 2300; November: 4000 x 0.25 = 1000.
        assert_eq!(value("sales_rep_target", &q), Some(2300.0));
        assert_eq!(value("sales_rep_ramp_ratio", &q), Some(0.25));
        assert_eq!(
            value("sales_rep_attainment_ratio", &q),
            Some(1550.0 / 2300.0)
        );
        assert_eq!(value("sales_rep_gap", &q), Some(750.0));
        assert_eq!(value("sales_rep_target", &m), Some(1000.0));
        assert_eq!(value("sales_rep_ramp_ratio", &m), Some(0.25));
        assert_eq!(value("sales_rep_attainment_ratio", &m), Some(0.5));
        // Fully ramped: the plan's target, and no ramp series.
        let o = [("rep", "o"), ("period", "2026-Q4")];
        assert_eq!(value("sales_rep_target", &o), Some(9200.0));
        assert!(get(&out, "sales_rep_ramp_ratio", &[("rep", "o")]).is_none());
        // The attainment distribution and the commission take the ramped quota: n at
        // 1550 / 2300 = 67 % (50 % reached, 75 % not), o at 1550 / 9200 = 17 %.
        let reached =
            |t: &str| value("sales_org_reps_attaining", &[("threshold", t)]).expect("threshold");
        assert_eq!((reached("50"), reached("75")), (1.0, 0.0));
        // Earned: 1550 / 2300 of the 10,000 OTV at rate 1, to the cent.
        let earned = (Decimal::from(1550) / Decimal::from(2300) * Decimal::from(10_000))
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        assert_eq!(
            value("sales_rep_commission_earned", &[("rep", "n")]),
            earned.to_f64()
        );
    }

    #[test]
    fn commission_earned_and_projected_from_attainment_and_the_run_rate() {
        let cal = Calendar::utc();
        let elapsed = Elapsed::new(cal, false, []);
        // Half of Q4 2026 (1 October to 1 January, 92 days) and of November.
        let now = ts("2026-11-16T00:00:00Z");
        let q4 = Period::parse("2026-Q4").expect("valid");
        let nov = Period::parse("2026-11").expect("valid");
        assert_eq!(
            (elapsed.share(&q4, now), elapsed.share(&nov, now)),
            (0.5, 0.5)
        );
        let mut b = TargetsBoard::default();
        load_plans(
            &mut b,
            &[
                // OTV 20,000 a quarter: 0-50 % at 0.6, 50-100 % at 1.4, above at 2; half pay
                // below 25 %; at most 2.5 x OTV.
                [
                    "ae", "a;c;d;e", "20000", "", "", "quarter", "0", "50", "0.6", "25", "0.5",
                    "2.5",
                ],
                ["ae", "", "", "", "", "", "50", "100", "1.4", "", "", ""],
                ["ae", "", "", "", "", "", "100", "", "2", "", "", ""],
                // 5,000 EUR (5,400 USD) a month on deals won: 1 to 100 %, 1.5 above.
                [
                    "sdr",
                    "b",
                    "5000",
                    "EUR",
                    "deals_won",
                    "month",
                    "0",
                    "100",
                    "1",
                    "",
                    "",
                    "",
                ],
                ["sdr", "", "", "", "", "", "100", "", "1.5", "", "", ""],
            ],
        );
        assert_eq!(b.plans(), 5);
        for (rep, metric, period, value) in [
            ("a", "bookings", "2026-Q4", "1000"),
            ("b", "deals_won", "2026-11", "4"),
            ("c", "bookings", "2026-Q4", "0"),
            ("d", "bookings", "2026-Q3", "1000"),
            ("e", "bookings", "2026-Q4", "3"),
        ] {
            let t = rules()
                .from_fields("rep", rep, metric, None, period, value, None)
                .expect("valid");
            b.set_target(&t.key(), Some(t));
        }
        b.set_member("m/a", Some(("a".into(), "y".into())));
        // Rep a: 300 of bookings this quarter, under two teams.
        b.set_actual(
            "a1",
            Some(actual("a", "x", TargetMetric::Bookings, Window::Qtd, 200)),
        );
        b.set_actual(
            "a2",
            Some(actual("a", "y", TargetMetric::Bookings, Window::Qtd, 100)),
        );
        // A month-to-date figure is not the quarter's.
        b.set_actual(
            "a3",
            Some(actual("a", "y", TargetMetric::Bookings, Window::Mtd, 50)),
        );
        b.set_actual(
            "b",
            Some(actual("b", "x", TargetMetric::DealsWon, Window::Mtd, 5)),
        );
        b.set_actual(
            "c",
            Some(actual("c", "x", TargetMetric::Bookings, Window::Qtd, 10)),
        );
        b.set_actual(
            "e",
            Some(actual("e", "x", TargetMetric::Bookings, Window::Qtd, 1)),
        );
        let out = b.series(now, &cal, &elapsed);
        let pay = |family: &str, rep: &str| {
            get(&out, family, &[("rep", rep)]).map(|o| (o.labels.clone(), o.value))
        };
        let quarter = labels(&[
            ("rep", "a"),
            ("team", "y"),
            ("period_type", "quarter"),
            ("period", "2026-Q4"),
        ]);
        // Earned: 30 % attained, 30 x 0.6 = 18 % of 20,000. Projected: 300 / 0.5 = 600 of
        // 1000, 50 x 0.6 + 10 x 1.4 = 44 % of 20,000.
        assert_eq!(
            pay("sales_rep_commission_earned", "a"),
            Some((quarter.clone(), 3600.0))
        );
        assert_eq!(
            pay("sales_rep_commission_projected", "a"),
            Some((quarter, 8800.0))
        );
        // Rep b: 5 of 4 deals: 100 % + 25 x 1.5 = 137.5 % of 5,400; projected 10 of 4: 100 %
        // + 150 x 1.5 = 325 %.
        let month = labels(&[
            ("rep", "b"),
            ("team", "x"),
            ("period_type", "month"),
            ("period", "2026-11"),
        ]);
        assert_eq!(
            pay("sales_rep_commission_earned", "b"),
            Some((month.clone(), 7425.0))
        );
        assert_eq!(
            pay("sales_rep_commission_projected", "b"),
            Some((month, 17550.0))
        );
        // Rep e: 1 of 3 is 33.33.. %, 19.99.. % of OTV in exact decimals: 4000.00 in cents.
        // Projected 2 of 3: 50 x 0.6 + 16.66.. x 1.4 = 53.33.. %, 10666.67.
        assert_eq!(
            pay("sales_rep_commission_earned", "e").map(|p| p.1),
            Some(4000.0)
        );
        assert_eq!(
            pay("sales_rep_commission_projected", "e").map(|p| p.1),
            Some(10666.67)
        );
        // Rep c's quota is 0, rep d's is last quarter's: no commission.
        for rep in ["c", "d"] {
            assert!(pay("sales_rep_commission_earned", rep).is_none(), "{rep}");
            assert!(
                pay("sales_rep_commission_projected", rep).is_none(),
                "{rep}"
            );
        }
        // At the very start of the quarter nothing has elapsed: earned, but no projection.
        let start = ts("2026-10-01T00:00:00Z");
        b.set_actual(
            "a1",
            Some(actual("a", "x", TargetMetric::Bookings, Window::Qtd, 0)),
        );
        b.set_actual(
            "a2",
            Some(actual("a", "y", TargetMetric::Bookings, Window::Qtd, 0)),
        );
        let out = b.series(start, &cal, &elapsed);
        let l = [("rep", "a"), ("period", "2026-Q4")];
        assert_eq!(
            get(&out, "sales_rep_commission_earned", &l).map(|o| o.value),
            Some(0.0)
        );
        assert!(get(&out, "sales_rep_commission_projected", &l).is_none());
        // A tombstone takes the plan away.
        b.set_plan("a/quarter", None);
        let out = b.series(now, &cal, &elapsed);
        assert!(get(&out, "sales_rep_commission_earned", &[("rep", "a")]).is_none());
    }

    #[test]
    fn forecast_coverage_divides_each_rollup_by_the_bookings_target_of_its_period() {
        let cal = Calendar::utc();
        let now = ts("2026-11-15T12:00:00Z");
        let elapsed = Elapsed::new(cal, false, []);
        let mut b = TargetsBoard::default();
        let mut target = |scope: &str, id: &str, metric: &str, period: &str, v: &str, cur| {
            let t = rules()
                .from_fields(scope, id, metric, None, period, v, cur)
                .expect("valid");
            b.set_target(&t.key(), Some(t));
        };
        // Rep a: 1000 EUR = 1080 USD for the quarter, 0 for the month.
        target("rep", "a", "bookings", "2026-Q4", "1000", Some("EUR"));
        target("rep", "a", "bookings", "2026-11", "0", None);
        // Team x: a quarter target only.
        target("team", "x", "bookings", "2026-Q4", "3000", None);
        // The org: bookings and deals won for the quarter, last quarter's, and the year's.
        target("org", "org", "bookings", "2026-Q4", "2000", None);
        target("org", "org", "deals_won", "2026-Q4", "10", None);
        target("org", "org", "bookings", "2026-Q3", "100", None);
        target("org", "org", "bookings", "FY2026", "8000", None);
        b.set_member("m", Some(("a".into(), "z".into())));
        // Rep a's commit rollup sits under two teams: 300 + 240.
        b.set_rollup(
            "a/x/commit/q",
            Some(rollup(Scope::Rep, "a", "commit", "2026-Q4", 300)),
        );
        b.set_rollup(
            "a/z/commit/q",
            Some(rollup(Scope::Rep, "a", "commit", "2026-Q4", 240)),
        );
        b.set_rollup(
            "a/z/best_case/q",
            Some(rollup(Scope::Rep, "a", "best_case", "2026-Q4", 700)),
        );
        b.set_rollup(
            "a/z/pipeline/q",
            Some(rollup(Scope::Rep, "a", "pipeline", "2026-Q4", 0)),
        );
        b.set_rollup(
            "a/z/commit/m",
            Some(rollup(Scope::Rep, "a", "commit", "2026-11", 50)),
        );
        b.set_rollup(
            "x/commit/q",
            Some(rollup(Scope::Team, "x", "commit", "2026-Q4", 1000)),
        );
        b.set_rollup(
            "x/commit/m",
            Some(rollup(Scope::Team, "x", "commit", "2026-11", 500)),
        );
        b.set_rollup(
            "org/commit/q",
            Some(rollup(Scope::Org, "org", "commit", "2026-Q4", 400)),
        );
        b.set_rollup(
            "org/commit/q3",
            Some(rollup(Scope::Org, "org", "commit", "2026-Q3", 90)),
        );
        b.set_rollup(
            "org/commit/y",
            Some(rollup(Scope::Org, "org", "commit", "FY2026", 4000)),
        );
        let out = b.series(now, &cal, &elapsed);
        let rep = |r: &str| {
            labels(&[
                ("rep", "a"),
                ("team", "z"),
                ("rollup", r),
                ("period_type", "quarter"),
                ("period", "2026-Q4"),
            ])
        };
        // 700 / 1080 = 0.6481481.. and 540 / 1080; no month series (its target is 0).
        assert_eq!(
            all(&out, "sales_rep_forecast_coverage"),
            vec![
                (rep("best_case"), 0.648148),
                (rep("commit"), 0.5),
                (rep("pipeline"), 0.0),
            ]
        );
        // 1000 / 3000 = 0.333333; no month series (no month target).
        assert_eq!(
            all(&out, "sales_team_forecast_coverage"),
            vec![(
                labels(&[
                    ("team", "x"),
                    ("rollup", "commit"),
                    ("period_type", "quarter"),
                    ("period", "2026-Q4")
                ]),
                0.333333
            )]
        );
        // 400 / 2000; neither last quarter nor the year.
        assert_eq!(
            all(&out, "sales_org_forecast_coverage"),
            vec![(
                labels(&[
                    ("rollup", "commit"),
                    ("period_type", "quarter"),
                    ("period", "2026-Q4")
                ]),
                0.2
            )]
        );
        // Tombstones: the commit rollup under x goes (240 / 1080 = 0.2222..), then best case.
        b.set_rollup("a/x/commit/q", None);
        b.set_rollup("a/z/best_case/q", None);
        let out = b.series(now, &cal, &elapsed);
        assert_eq!(
            all(&out, "sales_rep_forecast_coverage"),
            vec![(rep("commit"), 0.222222), (rep("pipeline"), 0.0)]
        );
        // A month target turns the month rollup on: 50 / 200.
        let t = rules()
            .from_fields("rep", "a", "bookings", None, "2026-11", "200", None)
            .expect("valid");
        b.set_target(&t.key(), Some(t));
        let out = b.series(now, &cal, &elapsed);
        let month = [("rep", "a"), ("period", "2026-11"), ("rollup", "commit")];
        assert_eq!(
            get(&out, "sales_rep_forecast_coverage", &month).map(|o| o.value),
            Some(0.25)
        );
        // Without its target the subject has no coverage.
        b.set_target("rep/a/bookings/2026-Q4", None);
        let out = b.series(now, &cal, &elapsed);
        assert!(get(
            &out,
            "sales_rep_forecast_coverage",
            &[("period", "2026-Q4")]
        )
        .is_none());
    }

    /// A whole fiscal year's plan, as sales ops loads it: the year, its four quarters, its
    /// twelve months and every ISO week that overlaps it, for the org, two teams and two
    /// reps, each period with its own value. Returns the plan by target key.
    fn full_year_plan(b: &mut TargetsBoard, cal: &Calendar, fy: i32) -> BTreeMap<String, Target> {
        let fy_period = Period::parse(&format!("FY{fy}")).expect("valid");
        let (first, end) = fy_period.days(cal);
        let mut periods = vec![fy_period];
        periods.extend((1..=4).map(|q| Period::parse(&format!("{fy}-Q{q}")).expect("valid")));
        let mut month = first;
        while month < end {
            periods.push(Period::containing(
                PeriodType::Month,
                cal.local_midnight(month),
                cal,
            ));
            month = month
                .checked_add_months(chrono::Months::new(1))
                .expect("date");
        }
        let mut day = first
            - chrono::Duration::days(i64::from(
                chrono::Datelike::weekday(&first).num_days_from_monday(),
            ));
        while day < end {
            periods.push(Period::containing(
                PeriodType::Week,
                cal.local_midnight(day),
                cal,
            ));
            day += chrono::Duration::days(7);
        }
        let subjects = [
            ("org", "org"),
            ("team", "x"),
            ("team", "y"),
            ("rep", "a"),
            ("rep", "b"),
        ];
        let mut plan = BTreeMap::new();
        for (i, (scope, id)) in subjects.into_iter().enumerate() {
            for (j, p) in periods.iter().enumerate() {
                // Distinct for every subject and period; quarters neither rising nor falling.
                let value = 1000 * (i + 1) + 10 * ((j * 37) % 97) + 1;
                let t = rules()
                    .from_fields(
                        scope,
                        id,
                        "bookings",
                        None,
                        &p.to_string(),
                        &value.to_string(),
                        None,
                    )
                    .expect("valid");
                b.set_target(&t.key(), Some(t.clone()));
                plan.insert(t.key(), t);
            }
        }
        let months = periods.iter().filter(|p| p.kind == PeriodType::Month);
        assert_eq!(months.count(), 12);
        plan
    }

    /// The targets of `plan` whose period holds `now`, by their bounds.
    fn current_in<'a>(
        plan: &'a BTreeMap<String, Target>,
        now: i64,
        cal: &Calendar,
    ) -> Vec<&'a Target> {
        plan.values()
            .filter(|t| {
                let (start, end) = t.period.bounds(cal);
                start <= now && now < end
            })
            .collect()
    }

    /// Checks that exactly the current targets of `plan` are shown at `now`, with their
    /// values, and that every per-period family names the current periods only.
    fn shows_only_the_current_periods(
        b: &TargetsBoard,
        plan: &BTreeMap<String, Target>,
        now: i64,
        cal: &Calendar,
        elapsed: &Elapsed,
    ) -> Vec<Out> {
        let out = b.series(now, cal, elapsed);
        let current: Vec<Period> = PeriodType::ALL
            .into_iter()
            .map(|k| Period::containing(k, now, cal))
            .collect();
        let mut want: Vec<(String, String, String, f64)> = current_in(plan, now, cal)
            .into_iter()
            .map(|t| {
                (
                    t.scope.label().to_owned(),
                    t.id.clone(),
                    t.period.to_string(),
                    f(t.value),
                )
            })
            .collect();
        want.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        // Every subject has one target per period type: the year, quarter, month and week.
        assert_eq!(want.len(), 5 * 4, "at {now}: {want:?}");
        let mut got: Vec<(String, String, String, f64)> = Vec::new();
        for o in out.iter().filter(|o| o.family.ends_with("_target")) {
            let label = |n: &str| {
                o.labels
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            };
            let scope = o.family["sales_".len()..o.family.len() - "_target".len()].to_owned();
            let id = match scope.as_str() {
                "rep" => label("rep"),
                "team" => label("team"),
                _ => "org".to_owned(),
            };
            got.push((scope, id, label("period"), o.value));
        }
        got.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        assert_eq!(got, want, "targets shown at {now}");
        for o in &out {
            let Some((_, period)) = o.labels.iter().find(|(k, _)| *k == "period") else {
                continue;
            };
            assert!(
                current.iter().any(|p| p.to_string() == *period),
                "{} {:?} at {now} is not of a current period {current:?}",
                o.family,
                o.labels
            );
        }
        let shares = all(&out, "sales_period_elapsed_ratio");
        assert_eq!(
            shares.len(),
            4,
            "one elapsed share per period type: {shares:?}"
        );
        out
    }

    #[test]
    fn of_a_full_year_plan_only_the_current_periods_are_shown() {
        let cal = Calendar::utc();
        let e = Elapsed::new(cal, true, []);
        let mut b = TargetsBoard::default();
        let plan = full_year_plan(&mut b, &cal, 2026);
        // 5 subjects x (1 year + 4 quarters + 12 months + 53 weeks: 2026-W01, from Monday 29
        // December 2025, to 2026-W53, into January 2027).
        assert_eq!(b.targets(), plan.len());
        assert_eq!(plan.len(), 5 * (1 + 4 + 12 + 53));
        b.set_actual(
            "x/qtd",
            Some(Actual {
                scope: Scope::Team,
                id: "x".into(),
                team: "x".into(),
                metric: TargetMetric::Bookings,
                kind: None,
                window: Window::Qtd,
                value: Decimal::from(600),
            }),
        );
        let now = ts("2026-05-20T12:00:00Z");
        let out = shows_only_the_current_periods(&b, &plan, now, &cal, &e);
        let q2 = &plan["team/x/bookings/2026-Q2"];
        // What `sum by (team) (sales_team_target{period_type="quarter"})` reads: Q2 alone.
        let quarter_sum: f64 = out
            .iter()
            .filter(|o| {
                o.family == "sales_team_target"
                    && o.labels.contains(&("team", "x".into()))
                    && o.labels.contains(&("period_type", "quarter".into()))
            })
            .map(|o| o.value)
            .sum();
        assert_eq!(quarter_sum, f(q2.value));
        let four: f64 = (1..=4)
            .map(|q| f(plan[&format!("team/x/bookings/2026-Q{q}")].value))
            .sum();
        assert_ne!(quarter_sum, four);
        let q = [("team", "x"), ("period", "2026-Q2")];
        assert_eq!(
            get(&out, "sales_team_attainment_ratio", &q).map(|o| o.value),
            Some(600.0 / f(q2.value))
        );
        assert_eq!(
            get(&out, "sales_team_gap", &q).map(|o| o.value),
            Some(f(q2.value) - 600.0)
        );
        for (family, period) in [
            ("sales_period_elapsed_ratio", "FY2026"),
            ("sales_period_elapsed_ratio", "2026-Q2"),
            ("sales_period_elapsed_ratio", "2026-05"),
            ("sales_period_elapsed_ratio", "2026-W21"),
        ] {
            assert!(
                get(&out, family, &[("period", period)]).is_some(),
                "{period}"
            );
        }
    }

    #[test]
    fn when_the_clock_crosses_a_boundary_the_next_period_of_the_plan_takes_over() {
        let cal = Calendar::utc();
        let e = Elapsed::new(cal, true, []);
        let mut b = TargetsBoard::default();
        let mut plan = full_year_plan(&mut b, &cal, 2026);
        plan.extend(full_year_plan(&mut b, &cal, 2027));
        // Either side of: a week (Sunday to Monday), a quarter and month (30 June to 1 July,
        // a Tuesday: the week goes on), and the fiscal year (its last week, 2026-W53, runs on
        // into January 2027).
        for (before, after, changed) in [
            (
                "2026-07-05T23:59:59Z",
                "2026-07-06T00:00:00Z",
                vec![("2026-W27", "2026-W28")],
            ),
            (
                "2026-06-30T23:59:59Z",
                "2026-07-01T00:00:00Z",
                vec![("2026-Q2", "2026-Q3"), ("2026-06", "2026-07")],
            ),
            (
                "2026-12-31T23:59:59Z",
                "2027-01-01T00:00:00Z",
                vec![
                    ("FY2026", "FY2027"),
                    ("2026-Q4", "2027-Q1"),
                    ("2026-12", "2027-01"),
                ],
            ),
        ] {
            let names = |now: i64| -> Vec<String> {
                let out = shows_only_the_current_periods(&b, &plan, now, &cal, &e);
                all(&out, "sales_period_elapsed_ratio")
                    .into_iter()
                    .filter_map(|(l, _)| {
                        l.into_iter()
                            .find(|(k, _)| *k == "period")
                            .map(|(_, v)| v.to_string())
                    })
                    .collect()
            };
            let (was, is) = (names(ts(before)), names(ts(after)));
            for (old, new) in &changed {
                assert!(
                    was.contains(&(*old).to_owned()) && !was.contains(&(*new).to_owned()),
                    "{before}: {was:?}"
                );
                assert!(
                    is.contains(&(*new).to_owned()) && !is.contains(&(*old).to_owned()),
                    "{after}: {is:?}"
                );
            }
            let kept: Vec<&String> = was.iter().filter(|p| is.contains(p)).collect();
            assert_eq!(
                kept.len(),
                4 - changed.len(),
                "{before} → {after}: {was:?} / {is:?}"
            );
        }
        // The team's quarter target at the start of Q3 is Q3's, not Q2's nor their sum.
        let out = b.series(ts("2026-07-01T00:00:00Z"), &cal, &e);
        let team_quarter = all(&out, "sales_team_target")
            .into_iter()
            .filter(|(l, _)| {
                l.contains(&("team", "y".into())) && l.contains(&("period_type", "quarter".into()))
            })
            .collect::<Vec<_>>();
        assert_eq!(team_quarter.len(), 1);
        assert_eq!(team_quarter[0].1, f(plan["team/y/bookings/2026-Q3"].value));
    }

    #[test]
    fn a_fiscal_year_from_april_shows_its_own_quarter_of_the_plan() {
        // Fiscal year FY2027 runs April 2026 to March 2027 in Berlin: its Q3 is October to
        // December 2026, and the local midnight of 1 January (23:00 UTC) starts Q4.
        let cal = Calendar::new("Europe/Berlin", 4).expect("calendar");
        let e = Elapsed::new(cal, true, []);
        let mut b = TargetsBoard::default();
        let plan = full_year_plan(&mut b, &cal, 2027);
        let out = shows_only_the_current_periods(&b, &plan, ts("2026-12-31T22:59:59Z"), &cal, &e);
        assert!(get(&out, "sales_org_target", &[("period", "2027-Q3")]).is_some());
        let out = shows_only_the_current_periods(&b, &plan, ts("2026-12-31T23:00:00Z"), &cal, &e);
        assert_eq!(
            get(&out, "sales_org_target", &[("period_type", "quarter")]).map(|o| o.value),
            Some(f(plan["org/org/bookings/2027-Q4"].value))
        );
        assert!(get(&out, "sales_org_target", &[("period", "FY2027")]).is_some());
    }

    #[test]
    fn bad_targets_are_rejected_with_a_reason() {
        let r = rules();
        let reason = |res: Result<Target, crate::TargetError>| res.expect_err("rejected").reason;
        assert_eq!(
            reason(r.from_fields("boss", "a", "bookings", None, "2026-Q4", "1", None)),
            "unknown_scope"
        );
        assert_eq!(
            reason(r.from_fields("rep", "a", "revenue", None, "2026-Q4", "1", None)),
            "unknown_metric"
        );
        assert_eq!(
            reason(r.from_fields("rep", "a", "activities", None, "2026-Q4", "1", None)),
            "missing_field"
        );
        assert_eq!(
            reason(r.from_fields(
                "rep",
                "a",
                "activities",
                Some("lunch"),
                "2026-Q4",
                "1",
                None
            )),
            "unknown_kind"
        );
        assert_eq!(
            reason(r.from_fields("rep", "a", "bookings", None, "Q4", "1", None)),
            "invalid_period"
        );
        assert_eq!(
            reason(r.from_fields("rep", "a", "bookings", None, "2026-Q4", "-1", None)),
            "negative_amount"
        );
        assert_eq!(
            reason(r.from_fields("rep", "a", "bookings", None, "2026-Q4", "x", None)),
            "invalid_amount"
        );
        assert_eq!(
            reason(r.from_fields("rep", "a", "bookings", None, "2026-Q4", "1", Some("XYZ"))),
            "unknown_currency"
        );
        assert_eq!(
            reason(r.from_fields("rep", "", "bookings", None, "2026-Q4", "1", None)),
            "empty_id"
        );
        assert_eq!(reason(r.parse(b"{\"scope\":\"rep\"")), "invalid_json");
    }
}
