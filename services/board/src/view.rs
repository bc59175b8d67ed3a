//! Two scrapes (deals service, targets service) into the leaderboard, and the leaderboard
//! into text. Either scrape may be missing; every column that needs it is then left blank.
//! Reps show under their roster names (`sales_rep_info` of the deals service), or under their
//! ids when the deals service gives none.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::parse::Sample;

/// Window labels every windowed family is exposed for (the same-point windows carry only
/// bookings, deals won and activities, so the board does not offer them).
pub const WINDOWS: [&str; 14] = [
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
];

pub const RED: &str = "\x1b[31m";
pub const GREEN: &str = "\x1b[32m";
pub const RESET: &str = "\x1b[0m";
const BAR_CELLS: usize = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct RepRow {
    /// 1 = top; `None` when the targets service has not ranked the rep yet.
    pub rank: Option<u64>,
    pub rep: String,
    /// The rep's name on the roster (`sales_rep_info`), or its id when there is none.
    pub name: String,
    pub team: String,
    pub bookings: Option<f64>,
    pub deals_won: Option<f64>,
    pub attainment: Option<f64>,
    pub pace: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TeamRow {
    pub team: String,
    pub bookings: Option<f64>,
    pub target: Option<f64>,
    pub attainment: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Board {
    pub window: String,
    /// The current quarter as the targets service labels it, e.g. `2026-Q4`.
    pub period: Option<String>,
    pub org_bookings_today: Option<f64>,
    pub org_deals_won_today: Option<f64>,
    /// The top reps, best first.
    pub reps: Vec<RepRow>,
    /// How many reps there are in all, before the cut to the top.
    pub total_reps: usize,
    pub teams: Vec<TeamRow>,
}

/// Per-key sum of a family; the key's other label (team of a rep) is taken from its largest
/// series, so a rep whose series are split across two teams still shows once.
#[derive(Debug, Default)]
struct Sum {
    value: f64,
    other: String,
    largest: f64,
}

fn sums<'a>(
    samples: &'a [Sample],
    name: &str,
    with: &[(&str, &str)],
    key: &str,
    other: &str,
) -> BTreeMap<&'a str, Sum> {
    let mut out: BTreeMap<&str, Sum> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.is(name, with) && !s.value.is_nan())
    {
        let Some(k) = s.label(key) else { continue };
        let e = out.entry(k).or_insert_with(|| Sum {
            largest: f64::NEG_INFINITY,
            ..Sum::default()
        });
        e.value += s.value;
        if s.value > e.largest {
            e.largest = s.value;
            s.label(other).unwrap_or_default().clone_into(&mut e.other);
        }
    }
    out
}

fn values<'a>(
    samples: &'a [Sample],
    name: &str,
    with: &[(&str, &str)],
    key: &str,
) -> BTreeMap<&'a str, f64> {
    sums(samples, name, with, key, "")
        .into_iter()
        .map(|(k, s)| (k, s.value))
        .collect()
}

/// Each rep's name from the deals service's `sales_rep_info{rep, team, name, region}` (one
/// series per rep on the roster; the name is the id when the roster names none). Should a
/// scrape hold two names for a rep, the first by name wins, so the board does not flicker
/// between them.
pub fn rep_names(samples: &[Sample]) -> BTreeMap<&str, &str> {
    let mut out: BTreeMap<&str, &str> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.is("sales_rep_info", &[])) {
        let (Some(rep), Some(name)) = (s.label("rep"), s.label("name")) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        out.entry(rep)
            .and_modify(|n| *n = (*n).min(name))
            .or_insert(name);
    }
    out
}

fn single(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.is(name, with) && !s.value.is_nan())
        .map(|s| s.value)
}

/// The current quarter, e.g. `2026-Q4`. The targets service shows the current period of each
/// type only (of a plan loaded for the whole year, the other targets stay stored), so there
/// is one quarter on its board. A service that also shows other quarters' targets and elapsed
/// shares (past ones at 1, future ones at 0) must not make a later quarter current: the
/// current one is the quarter whose elapsed share is the largest below 1, the first by name
/// when several have none elapsed (the first instant of a quarter).
fn current_quarter(targets: &[Sample]) -> Option<String> {
    fn quarters<'a>(
        targets: &'a [Sample],
        name: &'a str,
    ) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        targets
            .iter()
            .filter(move |s| s.is(name, &[("period_type", "quarter")]))
            .filter_map(|s| Some((s.label("period")?, s.value)))
    }
    let by_share = quarters(targets, "sales_period_elapsed_ratio")
        .filter(|(_, share)| (0.0..1.0).contains(share))
        .min_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)))
        .map(|(p, _)| p);
    // Attainment exists for the current period only.
    let first = |name: &'static str| quarters(targets, name).map(|(p, _)| p).min();
    by_share
        .or_else(|| first("sales_team_attainment_ratio"))
        .or_else(|| first("sales_rep_attainment_ratio"))
        .or_else(|| first("sales_team_target"))
        .map(str::to_owned)
}

