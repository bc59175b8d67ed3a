//! The pipeline view (`--view pipeline`): one team's or the org's pipeline in motion, from
//! the deals service's scrape (stages, stalled and overdue deals, forecast roll-ups) and the
//! targets service's (the quarter's bookings target). Either scrape may be missing; whatever
//! needs it is then left blank.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::parse::Sample;
use crate::view::{count, money, percent, printable, table, Align, Cell, GREEN, RED};

/// Window of the stage flow: entered, conversion and days in stage.
pub const FLOW_WINDOW: &str = "30d";

/// The default stages in pipeline order; others follow in name order.
const STAGE_ORDER: [&str; 4] = ["prospecting", "qualification", "proposal", "negotiation"];

/// The forecast roll-ups, smallest first: commit = closed + commit, best case = commit +
/// best case, pipeline = best case + pipeline.
pub const ROLLUPS: [&str; 3] = ["commit", "best_case", "pipeline"];

const SECONDS_PER_DAY: f64 = 86_400.0;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StageRow {
    pub stage: String,
    /// Open deals in the stage now, and their amount.
    pub open_deals: Option<f64>,
    pub open_amount: Option<f64>,
    /// Deals that entered the stage in the flow window.
    pub entered: Option<f64>,
    /// (advanced + won) / all exits of the stage in the flow window.
    pub conversion: Option<f64>,
    /// Mean days in the stage of the visits that ended in the flow window.
    pub days_in_stage: Option<f64>,
    /// Open deals in the stage for longer than its stall_days, and their amount.
    pub stalled: Option<f64>,
    pub stalled_amount: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// The team, or `None` for the org.
    pub team: Option<String>,
    /// Stages in pipeline order.
    pub stages: Vec<StageRow>,
    pub stalled: Option<f64>,
    pub stalled_amount: Option<f64>,
    pub overdue: Option<f64>,
    pub overdue_amount: Option<f64>,
    /// The quarter of the forecast, e.g. `2026-Q4`.
    pub period: Option<String>,
    /// Bookings won in the quarter.
    pub closed: Option<f64>,
    /// `(rollup, amount)` in the order of [`ROLLUPS`].
    pub rollups: Vec<(&'static str, Option<f64>)>,
    /// The quarter's bookings target.
    pub target: Option<f64>,
}

/// The series of one subject: `sales_team_*{team=...}` or `sales_org_*`.
struct Subject<'a> {
    samples: &'a [Sample],
    scope: &'static str,
    team: Option<&'a str>,
}

impl Subject<'_> {
    fn family(&self, metric: &str) -> String {
        format!("sales_{}_{metric}", self.scope)
    }

    fn matches(&self, s: &Sample, metric: &str, with: &[(&str, &str)]) -> bool {
        s.is(&self.family(metric), with)
            && !s.value.is_nan()
            && self.team.is_none_or(|t| s.label("team") == Some(t))
    }

    /// Sum of the matching series, `None` when there is none.
    fn total(&self, metric: &str, with: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| self.matches(s, metric, with))
            .map(|s| s.value)
            .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
    }

    /// Sum of the matching series per value of `key`.
    fn by<'s>(&'s self, metric: &str, with: &[(&str, &str)], key: &str) -> BTreeMap<&'s str, f64> {
        let mut out = BTreeMap::new();
        for s in self
            .samples
            .iter()
            .filter(|s| self.matches(s, metric, with))
        {
            if let Some(k) = s.label(key) {
                *out.entry(k).or_insert(0.0) += s.value;
            }
        }
        out
    }

    /// The latest value of `label` among the matching series.
    fn latest(&self, metric: &str, with: &[(&str, &str)], label: &str) -> Option<String> {
        self.samples
            .iter()
            .filter(|s| self.matches(s, metric, with))
            .filter_map(|s| s.label(label))
            .max()
            .map(str::to_owned)
    }
}

fn stage_rank(stage: &str) -> (usize, &str) {
    let i = STAGE_ORDER
        .iter()
        .position(|s| *s == stage)
        .unwrap_or(STAGE_ORDER.len());
    (i, stage)
}

