//! The report as HTML (tables and inline SVG charts, for the screen and for print), CSV and
//! Markdown.

use std::fmt::Write as _;

use rust_decimal::Decimal;

use crate::charts;
use crate::model::{Report, Row, BUCKETS};

/// A report file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Html,
    Csv,
    Md,
}

fn title(r: &Report) -> String {
    let scope = r.team.as_deref().unwrap_or("the org");
    format!("Quarterly report {}: {scope}", r.period)
}

fn coverage(r: &Report) -> String {
    let state = if r.window.label() == "qtd" {
        "to date (the quarter is not over)"
    } else {
        "closed, with every correction made since"
    };
    format!(
        "{} to {}, {state}; numbers as of {}; amounts in {}",
        r.first, r.last, r.as_of, r.currency
    )
}

/// `1234567.5` as `1,234,567.50`.
fn money(d: Decimal) -> String {
    let s = format!("{:.2}", d.round_dp(2));
    let (int, frac) = s.split_once('.').unwrap_or((&s, "00"));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}.{frac}")
}

fn pct(d: Option<Decimal>) -> String {
    d.map(|d| format!("{:.1} %", d * Decimal::ONE_HUNDRED))
        .unwrap_or_else(|| "–".into())
}

fn opt(d: Option<Decimal>, f: impl Fn(Decimal) -> String) -> String {
    d.map(f).unwrap_or_else(|| "–".into())
}

fn plain(d: Decimal) -> String {
    d.normalize().to_string()
}

/// The columns of the team and rep tables: header and cell.
type Column = (&'static str, fn(&Row) -> String);

const COLUMNS: [Column; 12] = [
    ("Bookings", |r| money(r.bookings)),
    ("Target", |r| opt(r.target, money)),
    ("Attainment", |r| pct(r.attainment)),
    ("Win rate", |r| pct(r.win_rate)),
    ("Avg deal size", |r| opt(r.avg_deal, money)),
    ("Sales cycle (days)", |r| opt(r.cycle_days, plain)),
    ("Pipeline created", |r| money(r.pipeline_created)),
    ("Won", |r| plain(r.won)),
    ("Lost", |r| plain(r.lost)),
    ("Activities", |r| plain(r.activities)),
    ("Rank", |r| {
        r.rank.map(|k| k.to_string()).unwrap_or_else(|| "–".into())
    }),
    ("Bookings CV", |r| opt(r.cv, |c| format!("{:.2}", c))),
];

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:12px}\
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}\
th:first-child,td:first-child,td.l{text-align:left}th{background:#f2f2f2}\
.chart{margin:1em 0;page-break-inside:avoid}h2{margin-top:1.6em}\
p.note{font-size:12px;color:#555}\
@page{size:A4 landscape}@media print{body{margin:0.5cm}h2{page-break-after:avoid}table{page-break-inside:auto}tr{page-break-inside:avoid}}";

/// The report as a self-contained HTML page.
pub fn html(r: &Report) -> Result<String, String> {
    let mut h = String::new();
    let t = escape(&title(r));
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n<p>{}</p>\n",
        escape(&coverage(r))
    );
    if let Some(org) = &r.org {
        let against = match (org.target, org.attainment) {
            (Some(t), a) => format!(" of a target of {} ({})", money(t), pct(a)),
            _ => " (no org target)".to_owned(),
        };
        let _ = write!(
            h,
            "<h2>Org</h2>\n<p>Bookings {}{against}; {} of {} reps with a target reached it, median attainment {}.</p>\n",
            money(org.bookings),
            org.reps_attaining,
            org.reps_with_target,
            pct(org.median_attainment)
        );
    }
    h.push_str("<h2>Teams</h2>\n<table><tr><th>Team</th>");
    for (name, _) in COLUMNS {
        let _ = write!(h, "<th>{name}</th>");
    }
    h.push_str("<th>Reps at target</th><th>Median attainment</th></tr>\n");
    for row in r.teams.iter().chain(r.org.iter()) {
        let _ = write!(h, "<tr><td>{}</td>", escape(&row.name));
        for (_, cell) in COLUMNS {
            let _ = write!(h, "<td>{}</td>", escape(&cell(row)));
        }
        let _ = writeln!(
            h,
            "<td>{} of {}</td><td>{}</td></tr>",
            row.reps_attaining,
            row.reps_with_target,
            pct(row.median_attainment)
        );
    }
    h.push_str("</table>\n<h2>Reps</h2>\n<table><tr><th>Rep</th><th>Team</th>");
    for (name, _) in COLUMNS {
        let _ = write!(h, "<th>{name}</th>");
    }
    h.push_str("<th>Team rank</th><th>Mean weekly bookings</th><th>Ramp</th></tr>\n");
    for row in &r.reps {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"l\">{}</td>",
            escape(&row.name),
            escape(&row.team)
        );
        for (_, cell) in COLUMNS {
            let _ = write!(h, "<td>{}</td>", escape(&cell(row)));
        }
        let _ = writeln!(
            h,
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            row.team_rank
                .map(|k| k.to_string())
                .unwrap_or_else(|| "–".into()),
            opt(row.weekly_mean, money),
            opt(row.ramp, |s| format!(
                "{:.1} % of quota",
                s * Decimal::ONE_HUNDRED
            ))
        );
    }
    h.push_str("</table>\n");
    let _ = write!(
        h,
        "<h2>Attainment by rep</h2>\n<div class=\"chart\" id=\"attainment\">{}</div>\n",
        charts::attainment_by_rep(r)?
    );
    let _ = write!(
        h,
        "<h2>Weekly bookings per team</h2>\n<div class=\"chart\" id=\"weekly\">{}</div>\n",
        charts::weekly_bookings(r)?
    );
    let _ = write!(
        h,
        "<h2>Attainment distribution</h2>\n<div class=\"chart\" id=\"distribution\">{}</div>\n",
        charts::distribution(r)?
    );
    h.push_str(NOTES_HTML);
    h.push_str("</body></html>\n");
    Ok(h)
}