/// Larger first, missing last.
fn desc(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => b.total_cmp(&a),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

pub fn build(
    deals: Option<&[Sample]>,
    targets: Option<&[Sample]>,
    window: &str,
    top: usize,
) -> Board {
    let deals = deals.unwrap_or_default();
    let targets = targets.unwrap_or_default();
    let period = current_quarter(targets);
    let quarter: Vec<(&str, &str)> = vec![
        ("metric", "bookings"),
        ("period_type", "quarter"),
        ("period", period.as_deref().unwrap_or_default()),
        ("kind", ""),
    ];

    let mut reps = rep_rows(deals, targets, window, &quarter);
    let total_reps = reps.len();
    reps.truncate(top);
    let teams = team_rows(deals, targets, window, &quarter);

    Board {
        window: window.to_owned(),
        period,
        org_bookings_today: single(deals, "sales_org_bookings", &[("window", "today")]),
        org_deals_won_today: single(deals, "sales_org_deals_won", &[("window", "today")]),
        reps,
        total_reps,
        teams,
    }
}

/// Every rep with bookings, a rank or wins, in the order of the leaderboard: the targets
/// service's rank when there is one, else by bookings.
fn rep_rows(
    deals: &[Sample],
    targets: &[Sample],
    window: &str,
    quarter: &[(&str, &str)],
) -> Vec<RepRow> {
    let bookings = sums(
        deals,
        "sales_rep_bookings",
        &[("window", window)],
        "rep",
        "team",
    );
    // The roster's team; a rep's series can also sit under a team it has left.
    let members = sums(deals, "sales_rep_member", &[], "rep", "team");
    let won = values(deals, "sales_rep_deals_won", &[("window", window)], "rep");
    let rank_with = [
        ("metric", "bookings"),
        ("window", window),
        ("among", "org"),
        ("kind", ""),
    ];
    let ranks = sums(targets, "sales_rep_rank", &rank_with, "rep", "team");
    let attainment = values(targets, "sales_rep_attainment_ratio", quarter, "rep");
    let pace = values(targets, "sales_rep_pace_ratio", quarter, "rep");
    let names = rep_names(deals);

    let mut reps: BTreeMap<&str, RepRow> = BTreeMap::new();
    for rep in bookings.keys().chain(ranks.keys()).chain(won.keys()) {
        reps.entry(rep).or_insert_with(|| RepRow {
            rank: ranks.get(rep).map(|r| r.value.max(0.0).round() as u64),
            rep: (*rep).to_owned(),
            name: (*names.get(rep).unwrap_or(rep)).to_owned(),
            team: members
                .get(rep)
                .or_else(|| bookings.get(rep))
                .or_else(|| ranks.get(rep))
                .map(|s| s.other.clone())
                .unwrap_or_default(),
            bookings: bookings.get(rep).map(|s| s.value),
            deals_won: won.get(rep).copied(),
            attainment: attainment.get(rep).copied(),
            pace: pace.get(rep).copied(),
        });
    }
    let mut reps: Vec<RepRow> = reps.into_values().collect();
    if ranks.is_empty() {
        // No targets service: rank by bookings, equal bookings sharing a rank as the targets
        // service does.
        reps.sort_by(|a, b| desc(a.bookings, b.bookings).then_with(|| a.rep.cmp(&b.rep)));
        let mut previous: Option<(f64, u64)> = None;
        for (i, r) in reps.iter_mut().enumerate() {
            r.rank = r.bookings.map(|v| match previous {
                Some((p, rank)) if p == v => rank,
                _ => i as u64 + 1,
            });
            previous = r.bookings.zip(r.rank);
        }
    } else {
        // The targets service's rank is authoritative; a rep it has not seen yet goes last.
        reps.sort_by(|a, b| {
            (a.rank.is_none(), a.rank)
                .cmp(&(b.rank.is_none(), b.rank))
                .then_with(|| desc(a.bookings, b.bookings))
                .then_with(|| a.rep.cmp(&b.rep))
        });
    }
    reps
}

/// Every team with bookings, a target or an attainment, most bookings first.
fn team_rows(
    deals: &[Sample],
    targets: &[Sample],
    window: &str,
    quarter: &[(&str, &str)],
) -> Vec<TeamRow> {
    let team_bookings = values(deals, "sales_team_bookings", &[("window", window)], "team");
    let team_target = values(targets, "sales_team_target", quarter, "team");
    let team_attainment = values(targets, "sales_team_attainment_ratio", quarter, "team");
    let mut teams: Vec<TeamRow> = team_bookings
        .keys()
        .chain(team_target.keys())
        .chain(team_attainment.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|team| TeamRow {
            team: (*team).to_owned(),
            bookings: team_bookings.get(team).copied(),
            target: team_target.get(team).copied(),
            attainment: team_attainment.get(team).copied(),
        })
        .collect();
    teams.sort_by(|a, b| {
        desc(a.bookings, b.bookings)
            .then_with(|| desc(a.attainment, b.attainment))
            .then_with(|| a.team.cmp(&b.team))
    });
    teams
}

/// `1234567.891` as `1,234,567.89`.
pub fn money(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{:.2}", v.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, "00"));
    let sign = if v < 0.0 && s != "0.00" { "-" } else { "" };
    format!("{sign}{}.{frac}", group(int))
}

/// A count with thousands separators.
pub fn count(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{:.0}", v.abs());
    let sign = if v < 0.0 && s != "0" { "-" } else { "" };
    format!("{sign}{}", group(&s))
}

fn group(digits: &str) -> String {
    let n = digits.len();
    let mut out = String::with_capacity(n + n / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (n - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Ten cells, filled to the ratio (capped at full).
pub fn bar(ratio: f64) -> String {
    let filled = if ratio.is_finite() {
        (ratio.clamp(0.0, 1.0) * BAR_CELLS as f64).round() as usize
    } else if ratio > 0.0 {
        BAR_CELLS
    } else {
        0
    };
    "█".repeat(filled) + &"░".repeat(BAR_CELLS - filled)
}

pub fn percent(ratio: f64) -> String {
    format!("{:.0}%", ratio * 100.0)
}

fn attainment_text(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) if r.is_finite() => format!("{} {}", bar(r), percent(r)),
        _ => String::new(),
    }
}

fn pace_color(pace: f64) -> Option<&'static str> {
    if pace < 0.8 {
        Some(RED)
    } else if pace >= 1.0 {
        Some(GREEN)
    } else {
        None
    }
}

/// Label values are arbitrary text; control characters (newlines, escape sequences) would
/// break the layout or drive the terminal, so they are shown escaped.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map(f).unwrap_or_default()
}

