//! The Grafana dashboards against live data: the three services on a real broker, fed by the
//! simulator (two days of history) and a whole year's plan of targets (scripts/sample-targets.sh:
//! the year, its quarters, months and weeks, for the org, every team and every rep), scraped by
//! a real Prometheus. Every query of every board must evaluate and return at least one series,
//! as it would on the wall; the key target panels must show the current period's numbers,
//! checked against the plan's CSV and the deals service's own /metrics; the terminal board
//! must show each team's current quarter target; reps must appear under the names the
//! roster gives them (`sales_rep_info`), once each, on the boards, in the `$rep` picker and on
//! the terminal board; and the banner on top of every board must say the numbers are live
//! while records arrive, and stale once none has for longer than its threshold. The boards are
//! read as deploy/grafana/render-dashboards.sh writes them for Grafana.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use salespulse_e2e::*;
use serde_json::Value;

/// The team the boards are looked at for; its reps are the candidates for `$rep`. Chosen once
/// the simulator is done ([`choose_team`]).
static TEAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The team the boards are looked at for.
fn team() -> &'static str {
    TEAM.get()
        .expect("the team is chosen once the simulator is done")
}

/// `team-emea`, or, when the simulated roster leaves it with no rep on it, the team with the
/// most. The simulator moves reps between teams as it goes, and how its draws fall depends on
/// the time of day a run starts (its daily rhythm), so a team can end up empty.
fn choose_team(roster: &str) -> String {
    let mut members: BTreeMap<String, usize> = BTreeMap::new();
    for v in on_roster(roster).values() {
        if let Some(team) = v["team_id"].as_str() {
            *members.entry(team.to_owned()).or_default() += 1;
        }
    }
    println!("reps on the roster by team: {members:?}");
    if members.contains_key("team-emea") {
        return "team-emea".into();
    }
    let most = members
        .values()
        .copied()
        .max()
        .expect("a rep on the roster");
    members
        .into_iter()
        .find(|(_, n)| *n == most)
        .map(|(team, _)| team)
        .expect("a team")
}
/// How long the queries may take, once the records are consumed, to all return series.
const SETTLE: Duration = Duration::from_secs(90);
/// How long the values may take, once every query returns series, to match the plan. A run
/// of the whole suite once missed a rep's ramp ratio for the fiscal year at 30 s (every other
/// run matched within seconds); the loop ends as soon as everything matches.
const VALUES: Duration = Duration::from_secs(60);

/// What the stale banner (the first panel of every board) shows: the `banner` label of the
/// series its query returns.
const LIVE: &str = "Live \u{2014} newest deal or activity at";
const STALE_FOR: &str = "Numbers are stale \u{2014} no new deal or activity for";
const LAST_AT: &str = "last at";

/// A query of a board: where it comes from and the expression, variables unsubstituted.
#[derive(Debug)]
struct Query {
    origin: String,
    expr: String,
}

