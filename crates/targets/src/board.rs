//! The targets board: targets from `sales.targets`, actuals from `sales.metrics`, and every
//! series derived from them at one instant.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use salespulse_aggregate::{Calendar, Scope, Window};

use crate::elapsed::Elapsed;
use crate::period::{Period, PeriodType};
use crate::target::{Target, TargetMetric};

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
#[derive(Debug, Clone, PartialEq)]
pub struct Out {
    pub family: String,
    pub labels: Vec<(&'static str, String)>,
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

#[derive(Debug, Default)]
pub struct TargetsBoard {
    targets: HashMap<String, Target>,
    actuals: HashMap<String, (Idx, String, Decimal)>,
    index: HashMap<Idx, Decimal>,
    expected_by_key: HashMap<String, (ExpectedIdx, Decimal)>,
    expected: HashMap<ExpectedIdx, Decimal>,
    /// Roster membership records by key: the rep, its team, and when the record came.
    members: HashMap<String, (String, String, u64)>,
    arrivals: u64,
}

fn f(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

impl TargetsBoard {
    pub fn targets(&self) -> usize {
        self.targets.len()
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
            if let Some(sum) = self.index.get_mut(&idx) {
                *sum -= v;
                if sum.is_zero() {
                    self.index.remove(&idx);
                }
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
    fn rep_teams(&self) -> HashMap<&str, &str> {
        let mut teams = self.majority_teams();
        let mut latest: HashMap<&str, (&str, u64)> = HashMap::new();
        for (rep, team, seq) in self.members.values() {
            let e = latest.entry(rep.as_str()).or_insert((team.as_str(), *seq));
            if *seq > e.1 {
                *e = (team.as_str(), *seq);
            }
        }
        teams.extend(latest.into_iter().map(|(rep, (team, _))| (rep, team)));
        teams
    }

    fn majority_teams(&self) -> HashMap<&str, &str> {
        let mut votes: HashMap<&str, BTreeMap<&str, usize>> = HashMap::new();
        for (i, team, _) in self.actuals.values() {
            if i.scope == Scope::Rep {
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
    pub fn series(&self, now: i64, cal: &Calendar, elapsed: &Elapsed) -> Vec<Out> {
        let mut out = Vec::new();
        let teams = self.rep_teams();
        let mut periods: BTreeMap<Period, f64> = BTreeMap::new();
        for k in PeriodType::ALL {
            let p = Period::containing(k, now, cal);
            periods.insert(p, elapsed.share(&p, now));
        }
        let mut targets: Vec<&Target> = self.targets.values().collect();
        targets.sort_by(|a, b| {
            (a.scope, &a.id, a.metric, &a.kind, a.period)
                .cmp(&(b.scope, &b.id, b.metric, &b.kind, b.period))
        });
        for t in targets {
            let share = *periods
                .entry(t.period)
                .or_insert_with(|| elapsed.share(&t.period, now));
            let mut labels: Vec<(&'static str, String)> = Vec::with_capacity(6);
            match t.scope {
                Scope::Rep => {
                    labels.push(("rep", t.id.clone()));
                    let team = teams
                        .get(t.id.as_str())
                        .copied()
                        .unwrap_or(salespulse_aggregate::UNASSIGNED);
                    labels.push(("team", team.to_owned()));
                }
                Scope::Team => labels.push(("team", t.id.clone())),
                Scope::Org => {}
            }
            labels.push(("metric", t.metric.name().to_owned()));
            if let Some(k) = &t.kind {
                labels.push(("kind", k.clone()));
            }
            labels.push(("period", t.period.to_string()));
            labels.push(("period_type", t.period.kind.label().to_owned()));
            let mut push = |name: &str, value: f64| {
                out.push(Out {
                    family: format!("sales_{}_{name}", t.scope.label()),
                    labels: labels.clone(),
                    value,
                });
            };
            push("target", f(t.value));
            // Actuals exist for the current period only: its to-date window.
            if Period::containing(t.period.kind, now, cal) != t.period {
                continue;
            }
            let actual = self.actual(
                t.scope,
                &t.id,
                t.metric,
                t.kind.as_deref(),
                t.period.kind.window(),
            );
            let target = f(t.value);
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
            }
        }
        for (p, share) in &periods {
            out.push(Out {
                family: "sales_period_elapsed_ratio".into(),
                labels: vec![
                    ("period", p.to_string()),
                    ("period_type", p.kind.label().to_owned()),
                ],
                value: *share,
            });
        }
        self.leaderboards(&teams, &mut out);
        out
    }

    /// Ranks (1 = top, equal values share a rank) within the team and the org, and each rep's
    /// share of the team total, per ranked metric and window.
    fn leaderboards(&self, teams: &HashMap<&str, &str>, out: &mut Vec<Out>) {
        let mut values: BTreeMap<(TargetMetric, Window), BTreeMap<&str, Decimal>> = BTreeMap::new();
        for (idx, v) in &self.index {
            if idx.scope == Scope::Rep && RANKED.contains(&idx.metric) {
                *values
                    .entry((idx.metric, idx.window))
                    .or_default()
                    .entry(idx.id.as_str())
                    .or_default() += *v;
            }
        }
        for ((metric, window), reps) in values {
            let rank = |members: &[(&str, Decimal)]| -> Vec<(String, usize)> {
                let mut sorted: Vec<&(&str, Decimal)> = members.iter().collect();
                sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                let mut ranks = Vec::with_capacity(sorted.len());
                for (i, (rep, v)) in sorted.iter().enumerate() {
                    let r = sorted.iter().position(|(_, x)| x == v).unwrap_or(i) + 1;
                    ranks.push(((*rep).to_owned(), r));
                }
                ranks
            };
            let all: Vec<(&str, Decimal)> = reps.iter().map(|(r, v)| (*r, *v)).collect();
            let mut by_team: BTreeMap<&str, Vec<(&str, Decimal)>> = BTreeMap::new();
            for (r, v) in &all {
                let team = teams
                    .get(r)
                    .copied()
                    .unwrap_or(salespulse_aggregate::UNASSIGNED);
                by_team.entry(team).or_default().push((r, *v));
            }
            let base = |rep: &str, team: &str| {
                vec![
                    ("rep", rep.to_owned()),
                    ("team", team.to_owned()),
                    ("metric", metric.name().to_owned()),
                    ("window", window.label().to_owned()),
                ]
            };
            for (rep, r) in rank(&all) {
                let team = teams
                    .get(rep.as_str())
                    .copied()
                    .unwrap_or(salespulse_aggregate::UNASSIGNED);
                let mut labels = base(&rep, team);
                labels.push(("among", "org".into()));
                out.push(Out {
                    family: "sales_rep_rank".into(),
                    labels,
                    value: r as f64,
                });
            }
            for (team, members) in &by_team {
                let total: Decimal = members.iter().map(|(_, v)| *v).sum();
                for (rep, r) in rank(members) {
                    let mut labels = base(&rep, team);
                    labels.push(("among", "team".into()));
                    out.push(Out {
                        family: "sales_rep_rank".into(),
                        labels,
                        value: r as f64,
                    });
                }
                if total > Decimal::ZERO {
                    for (rep, v) in members {
                        out.push(Out {
                            family: "sales_rep_team_share".into(),
                            labels: base(rep, team),
                            value: f(*v / total),
                        });
                    }
                }
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
        // A past period shows its target only.
        let old = rules()
            .from_fields("rep", "a", "bookings", None, "2026-Q3", "10", None)
            .expect("valid");
        b.set_target(&old.key(), Some(old));
        let out = b.series(now, &cal, &e);
        assert!(get(&out, "sales_rep_target", &[("period", "2026-Q3")]).is_some());
        assert!(get(&out, "sales_rep_attainment_ratio", &[("period", "2026-Q3")]).is_none());
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
        assert_eq!(
            get(&out, "sales_team_target", &q4).map(|o| o.value),
            Some(1000.0)
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