#[derive(Clone, Copy)]
pub enum Align {
    Left,
    Right,
}

pub struct Cell {
    pub text: String,
    pub color: Option<&'static str>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, color: None }
    }
}

pub fn table(out: &mut String, columns: &[(String, Align)], rows: Vec<Vec<Cell>>, color: bool) {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.text.chars().count());
        }
    }
    let header: Vec<Cell> = columns.iter().map(|(h, _)| Cell::from(h.clone())).collect();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, ((_, align), w))) in row.iter().zip(columns.iter().zip(&widths)).enumerate()
        {
            if i > 0 {
                line.push_str("  ");
            }
            let padded = match align {
                Align::Left => format!("{:<w$}", cell.text),
                Align::Right => format!("{:>w$}", cell.text),
            };
            match cell.color.filter(|_| color) {
                Some(c) => {
                    let _ = write!(line, "{c}{padded}{RESET}");
                }
                None => line.push_str(&padded),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// The whole screen: header, one line per notice, the rep table and the team table.
pub fn render(board: &Board, time: &str, notices: &[String], color: bool) -> String {
    let mut out = String::new();
    let w = printable(&board.window);
    let _ = write!(out, "salespulse board | {time} | window {w}");
    if let Some(p) = &board.period {
        let _ = write!(out, " | quarter {}", printable(p));
    }
    let _ = writeln!(
        out,
        " | org today: bookings {}, deals won {}",
        board
            .org_bookings_today
            .map(money)
            .as_deref()
            .unwrap_or("-"),
        board
            .org_deals_won_today
            .map(count)
            .as_deref()
            .unwrap_or("-"),
    );
    for n in notices {
        let _ = writeln!(out, "! {}", printable(n));
    }
    out.push('\n');

    let attainment_header = match &board.period {
        Some(p) => format!("Attainment {}", printable(p)),
        None => "Attainment".to_owned(),
    };
    if board.reps.is_empty() {
        let _ = writeln!(out, "No rep data for window {w}.");
    } else {
        let columns = [
            ("#".to_owned(), Align::Right),
            ("Rep".to_owned(), Align::Left),
            ("Team".to_owned(), Align::Left),
            (format!("Bookings {w}"), Align::Right),
            (format!("Won {w}"), Align::Right),
            (attainment_header.clone(), Align::Left),
            ("Pace".to_owned(), Align::Right),
        ];
        let rows = board
            .reps
            .iter()
            .map(|r| {
                vec![
                    Cell::from(r.rank.map(|n| n.to_string()).unwrap_or_default()),
                    Cell::from(printable(&r.name)),
                    Cell::from(printable(&r.team)),
                    Cell::from(opt(r.bookings, money)),
                    Cell::from(opt(r.deals_won, count)),
                    Cell::from(attainment_text(r.attainment)),
                    Cell {
                        text: opt(r.pace, |p| format!("{p:.2}")),
                        color: r.pace.and_then(pace_color),
                    },
                ]
            })
            .collect();
        table(&mut out, &columns, rows, color);
        if board.total_reps > board.reps.len() {
            let _ = writeln!(
                out,
                "showing {} of {} reps",
                board.reps.len(),
                board.total_reps
            );
        }
    }
    out.push('\n');

    if board.teams.is_empty() {
        out.push_str("No team data.\n");
    } else {
        let columns = [
            ("Team".to_owned(), Align::Left),
            (format!("Bookings {w}"), Align::Right),
            ("Target".to_owned(), Align::Right),
            (attainment_header, Align::Left),
        ];
        let rows = board
            .teams
            .iter()
            .map(|t| {
                vec![
                    Cell::from(printable(&t.team)),
                    Cell::from(opt(t.bookings, money)),
                    Cell::from(opt(t.target, money)),
                    Cell::from(attainment_text(t.attainment)),
                ]
            })
            .collect();
        table(&mut out, &columns, rows, color);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    const DEALS: &str = r#"
# HELP sales_rep_bookings Bookings.
# TYPE sales_rep_bookings gauge
sales_rep_bookings{rep="rep-001",team="team-emea",window="qtd"} 12345.5
sales_rep_bookings{team="team-amer",rep="rep-002",window="qtd"} 1.5e+05
sales_rep_bookings{rep="rep-003",team="team-amer",window="qtd"} 12345.5
sales_rep_bookings{rep="rep-004",team="team-apac",window="qtd"} 900
sales_rep_bookings{rep="rep-001",team="team-emea",window="today"} 500
sales_rep_bookings{rep="rep-004",team="team-apac",window="today"} 700
sales_rep_deals_won{rep="rep-001",team="team-emea",window="qtd"} 3
sales_rep_deals_won{rep="rep-002",team="team-amer",window="qtd"} 12
sales_rep_deals_won{rep="rep-003",team="team-amer",window="qtd"} 2
sales_org_bookings{window="today"} 1234567.891
sales_org_bookings{window="qtd"} 99
sales_org_deals_won{window="today"} 42
sales_team_bookings{team="team-amer",window="qtd"} 162345.5
sales_team_bookings{team="team-emea",window="qtd"} 12345.5
sales_team_bookings{team="team-apac",window="qtd"} 900
"#;

    // Ranks disagree with bookings order on purpose: the targets service decides.
    const TARGETS: &str = r#"
sales_period_elapsed_ratio{period="2026-Q4",period_type="quarter"} 0.5
sales_period_elapsed_ratio{period="2026-11",period_type="month"} 0.9
sales_rep_rank{rep="rep-001",team="team-emea",metric="bookings",window="qtd",among="org"} 1
sales_rep_rank{rep="rep-001",team="team-emea",metric="bookings",window="qtd",among="team"} 1
sales_rep_rank{rep="rep-002",team="team-amer",metric="bookings",window="qtd",among="org"} 2
sales_rep_rank{rep="rep-003",team="team-amer",metric="bookings",window="qtd",among="org"} 3
sales_rep_rank{rep="rep-003",team="team-amer",metric="deals_won",window="qtd",among="org"} 9
sales_rep_attainment_ratio{rep="rep-001",team="team-emea",metric="bookings",period="2026-Q4",period_type="quarter"} 0.52
sales_rep_attainment_ratio{rep="rep-001",team="team-emea",metric="bookings",period="2027-Q1",period_type="quarter"} 0.01
sales_rep_attainment_ratio{rep="rep-001",team="team-emea",metric="bookings",period="2026-11",period_type="month"} 0.99
sales_rep_pace_ratio{rep="rep-001",team="team-emea",metric="bookings",period="2026-Q4",period_type="quarter"} 0.93
sales_rep_attainment_ratio{rep="rep-002",team="team-amer",metric="bookings",period="2026-Q4",period_type="quarter"} 1.34
sales_rep_pace_ratio{rep="rep-002",team="team-amer",metric="bookings",period="2026-Q4",period_type="quarter"} 1.2
sales_rep_pace_ratio{rep="rep-003",team="team-amer",metric="bookings",period="2026-Q4",period_type="quarter"} 0.5
sales_team_target{team="team-amer",metric="bookings",period="2026-Q4",period_type="quarter"} 2e+05
sales_team_target{team="team-amer",metric="bookings",period="2027-Q1",period_type="quarter"} 3e+05
sales_team_attainment_ratio{team="team-amer",metric="bookings",period="2026-Q4",period_type="quarter"} 0.811
sales_team_target{team="team-nord",metric="bookings",period="2026-Q4",period_type="quarter"} 5000
"#;

    fn order(b: &Board) -> Vec<(Option<u64>, &str)> {
        b.reps.iter().map(|r| (r.rank, r.rep.as_str())).collect()
    }

    #[test]
    fn ranks_from_targets_service() {
        let (d, t) = (parse(DEALS), parse(TARGETS));
        let b = build(Some(&d), Some(&t), "qtd", 15);
        assert_eq!(b.period.as_deref(), Some("2026-Q4"));
        assert_eq!(
            order(&b),
            vec![
                (Some(1), "rep-001"),
                (Some(2), "rep-002"),
                (Some(3), "rep-003"),
                (None, "rep-004"),
            ]
        );
        let r1 = &b.reps[0];
        assert_eq!(r1.team, "team-emea");
        assert_eq!(r1.bookings, Some(12345.5));
        assert_eq!(r1.deals_won, Some(3.0));
        assert_eq!(r1.attainment, Some(0.52));
        assert_eq!(r1.pace, Some(0.93));
        assert_eq!(b.reps[3].deals_won, None);
        assert_eq!(b.org_bookings_today, Some(1234567.891));
        assert_eq!(b.org_deals_won_today, Some(42.0));
    }

    #[test]
    fn ranks_by_bookings_without_targets_service() {
        let d = parse(DEALS);
        let b = build(Some(&d), None, "qtd", 15);
        assert_eq!(b.period, None);
        assert_eq!(
            order(&b),
            vec![
                (Some(1), "rep-002"),
                (Some(2), "rep-001"),
                (Some(2), "rep-003"),
                (Some(4), "rep-004"),
            ]
        );
        assert!(b
            .reps
            .iter()
            .all(|r| r.attainment.is_none() && r.pace.is_none()));
        assert_eq!(b.reps[0].deals_won, Some(12.0));
    }

    #[test]
    fn window_selects_series_and_top_cuts() {
        let d = parse(DEALS);
        let b = build(Some(&d), None, "today", 1);
        assert_eq!(order(&b), vec![(Some(1), "rep-004")]);
        assert_eq!(b.total_reps, 2);
        assert_eq!(b.reps[0].bookings, Some(700.0));
        // The header stays on today whatever the window.
        assert_eq!(b.org_bookings_today, Some(1234567.891));
    }

    #[test]
    fn targets_only_still_ranks() {
        let t = parse(TARGETS);
        let b = build(None, Some(&t), "qtd", 15);
        assert_eq!(
            order(&b),
            vec![
                (Some(1), "rep-001"),
                (Some(2), "rep-002"),
                (Some(3), "rep-003")
            ]
        );
        assert_eq!(b.reps[1].team, "team-amer");
        assert!(b.reps.iter().all(|r| r.bookings.is_none()));
        assert_eq!(b.org_bookings_today, None);
    }

    #[test]
    fn nothing_at_all() {
        let b = build(None, None, "qtd", 15);
        assert!(b.reps.is_empty() && b.teams.is_empty());
        let out = render(&b, "12:00:00", &["deals service unreachable".into()], true);
        assert!(out.contains("bookings -, deals won -"), "{out}");
        assert!(out.contains("! deals service unreachable"), "{out}");
        assert!(out.contains("No rep data for window qtd."), "{out}");
        assert!(out.contains("No team data."), "{out}");
    }

    #[test]
    fn teams_join_bookings_targets_and_attainment() {
        let (d, t) = (parse(DEALS), parse(TARGETS));
        let b = build(Some(&d), Some(&t), "qtd", 15);
        let teams: Vec<&str> = b.teams.iter().map(|t| t.team.as_str()).collect();
        assert_eq!(
            teams,
            vec!["team-amer", "team-emea", "team-apac", "team-nord"]
        );
        assert_eq!(
            b.teams[0],
            TeamRow {
                team: "team-amer".into(),
                bookings: Some(162345.5),
                target: Some(200000.0),
                attainment: Some(0.811),
            }
        );
        assert_eq!(b.teams[3].bookings, None);
        assert_eq!(b.teams[3].target, Some(5000.0));
    }

    /// What the targets service shows of a full-year plan (the year, its quarters, months
    /// and weeks for the team and a rep) on 20 May 2026: the current period of each type.
    const FULL_YEAR: &str = r#"
sales_period_elapsed_ratio{period="FY2026",period_type="year"} 0.38
sales_period_elapsed_ratio{period="2026-Q2",period_type="quarter"} 0.55
sales_period_elapsed_ratio{period="2026-05",period_type="month"} 0.61
sales_period_elapsed_ratio{period="2026-W21",period_type="week"} 0.5
sales_team_target{metric="bookings",period="FY2026",period_type="year",team="team-amer"} 1.6e+06
sales_team_target{metric="bookings",period="2026-Q2",period_type="quarter",team="team-amer"} 350000
sales_team_target{metric="bookings",period="2026-05",period_type="month",team="team-amer"} 120000
sales_team_target{metric="bookings",period="2026-W21",period_type="week",team="team-amer"} 30000
sales_team_attainment_ratio{metric="bookings",period="FY2026",period_type="year",team="team-amer"} 0.1
sales_team_attainment_ratio{metric="bookings",period="2026-Q2",period_type="quarter",team="team-amer"} 0.463844
sales_team_attainment_ratio{metric="bookings",period="2026-05",period_type="month",team="team-amer"} 0.9
sales_rep_attainment_ratio{metric="bookings",period="FY2026",period_type="year",rep="rep-002",team="team-amer"} 0.2
sales_rep_attainment_ratio{metric="bookings",period="2026-Q2",period_type="quarter",rep="rep-002",team="team-amer"} 0.75
sales_rep_attainment_ratio{metric="bookings",period="2026-W21",period_type="week",rep="rep-002",team="team-amer"} 2
sales_rep_pace_ratio{metric="bookings",period="2026-Q2",period_type="quarter",rep="rep-002",team="team-amer"} 1.36
sales_rep_pace_ratio{metric="bookings",period="2026-05",period_type="month",rep="rep-002",team="team-amer"} 0.4
"#;

    #[test]
    fn a_full_year_plan_shows_the_current_quarter_s_numbers() {
        let (d, t) = (parse(DEALS), parse(FULL_YEAR));
        let b = build(Some(&d), Some(&t), "qtd", 15);
        assert_eq!(b.period.as_deref(), Some("2026-Q2"));
        let amer = b
            .teams
            .iter()
            .find(|t| t.team == "team-amer")
            .expect("team");
        assert_eq!(amer.target, Some(350000.0));
        assert_eq!(amer.attainment, Some(0.463844));
        let rep = b.reps.iter().find(|r| r.rep == "rep-002").expect("rep");
        assert_eq!((rep.attainment, rep.pace), (Some(0.75), Some(1.36)));
        let out = render(&b, "12:00:00", &[], false);
        assert!(out.contains("350,000.00"), "{out}");
        assert!(
            !out.contains("1,600,000.00") && !out.contains("120,000.00"),
            "{out}"
        );
    }

    #[test]
    fn other_quarters_on_the_board_do_not_make_a_later_one_current() {
        // A targets service that shows every quarter of the plan: past ones fully elapsed,
        // future ones not started.
        let scrape = |shares: [(&str, &str); 4]| {
            let mut text = String::new();
            for (q, share) in shares {
                text.push_str(&format!(
                    "sales_period_elapsed_ratio{{period=\"{q}\",period_type=\"quarter\"}} {share}\n\
                     sales_team_target{{metric=\"bookings\",period=\"{q}\",period_type=\"quarter\",team=\"team-amer\"}} {}\n",
                    1000 * q.as_bytes()[6] as u32
                ));
            }
            parse(&text)
        };
        let t = scrape([
            ("2026-Q1", "1"),
            ("2026-Q2", "1"),
            ("2026-Q3", "0.4"),
            ("2026-Q4", "0"),
        ]);
        let b = build(None, Some(&t), "qtd", 15);
        assert_eq!(b.period.as_deref(), Some("2026-Q3"));
        assert_eq!(b.teams[0].target, Some(1000.0 * f64::from(b'3')));
        // The first instant of Q4: Q3 is over, Q4 and the next year's Q1 have not begun.
        let t = scrape([
            ("2026-Q2", "1"),
            ("2026-Q3", "1"),
            ("2026-Q4", "0"),
            ("2027-Q1", "0"),
        ]);
        let b = build(None, Some(&t), "qtd", 15);
        assert_eq!(b.period.as_deref(), Some("2026-Q4"));
        assert_eq!(b.teams[0].target, Some(1000.0 * f64::from(b'4')));
    }

    #[test]
    fn money_and_counts() {
        assert_eq!(money(12345.5), "12,345.50");
        assert_eq!(money(1234567.891), "1,234,567.89");
        assert_eq!(money(999.999), "1,000.00");
        assert_eq!(money(0.0), "0.00");
        assert_eq!(money(-1234.5), "-1,234.50");
        assert_eq!(money(-0.001), "0.00");
        assert_eq!(money(100.0), "100.00");
        assert_eq!(count(42.0), "42");
        assert_eq!(count(1234567.0), "1,234,567");
    }

    #[test]
    fn bars_and_percentages() {
        assert_eq!(bar(0.52), "█████░░░░░");
        assert_eq!(percent(0.52), "52%");
        assert_eq!(attainment_text(Some(0.52)), "█████░░░░░ 52%");
        assert_eq!(bar(0.0), "░░░░░░░░░░");
        assert_eq!(bar(-0.3), "░░░░░░░░░░");
        assert_eq!(bar(1.0), "██████████");
        assert_eq!(attainment_text(Some(1.34)), "██████████ 134%");
        assert_eq!(bar(0.04), "░░░░░░░░░░");
        assert_eq!(bar(0.05), "█░░░░░░░░░");
        assert_eq!(bar(f64::INFINITY), "██████████");
        assert_eq!(attainment_text(Some(f64::INFINITY)), "");
        assert_eq!(attainment_text(None), "");
        assert_eq!(percent(0.811), "81%");
    }

    fn line_of<'a>(out: &'a str, needle: &str) -> &'a str {
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{out}"))
    }

    fn team_line<'a>(out: &'a str, team: &str) -> &'a str {
        out.lines()
            .find(|l| l.starts_with(team))
            .unwrap_or_else(|| panic!("no team row {team:?} in\n{out}"))
    }

    #[test]
    fn renders_rows_in_order_without_color() {
        let (d, t) = (parse(DEALS), parse(TARGETS));
        let b = build(Some(&d), Some(&t), "qtd", 3);
        let out = render(&b, "2026-11-27 12:00:00", &[], false);
        assert!(!out.contains('\x1b'), "{out}");
        let header = out.lines().next().unwrap_or_default();
        assert!(header.contains("2026-11-27 12:00:00"), "{header}");
        assert!(header.contains("window qtd"), "{header}");
        assert!(header.contains("quarter 2026-Q4"), "{header}");
        assert!(
            header.contains("bookings 1,234,567.89, deals won 42"),
            "{header}"
        );

        let r1 = line_of(&out, "rep-001");
        for part in ["team-emea", "12,345.50", "█████░░░░░ 52%", "0.93"] {
            assert!(r1.contains(part), "{part:?} not in {r1:?}");
        }
        assert!(r1.trim_start().starts_with("1  rep-001"), "{r1:?}");
        let r2 = line_of(&out, "rep-002");
        for part in ["150,000.00", "12", "██████████ 134%", "1.20"] {
            assert!(r2.contains(part), "{part:?} not in {r2:?}");
        }
        let p1 = out.find("rep-001").unwrap_or(usize::MAX);
        let p2 = out.find("rep-002").unwrap_or(0);
        let p3 = out.find("rep-003").unwrap_or(0);
        assert!(p1 < p2 && p2 < p3, "{out}");
        assert!(!out.contains("rep-004"), "{out}");
        assert!(out.contains("showing 3 of 4 reps"), "{out}");

        let amer = team_line(&out, "team-amer");
        for part in ["162,345.50", "200,000.00", "████████░░ 81%"] {
            assert!(amer.contains(part), "{part:?} not in {amer:?}");
        }
        let nord = team_line(&out, "team-nord");
        assert!(nord.contains("5,000.00"), "{nord:?}");

        // Columns line up: every rep row puts the team at the same offset.
        let offsets: Vec<usize> = ["rep-001", "rep-002", "rep-003"]
            .iter()
            .map(|r| line_of(&out, r).find("team-").unwrap_or(0))
            .collect();
        assert!(offsets.iter().all(|o| *o == offsets[0]), "{out}");
    }

    #[test]
    fn pace_colors() {
        let (d, t) = (parse(DEALS), parse(TARGETS));
        let b = build(Some(&d), Some(&t), "qtd", 15);
        let out = render(&b, "t", &[], true);
        assert!(
            line_of(&out, "rep-002").contains("\x1b[32m1.20\x1b[0m"),
            "{out}"
        );
        assert!(
            line_of(&out, "rep-003").contains("\x1b[31m0.50\x1b[0m"),
            "{out}"
        );
        let r1 = line_of(&out, "rep-001");
        assert!(r1.contains("0.93") && !r1.contains('\x1b'), "{r1:?}");
        assert_eq!(pace_color(0.8), None);
        assert_eq!(pace_color(0.7999), Some(RED));
        assert_eq!(pace_color(1.0), Some(GREEN));
    }

    #[test]
    fn a_rep_shows_under_its_roster_team_with_all_its_bookings() {
        // Most of rep-009's bookings are still under the team it left.
        let d = parse(
            r#"
sales_rep_bookings{rep="rep-009",team="team-emea",window="qtd"} 900
sales_rep_bookings{rep="rep-009",team="team-apac",window="qtd"} 100
sales_rep_member{rep="rep-009",team="team-apac"} 1
"#,
        );
        let b = build(Some(&d), None, "qtd", 15);
        assert_eq!(b.reps[0].team, "team-apac");
        assert_eq!(b.reps[0].bookings, Some(1000.0));
        // Without membership the largest series decides.
        let d = parse(
            r#"
sales_rep_bookings{rep="rep-009",team="team-emea",window="qtd"} 900
sales_rep_bookings{rep="rep-009",team="team-apac",window="qtd"} 100
"#,
        );
        assert_eq!(build(Some(&d), None, "qtd", 15).reps[0].team, "team-emea");
    }

    /// The deals service's roster names: rep-001 and rep-002 named, rep-003 named by its id
    /// (the roster gives no name), rep-004 not on the roster at all.
    const INFO: &str = r#"