/// Every panel, including those inside collapsed rows.
fn panels(board: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in board["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// What a variable query asks Prometheus: the selector of `label_values(selector, label)`,
/// or the expression of `query_result(expr)`.
fn variable_expr(query: &str) -> String {
    let query = query.trim();
    if let Some(expr) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return expr.trim().to_owned();
    }
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{query:?} is not label_values(selector, label)"));
    let (selector, _) = inner.rsplit_once(',').expect("label_values has a label");
    selector.trim().to_owned()
}

/// Whether `expr` still refers to a template variable (`$team`, `${rep}`; not the `$1` of a
/// `label_replace` replacement).
fn has_variable(expr: &str) -> bool {
    expr.match_indices('$').any(|(i, _)| {
        expr[i + 1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '{')
    })
}

/// The boards of deploy/grafana/dashboards as Grafana gets them: written by
/// deploy/grafana/render-dashboards.sh with the project's configuration and `env` (say, the
/// banner's STALE_AFTER_SECONDS; the script's default without), by file name.
fn rendered_boards(env: &[(&str, &str)]) -> BTreeMap<String, Value> {
    static RENDERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = std::env::temp_dir().join(format!("dashboards-live-{}-{n}", std::process::id()));
    let rendered = render_dashboards(&root().join("config/salespulse.toml"), env, &out);
    assert!(
        !rendered.is_empty(),
        "no dashboards rendered in {}",
        out.display()
    );
    let boards = rendered
        .into_iter()
        .map(|(file, text)| {
            let board: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
            (file, board)
        })
        .collect();
    let _ = std::fs::remove_dir_all(&out);
    boards
}

/// The query of the stale banner, the same on every board.
fn banner_query(boards: &BTreeMap<String, Value>) -> String {
    let exprs: std::collections::BTreeSet<&str> = boards
        .values()
        .map(|b| {
            b["panels"][0]["targets"][0]["expr"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(exprs.len(), 1, "one banner on every board: {exprs:?}");
    exprs.into_iter().next().unwrap_or_default().to_owned()
}

/// What the banner's query returns: `banner` label → value.
async fn banner_says(
    client: &reqwest::Client,
    port: u16,
    expr: &str,
) -> Result<BTreeMap<String, f64>, String> {
    Ok(instant(client, port, expr)
        .await?
        .into_iter()
        .filter_map(|(labels, v)| Some((labels.get("banner")?.clone(), v)))
        .collect())
}

/// Every panel query and every variable query of every board, as rendered for Grafana.
fn queries() -> Vec<Query> {
    let mut out = Vec::new();
    for (file, board) in rendered_boards(&[]) {
        for p in panels(&board) {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(Query {
                    origin: format!("{file} / {title:?} / {}", t["refId"]),
                    expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
        for v in board["templating"]["list"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or_default();
            let query = match &v["query"] {
                Value::String(s) => s.clone(),
                q => q["query"].as_str().unwrap_or_default().to_owned(),
            };
            out.push(Query {
                origin: format!("{file} / variable {name}"),
                expr: variable_expr(&query),
            });
        }
    }
    out
}

/// `expr` with `$name` and `${name}` replaced by the given values.
fn substitute(expr: &str, values: &[(&str, &str)]) -> String {
    let mut out = expr.to_owned();
    for (name, value) in values {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Instant query: `Ok(series)` with each series' labels and value, or `Err` with what went
/// wrong (Prometheus' error type and message, or the transport error).
async fn instant(
    client: &reqwest::Client,
    port: u16,
    q: &str,
) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
    let response = client
        .get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("HTTP {status}: {e}"))?;
    if body["status"] != "success" {
        return Err(format!(
            "HTTP {status} {}: {}",
            body["errorType"].as_str().unwrap_or_default(),
            body["error"].as_str().unwrap_or_default()
        ));
    }
    let data = &body["data"];
    match data["resultType"].as_str() {
        Some("vector" | "matrix") => Ok(data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = s["value"][1]
                    .as_str()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()),
        // A scalar or string result is one value; Grafana draws it.
        Some("scalar" | "string") => Ok(vec![(BTreeMap::new(), f64::NAN)]),
        other => Err(format!("unexpected result type {other:?}")),
    }
}

/// Runs `cmd` with its output in `log`; kills it when it outlives `within`.
fn run_bounded(cmd: &mut Command, log: &Path, within: Duration) -> std::process::ExitStatus {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} starts: {e}"));
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {within:?}; output in {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn prometheus_ready(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    let url = format!("http://127.0.0.1:{port}/-/ready");
    let client = http();
    while Instant::now() < deadline {
        if let Ok(r) = client.get(&url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("Prometheus not ready on :{port} within {within:?}");
}

/// The reps of the team as the board's `$rep` variable lists them (the team's members on the
/// roster), most bookings this quarter first.
async fn candidate_reps(client: &reqwest::Client, port: u16) -> Vec<String> {
    let mut reps: Vec<(String, f64)> = Vec::new();
    let team = team();
    let q = format!("max by (rep) (sales_rep_member{{team=\"{team}\"}})");
    for (labels, _) in instant(client, port, &q).await.unwrap_or_default() {
        if let Some(r) = labels.get("rep") {
            reps.push((r.clone(), f64::NEG_INFINITY));
        }
    }
    let q = "sum by (rep) (sales_rep_bookings{window=\"qtd\"})";
    for (labels, v) in instant(client, port, q).await.unwrap_or_default() {
        if let Some(entry) = reps.iter_mut().find(|(r, _)| Some(r) == labels.get("rep")) {
            entry.1 = v;
        }
    }
    reps.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    reps.into_iter().map(|(r, _)| r).collect()
}

/// The queries that fail for one choice of `$team` and `$rep`: their origin, and
/// `origin: expr` with the reason.
async fn failures(
    client: &reqwest::Client,
    port: u16,
    queries: &[Query],
    (team, rep): (&str, &str),
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for q in queries {
        let expr = substitute(&q.expr, &[("team", team), ("rep", rep)]);
        match instant(client, port, &expr).await {
            Ok(series) if series.is_empty() => {
                // A change against the previous period has no value while the previous period
                // had nothing by the same point: empty exactly when its denominator is zero.
                if let Some(den) = change_denominator(&expr) {
                    if let Ok(d) = instant(client, port, den).await {
                        if !d.is_empty() && d.iter().all(|(_, v)| *v == 0.0) {
                            println!("{}: empty, the previous period's {den} is 0", q.origin);
                            continue;
                        }
                    }
                }
                // Pipeline coverage divides the open pipeline by what is left to book: it has no
                // value once the target is met, exactly when the same subject's gap is zero.
                if expr.contains("_pipeline_coverage{") {
                    let gap = expr.replace("_pipeline_coverage{", "_gap{");
                    if let Ok(g) = instant(client, port, &gap).await {
                        if !g.is_empty() && g.iter().all(|(_, v)| *v == 0.0) {
                            println!("{}: empty, the target is met ({gap} is 0)", q.origin);
                            continue;
                        }
                    }
                }
                out.push((
                    q.origin.clone(),
                    format!("{}: {expr}\n    no series", q.origin),
                ));
            }
            Ok(_) => {}
            Err(e) => out.push((q.origin.clone(), format!("{}: {expr}\n    {e}", q.origin))),
        }
    }
    out
}

/// The denominator `D` of a change against the previous period, `X / (D > 0) - 1`.
fn change_denominator(expr: &str) -> Option<&str> {
    let body = expr.strip_suffix(" > 0) - 1")?;
    let at = body.rfind(" / (")?;
    Some(&body[at + 4..])
}

/// The targets of a plan CSV: (scope, id, metric, period) → value (metrics with a kind are
/// left out: the boards show bookings).
type Plan = BTreeMap<(String, String, String, String), f64>;

fn read_plan(csv: &Path) -> Plan {
    let text = std::fs::read_to_string(csv).expect("the plan");
    let mut plan = Plan::new();
    for line in text.lines().skip(1).filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 7, "plan row {line:?}");
        if f[3].is_empty() {
            let value = f[5].parse().expect("plan value");
            plan.insert((f[0].into(), f[1].into(), f[2].into(), f[4].into()), value);
        }
    }
    plan
}

/// `[quotas] ramp_percent` of config/salespulse.toml, the services' configuration here.
fn ramp_schedule() -> Vec<rust_decimal::Decimal> {
    let text = std::fs::read_to_string(root().join("config/salespulse.toml")).expect("config");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("ramp_percent"))
        .expect("ramp_percent in the configuration");
    let list = line.split('#').next().unwrap_or_default();
    let inner = list
        .split_once('[')
        .and_then(|(_, r)| r.split_once(']'))
        .map(|(l, _)| l)
        .expect("a list");
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches('"').parse().expect("a percent"))
        .collect()
}

/// The latest record of each rep on the roster topic (JSON records), for the reps on it: a
/// rep who left (`"active": false`, or a tombstone) is not, as the services take it off.
fn on_roster(topic: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for r in read_topic(topic) {
        let Some(v) = r
            .value
            .and_then(|v| serde_json::from_slice::<Value>(&v).ok())
        else {
            if let Some(rep) = r.key.and_then(|k| String::from_utf8(k).ok()) {
                out.remove(&rep);
            }
            continue;
        };
        let rep = v["rep_id"].as_str().unwrap_or_default().to_owned();
        if v["active"].as_bool() != Some(false) {
            out.insert(rep, v);
        } else {
            out.remove(&rep);
        }
    }
    out
}

/// Each rep's `hired_at` on the roster topic, for the reps on it: a rep who left has no
/// hiring date and no ramp.
fn hiring_dates(topic: &str) -> BTreeMap<String, chrono::NaiveDate> {
    on_roster(topic)
        .into_iter()
        .filter_map(|(rep, v)| Some((rep, v["hired_at"].as_str()?.parse().ok()?)))
        .collect()
}

/// First and end (exclusive) day of a period named as in the plan (fiscal year = calendar
/// year): FY2026, 2026-Q4, 2026-12, 2026-W49.
fn period_days(name: &str) -> (chrono::NaiveDate, chrono::NaiveDate) {
    use chrono::NaiveDate;
    let ymd = |y: i32, m: u32| NaiveDate::from_ymd_opt(y, m, 1).expect("date");
    let months = |d: NaiveDate, n: u32| d.checked_add_months(chrono::Months::new(n)).expect("date");
    if let Some(y) = name.strip_prefix("FY") {
        let s = ymd(y.parse().expect("year"), 1);
        return (s, months(s, 12));
    }
    let (y, rest) = name.split_once('-').expect("a period");
    let y: i32 = y.parse().expect("year");
    if let Some(q) = rest.strip_prefix('Q') {
        let s = ymd(y, 3 * (q.parse::<u32>().expect("quarter") - 1) + 1);
        (s, months(s, 3))
    } else if let Some(w) = rest.strip_prefix('W') {
        let s = NaiveDate::from_isoywd_opt(y, w.parse().expect("week"), chrono::Weekday::Mon)
            .expect("week");
        (s, s + chrono::Duration::days(7))
    } else {
        let s = ymd(y, rest.parse().expect("month"));
        (s, months(s, 1))
    }
}

/// The plan with each rep's targets scaled by its ramp share (docs/targets.md): per day of
/// the period, 0 before the hiring day, the schedule's percent for the month of tenure the day
/// falls in (month m starts m calendar months after hiring), 100 % after the schedule; the
/// mean over the days, times the target, to the cent. Returns the reps in ramp, too.
fn ramped(
    plan: Plan,
    hired: &BTreeMap<String, chrono::NaiveDate>,
    schedule: &[rust_decimal::Decimal],
) -> (Plan, BTreeMap<(String, String), f64>) {
    use rust_decimal::prelude::ToPrimitive;
    use rust_decimal::Decimal;
    let mut in_ramp = BTreeMap::new();
    let mut out = Plan::new();
    for ((scope, id, metric, period), value) in plan {
        let mut v = value;
        if let (true, Some(h), false) = (scope == "rep", hired.get(&id), schedule.is_empty()) {
            let (first, end) = period_days(&period);
            let mut sum = Decimal::ZERO;
            let mut days = 0;
            let mut d = first;
            while d < end {
                sum += if d < *h {
                    Decimal::ZERO
                } else {
                    let mut m = 0;
                    while *h + chrono::Months::new(m + 1) <= d {
                        m += 1;
                    }
                    schedule
                        .get(m as usize)
                        .map_or(Decimal::ONE, |p| *p / Decimal::ONE_HUNDRED)
                };
                days += 1;
                d += chrono::Duration::days(1);
            }
            let share = sum / Decimal::from(days);
            if share < Decimal::ONE {
                let exact: Decimal = value.to_string().parse().expect("decimal");
                v = (exact * share)
                    .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
                    .to_f64()
                    .expect("f64");
                in_ramp.insert((id.clone(), period.clone()), share.to_f64().expect("f64"));
            }
        }
        out.insert((scope, id, metric, period), v);
    }
    (out, in_ramp)
}

/// `sales_rep_ramp_ratio` of every rep in ramp for the current periods, no other, and the rep
/// board's "Quota ramp (quarter)" of `rep` (100 % when fully ramped). Returns what differs.
async fn ramp_differences(
    client: &reqwest::Client,
    port: u16,
    in_ramp: &BTreeMap<(String, String), f64>,
    rep: &str,
) -> Vec<String> {
    let current: Vec<String> = current_periods().into_iter().map(|p| p.1).collect();
    let want: BTreeMap<(String, String), f64> = in_ramp
        .iter()
        .filter(|((_, p), _)| current.contains(p))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let mut diffs = Vec::new();
    match instant(client, port, "sales_rep_ramp_ratio").await {
        Ok(series) => {
            let got: BTreeMap<(String, String), f64> = series
                .into_iter()
                .map(|(l, v)| {
                    let key = (
                        l.get("rep").cloned().unwrap_or_default(),
                        l.get("period").cloned().unwrap_or_default(),
                    );
                    (key, v)
                })
                .collect();
            if got.keys().ne(want.keys()) {
                diffs.push(format!(
                    "sales_rep_ramp_ratio for {:?}, want {:?}",
                    got.keys(),
                    want.keys()
                ));
            }
            for (k, w) in &want {
                expect(
                    &mut diffs,
                    format!("sales_rep_ramp_ratio {k:?}"),
                    got.get(k).copied(),
                    *w,
                );
            }
        }
        Err(e) => diffs.push(format!("sales_rep_ramp_ratio: {e}")),
    }
    let quarter = &current_periods()[1].1;
    let expr = substitute(
        &board_query("rep.json", "Quota ramp (quarter)", "A"),
        &[("rep", rep)],
    );
    let got = instant(client, port, &expr)
        .await
        .ok()
        .and_then(|s| s.first().map(|(_, v)| *v));
    let want_rep = want
        .get(&(rep.to_owned(), quarter.clone()))
        .copied()
        .unwrap_or(1.0);
    expect(
        &mut diffs,
        format!("rep / Quota ramp (quarter) / {rep}"),
        got,
        want_rep,
    );
    diffs
}

/// The names of the current fiscal year, quarter, month and ISO week, from the clock (fiscal
/// year = calendar year in UTC, as in config/salespulse.toml), with their to-date windows.
fn current_periods() -> [(&'static str, String, &'static str); 4] {
    use chrono::Datelike;
    let d = chrono::Utc::now().date_naive();
    let w = d.iso_week();
    [
        ("year", format!("FY{}", d.year()), "ytd"),
        (
            "quarter",
            format!("{}-Q{}", d.year(), d.month0() / 3 + 1),
            "qtd",
        ),
        ("month", format!("{}-{:02}", d.year(), d.month()), "mtd"),
        ("week", format!("{}-W{:02}", w.year(), w.week()), "wtd"),
    ]
}

/// The expression of query `ref_id` of the panel titled `title` on board `file`.
fn board_query(file: &str, title: &str, ref_id: &str) -> String {
    let path = root().join("deploy/grafana/dashboards").join(file);
    let board: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("board")).expect("JSON");
    panels(&board)
        .into_iter()
        .filter(|p| p["title"] == title)
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .find(|t| t["refId"] == ref_id)
        .and_then(|t| t["expr"].as_str())
        .unwrap_or_else(|| panic!("{file} has no panel {title:?} with query {ref_id}"))
        .to_owned()
}

/// Sum of the series of family `name` carrying the labels `with` in exposition `text`, per
/// value of label `key`. The services' ids need no escapes.
fn sums_by(text: &str, name: &str, with: &[(&str, &str)], key: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((family, labels)) = series.split_once('{') else {
            continue;
        };
        if family != name {
            continue;
        }
        let labels: BTreeMap<&str, &str> = labels
            .trim_end_matches('}')
            .split("\",")
            .filter_map(|l| l.split_once("=\""))
            .map(|(k, v)| (k, v.trim_end_matches('"')))
            .collect();
        if with.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            if let (Some(k), Ok(v)) = (labels.get(key), value.parse::<f64>()) {
                *out.entry((*k).to_owned()).or_insert(0.0) += v;
            }
        }
    }
    out
}

/// The label sets of the series of family `name` in exposition `text` (escapes undone).
fn series_of(text: &str, name: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let chars: Vec<char> = rest.chars().collect();
        let mut labels = BTreeMap::new();
        let mut i = 0;
        while i < chars.len() && chars[i] != '}' {
            let start = i;
            while i < chars.len() && chars[i] != '=' {
                i += 1;
            }
            let key: String = chars[start..i].iter().collect();
            i += 2; // `="`
            let mut value = String::new();
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                    match chars.get(i) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(*c),
                        None => {}
                    }
                } else {
                    value.push(chars[i]);
                }
                i += 1;
            }
            i += 1; // the closing quote
            if chars.get(i) == Some(&',') {
                i += 1;
            }
            labels.insert(key.trim().to_owned(), value);
        }
        out.push(labels);
    }
    out
}

