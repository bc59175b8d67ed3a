//! The Grafana dashboards of deploy/grafana/dashboards. Grafana does not run here, so this
//! checks what would otherwise only fail on the wall: each board's structure, that every
//! query names only families, labels and label values the services export, that amounts are
//! shown in the configured reporting currency, that every board opens with the banner that
//! says when the numbers are stale (on the configured delay), and that a real Prometheus
//! accepts every query.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use salespulse_e2e::{bin, free_port, promtool, render_dashboards, root, Prometheus};
use serde_json::Value;

/// File, title and the template variables each board must have.
const BOARDS: &[(&str, &str, &[&str])] = &[
    ("sales-floor.json", "Sales floor", &[]),
    ("team.json", "Team", &["team"]),
    ("rep.json", "Rep", &["team", "rep"]),
    ("pipeline-forecast.json", "Pipeline and forecast", &[]),
    ("pipeline-health.json", "Pipeline health", &[]),
    ("pipeline-flow.json", "Pipeline flow", &["team"]),
];

/// Boards about one team: every selector of every panel query matches `team="$team"`.
const TEAM_BOARDS: &[&str] = &["team.json", "pipeline-flow.json"];

/// Values substituted for the template variables before Prometheus sees a query.
const SUBSTITUTES: &[(&str, &str)] = &[("team", "team-emea"), ("rep", "rep-007")];

/// The first panel of every board: a full-width banner, red when the numbers are stale.
const BANNER_TITLE: &str = "Are these numbers live?";
/// The banner's threshold in the boards as committed: deploy/grafana/render-dashboards.sh
/// replaces it with STALE_AFTER_SECONDS (default 900) when Grafana starts.
const STALE_PLACEHOLDER: &str = "${STALE_AFTER_SECONDS}";
const STALE_DEFAULT: &str = "900";

/// `expr` with the banner's threshold as rendered by default: what Prometheus gets.
fn with_default_threshold(expr: &str) -> String {
    expr.replace(STALE_PLACEHOLDER, STALE_DEFAULT)
}

const WINDOWS: &[&str] = &[
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
const PERIOD_TYPES: &[&str] = &["year", "quarter", "month", "week"];
const TARGET_METRICS: &[&str] = &["bookings", "deals_won", "pipeline_created", "activities"];
const RANK_METRICS: &[&str] = &["bookings", "deals_won", "activities"];
const OUTCOMES: &[&str] = &["applied", "duplicate", "stale", "rejected"];
const SERVICES: &[&str] = &["deals", "activities", "targets"];

const BUSINESS: &[&str] = &[
    "bookings",
    "deals_won",
    "deals_lost",
    "win_rate",
    "avg_deal_size",
    "sales_cycle_seconds",
    "pipeline_created",
    "close_date_pushed",
    "close_date_pulled_in",
    "pipeline_pushed",
    "pipeline_pulled_in",
    "pipeline_velocity",
    "activities_per_win",
];
/// Windowed, by stage (deals service).
const STAGE_FLOW: &[&str] = &["stage_entered", "stage_conversion_ratio", "stage_seconds"];
/// Current state, by stage (deals service).
const STAGE_STATE: &[&str] = &[
    "open_pipeline",
    "open_deals",
    "stage_age_seconds",
    "stalled_deals",
    "stalled_pipeline",
];
const ROLLUPS: &[&str] = &["commit", "best_case", "pipeline"];
const CATEGORIES: &[&str] = &["pipeline", "best_case", "commit", "omitted", "closed"];
const EXITS: &[&str] = &["advanced", "won", "lost", "regressed"];
const TARGETS: &[&str] = &[
    "target",
    "attainment_ratio",
    "expected_to_date",
    "pace_ratio",
    "gap",
    "projected",
    "forecast",
    "pipeline_coverage",
];

/// The labels of a family the services export (plus the scrape's `job` and `instance`), or
/// `None` for an unknown name.
fn family_labels(name: &str) -> Option<Vec<&'static str>> {
    let own: Vec<&'static str> = match name {
        "up" => vec![],
        "salespulse_events_total" => vec!["service", "topic", "outcome"],
        "salespulse_rejected_total" => vec!["service", "topic", "reason"],
        "salespulse_last_event_timestamp_seconds" => vec!["service", "topic"],
        "salespulse_consumer_lag" => vec!["service", "topic", "partition"],
        "salespulse_metrics_published_total"
        | "salespulse_ready"
        | "salespulse_board_series"
        | "salespulse_tick_interval_seconds" => vec!["service"],
        "salespulse_state_entries" => vec!["service", "kind"],
        "salespulse_consumers_replaced_total" => vec!["service", "consumer"],
        "sales_period_elapsed_ratio" => vec!["period", "period_type"],
        "sales_rep_rank" => vec!["rep", "team", "metric", "window", "among"],
        "sales_rep_team_share" => vec!["rep", "team", "metric", "window"],
        "sales_region_rank" => vec!["region", "metric", "window"],
        "sales_rep_consistency_mean"
        | "sales_rep_consistency_stddev"
        | "sales_rep_consistency_cv"
        | "sales_rep_consistency_samples" => vec!["rep", "team", "metric"],
        "sales_celebration_timestamp_seconds" | "sales_celebration_amount" => {
            vec!["celebration", "id", "rep", "team", "headline"]
        }
        _ => {
            let rest = name.strip_prefix("sales_")?;
            let (scope, metric) = rest.split_once('_')?;
            let mut labels = match scope {
                "rep" => vec!["rep", "team"],
                "team" => vec!["team"],
                "region" => vec!["region"],
                "org" => vec![],
                _ => return None,
            };
            match metric {
                m if BUSINESS.contains(&m) => labels.push("window"),
                "activities" | "activity_seconds" => labels.extend(["kind", "window"]),
                m if STAGE_FLOW.contains(&m) => labels.extend(["stage", "window"]),
                "stage_exited" => labels.extend(["stage", "to", "window"]),
                m if STAGE_STATE.contains(&m) => labels.push("stage"),
                "weighted_pipeline" | "overdue_deals" | "overdue_pipeline" => {}
                "member" if scope == "rep" => {}
                "info" if scope == "rep" => labels.extend(["name", "region", "hired_at"]),
                "ramp_ratio" if scope == "rep" => labels.extend(["period", "period_type"]),
                "forecast_category_amount" => labels.extend(["category", "period", "period_type"]),
                m if TARGETS.contains(&m) => {
                    labels.extend(["metric", "kind", "period", "period_type"]);
                }
                "forecast_rollup" | "forecast_coverage" => {
                    labels.extend(["rollup", "period", "period_type"]);
                }
                "forecast_undated" => labels.push("category"),
                _ => return None,
            }
            labels
        }
    };
    Some(own.into_iter().chain(["job", "instance"]).collect())
}

/// The values a label may take in an equality matcher, where they are a closed set.
fn allowed_values(family: &str, label: &str) -> Option<&'static [&'static str]> {
    match label {
        "window" => Some(WINDOWS),
        "period_type"
            if family.ends_with("_forecast_rollup") || family.ends_with("_forecast_coverage") =>
        {
            Some(&["month", "quarter"])
        }
        "period_type" => Some(PERIOD_TYPES),
        "rollup" => Some(ROLLUPS),
        "category" => Some(CATEGORIES),
        "to" => Some(EXITS),
        "metric" if family == "sales_rep_rank" => Some(RANK_METRICS),
        "metric" => Some(TARGET_METRICS),
        "among" => Some(&["team", "org"]),
        "outcome" => Some(OUTCOMES),
        "service" => Some(SERVICES),
        "job" => Some(&["salespulse"]),
        _ => None,
    }
}

#[derive(Debug)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

/// A small PromQL scanner: enough to find the vector selectors of an expression and their
/// matchers. Whether the whole expression is valid is Prometheus' call (see below).
fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2"];
    // May take their grouping clause before the parenthesis: `sum by (team) (...)`.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let skip_past = |mut i: usize, close: char| -> Result<usize, String> {
        while i < chars.len() && chars[i] != close {
            i += 1;
        }
        if i == chars.len() {
            return Err(format!("unclosed {close:?}"));
        }
        Ok(i + 1)
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let next = skip_ws(i);
            let peek = chars.get(next).copied();
            if GROUPING.contains(&ident.as_str()) && peek == Some('(') {
                i = skip_past(next, ')')?;
            } else if peek == Some('(')
                || KEYWORDS.contains(&ident.as_str())
                || AGGREGATIONS.contains(&ident.as_str())
            {
                // A function or aggregation; its arguments are scanned in turn.
            } else {
                let mut matchers = Vec::new();
                if peek == Some('{') {
                    i = next + 1;
                    loop {
                        i = skip_ws(i);
                        match chars.get(i) {
                            None => return Err("unclosed '{'".into()),
                            Some('}') => {
                                i += 1;
                                break;
                            }
                            Some(',') => {
                                i += 1;
                                continue;
                            }
                            _ => {}
                        }
                        let start = i;
                        while i < chars.len()
                            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_')
                        {
                            i += 1;
                        }
                        let label: String = chars[start..i].iter().collect();
                        i = skip_ws(i);
                        let op = ["=~", "!~", "!=", "="]
                            .into_iter()
                            .find(|op| chars[i..].starts_with(&op.chars().collect::<Vec<_>>()))
                            .ok_or_else(|| format!("no operator after label {label:?}"))?;
                        i = skip_ws(i + op.len());
                        if chars.get(i) != Some(&'"') {
                            return Err(format!("label {label:?}: value is not a \"string\""));
                        }
                        i += 1;
                        let mut value = String::new();
                        while i < chars.len() && chars[i] != '"' {
                            if chars[i] == '\\' {
                                i += 1;
                            }
                            if let Some(&ch) = chars.get(i) {
                                value.push(ch);
                            }
                            i += 1;
                        }
                        if i == chars.len() {
                            return Err("unclosed string".into());
                        }
                        i += 1;
                        if label.is_empty() {
                            return Err("empty label name".into());
                        }
                        matchers.push(Matcher {
                            label,
                            op: op.to_owned(),
                            value,
                        });
                    }
                }
                out.push(Selector {
                    metric: ident,
                    matchers,
                });
            }
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (0.5, 5m, 1e3).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '[' {
            i = skip_past(i, ']')?;
        } else if c == '{' {
            return Err("a selector without a metric name".into());
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_past(i + 1, c)?;
        } else {
            i += 1;
        }
    }
    Ok(out)
}