const NOTES_HTML: &str =
    "<h2>How to read it</h2>\n<p class=\"note\">Attainment is bookings over the \
quarter's bookings target; a rep in ramp carries the share of the full target the ramp schedule \
gives (the Ramp column), and attainment is against that ramped target. Win rate is won over won \
and lost deals closed in the quarter; the sales cycle is the mean days from creation to close of \
the deals won. Rank 1 has the most bookings (equal bookings share a rank). Consistency is the \
coefficient of variation (deviation over mean) of weekly bookings over the last complete weeks as \
the services measure them now; for a team, the median of its reps'. Weekly bookings are by the \
week of each deal's close; the first and last week may lie partly outside the quarter.</p>\n";

/// The report as CSV: one row per org, team and rep (`level`), then one per team and week.
pub fn csv(r: &Report) -> Result<String, String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let header = [
        "level",
        "id",
        "name",
        "team",
        "bookings",
        "target",
        "attainment",
        "win_rate",
        "avg_deal_size",
        "sales_cycle_days",
        "pipeline_created",
        "deals_won",
        "deals_lost",
        "activities",
        "rank",
        "team_rank",
        "weekly_bookings_mean",
        "bookings_cv",
        "ramp_share",
        "reps_with_target",
        "reps_attaining",
        "median_attainment",
    ];
    w.write_record(header).map_err(|e| e.to_string())?;
    let o = |d: Option<Decimal>| d.map(|d| d.normalize().to_string()).unwrap_or_default();
    let n = |k: Option<usize>| k.map(|k| k.to_string()).unwrap_or_default();
    let rows = r
        .org
        .iter()
        .map(|x| ("org", x))
        .chain(r.teams.iter().map(|x| ("team", x)))
        .chain(r.reps.iter().map(|x| ("rep", x)));
    for (level, x) in rows {
        let rec = [
            level.to_owned(),
            x.id.clone(),
            x.name.clone(),
            x.team.clone(),
            x.bookings.normalize().to_string(),
            o(x.target),
            o(x.attainment),
            o(x.win_rate),
            o(x.avg_deal),
            o(x.cycle_days),
            x.pipeline_created.normalize().to_string(),
            x.won.normalize().to_string(),
            x.lost.normalize().to_string(),
            x.activities.normalize().to_string(),
            n(x.rank),
            n(x.team_rank),
            o(x.weekly_mean),
            o(x.cv),
            o(x.ramp),
            if level == "rep" {
                String::new()
            } else {
                x.reps_with_target.to_string()
            },
            if level == "rep" {
                String::new()
            } else {
                x.reps_attaining.to_string()
            },
            o(x.median_attainment),
        ];
        w.write_record(&rec).map_err(|e| e.to_string())?;
    }
    for t in &r.weekly {
        for (week, v) in r.weeks.iter().zip(&t.bookings) {
            let mut rec = vec![String::new(); header.len()];
            rec[0] = "team_week".into();
            rec[1] = t.team.clone();
            rec[2] = week.to_string();
            rec[3] = t.team.clone();
            rec[4] = v.normalize().to_string();
            w.write_record(&rec).map_err(|e| e.to_string())?;
        }
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// The report as Markdown tables (the charts' data as tables too).
pub fn markdown(r: &Report) -> String {
    let mut m = String::new();
    let _ = write!(m, "# {}\n\n{}\n\n", title(r), coverage(r));
    let table = |m: &mut String, first: &str, rows: &[&Row], rep: bool| {
        let _ = write!(m, "| {first} |");
        if rep {
            m.push_str(" Team |");
        }
        for (name, _) in COLUMNS {
            let _ = write!(m, " {name} |");
        }
        m.push('\n');
        m.push_str(&"|---".repeat(COLUMNS.len() + 1 + usize::from(rep)));
        m.push_str("|\n");
        for row in rows {
            let _ = write!(m, "| {} |", row.name.replace('|', "\\|"));
            if rep {
                let _ = write!(m, " {} |", row.team.replace('|', "\\|"));
            }
            for (_, cell) in COLUMNS {
                let _ = write!(m, " {} |", cell(row));
            }
            m.push('\n');
        }
        m.push('\n');
    };
    m.push_str("## Teams\n\n");
    let teams: Vec<&Row> = r.teams.iter().chain(r.org.iter()).collect();
    table(&mut m, "Team", &teams, false);
    m.push_str("## Reps\n\n");
    let reps: Vec<&Row> = r.reps.iter().collect();
    table(&mut m, "Rep", &reps, true);
    m.push_str("## Weekly bookings per team\n\n| Week |");
    for t in &r.weekly {
        let _ = write!(m, " {} |", t.team);
    }
    m.push('\n');
    m.push_str(&"|---".repeat(r.weekly.len() + 1));
    m.push_str("|\n");
    for (i, week) in r.weeks.iter().enumerate() {
        let _ = write!(m, "| {week} |");
        for t in &r.weekly {
            let _ = write!(m, " {} |", money(t.bookings[i]));
        }
        m.push('\n');
    }
    m.push_str("\n## Attainment distribution\n\n| Attainment | Reps |\n|---|---|\n");
    for ((label, _), n) in BUCKETS.iter().zip(r.distribution) {
        let _ = writeln!(m, "| {label} | {n} |");
    }
    m.push_str("\nThe HTML report (`--format html`) draws these as charts.\n");
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_groups_thousands() {
        assert_eq!(money(Decimal::new(123_456_789, 2)), "1,234,567.89");
        assert_eq!(money(Decimal::new(-50, 1)), "-5.00");
        assert_eq!(money(Decimal::ZERO), "0.00");
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape("<b>&'\""), "&lt;b&gt;&amp;&#39;&quot;");
    }
}