/// Each rep's name as the deals service publishes it: `sales_rep_info{rep, name}`.
fn roster_names(deals: &str) -> BTreeMap<String, String> {
    series_of(deals, "sales_rep_info")
        .into_iter()
        .filter_map(|l| Some((l.get("rep")?.clone(), l.get("name")?.clone())))
        .collect()
}

/// A name as the simulator's roster gives it (services/simulator/src/org.rs): "First Last".
fn is_roster_name(name: &str) -> bool {
    let words: Vec<&str> = name.split(' ').collect();
    words.len() == 2
        && words.iter().all(|w| {
            w.chars().next().is_some_and(char::is_uppercase)
                && w.chars().skip(1).all(char::is_lowercase)
        })
}

/// Compares the names the boards show with the roster's (`sales_rep_info` on the deals
/// service's /metrics): the sales floor's leaderboard lists every rep with bookings this
/// quarter once, under its roster name, with its bookings; every series of every board query
/// that carries a rep carries its name and is not doubled by the join; the `$rep` picker
/// lists the team's members under their names. Returns what differs.
async fn name_differences(
    client: &reqwest::Client,
    port: u16,
    deals: &str,
    rep: &str,
) -> Vec<String> {
    let names = roster_names(deals);
    let expected = |r: &str| names.get(r).cloned().unwrap_or_else(|| r.to_owned());
    let mut diffs = Vec::new();
    if names.is_empty() {
        diffs.push("no sales_rep_info on the deals service".to_owned());
    }
    for (r, n) in &names {
        if !is_roster_name(n) {
            diffs.push(format!(
                "sales_rep_info: {r} is named {n:?}, not a roster name"
            ));
        }
    }

    // The TV's leaderboard.
    let title = "Leaderboard: bookings this quarter";
    let expr = board_query("sales-floor.json", title, "A");
    let booked = by_label(
        client,
        port,
        "sum by (rep) (sales_rep_bookings{window=\"qtd\"})",
        "rep",
    )
    .await
    .unwrap_or_default();
    match instant(client, port, &expr).await {
        Ok(series) => {
            let mut rows: BTreeMap<String, Vec<(Option<String>, f64)>> = BTreeMap::new();
            for (labels, v) in &series {
                let r = labels.get("rep").cloned().unwrap_or_default();
                rows.entry(r)
                    .or_default()
                    .push((labels.get("name").cloned(), *v));
            }
            for (r, row) in &rows {
                if row.len() != 1 {
                    diffs.push(format!("{title}: {r} on {} rows: {row:?}", row.len()));
                }
                let (name, v) = &row[0];
                if name.as_deref() != Some(expected(r).as_str()) {
                    diffs.push(format!(
                        "{title}: {r} named {name:?}, the roster says {:?}",
                        expected(r)
                    ));
                }
                expect(
                    &mut diffs,
                    format!("{title} / {r} bookings"),
                    booked.get(r).copied(),
                    *v,
                );
            }
            let listed: Vec<&String> = rows.keys().collect();
            let wanted: Vec<&String> = booked.keys().collect();
            if listed != wanted {
                diffs.push(format!("{title}: reps {listed:?}, want {wanted:?}"));
            }
        }
        Err(e) => diffs.push(format!("{title}: {e}")),
    }

    // Every query of every board: a rep's series carries its name, once.
    for q in queries() {
        let expr = substitute(&q.expr, &[("team", team()), ("rep", rep)]);
        let Ok(series) = instant(client, port, &expr).await else {
            continue; // reported by the queries' own check
        };
        let mut seen = std::collections::BTreeSet::new();
        for (labels, _) in &series {
            let Some(r) = labels.get("rep") else { continue };
            if labels.get("name") != Some(&expected(r)) {
                diffs.push(format!(
                    "{}: {r} named {:?}, the roster says {:?}",
                    q.origin,
                    labels.get("name"),
                    expected(r)
                ));
            }
            let mut key = labels.clone();
            key.remove("name");
            if !seen.insert(key.clone()) {
                diffs.push(format!("{}: {key:?} twice", q.origin));
            }
        }
    }

    // The `$rep` picker: the team's members on the roster, each under its name.
    let members: std::collections::BTreeSet<String> = series_of(deals, "sales_rep_member")
        .into_iter()
        .filter(|l| l.get("team").map(String::as_str) == Some(team()))
        .filter_map(|l| l.get("rep").cloned())
        .collect();
    let (query, _) = queries()
        .into_iter()
        .find(|q| q.origin == "rep.json / variable rep")
        .map(|q| (q.expr, ()))
        .expect("the rep board's $rep");
    match instant(client, port, &substitute(&query, &[("team", team())])).await {
        Ok(series) => {
            let mut listed = std::collections::BTreeSet::new();
            for (labels, _) in &series {
                let keys: Vec<&String> = labels.keys().collect();
                if keys != ["name", "rep"] {
                    diffs.push(format!("$rep: labels {keys:?}, want [name, rep]"));
                }
                let r = labels.get("rep").cloned().unwrap_or_default();
                if labels.get("name") != Some(&expected(&r)) {
                    diffs.push(format!("$rep: {r} named {:?}", labels.get("name")));
                }
                if !listed.insert(r.clone()) {
                    diffs.push(format!("$rep: {r} twice"));
                }
            }
            if listed != members {
                diffs.push(format!(
                    "$rep: lists {listed:?}, the team's members are {members:?}"
                ));
            }
        }
        Err(e) => diffs.push(format!("$rep: {e}")),
    }
    diffs
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1.0)
}