/// The variable a matcher value refers to (`$team`, `${team}`), if any.
fn variable_ref(value: &str) -> Option<&str> {
    let v = value.strip_prefix('$')?;
    Some(
        v.strip_prefix('{')
            .and_then(|v| v.strip_suffix('}'))
            .unwrap_or(v),
    )
}

fn substitute(expr: &str) -> String {
    let mut out = expr.to_owned();
    for (name, value) in SUBSTITUTES {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

#[derive(Debug)]
struct Board {
    file: &'static str,
    json: Value,
}

fn boards() -> Vec<Board> {
    let dir = root().join("deploy/grafana/dashboards");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("deploy/grafana/dashboards")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    let expected: BTreeSet<String> = BOARDS.iter().map(|b| b.0.to_owned()).collect();
    assert_eq!(
        on_disk, expected,
        "the dashboards directory holds the boards"
    );
    BOARDS
        .iter()
        .map(|(file, _, _)| {
            let text = std::fs::read_to_string(dir.join(file)).expect("readable");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
            Board { file, json }
        })
        .collect()
}

/// Every panel, including those inside collapsed rows.
fn panels(board: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in board["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// A query of a board: where it comes from, the expression, and whether Grafana runs it as
/// a range query.
#[derive(Debug)]
struct Query {
    origin: String,
    expr: String,
    range: bool,
}

/// `name → query` of the board's query variables, in order.
fn variables(board: &Value) -> Vec<(String, String)> {
    board["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let name = v["name"].as_str().expect("variable name").to_owned();
            let query = match &v["query"] {
                Value::String(s) => s.clone(),
                q => q["query"].as_str().unwrap_or_default().to_owned(),
            };
            (name, query)
        })
        .collect()
}

/// What a variable's query asks Prometheus: `label_values(selector, label)` gives the
/// selector and the label; `query_result(expr)` gives the expression and no label (the
/// variable's regex picks its value and text out of each result line).
fn variable_query(query: &str) -> (String, Option<String>) {
    let query = query.trim();
    if let Some(expr) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return (expr.trim().to_owned(), None);
    }
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| {
            panic!("{query:?} is neither label_values(selector, label) nor query_result(expr)")
        });
    let (selector, label) = inner.rsplit_once(',').expect("label_values has a label");
    (selector.trim().to_owned(), Some(label.trim().to_owned()))
}

/// How many template variables `expr` refers to (`$team`, `${team}`; not the `$1` of a
/// `label_replace` replacement).
fn variable_refs(expr: &str) -> usize {
    expr.match_indices('$')
        .filter(|(i, _)| {
            expr[i + 1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '{')
        })
        .count()
}

fn queries(board: &Board) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(&board.json) {
        let title = p["title"].as_str().unwrap_or_default();
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                origin: format!("{} / {title:?} / {}", board.file, t["refId"]),
                expr: with_default_threshold(t["expr"].as_str().unwrap_or_default()),
                range: t["range"].as_bool().unwrap_or(true),
            });
        }
    }
    for (name, query) in variables(&board.json) {
        out.push(Query {
            origin: format!("{} / variable {name}", board.file),
            expr: variable_query(&query).0,
            range: false,
        });
    }
    out
}

fn datasource_uid(v: &Value) -> Option<&str> {
    match v {
        Value::Object(o) => o.get("uid").and_then(Value::as_str),
        Value::String(s) => Some(s),
        _ => None,
    }
}