pub fn build(deals: Option<&[Sample]>, targets: Option<&[Sample]>, team: Option<&str>) -> Pipeline {
    let scope = if team.is_some() { "team" } else { "org" };
    let deals = Subject {
        samples: deals.unwrap_or_default(),
        scope,
        team,
    };
    let targets = Subject {
        samples: targets.unwrap_or_default(),
        scope,
        team,
    };

    let flow = [("window", FLOW_WINDOW)];
    let open_deals = deals.by("open_deals", &[], "stage");
    let open_amount = deals.by("open_pipeline", &[], "stage");
    let entered = deals.by("stage_entered", &flow, "stage");
    let conversion = deals.by("stage_conversion_ratio", &flow, "stage");
    let seconds = deals.by("stage_seconds", &flow, "stage");
    let stalled = deals.by("stalled_deals", &[], "stage");
    let stalled_amount = deals.by("stalled_pipeline", &[], "stage");
    let mut names: Vec<&str> = [
        &open_deals,
        &open_amount,
        &entered,
        &conversion,
        &seconds,
        &stalled,
        &stalled_amount,
    ]
    .iter()
    .flat_map(|m| m.keys().copied())
    .collect::<BTreeSet<_>>()
    .into_iter()
    .collect();
    names.sort_by_key(|s| stage_rank(s));
    let stages = names
        .into_iter()
        .map(|stage| StageRow {
            stage: stage.to_owned(),
            open_deals: open_deals.get(stage).copied(),
            open_amount: open_amount.get(stage).copied(),
            entered: entered.get(stage).copied(),
            conversion: conversion.get(stage).copied(),
            days_in_stage: seconds.get(stage).map(|s| s / SECONDS_PER_DAY),
            stalled: stalled.get(stage).copied(),
            stalled_amount: stalled_amount.get(stage).copied(),
        })
        .collect();

    // The deals service names the quarter as the targets service does; without the deals
    // service, the targets service's current quarter.
    let quarter = [("period_type", "quarter")];
    let period = deals
        .latest("forecast_rollup", &quarter, "period")
        .or_else(|| targets.latest("attainment_ratio", &quarter, "period"))
        .or_else(|| targets.latest("expected_to_date", &quarter, "period"));
    let p = period.as_deref().unwrap_or_default();
    let in_period = |extra: (&'static str, &'static str)| -> Vec<(&str, &str)> {
        vec![("period_type", "quarter"), ("period", p), extra]
    };
    let rollups = ROLLUPS
        .into_iter()
        .map(|r| (r, deals.total("forecast_rollup", &in_period(("rollup", r)))))
        .collect();
    let closed = deals
        .total(
            "forecast_category_amount",
            &in_period(("category", "closed")),
        )
        .or_else(|| deals.total("bookings", &[("window", "qtd")]));
    let target = targets.total("target", &in_period(("metric", "bookings")));

    Pipeline {
        team: team.map(str::to_owned),
        stages,
        stalled: deals.total("stalled_deals", &[]),
        stalled_amount: deals.total("stalled_pipeline", &[]),
        overdue: deals.total("overdue_deals", &[]),
        overdue_amount: deals.total("overdue_pipeline", &[]),
        period,
        closed,
        rollups,
        target,
    }
}

fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map(f).unwrap_or_default()
}

fn days(v: f64) -> String {
    format!("{v:.1}")
}

/// A count in red when above zero.
fn alarming(v: Option<f64>) -> Cell {
    Cell {
        text: opt(v, count),
        color: v.filter(|v| *v > 0.0).map(|_| RED),
    }
}