/// Notes in `diffs` when `got` is not `want`.
fn expect(diffs: &mut Vec<String>, what: String, got: Option<f64>, want: f64) {
    if !got.is_some_and(|g| close(g, want)) {
        diffs.push(format!("{what}: got {got:?}, want {want}"));
    }
}

/// An instant query's series by the value of `label`.
async fn by_label(
    client: &reqwest::Client,
    port: u16,
    expr: &str,
    label: &str,
) -> Result<BTreeMap<String, f64>, String> {
    Ok(instant(client, port, expr)
        .await?
        .into_iter()
        .filter_map(|(l, v)| Some((l.get(label)?.clone(), v)))
        .collect())
}

/// Compares the key target panels of the boards with values computed here from the plan and
/// the deals service's /metrics; returns what differs.
async fn value_differences(
    client: &reqwest::Client,
    port: u16,
    plan: &Plan,
    deals: &str,
    rep: &str,
) -> Vec<String> {
    let periods = current_periods();
    let quarter = periods[1].1.clone();
    let target = |scope: &str, id: &str, period: &str| {
        plan.get(&(scope.into(), id.into(), "bookings".into(), period.into()))
            .copied()
    };
    let teams: Vec<String> = plan
        .keys()
        .filter(|k| k.0 == "team" && k.2 == "bookings" && k.3 == quarter)
        .map(|k| k.1.clone())
        .collect();
    let reps: Vec<String> = plan
        .keys()
        .filter(|k| k.0 == "rep" && k.2 == "bookings" && k.3 == quarter)
        .map(|k| k.1.clone())
        .collect();
    let team_qtd = sums_by(deals, "sales_team_bookings", &[("window", "qtd")], "team");
    let rep_booked =
        |window: &str| sums_by(deals, "sales_rep_bookings", &[("window", window)], "rep");
    let rep_qtd = rep_booked("qtd");
    let mut diffs = Vec::new();

    // Sales floor, "Teams: bookings against quarter target": each team's current quarter
    // target as the plan has it (not its four quarters added up), next to its bookings.
    let floor = "sales-floor.json";
    let title = "Teams: bookings against quarter target";
    match by_label(client, port, &board_query(floor, title, "B"), "team").await {
        Ok(got) => {
            for team in &teams {
                let want = target("team", team, &quarter).unwrap_or_default();
                let four: f64 = (1..=4)
                    .filter_map(|q| target("team", team, &format!("{}Q{q}", &quarter[..5])))
                    .sum();
                let g = got.get(team).copied();
                let note = if g.is_some_and(|g| close(g, four)) {
                    " (the sum of the four quarters)"
                } else {
                    ""
                };
                expect(&mut diffs, format!("{title} / B / {team}{note}"), g, want);
            }
            if got.len() != teams.len() {
                diffs.push(format!("{title} / B: teams {:?}", got.keys()));
            }
        }
        Err(e) => diffs.push(format!("{title} / B: {e}")),
    }
    match by_label(client, port, &board_query(floor, title, "A"), "team").await {
        Ok(got) => {
            for team in &teams {
                let want = team_qtd.get(team).copied().unwrap_or_default();
                expect(
                    &mut diffs,
                    format!("{title} / A / {team}"),
                    got.get(team).copied(),
                    want,
                );
            }
        }
        Err(e) => diffs.push(format!("{title} / A: {e}")),
    }
    // Attainment = bookings this quarter (deals service) / the current quarter's target.
    let title = "Teams: quarter attainment";
    match by_label(client, port, &board_query(floor, title, "A"), "team").await {
        Ok(got) => {
            for team in &teams {
                let booked = team_qtd.get(team).copied().unwrap_or_default();
                let want = booked / target("team", team, &quarter).unwrap_or(f64::NAN);
                expect(
                    &mut diffs,
                    format!("{title} / {team}"),
                    got.get(team).copied(),
                    want,
                );
            }
        }
        Err(e) => diffs.push(format!("{title}: {e}")),
    }
    // "+12 % against the same point last quarter": this quarter to date over last quarter up
    // to the same elapsed share, per team, as the deals service exposes both windows.
    let title = "Teams: bookings against the same point last quarter";
    let team_lqtd = sums_by(
        deals,
        "sales_team_bookings",
        &[("window", "last_quarter_to_date")],
        "team",
    );
    match by_label(client, port, &board_query(floor, title, "A"), "team").await {
        Ok(got) => {
            for (team, before) in team_lqtd.iter().filter(|(_, v)| **v > 0.0) {
                let now = team_qtd.get(team).copied().unwrap_or_default();
                expect(
                    &mut diffs,
                    format!("{title} / {team}"),
                    got.get(team).copied(),
                    now / before - 1.0,
                );
            }
            if team_lqtd.values().all(|v| *v <= 0.0) {
                diffs.push(format!(
                    "{title}: no team booked anything by this point last quarter"
                ));
            }
        }
        Err(e) => diffs.push(format!("{title}: {e}")),
    }
    let title = "Quota attainment this quarter";
    match by_label(client, port, &board_query(floor, title, "A"), "rep").await {
        Ok(got) => {
            for r in &reps {
                let booked = rep_qtd.get(r).copied().unwrap_or_default();
                let want = booked / target("rep", r, &quarter).unwrap_or(f64::NAN);
                expect(
                    &mut diffs,
                    format!("{title} / {r}"),
                    got.get(r).copied(),
                    want,
                );
            }
        }
        Err(e) => diffs.push(format!("{title}: {e}")),
    }
    // Sales floor, regions: each region's bookings this quarter (the deals service's) and its
    // attainment of the plan's quarter target.
    let region_qtd = sums_by(
        deals,
        "sales_region_bookings",
        &[("window", "qtd")],
        "region",
    );
    let regions: Vec<String> = plan
        .keys()
        .filter(|k| k.0 == "region" && k.2 == "bookings" && k.3 == quarter)
        .map(|k| k.1.clone())
        .collect();
    if regions.is_empty() || regions.iter().any(|r| !region_qtd.contains_key(r)) {
        diffs.push(format!(
            "regions: plan {regions:?}, deals service {:?}",
            region_qtd.keys()
        ));
    }
    for (title, want_of) in [
        ("Regions: bookings this quarter", None),
        ("Regions: quarter attainment", Some(())),
    ] {
        match by_label(client, port, &board_query(floor, title, "A"), "region").await {
            Ok(got) => {
                for r in &regions {
                    let booked = region_qtd.get(r).copied().unwrap_or_default();
                    let want = match want_of {
                        None => booked,
                        Some(()) => booked / target("region", r, &quarter).unwrap_or(f64::NAN),
                    };
                    expect(
                        &mut diffs,
                        format!("{title} / {r}"),
                        got.get(r).copied(),
                        want,
                    );
                }
            }
            Err(e) => diffs.push(format!("{title}: {e}")),
        }
    }
    // Pipeline and forecast, "Target (quarter)": the org's current quarter.
    let title = "Target (quarter)";
    let got = instant(
        client,
        port,
        &board_query("pipeline-forecast.json", title, "A"),
    )
    .await
    .ok()
    .and_then(|s| s.first().map(|(_, v)| *v));
    expect(
        &mut diffs,
        title.to_owned(),
        got,
        target("org", "org", &quarter).unwrap_or(f64::NAN),
    );
    // Team board, "Gap to quarter target" of $team.
    let title = "Gap to quarter target";
    let expr = substitute(&board_query("team.json", title, "A"), &[("team", team())]);
    let got = instant(client, port, &expr)
        .await
        .ok()
        .and_then(|s| s.first().map(|(_, v)| *v));
    let booked = team_qtd.get(team()).copied().unwrap_or_default();
    let want = (target("team", team(), &quarter).unwrap_or(f64::NAN) - booked).max(0.0);
    expect(
        &mut diffs,
        format!("team / {title} / {}", team()),
        got,
        want,
    );
    // Rep board: the quarter's attainment and target, and attainment by period: the current
    // year, quarter, month and week, each its window's bookings over its own target.
    let vars = [("team", team()), ("rep", rep)];
    let booked = rep_qtd.get(rep).copied().unwrap_or_default();
    let rep_target = target("rep", rep, &quarter).unwrap_or(f64::NAN);
    for (title, ref_id, want) in [
        ("Quarter attainment", "A", booked / rep_target),
        (
            "Bookings this quarter against target and team median",
            "C",
            rep_target,
        ),
    ] {
        let expr = substitute(&board_query("rep.json", title, ref_id), &vars);
        let got = instant(client, port, &expr)
            .await
            .ok()
            .and_then(|s| s.first().map(|(_, v)| *v));
        expect(
            &mut diffs,
            format!("rep / {title} / {ref_id} / {rep}"),
            got,
            want,
        );
    }
    let title = "Attainment by period";
    let expr = substitute(&board_query("rep.json", title, "A"), &vars);
    match by_label(client, port, &expr, "period").await {
        Ok(got) => {
            let names: Vec<&String> = got.keys().collect();
            let mut want_names: Vec<&String> = periods.iter().map(|p| &p.1).collect();
            want_names.sort();
            if names != want_names {
                diffs.push(format!(
                    "rep / {title}: periods {names:?}, want {want_names:?}"
                ));
            }
            for (_, period, window) in &periods {
                let booked = rep_booked(window).get(rep).copied().unwrap_or_default();
                let want = booked / target("rep", rep, period).unwrap_or(f64::NAN);
                expect(
                    &mut diffs,
                    format!("rep / {title} / {period}"),
                    got.get(period).copied(),
                    want,
                );
            }
        }
        Err(e) => diffs.push(format!("rep / {title}: {e}")),
    }
    // One elapsed share per period type: the current ones.
    match by_label(client, port, "sales_period_elapsed_ratio", "period").await {
        Ok(got) => {
            let names: Vec<&String> = got.keys().collect();
            let mut want: Vec<&String> = periods.iter().map(|p| &p.1).collect();
            want.sort();
            if names != want {
                diffs.push(format!(
                    "sales_period_elapsed_ratio: periods {names:?}, want {want:?}"
                ));
            }
        }
        Err(e) => diffs.push(format!("sales_period_elapsed_ratio: {e}")),
    }
    diffs
}

