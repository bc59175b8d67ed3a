//! The Grafana dashboards of deploy/grafana/dashboards. Grafana does not run here, so this
//! checks what would otherwise only fail on the wall: each board's structure, that every
//! query names only families, labels and label values the services export, that amounts are
//! shown in the configured reporting currency, and that a real Prometheus accepts every query.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use salespulse_e2e::{bin, free_port, root, Prometheus};
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

const WINDOWS: &[&str] = &[
    "1h", "24h", "7d", "30d", "today", "wtd", "mtd", "qtd", "ytd",
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
        "sales_events_total" => vec!["service", "topic", "outcome"],
        "sales_rejected_total" => vec!["service", "topic", "reason"],
        "sales_last_event_timestamp_seconds" => vec!["service", "topic"],
        "sales_consumer_lag" => vec!["service", "topic", "partition"],
        "sales_metrics_published_total" | "sales_ready" | "sales_board_series" => {
            vec!["service"]
        }
        "sales_state_entries" => vec!["service", "kind"],
        "sales_period_elapsed_ratio" => vec!["period", "period_type"],
        "sales_rep_rank" => vec!["rep", "team", "metric", "window", "among"],
        "sales_rep_team_share" => vec!["rep", "team", "metric", "window"],
        _ => {
            let rest = name.strip_prefix("sales_")?;
            let (scope, metric) = rest.split_once('_')?;
            let mut labels = match scope {
                "rep" => vec!["rep", "team"],
                "team" => vec!["team"],
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

/// The series selector of `label_values(selector, label)`, and the label.
fn label_values(query: &str) -> (String, String) {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{query:?} is not label_values(selector, label)"));
    let (selector, label) = inner.rsplit_once(',').expect("label_values has a label");
    (selector.trim().to_owned(), label.trim().to_owned())
}

fn queries(board: &Board) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(&board.json) {
        let title = p["title"].as_str().unwrap_or_default();
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                origin: format!("{} / {title:?} / {}", board.file, t["refId"]),
                expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                range: t["range"].as_bool().unwrap_or(true),
            });
        }
    }
    for (name, query) in variables(&board.json) {
        out.push(Query {
            origin: format!("{} / variable {name}", board.file),
            expr: label_values(&query).0,
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
            let (selector, label) = label_values(&vars[i].1);
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
                assert!(
                    labels.contains(&label.as_str()),
                    "{file}: {} has no label {label}",
                    s.metric
                );
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
                q.expr.matches('$').count(),
                refs_in_matchers,
                "{}: template variables only as label values",
                q.origin
            );
        }

        // A team's board shows that team only.
        if TEAM_BOARDS.contains(&file) {
            for p in panels(b) {
                let title = p["title"].as_str().unwrap_or_default();
                for t in p["targets"].as_array().into_iter().flatten() {
                    let expr = t["expr"].as_str().unwrap_or_default();
                    for s in selectors(expr).unwrap_or_default() {
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
            assert!(!expr.contains('$'), "{}: unsubstituted variable", q.origin);
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
    AMOUNTS.contains(&metric)
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
    let _ = std::fs::remove_dir_all(&out);
    let run = std::process::Command::new("sh")
        .arg(root().join("deploy/grafana/render-dashboards.sh"))
        .arg(config)
        .arg(root().join("deploy/grafana/dashboards"))
        .arg(&out)
        .env_remove("SALESPULSE_CONTRACT__REPORTING_CURRENCY")
        .envs(env.iter().copied())
        .output()
        .expect("sh runs");
    assert!(
        run.status.success(),
        "render-dashboards.sh {tag}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let boards = std::fs::read_dir(&out)
        .expect("rendered boards")
        .filter_map(Result::ok)
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).expect("readable");
            assert!(
                !text.contains(CURRENCY_PLACEHOLDER),
                "{tag}: placeholder left"
            );
            let json = serde_json::from_str(&text).expect("a rendered board is JSON");
            (e.file_name().to_string_lossy().into_owned(), json)
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
            // Nothing else changes.
            let mut source = serde_json::to_string(&board.json).expect("json");
            source = source.replace(CURRENCY_PLACEHOLDER, unit);
            assert_eq!(source, serde_json::to_string(r).expect("json"), "{tag}");
        }
        assert_eq!(n, placeholders, "{tag}");
    }
    let _ = std::fs::remove_file(&eur);
    println!("{placeholders} amount units, rendered as currencyUSD, currencyEUR, currencyGBP and currency:CAD");
}