fn sum(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    values
        .flatten()
        .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

/// `5 deals, 12,000.00`, or `-` when the deals service says nothing.
fn deals_and_amount(n: Option<f64>, amount: Option<f64>, color: bool) -> String {
    let Some(n) = n else {
        return "-".to_owned();
    };
    let text = format!(
        "{} deal{}{}",
        count(n),
        if n == 1.0 { "" } else { "s" },
        amount
            .map(|a| format!(", {}", money(a)))
            .unwrap_or_default()
    );
    if color && n > 0.0 {
        format!("{RED}{text}{}", crate::view::RESET)
    } else {
        text
    }
}

/// The whole screen: header, one line per notice, the stage table, stalled and overdue, and
/// the quarter forecast.
pub fn render(p: &Pipeline, time: &str, notices: &[String], color: bool) -> String {
    let mut out = String::new();
    let who = match &p.team {
        Some(t) => format!("team {}", printable(t)),
        None => "org".to_owned(),
    };
    let _ = write!(out, "salespulse board | {time} | pipeline of {who}");
    if let Some(q) = &p.period {
        let _ = write!(out, " | quarter {}", printable(q));
    }
    out.push('\n');
    for n in notices {
        let _ = writeln!(out, "! {}", printable(n));
    }
    out.push('\n');

    stages_table(&mut out, p, &who, color);
    out.push('\n');
    let _ = writeln!(
        out,
        "Stalled: {} | Overdue: {}",
        deals_and_amount(p.stalled, p.stalled_amount, color),
        deals_and_amount(p.overdue, p.overdue_amount, color),
    );
    out.push('\n');

    forecast_table(&mut out, p, color);
    out
}

/// The open pipeline by stage, with its totals.
fn stages_table(out: &mut String, p: &Pipeline, who: &str, color: bool) {
    let w = FLOW_WINDOW;
    if p.stages.is_empty() {
        let _ = writeln!(out, "No pipeline data for the {who}.");
    } else {
        let columns = [
            ("Stage".to_owned(), Align::Left),
            ("Open".to_owned(), Align::Right),
            ("Amount".to_owned(), Align::Right),
            (format!("Entered {w}"), Align::Right),
            (format!("Conversion {w}"), Align::Right),
            (format!("Days in stage {w}"), Align::Right),
            ("Stalled".to_owned(), Align::Right),
            ("Stalled amount".to_owned(), Align::Right),
        ];
        let mut rows: Vec<Vec<Cell>> = p
            .stages
            .iter()
            .map(|s| {
                vec![
                    Cell::from(printable(&s.stage)),
                    Cell::from(opt(s.open_deals, count)),
                    Cell::from(opt(s.open_amount, money)),
                    Cell::from(opt(s.entered, count)),
                    Cell::from(opt(s.conversion, percent)),
                    Cell::from(opt(s.days_in_stage, days)),
                    alarming(s.stalled),
                    Cell::from(opt(s.stalled_amount, money)),
                ]
            })
            .collect();
        let total = |f: fn(&StageRow) -> Option<f64>| sum(p.stages.iter().map(f));
        rows.push(vec![
            Cell::from("Total".to_owned()),
            Cell::from(opt(total(|s| s.open_deals), count)),
            Cell::from(opt(total(|s| s.open_amount), money)),
            // A deal enters several stages: no total of entries.
            Cell::from(String::new()),
            Cell::from(String::new()),
            Cell::from(String::new()),
            alarming(total(|s| s.stalled)),
            Cell::from(opt(total(|s| s.stalled_amount), money)),
        ]);
        table(out, &columns, rows, color);
    }
}

/// The quarter's forecast by rollup against the target.
fn forecast_table(out: &mut String, p: &Pipeline, color: bool) {
    let quarter = p.period.as_deref().map(printable);
    let heading = match &quarter {
        Some(q) => format!("Forecast {q}"),
        None => "Forecast (quarter)".to_owned(),
    };
    let of_target = |v: Option<f64>| -> Cell {
        match (v, p.target) {
            (Some(v), Some(t)) if t > 0.0 => {
                let r = v / t;
                Cell {
                    text: format!("{} {}", crate::view::bar(r), percent(r)),
                    color: (r >= 1.0).then_some(GREEN),
                }
            }
            _ => Cell::from(String::new()),
        }
    };
    let mut rows = vec![vec![
        Cell::from("closed".to_owned()),
        Cell::from(opt(p.closed, money)),
        of_target(p.closed),
    ]];
    for (rollup, v) in &p.rollups {
        rows.push(vec![
            Cell::from((*rollup).to_owned()),
            Cell::from(opt(*v, money)),
            of_target(*v),
        ]);
    }
    rows.push(vec![
        Cell::from("target".to_owned()),
        Cell::from(opt(p.target, money)),
        Cell::from(String::new()),
    ]);
    let columns = [
        (heading, Align::Left),
        ("Amount".to_owned(), Align::Right),
        ("Of target".to_owned(), Align::Left),
    ];
    table(out, &columns, rows, color);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    const DEALS: &str = r#"
sales_team_open_deals{team="team-emea",stage="proposal"} 4
sales_team_open_deals{team="team-emea",stage="prospecting"} 10
sales_team_open_deals{team="team-emea",stage="discovery"} 1
sales_team_open_deals{team="team-amer",stage="prospecting"} 99
sales_team_open_pipeline{team="team-emea",stage="proposal"} 40000
sales_team_open_pipeline{team="team-emea",stage="prospecting"} 25000.5
sales_team_stage_entered{team="team-emea",stage="prospecting",window="30d"} 12
sales_team_stage_entered{team="team-emea",stage="prospecting",window="7d"} 3
sales_team_stage_entered{team="team-emea",stage="qualification",window="30d"} 6
sales_team_stage_conversion_ratio{team="team-emea",stage="prospecting",window="30d"} 0.5
sales_team_stage_seconds{team="team-emea",stage="prospecting",window="30d"} 259200
sales_team_stage_exited{team="team-emea",stage="prospecting",to="advanced",window="30d"} 5
sales_team_stalled_deals{team="team-emea",stage="prospecting"} 2
sales_team_stalled_pipeline{team="team-emea",stage="prospecting"} 5000
sales_team_overdue_deals{team="team-emea"} 1
sales_team_overdue_pipeline{team="team-emea"} 7000
sales_team_forecast_category_amount{team="team-emea",category="closed",period_type="quarter",period="2026-Q4"} 30000
sales_team_forecast_category_amount{team="team-emea",category="closed",period_type="month",period="2026-11"} 10000
sales_team_forecast_rollup{team="team-emea",rollup="commit",period_type="quarter",period="2026-Q4"} 50000
sales_team_forecast_rollup{team="team-emea",rollup="best_case",period_type="quarter",period="2026-Q4"} 90000
sales_team_forecast_rollup{team="team-emea",rollup="pipeline",period_type="quarter",period="2026-Q4"} 115000.5
sales_team_forecast_rollup{team="team-emea",rollup="commit",period_type="month",period="2026-11"} 1
sales_team_bookings{team="team-emea",window="qtd"} 29000
sales_org_open_deals{stage="prospecting"} 109
sales_org_overdue_deals 0
sales_org_bookings{window="qtd"} 123
"#;

    const TARGETS: &str = r#"
sales_team_target{team="team-emea",metric="bookings",period="2026-Q4",period_type="quarter"} 100000
sales_team_target{team="team-emea",metric="bookings",period="2027-Q1",period_type="quarter"} 1
sales_team_target{team="team-emea",metric="activities",kind="call",period="2026-Q4",period_type="quarter"} 500
sales_team_attainment_ratio{team="team-emea",metric="bookings",period="2026-Q4",period_type="quarter"} 0.3
sales_team_forecast{team="team-emea",metric="bookings",period="2026-Q4",period_type="quarter"} 1
"#;

    fn stages(p: &Pipeline) -> Vec<&str> {
        p.stages.iter().map(|s| s.stage.as_str()).collect()
    }

    #[test]
    fn a_team_s_stages_in_pipeline_order() {
        let (d, t) = (parse(DEALS), parse(TARGETS));
        let p = build(Some(&d), Some(&t), Some("team-emea"));
        assert_eq!(
            stages(&p),
            vec!["prospecting", "qualification", "proposal", "discovery"]
        );
        assert_eq!(
            p.stages[0],
            StageRow {
                stage: "prospecting".into(),
                open_deals: Some(10.0),
                open_amount: Some(25000.5),
                entered: Some(12.0),
                conversion: Some(0.5),
                days_in_stage: Some(3.0),
                stalled: Some(2.0),
                stalled_amount: Some(5000.0),
            }
        );
        assert_eq!(p.stages[1].open_deals, None);
        assert_eq!(p.stages[1].entered, Some(6.0));
        assert_eq!((p.stalled, p.stalled_amount), (Some(2.0), Some(5000.0)));
        assert_eq!((p.overdue, p.overdue_amount), (Some(1.0), Some(7000.0)));
    }

    #[test]
    fn quarter_forecast_next_to_closed_and_target() {
        let (d, t) = (parse(DEALS), parse(TARGETS));
        let p = build(Some(&d), Some(&t), Some("team-emea"));
        assert_eq!(p.period.as_deref(), Some("2026-Q4"));
        assert_eq!(p.closed, Some(30000.0));
        assert_eq!(
            p.rollups,
            vec![
                ("commit", Some(50000.0)),
                ("best_case", Some(90000.0)),
                ("pipeline", Some(115000.5))
            ]
        );
        assert_eq!(p.target, Some(100000.0));

        // Without the targets service: no target, the same forecast.
        let p = build(Some(&d), None, Some("team-emea"));
        assert_eq!((p.period.as_deref(), p.target), (Some("2026-Q4"), None));
        // Without the deals service: the target of the targets service's quarter.
        let p = build(None, Some(&t), Some("team-emea"));
        assert_eq!(
            (p.period.as_deref(), p.target),
            (Some("2026-Q4"), Some(100000.0))
        );
        assert!(p.stages.is_empty() && p.closed.is_none());
    }

    #[test]
    fn the_org() {
        let d = parse(DEALS);
        let p = build(Some(&d), None, None);
        assert_eq!(stages(&p), vec!["prospecting"]);
        assert_eq!(p.stages[0].open_deals, Some(109.0));
        assert_eq!(p.overdue, Some(0.0));
        assert_eq!(p.stalled, None);
        // No forecast series: closed is the quarter's bookings.
        assert_eq!(p.closed, Some(123.0));
        assert!(p.rollups.iter().all(|(_, v)| v.is_none()));
    }

    #[test]
    fn an_unknown_team_has_nothing() {
        let d = parse(DEALS);
        let p = build(Some(&d), None, Some("team-nowhere"));
        assert!(p.stages.is_empty() && p.stalled.is_none() && p.closed.is_none());
        let out = render(&p, "t", &[], false);
        assert!(
            out.contains("No pipeline data for the team team-nowhere."),
            "{out}"
        );
        assert!(out.contains("Stalled: - | Overdue: -"), "{out}");
    }

    fn line_of<'a>(out: &'a str, start: &str) -> &'a str {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{out}"))
    }

    #[test]
    fn renders_stages_stalled_overdue_and_forecast() {
        let (d, t) = (parse(DEALS), parse(TARGETS));
        let p = build(Some(&d), Some(&t), Some("team-emea"));
        let out = render(&p, "2026-11-27 12:00:00", &[], false);
        assert!(!out.contains('\x1b'), "{out}");
        let header = out.lines().next().unwrap_or_default();
        assert_eq!(
            header,
            "salespulse board | 2026-11-27 12:00:00 | pipeline of team team-emea | quarter 2026-Q4"
        );
        let columns = line_of(&out, "Stage");
        for c in [
            "Open",
            "Amount",
            "Entered 30d",
            "Conversion 30d",
            "Days in stage 30d",
        ] {
            assert!(columns.contains(c), "{c:?} not in {columns:?}");
        }
        let prospecting = line_of(&out, "prospecting");
        for part in ["10", "25,000.50", "12", "50%", "3.0", "2", "5,000.00"] {
            assert!(
                prospecting.contains(part),
                "{part:?} not in {prospecting:?}"
            );
        }
        let total = line_of(&out, "Total");
        for part in ["15", "65,000.50", "5,000.00"] {
            assert!(total.contains(part), "{part:?} not in {total:?}");
        }
        assert!(
            out.contains("Stalled: 2 deals, 5,000.00 | Overdue: 1 deal, 7,000.00"),
            "{out}"
        );
        assert!(
            line_of(&out, "Forecast 2026-Q4").contains("Of target"),
            "{out}"
        );
        let closed = line_of(&out, "closed");
        assert!(
            closed.contains("30,000.00") && closed.contains("███░░░░░░░ 30%"),
            "{closed:?}"
        );
        let pipeline = line_of(&out, "pipeline ");
        assert!(
            pipeline.contains("115,000.50") && pipeline.contains("██████████ 115%"),
            "{pipeline:?}"
        );
        assert!(line_of(&out, "target").contains("100,000.00"), "{out}");
        // Rows come in order: stages, total, then closed and the roll-ups smallest first.
        let at = |s: &str| out.find(s).unwrap_or(usize::MAX);
        assert!(at("prospecting") < at("qualification") && at("proposal") < at("discovery"));
        assert!(at("closed") < at("commit") && at("commit") < at("best_case"));
        assert!(at("best_case") < at("\npipeline") && at("\npipeline") < at("\ntarget"));
    }

    #[test]
    fn colors_stalled_overdue_and_a_covered_target() {
        let (d, t) = (parse(DEALS), parse(TARGETS));
        let p = build(Some(&d), Some(&t), Some("team-emea"));
        let out = render(&p, "t", &[], true);
        assert!(
            out.contains("Stalled: \x1b[31m2 deals, 5,000.00\x1b[0m | Overdue: \x1b[31m1 deal"),
            "{out}"
        );
        assert!(line_of(&out, "prospecting").contains("\x1b[31m"), "{out}");
        assert!(line_of(&out, "pipeline ").contains("\x1b[32m"), "{out}");
        assert!(!line_of(&out, "commit").contains('\x1b'), "{out}");
    }

    #[test]
    fn hostile_team_and_stage_names_stay_on_one_line() {
        let d = parse("sales_team_open_deals{team=\"t\\n\u{1b}[2J\",stage=\"s\\n\"} 1\n");
        let p = build(Some(&d), None, Some("t\n\u{1b}[2J"));
        let out = render(&p, "t", &[], false);
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains(r"team t\n\u{1b}[2J"), "{out:?}");
        assert!(out.contains(r"s\n"), "{out:?}");
    }
}