/// The terminal board (`salespulse-board --once`): each team's current quarter target as the
/// plan has it in the team rows, and each rep row under its roster name (`names`, rep →
/// name; the id for a rep the roster does not name). Returns what differs.
fn terminal_board_differences(
    dport: u16,
    tport: u16,
    plan: &Plan,
    names: &BTreeMap<String, String>,
) -> Vec<String> {
    let quarter = current_periods()[1].1.clone();
    let out = Command::new(bin("salespulse-board"))
        .args(["--once", "--no-color"])
        .args(["--deals-url", &format!("http://127.0.0.1:{dport}/metrics")])
        .args([
            "--targets-url",
            &format!("http://127.0.0.1:{tport}/metrics"),
        ])
        .output()
        .expect("salespulse-board runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut diffs = Vec::new();
    if !out.status.success() || !text.lines().next().unwrap_or_default().contains(&quarter) {
        diffs.push(format!("terminal board: not on quarter {quarter}:\n{text}"));
    }
    for ((scope, team, metric, period), value) in plan {
        if scope != "team" || metric != "bookings" || *period != quarter {
            continue;
        }
        // The board's money format: 4,200,000.00.
        let digits = format!("{value:.0}");
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        let want = format!("{grouped}.00");
        let row = text.lines().find(|l| l.starts_with(team.as_str()));
        if !row.is_some_and(|r| r.split_whitespace().any(|cell| cell == want)) {
            diffs.push(format!(
                "terminal board: team {team} row {row:?} lacks target {want}"
            ));
        }
    }
    // The rep rows: `#  Rep  Team  Bookings qtd ...`, columns two spaces apart (a name has
    // one space).
    let mut lines = text
        .lines()
        .skip_while(|l| !(l.contains(" Rep ") && l.contains(" Team ") && l.contains(" Bookings ")));
    let header = lines.next();
    let mut shown = Vec::new();
    for row in lines.take_while(|l| !l.trim().is_empty() && !l.starts_with("showing ")) {
        let cells: Vec<&str> = row
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let cell = if cells.first().is_some_and(|c| c.parse::<u64>().is_ok()) {
            cells.get(1)
        } else {
            cells.first()
        };
        let cell = cell.copied().unwrap_or_default();
        let named = names.values().any(|n| n == cell);
        let unnamed_id = !names.contains_key(cell) && cell.starts_with("rep-");
        if !(named || unnamed_id) {
            diffs.push(format!(
                "terminal board: rep row {row:?} shows {cell:?}, not a roster name"
            ));
        }
        shown.push(cell.to_owned());
    }
    if header.is_none() || !shown.iter().any(|c| names.values().any(|n| n == c)) {
        diffs.push(format!("terminal board: no rep under its name:\n{text}"));
    }
    diffs
}

/// The rep of the big win booked before the simulator runs, and the amount of the big wins
/// the test books itself.
const EARLY_WIN_REP: &str = "rep-001";
const BIG_WIN_AMOUNT: &str = "123456.78";

/// A deal won now by `rep` for [`BIG_WIN_AMOUNT`] (above `alerts.big_deal_amount`), under the
/// rep's roster team.
async fn produce_big_win(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    deal: &str,
    rep: &str,
) {
    let now = chrono::Utc::now();
    let at =
        |d: chrono::DateTime<chrono::Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let v = serde_json::json!({"event_id": format!("{deal}-won"), "deal_id": deal,
        "rep_id": rep, "stage": "closed_won", "amount": BIG_WIN_AMOUNT,
        "currency": "USD", "created_at": at(now - chrono::Duration::days(1)), "occurred_at": at(now)});
    produce_json(p, topic, deal, &v).await;
}

/// A celebration's time as the ticker takes it: a big win's close, else its decision.
fn celebration_time(v: &Value) -> Option<i64> {
    let at = v.get("closed_at").or_else(|| v.get("at"))?.as_str()?;
    Some(chrono::DateTime::parse_from_rfc3339(at).ok()?.timestamp())
}

/// The sales floor's ticker against `sales.celebrations` read independently: after a big win
/// booked now, the panel's rows are the newest (at most 10 of each kind, the default) of
/// today's (UTC) celebrations on the topic, the big win with its amount and the rep's roster
/// name. The win goes to the first rep on the roster at the end of the simulated history
/// (the simulator deactivates some reps, depending on the day it runs). Returns how many rows
/// it showed, the newest's headline and the rep of the big win.
async fn ticker_check(
    client: &reqwest::Client,
    port: u16,
    producer: &rdkafka::producer::FutureProducer,
    topics: &Topics,
    deals: &str,
) -> (usize, String, String) {
    let info = series_of(deals, "sales_rep_info");
    let roster = info
        .iter()
        .filter(|l| l.contains_key("rep"))
        .min_by_key(|l| l.get("rep").cloned())
        .expect("the simulated roster has reps with sales_rep_info");
    let rep = roster["rep"].clone();
    let (name, team) = (roster.get("name"), roster.get("team"));
    const SHOWN: usize = 10;
    produce_big_win(producer, &topics.deals, "ticker-late", &rep).await;
    let when = board_query("sales-floor.json", "Today's wins and celebrations", "A");
    let amount = board_query("sales-floor.json", "Today's wins and celebrations", "B");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let today = chrono::Utc::now().date_naive();
        let topic = topics.celebrations.clone();
        let on_topic = tokio::task::spawn_blocking(move || read_topic(&topic))
            .await
            .expect("reading the celebrations");
        let mut by_kind: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for c in &on_topic {
            let Some(key) = c.key.clone().and_then(|k| String::from_utf8(k).ok()) else {
                continue;
            };
            let Some(v) = c
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<Value>(v).ok())
            else {
                continue;
            };
            let Some(t) = celebration_time(&v) else {
                continue;
            };
            if chrono::DateTime::from_timestamp(t, 0).map(|d| d.date_naive()) == Some(today) {
                let kind = v["celebration"].as_str().unwrap_or_default().to_owned();
                by_kind.entry(kind).or_default().push((t, key));
            }
        }
        let mut want: Vec<(i64, String)> = Vec::new();
        for mut of_kind in by_kind.into_values() {
            of_kind.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            want.extend(of_kind.into_iter().take(SHOWN));
        }
        want.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let shown = instant(client, port, &when).await.unwrap_or_default();
        let amounts = instant(client, port, &amount).await.unwrap_or_default();
        let mut got: Vec<(i64, String)> = shown
            .iter()
            .map(|(l, v)| {
                (
                    (v / 1000.0) as i64,
                    l.get("id").cloned().unwrap_or_default(),
                )
            })
            .collect();
        got.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut diffs = Vec::new();
        if got != want {
            diffs.push(format!(
                "rows {got:?}, want the topic's newest of today {want:?}"
            ));
        }
        let late = shown
            .iter()
            .find(|(l, _)| l.get("id").map(String::as_str) == Some("big_win/ticker-late"));
        let late_amount = amounts
            .iter()
            .find(|(l, _)| l.get("id").map(String::as_str) == Some("big_win/ticker-late"))
            .map(|(_, v)| *v);
        match late {
            None => diffs.push("the big win booked now is not shown".to_owned()),
            Some((l, _)) => {
                if l.get("name") != name || l.get("team") != team {
                    diffs.push(format!(
                        "the big win shows {l:?}, want {rep}'s roster name {name:?} and team {team:?}"
                    ));
                }
                if l.get("headline").map(String::as_str) != Some("Won deal ticker-late") {
                    diffs.push(format!("headline {:?}", l.get("headline")));
                }
            }
        }
        let want_amount: f64 = BIG_WIN_AMOUNT.parse().expect("amount");
        if late_amount != Some(want_amount) {
            diffs.push(format!(
                "the big win's amount {late_amount:?}, want {want_amount}"
            ));
        }
        if amounts
            .iter()
            .any(|(l, _)| !l.get("id").is_some_and(|i| i.starts_with("big_win/")))
        {
            diffs.push(format!(
                "an amount for a celebration that is no big win: {amounts:?}"
            ));
        }
        if diffs.is_empty() {
            return (
                got.len(),
                late.map(|(l, _)| l.get("headline").cloned().unwrap_or_default())
                    .unwrap_or_default(),
                rep,
            );
        }
        assert!(
            Instant::now() < deadline,
            "the ticker does not show today's newest celebrations:\n{}",
            diffs.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn check_alive(services: &mut [&mut Service]) {
    for s in services.iter_mut() {
        if let Ok(Some(status)) = s.child.try_wait() {
            panic!("{} exited with {status}:\n{}", s.name, log_tail(&s.log));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_on_simulated_data() {
    require_broker();
    let started = Instant::now();
    let queries = queries();
    for q in &queries {
        let expr = substitute(&q.expr, &[("team", "team-emea"), ("rep", "rep-000")]);
        assert!(!has_variable(&expr), "{}: unsubstituted variable", q.origin);
    }
    let topics = Topics::unique("dashboards-live");
    let group = format!("g-{}", topics.suffix);
    let tmp = std::env::temp_dir();

    let simulator = bin("salespulse-simulator");

    let (dport, aport, tport) = (free_port(), free_port(), free_port());
    let mut deals = Service::start("deals", &topics, dport, &group);
    let mut acts = Service::start("activities", &topics, aport, &group);
    let mut targets = Service::start("targets", &topics, tport, &group);
    deals.wait_ready(Duration::from_secs(60)).await;
    acts.wait_ready(Duration::from_secs(60)).await;
    targets.wait_ready(Duration::from_secs(60)).await;
    println!(
        "services built and ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let prometheus = Prometheus::start(&[dport, aport, tport], "dashboards-live");
    prometheus_ready(prometheus.port, Duration::from_secs(30)).await;
    let client = http();
    let probes = [
        Query {
            origin: "probe".into(),
            expr: "sales_rep_bookings{rep=\"no-such-rep\"}".into(),
        },
        Query {
            origin: "probe".into(),
            expr: "sum(sales_rep_bookings".into(),
        },
    ];
    let probed = failures(&client, prometheus.port, &probes, ("", "")).await;
    assert!(
        probed.len() == 2 && probed[0].1.ends_with("no series") && probed[1].1.contains("bad_data"),
        "an empty and a malformed query are reported as such: {probed:?}"
    );

    // A big win of today whatever the hour (the ticker's amounts have a series), before the
    // simulator's records so that the newest record is still one of the simulator's.
    let producer = producer();
    produce_big_win(&producer, &topics.deals, "ticker-early", EARLY_WIN_REP).await;
    // Half a year of history for the simulated org (complete weeks for the consistency table,
    // the whole of last quarter for the closed-period and same-point panels), as fast as the
    // broker takes it.
    let sim_started = chrono::Utc::now().timestamp_millis() as f64;
    let sim_log = tmp.join(format!("{}-simulator.log", topics.suffix));
    let status = run_bounded(
        Command::new(&simulator)
            .args(["--bootstrap", &bootstrap()])
            .args(["--deals-topic", &topics.deals])
            .args(["--activities-topic", &topics.activities])
            .args(["--roster-topic", &topics.roster])
            .args([
                "--seed",
                "42",
                "--backfill-days",
                "190",
                "--backfill-rate",
                "16",
            ])
            .args(["--records", "80000", "--rate", "0"])
            .env("RUST_LOG", "info"),
        &sim_log,
        Duration::from_secs(180),
    );
    assert!(
        status.success(),
        "the simulator failed:\n{}",
        log_tail(&sim_log)
    );
    let sim_finished = Instant::now();
    let roster = topics.roster.clone();
    let chosen = tokio::task::spawn_blocking(move || choose_team(&roster))
        .await
        .expect("reading the roster");
    TEAM.set(chosen).expect("the team is chosen once");
    let team = team();
    println!(
        "simulator done after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The sample targets of the simulated org, for the current periods.
    let csv = tmp.join(format!("{}-targets.csv", topics.suffix));
    let status = run_bounded(
        Command::new("bash").arg(root().join("scripts/sample-targets.sh")),
        &csv,
        Duration::from_secs(30),
    );
    assert!(status.success(), "sample-targets.sh failed");
    let import_log = tmp.join(format!("{}-import.log", topics.suffix));
    let status = run_bounded(
        &mut targets_import(&topics, &csv),
        &import_log,
        Duration::from_secs(60),
    );
    assert!(
        status.success(),
        "importing the sample targets failed:\n{}",
        log_tail(&import_log)
    );

    // Every deal and activity consumed and committed.
    for topic in [&topics.deals, &topics.activities] {
        let (group, topic) = (group.clone(), topic.clone());
        tokio::task::spawn_blocking(move || {
            wait_committed(&group, &topic, Duration::from_secs(120));
        })
        .await
        .expect("waiting for the commits");
    }
    println!(
        "records consumed after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Records have just arrived: the banner on every board says live, at the newest one's
    // time (the Kafka timestamp of a record the simulator just sent). A scrape may predate
    // the tick that exported the last records: the time counts once three scrapes agree.
    let banner = banner_query(&rendered_boards(&[]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: Vec<f64> = Vec::new();
    let newest_ms = loop {
        let said = banner_says(&client, prometheus.port, &banner).await;
        if let Ok(said) = &said {
            if let (1, Some(at)) = (said.len(), said.get(LIVE)) {
                seen.push(*at);
                if seen.len() >= 3 && seen[seen.len() - 3..].iter().all(|t| t == at) {
                    break *at;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the banner does not say live with records just consumed: {said:?}\n{banner}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let now_ms = chrono::Utc::now().timestamp_millis() as f64;
    assert!(
        (sim_started - 1000.0..=now_ms).contains(&newest_ms),
        "the banner's newest record at {newest_ms} ms, not during the simulator's run ({sim_started} to {now_ms})"
    );

    // Until every query returns series. `$rep` is the first of the team's reps, most
    // bookings this quarter first, for whom every query of the boards does.
    let (shared, per_rep): (Vec<Query>, Vec<Query>) = queries
        .into_iter()
        .partition(|q| !q.expr.contains("$rep") && !q.expr.contains("${rep}"));
    let deadline = Instant::now() + SETTLE;
    let (rep, failed, skipped) = loop {
        check_alive(&mut [&mut deals, &mut acts, &mut targets]);
        let mut failed = failures(&client, prometheus.port, &shared, (team, "")).await;
        let mut rep = String::new();
        let mut skipped = Vec::new();
        if failed.is_empty() {
            let candidates = candidate_reps(&client, prometheus.port).await;
            if candidates.is_empty() {
                failed.push((
                    "variable rep".into(),
                    format!("no rep of {team} in sales_rep_member"),
                ));
            }
            let mut fewest: Option<(String, Vec<(String, String)>)> = None;
            for r in candidates {
                let f = failures(&client, prometheus.port, &per_rep, (team, &r)).await;
                if f.is_empty() {
                    rep = r;
                    fewest = None;
                    break;
                }
                let origins: Vec<&str> = f.iter().map(|(o, _)| o.as_str()).collect();
                skipped.push(format!("{r}: {}", origins.join("; ")));
                if fewest.as_ref().is_none_or(|(_, b)| f.len() < b.len()) {
                    fewest = Some((r, f));
                }
            }
            if let Some((r, f)) = fewest {
                rep = r;
                failed = f;
            }
        }
        if failed.is_empty() || Instant::now() >= deadline {
            break (rep, failed, skipped);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let total = shared.len() + per_rep.len();
    if !failed.is_empty() {
        // What the boards stand on, to tell a missing input from a missing computation.
        let mut context = Vec::new();
        for q in [
            "count by (team, metric, period_type) (sales_rep_target)",
            "count by (team) (sales_rep_bookings{window=\"qtd\"})",
            "count by (team) (sales_rep_rank{among=\"team\"})",
            "count by (team) (sales_team_open_deals)",
            "count by (team, period) (sales_team_forecast_rollup{period_type=\"quarter\"})",
            "count by (team, period) (sales_team_forecast_coverage{period_type=\"quarter\"})",
        ] {
            let got = instant(&client, prometheus.port, q).await;
            context.push(format!("{q}: {got:?}"));
        }
        panic!(
            "{} of {total} dashboard queries failed or returned no series after {SETTLE:?} ($team={team}, $rep={rep:?}):\n{}\n\ncontext:\n{}\n\ntargets service log:\n{}",
            failed.len(),
            failed.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("\n"),
            context.join("\n"),
            log_tail(&targets.log)
        );
    }
    for s in &skipped {
        println!("$rep: skipped {s}");
    }

    // The values: the current period's numbers of the full-year plan.
    // Reps in ramp carry a share of their plan targets: recomputed from the roster topic's
    // hiring dates and the configured schedule.
    let roster = topics.roster.clone();
    let hired = tokio::task::spawn_blocking(move || hiring_dates(&roster))
        .await
        .expect("reading the roster");
    let (plan, in_ramp) = ramped(read_plan(&csv), &hired, &ramp_schedule());
    assert!(
        !in_ramp.is_empty(),
        "the simulated org has reps in ramp (hiring dates {hired:?})"
    );
    let deadline = Instant::now() + VALUES;
    let checked = loop {
        check_alive(&mut [&mut deals, &mut acts, &mut targets]);
        let text = deals.metrics().await;
        let mut diffs = value_differences(&client, prometheus.port, &plan, &text, &rep).await;
        diffs.extend(name_differences(&client, prometheus.port, &text, &rep).await);
        diffs.extend(ramp_differences(&client, prometheus.port, &in_ramp, &rep).await);
        diffs.extend(terminal_board_differences(
            dport,
            tport,
            &plan,
            &roster_names(&text),
        ));
        if diffs.is_empty() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the boards do not show the current period's numbers of the plan, or the reps' roster names, after {VALUES:?} ($team={team}, $rep={rep}):\n{}\n\ntargets service log:\n{}",
            diffs.join("\n"),
            log_tail(&targets.log)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let periods = current_periods();
    let quarter = &periods[1].1;
    println!(
        "dashboards live: reps in ramp this quarter (ramp share from the roster's hiring dates; their targets, attainment and sales_rep_ramp_ratio match): {}",
        in_ramp
            .iter()
            .filter(|((_, p), _)| p == quarter)
            .map(|((r, _), s)| format!("{r} {:.1} % (hired {})", s * 100.0, hired.get(r).map(|d| d.to_string()).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let team_targets: Vec<String> = plan
        .iter()
        .filter(|(k, _)| k.0 == "team" && k.2 == "bookings" && k.3 == *quarter)
        .map(|(k, v)| format!("{} {v}", k.1))
        .collect();
    let booked = sums_by(
        &checked,
        "sales_team_bookings",
        &[("window", "qtd")],
        "team",
    );
    println!(
        "dashboards live: plan of {} targets ({} of them bookings, deals won or pipeline created; current periods {}); team quarter targets on the sales floor {}; team bookings qtd {booked:?}; attainment, gap, org and rep targets, attainment by period and the terminal board match",
        std::fs::read_to_string(&csv)
            .map(|t| t.lines().count() - 1)
            .unwrap_or_default(),
        plan.len(),
        periods.iter().map(|p| p.1.as_str()).collect::<Vec<_>>().join(", "),
        team_targets.join(", ")
    );
    // No deal or activity since the simulator finished: with the default threshold (900 s)
    // the banner still says live; rendered with STALE_AFTER_SECONDS=2, at least 3 s later, it
    // says stale, for how long, and when the newest record came.
    let stale_boards = rendered_boards(&[("STALE_AFTER_SECONDS", "2")]);
    let stale_banner = banner_query(&stale_boards);
    assert!(
        stale_banner.contains("> time() - 2)") && stale_banner.replace("- 2)", "- 900)") == banner,
        "rendered with STALE_AFTER_SECONDS=2, only the threshold changes:\n{stale_banner}"
    );
    tokio::time::sleep(
        (sim_finished + Duration::from_secs(3)).saturating_duration_since(Instant::now()),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let (live, stale) = loop {
        let live = banner_says(&client, prometheus.port, &banner).await;
        let stale = banner_says(&client, prometheus.port, &stale_banner).await;
        let still_live = live
            .as_ref()
            .is_ok_and(|l| l.len() == 1 && l.get(LIVE) == Some(&newest_ms));
        let stale_now = stale.as_ref().is_ok_and(|s| {
            s.len() == 2
                && s.get(STALE_FOR).is_some_and(|m| *m >= 2.0 / 60.0)
                && s.get(LAST_AT) == Some(&newest_ms)
        });
        if still_live && stale_now {
            break (live, stale);
        }
        assert!(
            Instant::now() < deadline,
            "after the last record ({newest_ms} ms), the banner says {live:?} at 900 s and {stale:?} at 2 s; want live at 900 s, stale at 2 s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    println!("dashboards live: the banner says {live:?} with the default threshold, {stale:?} with STALE_AFTER_SECONDS=2 once the simulator has stopped");

    let names = roster_names(&checked);
    let (rows, newest, big_win_rep) =
        ticker_check(&client, prometheus.port, &producer, &topics, &checked).await;
    println!(
        "dashboards live: the ticker shows the {rows} newest of today's celebrations of each kind read from {}, among them a big win of {} for {} ({newest})",
        topics.celebrations, BIG_WIN_AMOUNT, big_win_rep
    );
    println!(
        "dashboards live: {} reps under their roster names on the leaderboard, every rep-listing query, the $rep picker and the terminal board (e.g. {})",
        names.len(),
        names
            .iter()
            .take(3)
            .map(|(r, n)| format!("{r} = {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "dashboards live: {total} queries, all returned series ($team={team}, $rep={rep}; {:.1} s)",
        started.elapsed().as_secs_f64()
    );
}