#[test]
fn dashboards_are_well_formed() {
    let boards = boards();
    let mut uids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for (board, (_, title, wanted_vars)) in boards.iter().zip(BOARDS) {
        let b = &board.json;
        let file = board.file;
        let uid = b["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty() && uid.len() <= 40, "{file}: uid {uid:?}");
        assert!(
            uids.insert(uid.to_owned()),
            "{file}: uid {uid} is not unique"
        );
        assert_eq!(b["title"].as_str(), Some(*title), "{file}: title");
        assert!(titles.insert(title.to_owned()));
        assert!(
            b["id"].is_null(),
            "{file}: no database id in a provisioned board"
        );
        let refresh = b["refresh"].as_str().unwrap_or_default();
        assert!(
            ["5s", "10s", "15s", "30s", "1m"].contains(&refresh),
            "{file}: refresh {refresh:?} is too slow, or off, for a live board"
        );
        assert!(
            b["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{file}: schemaVersion"
        );
        assert_eq!(b["time"]["from"].as_str(), Some("now-6h"), "{file}: time");
        assert!(
            b["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "salespulse")),
            "{file}: tagged salespulse"
        );

        // Template variables: the wanted ones, all from the Prometheus datasource, each
        // defined before a variable whose query uses it.
        let vars = variables(b);
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(&names, wanted_vars, "{file}: template variables");
        for (i, v) in b["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            assert_eq!(
                datasource_uid(&v["datasource"]),
                Some("prometheus"),
                "{file}: variable {} datasource",
                names[i]
            );
            let (selector, label) = variable_query(&vars[i].1);
            for s in selectors(&selector).expect("variable selector scans") {
                for m in &s.matchers {
                    if let Some(r) = variable_ref(&m.value) {
                        assert!(
                            names[..i].contains(&r),
                            "{file}: variable {} uses ${r}, not defined before it",
                            names[i]
                        );
                    }
                }
                let labels = family_labels(&s.metric)
                    .unwrap_or_else(|| panic!("{file}: unknown family {}", s.metric));
                if let Some(label) = &label {
                    assert!(
                        labels.contains(&label.as_str()),
                        "{file}: {} has no label {label}",
                        s.metric
                    );
                }
            }
        }

        let mut ids = BTreeSet::new();
        for p in panels(b) {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: a panel without a title");
            assert!(
                p["id"].as_u64().is_some_and(|id| ids.insert(id)),
                "{file} / {title:?}: panel id missing or not unique"
            );
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_u64().unwrap_or(99), g["w"].as_u64().unwrap_or(99));
            assert!(
                x + w <= 24 && g["h"].as_u64().is_some_and(|h| h > 0),
                "{file} / {title:?}: gridPos {g}"
            );
            assert_eq!(
                datasource_uid(&p["datasource"]),
                Some("prometheus"),
                "{file} / {title:?}: datasource"
            );
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{file} / {title:?}: no query");
            let mut refs = BTreeSet::new();
            for t in &targets {
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(!expr.trim().is_empty(), "{file} / {title:?}: empty query");
                assert!(
                    refs.insert(t["refId"].as_str().unwrap_or_default()),
                    "{file} / {title:?}: refIds are not unique"
                );
                if !t["datasource"].is_null() {
                    assert_eq!(
                        datasource_uid(&t["datasource"]),
                        Some("prometheus"),
                        "{file} / {title:?}: query datasource"
                    );
                }
            }
        }

        // Every query names only exported families, labels and label values, and uses the
        // template variables only as whole label values of their own label.
        for q in queries(board) {
            let sels = selectors(&q.expr).unwrap_or_else(|e| panic!("{}: {e}", q.origin));
            assert!(!sels.is_empty(), "{}: selects nothing", q.origin);
            let mut refs_in_matchers = 0;
            for s in &sels {
                let labels = family_labels(&s.metric).unwrap_or_else(|| {
                    panic!(
                        "{}: {} is no family the services export",
                        q.origin, s.metric
                    )
                });
                for m in &s.matchers {
                    assert!(
                        labels.contains(&m.label.as_str()),
                        "{}: {} has no label {}",
                        q.origin,
                        s.metric,
                        m.label
                    );
                    if let Some(var) = variable_ref(&m.value) {
                        refs_in_matchers += 1;
                        assert!(
                            names.contains(&var),
                            "{}: ${var} is not a variable of the board",
                            q.origin
                        );
                        assert_eq!(var, m.label, "{}: ${var} matches {}", q.origin, m.label);
                        assert_eq!(m.op, "=", "{}: ${var} is a single value", q.origin);
                    } else if let Some(allowed) = allowed_values(&s.metric, &m.label) {
                        if m.op == "=" {
                            assert!(
                                allowed.contains(&m.value.as_str()),
                                "{}: {}=\"{}\" is not one of {allowed:?}",
                                q.origin,
                                m.label,
                                m.value
                            );
                        }
                    }
                }
            }
            assert_eq!(
                variable_refs(&q.expr),
                refs_in_matchers,
                "{}: template variables only as label values",
                q.origin
            );
        }

        // A team's board shows that team only. The roster's names are joined on the reps a
        // query selected, whatever team the roster puts them in now (a rep's series can sit
        // under a team it has left): they name rows, they add none. The stale banner is about
        // the whole pipeline, not a team.
        if TEAM_BOARDS.contains(&file) {
            for p in panels(b) {
                let title = p["title"].as_str().unwrap_or_default();
                if title == BANNER_TITLE {
                    continue;
                }
                for t in p["targets"].as_array().into_iter().flatten() {
                    let expr = t["expr"].as_str().unwrap_or_default();
                    for s in selectors(expr).unwrap_or_default() {
                        if s.metric == "sales_rep_info" {
                            continue;
                        }
                        assert!(
                            s.matchers
                                .iter()
                                .any(|m| m.label == "team" && m.op == "=" && m.value == "$team"),
                            "{file} / {title:?}: {} is not limited to team=\"$team\"",
                            s.metric
                        );
                    }
                }
            }
        }
    }
}

/// Asks Prometheus to evaluate `q`: `Ok(result type)`, or `Err` with its error type and
/// message.
async fn evaluate(port: u16, q: &str, range: bool) -> Result<String, String> {
    let client = reqwest::Client::new();
    let request = if range {
        let now = chrono::Utc::now().timestamp();
        client
            .get(format!("http://127.0.0.1:{port}/api/v1/query_range"))
            .query(&[
                ("query", q.to_owned()),
                ("start", (now - 3600).to_string()),
                ("end", now.to_string()),
                ("step", "15".to_owned()),
            ])
    } else {
        client
            .get(format!("http://127.0.0.1:{port}/api/v1/query"))
            .query(&[("query", q)])
    };
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("HTTP {status}: {e}"))?;
    if body["status"] == "success" {
        Ok(body["data"]["resultType"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    } else {
        Err(format!(
            "HTTP {status} {}: {}",
            body["errorType"].as_str().unwrap_or_default(),
            body["error"].as_str().unwrap_or_default()
        ))
    }
}

async fn wait_ready(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    let url = format!("http://127.0.0.1:{port}/-/ready");
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(&url).await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("Prometheus not ready on :{port} within {within:?}");
}

#[tokio::test]
async fn prometheus_accepts_every_query() {
    let boards = boards();
    // Scrapes nothing: this checks that the queries parse and evaluate, not what they return.
    let prometheus = Prometheus::start(&[free_port()], "dashboards");
    wait_ready(prometheus.port, Duration::from_secs(30)).await;
    assert!(
        evaluate(prometheus.port, "sum(sales_rep_bookings", false)
            .await
            .is_err_and(|e| e.contains("bad_data")),
        "a malformed query is reported as such"
    );

    let mut failures = Vec::new();
    let mut checked = 0;
    let mut per_board = BTreeMap::new();
    for board in &boards {
        for q in queries(board) {
            let expr = substitute(&q.expr);
            assert_eq!(
                variable_refs(&expr),
                0,
                "{}: unsubstituted variable",
                q.origin
            );
            let mut modes = vec![false];
            if q.range {
                modes.push(true);
            }
            for range in modes {
                checked += 1;
                *per_board.entry(board.file).or_insert(0) += 1;
                if let Err(e) = evaluate(prometheus.port, &expr, range).await {
                    let kind = if range { "range" } else { "instant" };
                    failures.push(format!("{} ({kind}): {expr}\n    {e}", q.origin));
                }
            }
        }
    }
    println!("checked {checked} dashboard queries with Prometheus (instant, and range where the panel draws over time): {per_board:?}");
    assert!(
        failures.is_empty(),
        "Prometheus rejected {} of {checked} queries:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 60, "only {checked} queries checked");

    // Nothing answers on the port Prometheus scrapes: the banner says a service is down (and
    // says so before the first scrape too: stale, not live).
    let banner = with_default_threshold(banner_expr(&boards[0].json));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = prometheus.query(&banner).await;
        let says = |message: &str| {
            got.iter()
                .any(|(l, v)| l.get("banner").map(String::as_str) == Some(message) && *v == -1.0)
        };
        if says(STALE_DOWN) {
            break;
        }
        assert!(
            says(STALE_NONE) && Instant::now() < deadline,
            "with the services down the banner says {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("banner with the services down: {STALE_DOWN:?}");
}

/// The unit of the amount panels in the boards as committed: deploy/grafana/render-dashboards.sh
/// replaces it with the reporting currency's when Grafana starts.
const CURRENCY_PLACEHOLDER: &str = "${REPORTING_CURRENCY_UNIT}";

/// Families whose values are amounts in the reporting currency (target-derived ones only
/// for a money metric).
fn is_money(s: &Selector) -> bool {
    const AMOUNTS: &[&str] = &[
        "bookings",
        "avg_deal_size",
        "pipeline_created",
        "open_pipeline",
        "weighted_pipeline",
        "stalled_pipeline",
        "overdue_pipeline",
        "pipeline_pushed",
        "pipeline_pulled_in",
        "pipeline_velocity",
        "pipeline_expected",
        "weighted_pipeline_expected",
        "forecast_rollup",
        "forecast_category_amount",
    ];
    const PER_TARGET: &[&str] = &["target", "gap", "expected_to_date", "projected", "forecast"];
    let Some((_, metric)) = s
        .metric
        .strip_prefix("sales_")
        .and_then(|r| r.split_once('_'))
    else {
        return false;
    };
    s.metric == "sales_celebration_amount"
        || s.metric == "sales_rep_consistency_mean"
            && s.matchers
                .iter()
                .any(|m| m.label == "metric" && m.value == "bookings")
        || AMOUNTS.contains(&metric)
        || PER_TARGET.contains(&metric)
            && s.matchers.iter().any(|m| {
                m.label == "metric"
                    && m.op == "="
                    && ["bookings", "pipeline_created"].contains(&m.value.as_str())
            })
}

/// Environment variables for a process.
type Env<'a> = [(&'a str, &'a str)];

/// Every unit a panel sets: its default and its overrides'.
fn units(panel: &Value) -> Vec<&str> {
    let fc = &panel["fieldConfig"];
    let mut out: Vec<&str> = fc["defaults"]["unit"].as_str().into_iter().collect();
    for o in fc["overrides"].as_array().into_iter().flatten() {
        for p in o["properties"].as_array().into_iter().flatten() {
            if p["id"] == "unit" {
                out.extend(p["value"].as_str());
            }
        }
    }
    out
}

/// Runs deploy/grafana/render-dashboards.sh on the boards with `config` (and `env`) into a
/// fresh directory: the rendered boards by file name.
fn render(config: &std::path::Path, env: &[(&str, &str)], tag: &str) -> BTreeMap<String, Value> {
    let out = std::env::temp_dir().join(format!("dashboards-{}-{tag}", std::process::id()));
    let boards = render_dashboards(config, env, &out)
        .into_iter()
        .map(|(name, text)| {
            assert!(
                !text.contains(CURRENCY_PLACEHOLDER) && !text.contains(STALE_PLACEHOLDER),
                "{tag}: placeholder left"
            );
            let json = serde_json::from_str(&text).expect("a rendered board is JSON");
            (name, json)
        })
        .collect();
    let _ = std::fs::remove_dir_all(&out);
    boards
}

/// The reporting currency the services read from `config` (and `env`).
fn services_currency(config: &std::path::Path, env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(bin("salespulse-targets"))
        .arg("--config")
        .arg(config)
        .arg("--print-config")
        .env_remove("SALESPULSE_CONTRACT__REPORTING_CURRENCY")
        .envs(env.iter().copied())
        .output()
        .expect("salespulse-targets runs");
    assert!(
        out.status.success(),
        "--print-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("reporting_currency: \"")?
                .strip_suffix("\",")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no reporting_currency in --print-config:\n{text}"))
}

#[test]
fn amount_panels_take_the_reporting_currency() {
    let boards = boards();
    // As committed: no fixed currency; every amount panel has the placeholder unit.
    let mut placeholders = 0;
    for board in &boards {
        for p in panels(&board.json) {
            let title = p["title"].as_str().unwrap_or_default();
            for u in units(p) {
                if u == CURRENCY_PLACEHOLDER {
                    placeholders += 1;
                } else {
                    assert!(
                        !u.starts_with("currency"),
                        "{} / {title:?}: fixed currency unit {u}",
                        board.file
                    );
                }
            }
            // A chart of amounts only is in the reporting currency (tables set it per column;
            // a ratio of amounts is no amount).
            let exprs: Vec<&str> = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t["expr"].as_str().unwrap_or_default())
                .collect();
            let sels: Vec<Selector> = exprs
                .iter()
                .filter(|e| !e.contains('/'))
                .flat_map(|e| selectors(e).unwrap_or_default())
                .collect();
            let ratio = exprs.iter().any(|e| e.contains('/'));
            if p["type"] != "table" && !ratio && !sels.is_empty() && sels.iter().all(is_money) {
                assert_eq!(
                    p["fieldConfig"]["defaults"]["unit"].as_str(),
                    Some(CURRENCY_PLACEHOLDER),
                    "{} / {title:?} shows amounts",
                    board.file
                );
            }
        }
    }
    assert!(placeholders >= 30, "only {placeholders} amount units");

    // Rendered with the project's configuration, another one's, the services' environment
    // override, and a currency Grafana has no unit of its own for.
    let config = root().join("config/salespulse.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let eur_text = text
        .replace(
            "reporting_currency = \"USD\"",
            "reporting_currency = \"EUR\"",
        )
        .replace("USD = \"1\"", "USD = \"0.93\"")
        .replace("EUR = \"1.08\"", "EUR = \"1\"")
        // At par, so that the services also accept GBP as the reporting currency (below).
        .replace("GBP = \"1.27\"", "GBP = \"1\"");
    assert_ne!(eur_text, text);
    let eur = std::env::temp_dir().join(format!("dashboards-{}-eur.toml", std::process::id()));
    std::fs::write(&eur, eur_text).expect("writable");
    let gbp_env = [("SALESPULSE_CONTRACT__REPORTING_CURRENCY", "GBP")];
    let cad_env = [("SALESPULSE_CONTRACT__REPORTING_CURRENCY", "CAD")];
    let cases: [(&str, &std::path::Path, &Env, &str); 4] = [
        ("usd", &config, &[], "currencyUSD"),
        ("eur", &eur, &[], "currencyEUR"),
        ("gbp", &eur, &gbp_env, "currencyGBP"),
        ("cad", &eur, &cad_env, "currency:CAD"),
    ];
    for (tag, config, env, unit) in cases {
        if tag != "cad" {
            // The currency the boards show is the one the services report in.
            let code = unit.trim_start_matches("currency");
            assert_eq!(services_currency(config, env), code, "{tag}");
        }
        let rendered = render(config, env, tag);
        assert_eq!(rendered.len(), boards.len(), "{tag}");
        let mut n = 0;
        for board in &boards {
            let r = &rendered[board.file];
            for (p, q) in panels(&board.json).into_iter().zip(panels(r)) {
                assert_eq!(p["title"], q["title"]);
                for (u, v) in units(p).into_iter().zip(units(q)) {
                    if u == CURRENCY_PLACEHOLDER {
                        assert_eq!(v, unit, "{tag}: {} / {}", board.file, p["title"]);
                        n += 1;
                    } else {
                        assert_eq!(u, v);
                    }
                }
            }
            // Nothing else changes (but the banner's threshold: see below).
            let mut source = serde_json::to_string(&board.json).expect("json");
            source = source
                .replace(CURRENCY_PLACEHOLDER, unit)
                .replace(STALE_PLACEHOLDER, STALE_DEFAULT);
            assert_eq!(source, serde_json::to_string(r).expect("json"), "{tag}");
        }
        assert_eq!(n, placeholders, "{tag}");
    }
    let _ = std::fs::remove_file(&eur);
    println!("{placeholders} amount units, rendered as currencyUSD, currencyEUR, currencyGBP and currency:CAD");
}

// The stale banner: the first panel of every board says whether the numbers are live.

/// The banner of a board (source or rendered): its first panel.
fn banner(board: &Value) -> &Value {
    &board["panels"][0]
}

/// The banner's one query.
fn banner_expr(board: &Value) -> &str {
    banner(board)["targets"][0]["expr"]
        .as_str()
        .expect("the banner has a query")
}

/// What the banner shows: the `banner` label of each series its query returns.
const LIVE: &str = "Live \u{2014} newest deal or activity at";
const STALE_FOR: &str = "Numbers are stale \u{2014} no new deal or activity for";
const STALE_DOWN: &str = "Numbers are stale \u{2014} a salespulse service is down";
const STALE_NONE: &str = "Numbers are stale \u{2014} salespulse reports no deal or activity";
const LAST_AT: &str = "last at";

#[test]
fn every_board_opens_with_the_stale_banner() {
    let boards = boards();
    let mut exprs = BTreeSet::new();
    for board in &boards {
        let file = board.file;
        let b = banner(&board.json);
        assert_eq!(
            b["title"], BANNER_TITLE,
            "{file}: the first panel is the banner"
        );
        assert_eq!(b["type"], "stat", "{file}: the banner is a stat panel");
        // Full width, short, on top: every other panel below it.
        let g = &b["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64(),
            g["y"].as_u64(),
            g["w"].as_u64(),
            g["h"].as_u64(),
        );
        assert_eq!(
            (x, y, w),
            (Some(0), Some(0), Some(24)),
            "{file}: banner at {g}"
        );
        let h = h.filter(|h| (1..=3).contains(h)).expect("a short banner");
        for p in panels(&board.json).into_iter().skip(1) {
            assert!(
                p["gridPos"]["y"].as_u64().is_some_and(|y| y >= h),
                "{file} / {}: overlaps the banner",
                p["title"]
            );
        }
        // One instant query, on the threshold the render script sets.
        let targets = b["targets"].as_array().expect("targets");
        assert_eq!(targets.len(), 1, "{file}: the banner has one query");
        let t = &targets[0];
        assert_eq!(t["instant"], true, "{file}: the banner's query is instant");
        assert_eq!(
            t["legendFormat"], "{{banner}}",
            "{file}: the banner shows its label"
        );
        let expr = banner_expr(&board.json);
        assert_eq!(
            expr.matches(STALE_PLACEHOLDER).count(),
            1,
            "{file}: the banner's threshold is {STALE_PLACEHOLDER}: {expr}"
        );
        assert!(
            expr.contains(&format!("> time() - {STALE_PLACEHOLDER})")),
            "{file}: live while the newest record is younger than the threshold: {expr}"
        );
        // The newest deal or activity record, and whether every service answers.
        let sels = selectors(&with_default_threshold(expr)).expect("scans");
        assert!(
            sels.iter()
                .any(|s| s.metric == "salespulse_last_event_timestamp_seconds"
                    && s.matchers.iter().any(|m| m.label == "service"
                        && m.op == "=~"
                        && m.value == "deals|activities")),
            "{file}: the banner reads the deals and activities services' newest record: {expr}"
        );
        assert!(
            sels.iter().any(|s| s.metric == "up"
                && s.matchers
                    .iter()
                    .any(|m| m.label == "job" && m.value == "salespulse")),
            "{file}: the banner knows when a service is down: {expr}"
        );
        for message in [LIVE, STALE_FOR, STALE_DOWN, STALE_NONE, LAST_AT] {
            assert!(
                expr.contains(&format!("\"banner\", \"{message}\"")),
                "{file}: the banner never says {message:?}"
            );
        }
        // Red unless live: red is the only threshold (stale, or no answer at all), the live
        // message is uncoloured and shows the newest record's time, as does "last at".
        let fc = &b["fieldConfig"];
        let steps = fc["defaults"]["thresholds"]["steps"]
            .as_array()
            .expect("thresholds");
        assert!(
            steps.len() == 1 && steps[0]["color"] == "red",
            "{file}: {steps:?}"
        );
        assert!(
            fc["defaults"]["noValue"]
                .as_str()
                .is_some_and(|v| v.contains("stale")),
            "{file}: no answer is no live number"
        );
        let overrides = fc["overrides"].as_array().expect("overrides");
        let props = |id: &str, options: &str| {
            overrides
                .iter()
                .find(|o| o["matcher"]["id"] == id && o["matcher"]["options"] == options)
                .and_then(|o| o["properties"].as_array())
                .unwrap_or_else(|| panic!("{file}: no {id} override for {options:?}"))
        };
        let prop = |id: &str, options: &str, p: &str| {
            props(id, options)
                .iter()
                .find(|x| x["id"] == p)
                .map(|x| x["value"].clone())
                .unwrap_or_default()
        };
        let live_pattern = "Live.*";
        assert!(LIVE.starts_with("Live") && !STALE_FOR.starts_with("Live"));
        assert_eq!(
            prop("byRegexp", live_pattern, "unit"),
            "time:HH:mm",
            "{file}"
        );
        assert_eq!(
            prop("byRegexp", live_pattern, "color")["fixedColor"],
            "transparent",
            "{file}: unobtrusive while live"
        );
        assert_eq!(prop("byName", LAST_AT, "unit"), "time:HH:mm", "{file}");
        exprs.insert(expr.to_owned());
    }
    assert_eq!(exprs.len(), 1, "the same banner on every board");
    println!(
        "the stale banner opens all {} boards: {}",
        boards.len(),
        exprs.first().map(String::as_str).unwrap_or_default()
    );
}

#[test]
fn the_render_script_sets_the_banner_threshold() {
    let boards = boards();
    let config = root().join("config/salespulse.toml");
    let sixty = [("STALE_AFTER_SECONDS", "60")];
    let padded = [("STALE_AFTER_SECONDS", "0120")];
    let cases: [(&str, &Env, &str); 3] = [
        ("stale-default", &[], STALE_DEFAULT),
        ("stale-60", &sixty, "60"),
        ("stale-padded", &padded, "120"),
    ];
    for (tag, env, seconds) in cases {
        let rendered = render(&config, env, tag);
        assert_eq!(rendered.len(), boards.len(), "{tag}");
        for board in &boards {
            let r = &rendered[board.file];
            let expr = banner_expr(r);
            assert!(
                expr.contains(&format!("> time() - {seconds})")),
                "{tag}: {} banner: {expr}",
                board.file
            );
            assert!(
                banner(r)["description"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("more than {seconds} s"))),
                "{tag}: {} banner description",
                board.file
            );
            // Nothing else changes (the currency is the project's, USD).
            let source = serde_json::to_string(&board.json)
                .expect("json")
                .replace(STALE_PLACEHOLDER, seconds)
                .replace(CURRENCY_PLACEHOLDER, "currencyUSD");
            assert_eq!(source, serde_json::to_string(r).expect("json"), "{tag}");
        }
    }
    // Not a whole number of seconds of at least 1: refused, nothing written.
    for bad in ["0", "000", "15m", "-5", "9e2", " 60", "1.5"] {
        let out = std::env::temp_dir().join(format!("dashboards-{}-bad", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let run = std::process::Command::new("sh")
            .arg(root().join("deploy/grafana/render-dashboards.sh"))
            .arg(&config)
            .arg(root().join("deploy/grafana/dashboards"))
            .arg(&out)
            .env_remove("SALESPULSE_CONTRACT__REPORTING_CURRENCY")
            .env("STALE_AFTER_SECONDS", bad)
            .output()
            .expect("sh runs");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains("STALE_AFTER_SECONDS"),
            "STALE_AFTER_SECONDS={bad:?} is refused: {stderr}"
        );
        assert!(
            !out.exists(),
            "STALE_AFTER_SECONDS={bad:?}: nothing written"
        );
    }
    println!("banner threshold rendered as 900 (default), 60 and 120 (0120); 0, 15m, -5 and others refused");
}

/// Runs `promtool test rules` on the banner's query (threshold 900) as a recording rule: the
/// states the banner must tell apart, on made-up series, evaluated by Prometheus' own engine.
#[test]
fn the_banner_tells_live_from_stale_and_down() {
    let boards = boards();
    let expr = with_default_threshold(banner_expr(&boards[0].json));
    let dir = std::env::temp_dir().join(format!("dashboards-{}-banner-rules", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let rules = serde_json::json!({"groups": [{"name": "banner", "rules": [{"record": "banner", "expr": expr}]}]});
    std::fs::write(dir.join("banner.rules.yml"), rules.to_string()).expect("writable");

    let deals = r#"{job="salespulse", instance="a:9101", service="deals", topic="sales.deals"}"#;
    let roster = r#"{job="salespulse", instance="a:9101", service="deals", topic="sales.roster"}"#;
    let acts =
        r#"{job="salespulse", instance="a:9102", service="activities", topic="sales.activities"}"#;
    let lag = |labels: &str| {
        format!(
            "salespulse_consumer_lag{}",
            labels.replace('}', ", partition=\"0\"}")
        )
    };
    let ts = |labels: &str| format!("salespulse_last_event_timestamp_seconds{labels}");
    let series = |name: String, values: &str| serde_json::json!({"series": name, "values": values});
    let up = |instance: &str, values: &str| {
        series(
            format!("up{{job=\"salespulse\", instance=\"{instance}\"}}"),
            values,
        )
    };
    let sample = |banner: &str, value: f64| serde_json::json!({"labels": format!("banner{{banner=\"{banner}\"}}"), "value": value});
    // One sample a minute for 70 minutes; evaluated at 60 m (time() = 3600).
    let case = |name: &str, input: Vec<Value>, want: Vec<Value>| {
        serde_json::json!({
            "name": name,
            "interval": "1m",
            "input_series": input,
            "promql_expr_test": [{"expr": "banner", "eval_time": "60m", "exp_samples": want}],
        })
    };
    let tests = vec![
        // Records every minute on both input topics: live, at the newest one's time (ms).
        case(
            "live",
            vec![
                series(ts(deals), "0+60x70"),
                series(lag(deals), "0x70"),
                series(ts(acts), "0+30x70"),
                series(lag(acts), "0x70"),
                up("a:9101", "1x70"),
                up("a:9102", "1x70"),
            ],
            vec![sample(LIVE, 3_600_000.0)],
        ),
        // The newest deal or activity at 10 minutes, 50 minutes old: stale, however fresh the
        // roster (not an input topic: no consumer lag).
        case(
            "stale",
            vec![
                series(ts(deals), "0x9 600x60"),
                series(lag(deals), "0x70"),
                series(ts(acts), "0x9 300x60"),
                series(lag(acts), "0x70"),
                series(ts(roster), "0+60x70"),
                up("a:9101", "1x70"),
                up("a:9102", "1x70"),
            ],
            vec![sample(STALE_FOR, 50.0), sample(LAST_AT, 600_000.0)],
        ),
        // Under the threshold (14 minutes) is live; over it (16) is stale.
        case(
            "threshold",
            vec![
                series(ts(deals), "0x45 2760x24"),
                series(lag(deals), "0x70"),
                up("a:9101", "1x70"),
            ],
            vec![sample(LIVE, 2_760_000.0)],
        ),
        case(
            "past the threshold",
            vec![
                series(ts(deals), "0x43 2640x26"),
                series(lag(deals), "0x70"),
                up("a:9101", "1x70"),
            ],
            vec![sample(STALE_FOR, 16.0), sample(LAST_AT, 2_640_000.0)],
        ),
        // The activities service stops answering at 30 m, while deals keep arriving.
        case(
            "down",
            vec![
                series(ts(deals), "0+60x70"),
                series(lag(deals), "0x70"),
                series(ts(acts), "0+60x30"),
                series(lag(acts), "0x30"),
                up("a:9101", "1x70"),
                up("a:9102", "1x30 0x40"),
            ],
            vec![sample(STALE_DOWN, -1.0), sample(LAST_AT, 3_600_000.0)],
        ),
        // Up, but nothing consumed since the start (the timestamp is 0).
        case(
            "nothing since the start",
            vec![
                series(ts(deals), "0x70"),
                series(lag(deals), "0x70"),
                up("a:9101", "1x70"),
            ],
            vec![sample(STALE_NONE, -1.0)],
        ),
        // Prometheus has nothing of salespulse at all.
        case(
            "no series",
            vec![series("some_other_metric".into(), "1x70")],
            vec![sample(STALE_NONE, -1.0)],
        ),
    ];
    let n = tests.len();
    let spec = serde_json::json!({
        "rule_files": ["banner.rules.yml"],
        "evaluation_interval": "1m",
        "tests": tests,
    });
    std::fs::write(dir.join("banner.test.yml"), spec.to_string()).expect("writable");
    promtool(Some(&dir), &["test", "rules", "banner.test.yml"]);
    let _ = std::fs::remove_dir_all(&dir);
    println!("banner: {n} cases (live, stale, at the threshold, down, nothing since the start, no series) pass promtool");
}

// Reps by name: a PromQL reading of which labels a query's series carry, and the panels that
// list reps.

/// What can be told, without data, of the series a PromQL expression returns: a scalar, a
/// string, or a vector whose series may carry the labels `some` and all carry `all`.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Scalar,
    Text(String),
    Vector {
        some: BTreeSet<String>,
        all: BTreeSet<String>,
    },
}

fn vector(some: &[&str], all: &[&str]) -> Shape {
    Shape::Vector {
        some: some.iter().map(|l| (*l).to_owned()).collect(),
        all: all.iter().map(|l| (*l).to_owned()).collect(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Number,
    Text(String),
    /// A selector's `{...}`.
    Matchers,
    /// A range or subquery's `[...]`.
    Range,
    Op(&'static str),
    Open,
    Close,
    Comma,
}

fn tokens(expr: &str) -> Result<Vec<Token>, String> {
    const OPS: [&str; 12] = [
        "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "^", "<", ">",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Number);
        } else if c == '"' || c == '\'' || c == '`' {
            let mut text = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' {
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    text.push(ch);
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err("unclosed string".into());
            }
            i += 1;
            out.push(Token::Text(text));
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unclosed {c:?}")),
                    Some(&ch) if ch == close => break,
                    Some('"') => {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            i += if chars[i] == '\\' { 2 } else { 1 };
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            i += 1;
            out.push(if c == '{' {
                Token::Matchers
            } else {
                Token::Range
            });
        } else if c == '(' {
            out.push(Token::Open);
            i += 1;
        } else if c == ')' {
            out.push(Token::Close);
            i += 1;
        } else if c == ',' {
            out.push(Token::Comma);
            i += 1;
        } else {
            let rest: String = chars[i..].iter().take(2).collect();
            let op = OPS
                .into_iter()
                .find(|op| rest.starts_with(op))
                .ok_or_else(|| format!("unexpected {c:?}"))?;
            out.push(Token::Op(op));
            i += op.len();
        }
    }
    Ok(out)
}

/// Binary operators by precedence, lowest first, as PromQL binds them.
fn precedence(t: &Token) -> Option<(u8, String)> {
    let (prec, op) = match t {
        Token::Ident(w) if w == "or" => (1, w.as_str()),
        Token::Ident(w) if w == "and" || w == "unless" => (2, w.as_str()),
        Token::Op(o @ ("==" | "!=" | "<=" | ">=" | "<" | ">")) => (3, *o),
        Token::Op(o @ ("+" | "-")) => (4, *o),
        Token::Op(o @ ("*" | "/" | "%")) => (5, *o),
        Token::Ident(w) if w == "atan2" => (5, w.as_str()),
        Token::Op("^") => (6, "^"),
        _ => return None,
    };
    Some((prec, op.to_owned()))
}

/// `on (labels)` (true) or `ignoring (labels)` (false); `group_left (labels)` (true) or
/// `group_right (labels)` (false).
type Modifier = Option<(bool, BTreeSet<String>)>;

struct PromQl {
    tokens: Vec<Token>,
    pos: usize,
}

impl PromQl {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Token::Ident(w)) => Some(w),
            _ => None,
        }
    }

    fn expect(&mut self, want: &Token) -> Result<(), String> {
        match self.next() {
            Some(t) if &t == want => Ok(()),
            t => Err(format!("expected {want:?}, found {t:?}")),
        }
    }

    fn label_list(&mut self) -> Result<BTreeSet<String>, String> {
        self.expect(&Token::Open)?;
        let mut out = BTreeSet::new();
        loop {
            match self.next() {
                Some(Token::Close) => return Ok(out),
                Some(Token::Comma) => {}
                Some(Token::Ident(l)) => {
                    out.insert(l);
                }
                t => return Err(format!("unexpected {t:?} in a label list")),
            }
        }
    }

    fn expr(&mut self, min: u8) -> Result<Shape, String> {
        let mut lhs = self.unary()?;
        while let Some((prec, op)) = self.peek().and_then(precedence) {
            if prec < min {
                break;
            }
            self.pos += 1;
            if self.peek_word() == Some("bool") {
                self.pos += 1;
            }
            let mut matching: Modifier = None;
            if let Some(w @ ("on" | "ignoring")) = self.peek_word() {
                let on = w == "on";
                self.pos += 1;
                matching = Some((on, self.label_list()?));
            }
            let mut group: Modifier = None;
            if let Some(w @ ("group_left" | "group_right")) = self.peek_word() {
                let left = w == "group_left";
                self.pos += 1;
                let labels = if self.peek() == Some(&Token::Open) {
                    self.label_list()?
                } else {
                    BTreeSet::new()
                };
                group = Some((left, labels));
            }
            let rhs = self.expr(if op == "^" { prec } else { prec + 1 })?;
            lhs = combine(&op, lhs, rhs, &matching, &group)?;
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Shape, String> {
        if matches!(self.peek(), Some(Token::Op("-" | "+"))) {
            self.pos += 1;
            return self.unary();
        }
        let shape = self.primary()?;
        loop {
            match self.peek() {
                Some(Token::Range) => self.pos += 1,
                Some(Token::Ident(w)) if w == "offset" => {
                    self.pos += 1;
                    if self.peek() == Some(&Token::Op("-")) {
                        self.pos += 1;
                    }
                    self.expect(&Token::Number)?;
                }
                _ => return Ok(shape),
            }
        }
    }

    fn args(&mut self) -> Result<Vec<Shape>, String> {
        self.expect(&Token::Open)?;
        let mut out = Vec::new();
        if self.peek() == Some(&Token::Close) {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            out.push(self.expr(0)?);
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::Close) => return Ok(out),
                t => return Err(format!("unexpected {t:?} in arguments")),
            }
        }
    }

    fn grouping(&mut self) -> Result<Modifier, String> {
        match self.peek_word() {
            Some(w @ ("by" | "without")) => {
                let by = w == "by";
                self.pos += 1;
                Ok(Some((by, self.label_list()?)))
            }
            _ => Ok(None),
        }
    }

    fn primary(&mut self) -> Result<Shape, String> {
        const AGGREGATIONS: &[&str] = &[
            "sum",
            "min",
            "max",
            "avg",
            "group",
            "stddev",
            "stdvar",
            "count",
            "count_values",
            "bottomk",
            "topk",
            "quantile",
        ];
        match self.next() {
            Some(Token::Number) => Ok(Shape::Scalar),
            Some(Token::Text(t)) => Ok(Shape::Text(t)),
            Some(Token::Open) => {
                let e = self.expr(0)?;
                self.expect(&Token::Close)?;
                Ok(e)
            }
            Some(Token::Ident(name)) if AGGREGATIONS.contains(&name.as_str()) => {
                let mut grouping = self.grouping()?;
                let args = self.args()?;
                if grouping.is_none() {
                    grouping = self.grouping()?;
                }
                let Some(Shape::Vector { some, all }) = args.last().cloned() else {
                    return Err(format!("{name} of no vector"));
                };
                if name == "topk" || name == "bottomk" {
                    return Ok(Shape::Vector { some, all });
                }
                let keep = |set: &BTreeSet<String>| -> BTreeSet<String> {
                    match &grouping {
                        Some((true, by)) => set.intersection(by).cloned().collect(),
                        Some((false, without)) => set.difference(without).cloned().collect(),
                        None => BTreeSet::new(),
                    }
                };
                let (mut some, mut all) = (keep(&some), keep(&all));
                if name == "count_values" {
                    if let Some(Shape::Text(label)) = args.first() {
                        some.insert(label.clone());
                        all.insert(label.clone());
                    }
                }
                Ok(Shape::Vector { some, all })
            }
            Some(Token::Ident(name)) if self.peek() == Some(&Token::Open) => {
                let args = self.args()?;
                match name.as_str() {
                    "time" | "scalar" | "pi" => Ok(Shape::Scalar),
                    "vector" => Ok(vector(&[], &[])),
                    "label_replace" | "label_join" => match (args.first(), args.get(1)) {
                        (Some(Shape::Vector { some, all }), Some(Shape::Text(dst))) => {
                            let (mut some, mut all) = (some.clone(), all.clone());
                            some.insert(dst.clone());
                            all.insert(dst.clone());
                            Ok(Shape::Vector { some, all })
                        }
                        _ => Err(format!("{name} of no vector and label")),
                    },
                    _ => args
                        .into_iter()
                        .find(|a| matches!(a, Shape::Vector { .. }))
                        .ok_or_else(|| format!("{name}() of no vector")),
                }
            }
            Some(Token::Ident(name)) => {
                if self.peek() == Some(&Token::Matchers) {
                    self.pos += 1;
                }
                let labels =
                    family_labels(&name).ok_or_else(|| format!("unknown family {name}"))?;
                let some: BTreeSet<String> = labels.iter().map(|l| (*l).to_owned()).collect();
                // Labels only some series of the family carry.
                let all = some
                    .iter()
                    .filter(|l| !["kind", "region"].contains(&l.as_str()))
                    .cloned()
                    .collect();
                Ok(Shape::Vector { some, all })
            }
            t => Err(format!("unexpected {t:?}")),
        }
    }
}

/// The series of `lhs op rhs`, by PromQL's rules for vector matching: `or` gives the series of
/// both sides, `and` and `unless` the left side's; arithmetic and comparisons the left side's
/// labels (only the `on` labels, or all but the `ignoring` ones, one-to-one), the "many" side's
/// with `group_left`/`group_right`, plus the labels they list, taken from the "one" side.
fn combine(
    op: &str,
    lhs: Shape,
    rhs: Shape,
    matching: &Modifier,
    group: &Modifier,
) -> Result<Shape, String> {
    match (lhs, rhs) {
        (Shape::Scalar, Shape::Scalar) => Ok(Shape::Scalar),
        (v @ Shape::Vector { .. }, Shape::Scalar) | (Shape::Scalar, v @ Shape::Vector { .. }) => {
            Ok(v)
        }
        (Shape::Vector { some: ls, all: la }, Shape::Vector { some: rs, all: ra }) => match op {
            "or" => Ok(Shape::Vector {
                some: ls.union(&rs).cloned().collect(),
                all: la.intersection(&ra).cloned().collect(),
            }),
            "and" | "unless" => Ok(Shape::Vector { some: ls, all: la }),
            _ => {
                let right_many = matches!(group, Some((false, _)));
                let (mut some, mut all, one_some, one_all) = if right_many {
                    (rs, ra, ls, la)
                } else {
                    (ls, la, rs, ra)
                };
                match (matching, group) {
                    (Some((true, on)), None) => {
                        some.retain(|l| on.contains(l));
                        all.retain(|l| on.contains(l));
                    }
                    (Some((false, ignoring)), None) => {
                        some.retain(|l| !ignoring.contains(l));
                        all.retain(|l| !ignoring.contains(l));
                    }
                    _ => {}
                }
                for l in group.iter().flat_map(|(_, include)| include) {
                    some.remove(l);
                    all.remove(l);
                    if one_some.contains(l) {
                        some.insert(l.clone());
                    }
                    if one_all.contains(l) {
                        all.insert(l.clone());
                    }
                }
                Ok(Shape::Vector { some, all })
            }
        },
        _ => Err(format!("a string in {op}")),
    }
}

/// The series `expr` returns, as far as PromQL tells.
fn shape(expr: &str) -> Result<Shape, String> {
    let mut p = PromQl {
        tokens: tokens(expr)?,
        pos: 0,
    };
    let s = p.expr(0)?;
    match p.peek() {
        None => Ok(s),
        Some(t) => Err(format!("unexpected {t:?} after the expression")),
    }
}

/// The join that names the reps of a query that keeps `rep`: one name per rep from the
/// roster's `sales_rep_info` (whatever team its series are under), and the id as the name of
/// a rep the roster does not name (no `sales_rep_info`: not on the roster, or the deals
/// service not scraped).
const NAME_JOIN: &str = "group_left(name)maxby(rep,name)(sales_rep_info)";
const NAME_FALLBACK: &str = "oron(rep)label_replace(";
const NAME_FALLBACK_END: &str = r#","name","$1","rep","(.*)")"#;

/// The queries of `panel` whose series keep a `rep` label: the panel lists reps.
fn rep_queries(panel: &Value) -> Vec<&Value> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            matches!(
                shape(&with_default_threshold(t["expr"].as_str().unwrap_or_default())),
                Ok(Shape::Vector { some, .. }) if some.contains("rep")
            )
        })
        .collect()
}

/// What is wrong with how `panel` shows reps: a query that keeps `rep` must give every series
/// the rep's name, joined from `sales_rep_info` (see [`NAME_JOIN`]), and the panel must show
/// the name: `{{name}}` in the legend of a series, the `name` field in a table (the `rep`
/// field excluded or hidden). Links to the rep board carry the id.
fn rep_display_problems(panel: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let transformations: Vec<&Value> = panel["transformations"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let organize = transformations
        .iter()
        .find(|t| t["id"] == "organize")
        .map(|t| &t["options"]);
    let excluded = |field: &str| organize.is_some_and(|o| o["excludeByName"][field] == true);
    let overrides: Vec<&Value> = panel["fieldConfig"]["overrides"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let hidden = |field: &str| {
        excluded(field)
            || overrides.iter().any(|o| {
                o["matcher"]["id"] == "byName"
                    && o["matcher"]["options"] == field
                    && o["properties"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["id"] == "custom.hidden" && p["value"] == true)
            })
    };
    let join_by_labels = transformations.iter().find(|t| t["id"] == "joinByLabels");
    let queries = rep_queries(panel);
    for t in &queries {
        let r = t["refId"].as_str().unwrap_or_default();
        let expr = t["expr"].as_str().unwrap_or_default();
        let Ok(Shape::Vector { all, .. }) = shape(expr) else {
            continue;
        };
        if !all.contains("name") {
            out.push(format!("{r}: some series have no name: {expr}"));
        }
        let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
        if !compact.contains(NAME_JOIN) {
            out.push(format!(
                "{r}: not joined with one name per rep (* on (rep) group_left(name) max by (rep, name) (sales_rep_info)): {expr}"
            ));
        }
        if !(compact.contains(NAME_FALLBACK) && compact.ends_with(NAME_FALLBACK_END)) {
            out.push(format!(
                "{r}: a rep without sales_rep_info is dropped (no `or on (rep) label_replace(..., \"name\", \"$1\", \"rep\", \"(.*)\")`): {expr}"
            ));
        }
        let table = t["format"] == "table" || join_by_labels.is_some();
        if table {
            if !hidden("rep") {
                out.push(format!(
                    "{r}: the rep id field is shown (exclude or hide `rep`)"
                ));
            }
            if hidden("name") {
                out.push(format!("{r}: the name field is hidden"));
            }
        } else {
            let legend = t["legendFormat"].as_str().unwrap_or_default();
            if !legend.contains("{{name}}") || legend.contains("{{rep}}") {
                out.push(format!("{r}: legend {legend:?} does not show {{{{name}}}}"));
            }
        }
    }
    if !queries.is_empty() {
        if let Some(j) = join_by_labels {
            let join = &j["options"]["join"];
            if !join
                .as_array()
                .is_some_and(|l| l.iter().any(|v| v == "name") && l.iter().any(|v| v == "rep"))
            {
                out.push(format!(
                    "joinByLabels joins on {join}: not on rep and name (reps of one name would merge)"
                ));
            }
        }
        let kind = panel["type"].as_str().unwrap_or_default();
        if kind == "table" && !organize.is_some_and(|o| o["renameByName"]["name"].is_string()) {
            out.push("the name column has no title".to_owned());
        }
        if kind == "barchart" && panel["options"]["xField"] != "name" {
            out.push(format!(
                "x axis {} is not the name",
                panel["options"]["xField"]
            ));
        }
    }
    // A link to the rep board passes the rep id, not the name shown in the cell.
    let mut links: Vec<&Value> = panel["fieldConfig"]["defaults"]["links"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for o in &overrides {
        for p in o["properties"].as_array().into_iter().flatten() {
            if p["id"] == "links" {
                links.extend(p["value"].as_array().into_iter().flatten());
            }
        }
    }
    for l in links {
        let url = l["url"].as_str().unwrap_or_default();
        if url.contains("var-rep=") && !url.contains("var-rep=${__data.fields.rep}") {
            out.push(format!("link {url} does not pass the rep id"));
        }
    }
    out
}

#[test]
fn promql_shapes() {
    let cases: &[(&str, Shape)] = &[
        ("sum by (rep) (sales_rep_bookings{window=\"qtd\"})", vector(&["rep"], &["rep"])),
        ("sum(sales_rep_bookings{rep=\"$rep\",window=\"qtd\"})", vector(&[], &[])),
        ("quantile(0.5, sales_rep_bookings{team=\"$team\",window=\"qtd\"})", vector(&[], &[])),
        ("max by (stage) (sales_team_stage_seconds{window=\"30d\"}) / 86400", vector(&["stage"], &["stage"])),
        ("time() - max by (service, topic) (salespulse_last_event_timestamp_seconds)", vector(&["service", "topic"], &["service", "topic"])),
        ("sum by (rep, team) (sales_rep_bookings) / on (rep) sum by (rep) (sales_rep_deals_won)", vector(&["rep"], &["rep"])),
        ("sum by (rep) (sales_rep_stalled_deals) or 0 * sum by (rep, team) (sales_rep_open_deals)", vector(&["rep", "team"], &["rep"])),
        ("max by (rep) (sales_rep_gap) * on (rep) group_left(name) max by (rep, name) (sales_rep_info)", vector(&["name", "rep"], &["name", "rep"])),
        ("max by (rep) (sales_rep_gap) * on (rep) group_left(name) max by (rep, name) (sales_rep_info) or sum by (rep) (sales_rep_gap)", vector(&["name", "rep"], &["rep"])),
        ("max by (rep, name) (sales_rep_info) * on (rep) group_right max by (rep, kind) (sales_rep_activities)", vector(&["kind", "rep"], &["rep"])),
        ("label_replace(max by (rep) (sales_rep_gap), \"name\", \"$1\", \"rep\", \"(.*)\")", vector(&["name", "rep"], &["name", "rep"])),
        ("topk(3, max by (rep) (rate(salespulse_events_total[5m])))", vector(&[], &[])),
        ("max by (period) (sales_team_target{metric=\"bookings\"}) and on (period) max by (period) (sales_team_forecast_rollup)", vector(&["period"], &["period"])),
    ];
    for (expr, want) in cases {
        assert_eq!(shape(expr).as_ref(), Ok(want), "{expr}");
    }
    assert!(shape("sum(sales_rep_bookings").is_err());
    assert!(shape("sum(sales_rep_nonsense)").is_err());
}

#[test]
fn panels_show_reps_by_name() {
    let boards = boards();
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for board in &boards {
        for p in panels(&board.json) {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = with_default_threshold(t["expr"].as_str().unwrap_or_default());
                if let Err(e) = shape(&expr) {
                    problems.push(format!("{} / {title:?}: {expr}: {e}", board.file));
                }
            }
            let n = rep_queries(p).len();
            if n > 0 {
                checked.push(format!("{} / {title:?} ({n})", board.file));
            }
            for e in rep_display_problems(p) {
                problems.push(format!("{} / {title:?}: {e}", board.file));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "panels that list reps must show their names:\n{}",
        problems.join("\n")
    );
    // The sales floor's two leaderboards, the team board's table, pace, gap, activity mix and
    // bookings by rep, pipeline flow's stalled and overdue table and bar gauge, and the sales
    // floor's ticker of celebrations, the team board's consistency table.
    assert_eq!(checked.len(), 11, "{checked:#?}");
    println!(
        "reps by name in {} panels: {}",
        checked.len(),
        checked.join(", ")
    );
}

/// The panel titled `title` of `file`, as a mutable copy.
fn panel_copy(file: &str, title: &str) -> Value {
    let board = boards()
        .into_iter()
        .find(|b| b.file == file)
        .expect("board");
    panels(&board.json)
        .into_iter()
        .find(|p| p["title"] == title)
        .cloned()
        .unwrap_or_else(|| panic!("{file} has no panel {title:?}"))
}

#[test]
fn the_name_check_catches_panels_that_show_ids() {
    let problems = |p: &Value| rep_display_problems(p).join("\n");
    // The leaderboard as it was: ids.
    let mut p = panel_copy("sales-floor.json", "Leaderboard: bookings this quarter");
    assert_eq!(problems(&p), "");
    p["targets"][0]["expr"] = "sum by (rep) (sales_rep_bookings{window=\"qtd\"})".into();
    let found = problems(&p);
    assert!(
        found.contains("have no name") && found.contains("not joined"),
        "{found}"
    );
    // Joined, but a rep without sales_rep_info would vanish.
    p["targets"][0]["expr"] = "sum by (rep) (sales_rep_bookings{window=\"qtd\"}) * on (rep) group_left(name) max by (rep, name) (sales_rep_info)".into();
    assert!(problems(&p).contains("is dropped"), "{}", problems(&p));
    // Joined, but the bar still says rep-007.
    let mut p = panel_copy("sales-floor.json", "Leaderboard: bookings this quarter");
    p["transformations"][0]["options"]["excludeByName"]["rep"] = false.into();
    assert!(
        problems(&p).contains("rep id field is shown"),
        "{}",
        problems(&p)
    );
    // A legend of ids.
    let mut p = panel_copy("team.json", "Bookings this quarter by rep");
    assert_eq!(problems(&p), "");
    p["targets"][0]["legendFormat"] = "{{rep}}".into();
    assert!(problems(&p).contains("does not show"), "{}", problems(&p));
    // A table whose id column shows, or whose link passes the name.
    let mut p = panel_copy("team.json", "Reps side by side (quarter to date)");
    assert_eq!(problems(&p), "");
    let overrides = p["fieldConfig"]["overrides"]
        .as_array_mut()
        .expect("overrides");
    overrides.retain(|o| o["matcher"]["options"] != "rep");
    assert!(
        problems(&p).contains("rep id field is shown"),
        "{}",
        problems(&p)
    );
    let mut p = panel_copy("pipeline-flow.json", "Stalled and overdue deals by rep");
    assert_eq!(problems(&p), "");
    let link = p["fieldConfig"]["overrides"][0]["properties"][0]["value"][0]["url"]
        .as_str()
        .expect("a link")
        .replace("${__data.fields.rep}", "${__value.raw}");
    p["fieldConfig"]["overrides"][0]["properties"][0]["value"][0]["url"] = link.into();
    assert!(
        problems(&p).contains("does not pass the rep id"),
        "{}",
        problems(&p)
    );
    // The activity mix by name alone would merge two reps of one name.
    let mut p = panel_copy("team.json", "Activity mix today by rep");
    assert_eq!(problems(&p), "");
    p["transformations"][0]["options"]["join"] = serde_json::json!(["name"]);
    assert!(problems(&p).contains("would merge"), "{}", problems(&p));
}

// The `$rep` picker: Grafana runs `query_result(expr)`, writes each series as
// `{label="value",...} value timestamp` (labels in the order of Prometheus' answer, sorted by
// name) and applies the variable's regex: the named groups `value` and `text` give the
// option's value and what the picker shows.

/// One element of the small regex dialect the boards use (JavaScript syntax).
#[derive(Debug)]
enum Re {
    Start,
    End,
    Char(char),
    Any,
    In(Vec<char>),
    NotIn(Vec<char>),
    Group(Option<String>, Vec<(Re, Repeat)>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Repeat {
    One,
    Optional,
    Star,
    Plus,
}

fn parse_regex(chars: &[char], i: &mut usize, in_group: bool) -> Result<Vec<(Re, Repeat)>, String> {
    let mut seq = Vec::new();
    while *i < chars.len() {
        let c = chars[*i];
        *i += 1;
        let atom = match c {
            '^' => Re::Start,
            '$' => Re::End,
            '.' => Re::Any,
            ')' if in_group => return Ok(seq),
            '\\' => {
                let e = *chars.get(*i).ok_or("trailing backslash")?;
                *i += 1;
                if e.is_ascii_alphanumeric() {
                    return Err(format!("unsupported escape \\{e}"));
                }
                Re::Char(e)
            }
            '[' => {
                let negated = chars.get(*i) == Some(&'^');
                if negated {
                    *i += 1;
                }
                let mut set = Vec::new();
                while *i < chars.len() && chars[*i] != ']' {
                    if chars[*i] == '\\' {
                        *i += 1;
                    }
                    set.extend(chars.get(*i));
                    *i += 1;
                }
                *i += 1;
                if negated {
                    Re::NotIn(set)
                } else {
                    Re::In(set)
                }
            }
            '(' => {
                let mut name = None;
                if chars[*i..].starts_with(&['?', '<']) {
                    let start = *i + 2;
                    let end = chars[start..]
                        .iter()
                        .position(|c| *c == '>')
                        .ok_or("unclosed group name")?
                        + start;
                    name = Some(chars[start..end].iter().collect());
                    *i = end + 1;
                } else if chars[*i..].starts_with(&['?', ':']) {
                    *i += 2;
                }
                Re::Group(name, parse_regex(chars, i, true)?)
            }
            '|' | '*' | '+' | '?' | '{' | '}' | ')' => {
                return Err(format!("unsupported {c:?} at {}", *i - 1))
            }
            c => Re::Char(c),
        };
        let repeat = match chars.get(*i) {
            Some('*') => Repeat::Star,
            Some('+') => Repeat::Plus,
            Some('?') => Repeat::Optional,
            _ => Repeat::One,
        };
        if repeat != Repeat::One {
            *i += 1;
        }
        seq.push((atom, repeat));
    }
    if in_group {
        Err("unclosed group".into())
    } else {
        Ok(seq)
    }
}

type Captures = BTreeMap<String, (usize, usize)>;

/// Every way `seq` matches `text` from `pos`: the end and the captures, in the order a
/// backtracking engine tries them (greedy first).
fn match_ends(
    seq: &[(Re, Repeat)],
    text: &[char],
    pos: usize,
    caps: &Captures,
) -> Vec<(usize, Captures)> {
    let Some(((atom, repeat), rest)) = seq.split_first() else {
        return vec![(pos, caps.clone())];
    };
    let mut after: Vec<(usize, Captures)> = Vec::new();
    match repeat {
        Repeat::One => after = atom_ends(atom, text, pos, caps),
        Repeat::Optional => {
            after = atom_ends(atom, text, pos, caps);
            after.push((pos, caps.clone()));
        }
        Repeat::Star | Repeat::Plus => {
            let mut levels = vec![vec![(pos, caps.clone())]];
            while levels.len() <= text.len() + 1 {
                let next: Vec<(usize, Captures)> = levels[levels.len() - 1]
                    .iter()
                    .flat_map(|(p, c)| {
                        atom_ends(atom, text, *p, c)
                            .into_iter()
                            .filter(move |(q, _)| q > p)
                    })
                    .collect();
                if next.is_empty() {
                    break;
                }
                levels.push(next);
            }
            let skip = usize::from(*repeat == Repeat::Plus);
            for level in levels.into_iter().skip(skip).rev() {
                after.extend(level);
            }
        }
    }
    after
        .into_iter()
        .flat_map(|(p, c)| match_ends(rest, text, p, &c))
        .collect()
}

fn atom_ends(atom: &Re, text: &[char], pos: usize, caps: &Captures) -> Vec<(usize, Captures)> {
    let one = |ok: bool| {
        if ok {
            vec![(pos + 1, caps.clone())]
        } else {
            Vec::new()
        }
    };
    match atom {
        Re::Start if pos == 0 => vec![(pos, caps.clone())],
        Re::End if pos == text.len() => vec![(pos, caps.clone())],
        Re::Start | Re::End => Vec::new(),
        Re::Char(c) => one(text.get(pos) == Some(c)),
        Re::Any => one(text.get(pos).is_some_and(|c| *c != '\n')),
        Re::In(set) => one(text.get(pos).is_some_and(|c| set.contains(c))),
        Re::NotIn(set) => one(text.get(pos).is_some_and(|c| !set.contains(c))),
        Re::Group(name, inner) => match_ends(inner, text, pos, caps)
            .into_iter()
            .map(|(p, mut c)| {
                if let Some(n) = name {
                    c.insert(n.clone(), (pos, p));
                }
                (p, c)
            })
            .collect(),
    }
}

/// What Grafana makes of one result line with the variable's `regex` (`/pattern/flags`):
/// `None` when the line does not match (no option); else the option's value and text.
fn variable_option(regex: &str, line: &str) -> Result<Option<(String, String)>, String> {
    let pattern = regex
        .strip_prefix('/')
        .and_then(|r| r.rsplit_once('/'))
        .map(|(p, _flags)| p)
        .ok_or_else(|| format!("{regex:?} is not /pattern/"))?;
    let chars: Vec<char> = pattern.chars().collect();
    let seq = parse_regex(&chars, &mut 0, false)?;
    let text: Vec<char> = line.chars().collect();
    for start in 0..=text.len() {
        if let Some((_, caps)) = match_ends(&seq, &text, start, &Captures::new())
            .into_iter()
            .next()
        {
            let get = |n: &str| caps.get(n).map(|(a, b)| text[*a..*b].iter().collect());
            let value: Option<String> = get("value");
            let shown: Option<String> = get("text");
            return Ok(match (value, shown) {
                (Some(v), Some(t)) => Some((v, t)),
                (Some(v), None) => Some((v.clone(), v)),
                (None, Some(t)) => Some((t.clone(), t)),
                (None, None) => return Err("the regex names no value or text group".into()),
            });
        }
    }
    Ok(None)
}

/// The line Grafana's `query_result` writes for a series with `labels` (Prometheus answers
/// with labels sorted by name; Grafana keeps that order and does not escape values).
fn query_result_line(labels: &BTreeMap<&str, &str>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}} 1 1764633600000", inner.join(","))
}

#[test]
fn the_rep_picker_shows_names_and_keeps_ids() {
    let board = boards()
        .into_iter()
        .find(|b| b.file == "rep.json")
        .expect("rep board");
    let var = board.json["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "rep")
        .expect("$rep");
    let query = var["query"]["query"].as_str().expect("query");
    assert_eq!(var["definition"].as_str(), Some(query), "definition");
    assert_eq!(var["query"]["qryType"], 3, "a query_result variable");
    let (expr, label) = variable_query(query);
    assert_eq!(label, None, "{query}: query_result");
    // The members of the team on the roster, with or without deals.
    let sels = selectors(&expr).expect("scans");
    assert!(
        sels.iter().all(|s| s.metric == "sales_rep_info"
            && s.matchers
                .iter()
                .any(|m| m.label == "team" && m.value == "$team")),
        "{expr}"
    );
    // Exactly rep and name on every line, so the regex knows where each stands.
    assert_eq!(
        shape(&expr),
        Ok(vector(&["name", "rep"], &["name", "rep"])),
        "{expr}"
    );
    let regex = var["regex"].as_str().expect("regex");
    for (name, rep) in [
        ("Ada Lovelace", "rep-007"),
        ("rep-003", "rep-003"),
        ("Zoë O'Brien-Núñez", "rep-120"),
        ("Ada \"Ace\" Lovelace", "rep-010"),
        ("a,rep=\"x\"", "rep-011"),
    ] {
        let line = query_result_line(&BTreeMap::from([("name", name), ("rep", rep)]));
        assert_eq!(
            variable_option(regex, &line),
            Ok(Some((rep.to_owned(), name.to_owned()))),
            "{regex} on {line}"
        );
    }
    // The check reads the regex as Grafana would: the labels the other way round, or the
    // groups swapped, give other options.
    let swapped = r#"/^\{rep="(?<value>[^"]+)",name="(?<text>.*)"\}/"#;
    let line = query_result_line(&BTreeMap::from([("name", "Ada"), ("rep", "rep-007")]));
    assert_eq!(variable_option(swapped, &line), Ok(None));
    let wrong = r#"/name="(?<value>[^"]+)",rep="(?<text>[^"]+)"/"#;
    assert_eq!(
        variable_option(wrong, &line),
        Ok(Some(("Ada".to_owned(), "rep-007".to_owned())))
    );
    println!("$rep: {query} with {regex}");
}