sales_rep_info{name="Ada Lovelace",region="europe",rep="rep-001",team="team-emea"} 1
sales_rep_info{name="Bela Bianchi",rep="rep-002",team="team-amer"} 1
sales_rep_info{name="rep-003",rep="rep-003",team="team-amer"} 1
"#;

    #[test]
    fn reps_show_under_their_roster_names() {
        let d = parse(&format!("{DEALS}{INFO}"));
        let t = parse(TARGETS);
        let b = build(Some(&d), Some(&t), "qtd", 15);
        let names: Vec<(&str, &str)> = b
            .reps
            .iter()
            .map(|r| (r.rep.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("rep-001", "Ada Lovelace"),
                ("rep-002", "Bela Bianchi"),
                ("rep-003", "rep-003"),
                ("rep-004", "rep-004"),
            ]
        );
        // The names change nothing else: same order, same numbers.
        let without = build(Some(&parse(DEALS)), Some(&t), "qtd", 15);
        assert_eq!(order(&b), order(&without));
        for (a, w) in b.reps.iter().zip(&without.reps) {
            assert_eq!((a.bookings, a.team.as_str()), (w.bookings, w.team.as_str()));
        }

        let out = render(&b, "t", &[], false);
        let r1 = line_of(&out, "Ada Lovelace");
        assert!(r1.trim_start().starts_with("1  Ada Lovelace"), "{r1:?}");
        assert!(
            r1.contains("team-emea") && r1.contains("12,345.50"),
            "{r1:?}"
        );
        assert!(
            line_of(&out, "Bela Bianchi").contains("150,000.00"),
            "{out}"
        );
        assert!(
            !out.contains("rep-001") && !out.contains("rep-002"),
            "{out}"
        );
        // No name on the roster, or not on the roster: the id.
        assert!(line_of(&out, "rep-003").contains("12,345.50"), "{out}");
        assert!(line_of(&out, "rep-004").contains("900.00"), "{out}");
        let offsets: Vec<usize> = ["Ada Lovelace", "Bela Bianchi", "rep-003", "rep-004"]
            .iter()
            .map(|r| line_of(&out, r).find("team-").unwrap_or(0))
            .collect();
        assert!(offsets.iter().all(|o| *o == offsets[0]), "{out}");
    }

    #[test]
    fn without_names_reps_show_under_their_ids() {
        // No deals service: the targets service's ranks, under the ids.
        let t = parse(TARGETS);
        let b = build(None, Some(&t), "qtd", 15);
        assert!(b.reps.iter().all(|r| r.name == r.rep), "{:?}", b.reps);
        let out = render(&b, "t", &[], false);
        assert!(line_of(&out, "rep-001")
            .trim_start()
            .starts_with("1  rep-001"));
        // A deals scrape without sales_rep_info (an older deals service).
        let b = build(Some(&parse(DEALS)), Some(&t), "qtd", 15);
        assert!(b.reps.iter().all(|r| r.name == r.rep), "{:?}", b.reps);
    }

    #[test]
    fn a_rep_with_two_info_series_shows_once_under_one_name() {
        let d = parse(
            r#"
sales_rep_bookings{rep="rep-009",team="team-emea",window="qtd"} 900
sales_rep_bookings{rep="rep-009",team="team-apac",window="qtd"} 100
sales_rep_info{name="Zoe Xu",rep="rep-009",team="team-apac"} 1
sales_rep_info{name="Chloe Xu",rep="rep-009",team="team-emea"} 1
sales_rep_info{name="",rep="rep-010",team="team-emea"} 1
"#,
        );
        let b = build(Some(&d), None, "qtd", 15);
        assert_eq!(b.reps.len(), 1, "{:?}", b.reps);
        assert_eq!(b.reps[0].name, "Chloe Xu");
        assert_eq!(b.reps[0].bookings, Some(1000.0));
        assert_eq!(rep_names(&d).get("rep-010"), None);
    }

    #[test]
    fn hostile_names_stay_on_one_line() {
        let d = parse(
            "sales_rep_bookings{rep=\"r1\",team=\"t\",window=\"qtd\"} 1\n\
             sales_rep_info{name=\"Eve\\n\u{1b}[2J\",rep=\"r1\",team=\"t\"} 1\n",
        );
        let b = build(Some(&d), None, "qtd", 15);
        let out = render(&b, "t", &[], false);
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains(r"Eve\n\u{1b}[2J"), "{out:?}");
    }

    #[test]
    fn hostile_label_values_stay_on_one_line() {
        let d = parse("sales_rep_bookings{rep=\"evil\\n\u{1b}[2J\",team=\"t\",window=\"qtd\"} 1\n");
        let b = build(Some(&d), None, "qtd", 15);
        let out = render(&b, "t", &[], false);
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains(r"evil\n\u{1b}[2J"), "{out:?}");
    }
}
