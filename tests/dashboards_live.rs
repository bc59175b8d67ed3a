//! The Grafana dashboards against live data: the three services on a real broker, fed by the
//! simulator (two days of history) and the sample targets, scraped by a real Prometheus.
//! Every query of every board must evaluate and return at least one series, as it would on
//! the wall.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use salespulse_e2e::*;
use serde_json::Value;

/// The team the boards are looked at for; its reps are the candidates for `$rep`.
const TEAM: &str = "team-emea";
/// How long the queries may take, once the records are consumed, to all return series.
const SETTLE: Duration = Duration::from_secs(90);

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

/// The series selector of a `label_values(selector, label)` variable query.
fn label_values_selector(query: &str) -> String {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{query:?} is not label_values(selector, label)"));
    let (selector, _) = inner.rsplit_once(',').expect("label_values has a label");
    selector.trim().to_owned()
}

/// Every panel query and every variable query of every board in deploy/grafana/dashboards.
fn queries() -> Vec<Query> {
    let dir = root().join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/grafana/dashboards")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    let mut out = Vec::new();
    for path in files {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path).expect("readable");
        let board: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
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
                expr: label_values_selector(&query),
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
    let q = format!("max by (rep) (sales_rep_member{{team=\"{TEAM}\"}})");
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

/// The queries that fail for one choice of `$rep`: their origin, and `origin: expr` with
/// the reason.
async fn failures(
    client: &reqwest::Client,
    port: u16,
    queries: &[Query],
    rep: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for q in queries {
        let expr = substitute(&q.expr, &[("team", TEAM), ("rep", rep)]);
        match instant(client, port, &expr).await {
            Ok(series) if series.is_empty() => {
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
        let expr = substitute(&q.expr, &[("team", TEAM), ("rep", "rep-000")]);
        assert!(!expr.contains('$'), "{}: unsubstituted variable", q.origin);
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
    let probed = failures(&client, prometheus.port, &probes, "").await;
    assert!(
        probed.len() == 2 && probed[0].1.ends_with("no series") && probed[1].1.contains("bad_data"),
        "an empty and a malformed query are reported as such: {probed:?}"
    );

    // Two days of history for the simulated org, as fast as the broker takes it.
    let sim_log = tmp.join(format!("{}-simulator.log", topics.suffix));
    let status = run_bounded(
        Command::new(&simulator)
            .args(["--bootstrap", &bootstrap()])
            .args(["--deals-topic", &topics.deals])
            .args(["--activities-topic", &topics.activities])
            .args(["--roster-topic", &topics.roster])
            .args(["--seed", "42", "--backfill-days", "2"])
            .args(["--records", "20000", "--rate", "0"])
            .env("RUST_LOG", "info"),
        &sim_log,
        Duration::from_secs(180),
    );
    assert!(
        status.success(),
        "the simulator failed:\n{}",
        log_tail(&sim_log)
    );
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

    // Until every query returns series. `$rep` is the first of the team's reps, most
    // bookings this quarter first, for whom every query of the boards does.
    let (shared, per_rep): (Vec<Query>, Vec<Query>) = queries
        .into_iter()
        .partition(|q| !q.expr.contains("$rep") && !q.expr.contains("${rep}"));
    let deadline = Instant::now() + SETTLE;
    let (rep, failed, skipped) = loop {
        check_alive(&mut [&mut deals, &mut acts, &mut targets]);
        let mut failed = failures(&client, prometheus.port, &shared, "").await;
        let mut rep = String::new();
        let mut skipped = Vec::new();
        if failed.is_empty() {
            let candidates = candidate_reps(&client, prometheus.port).await;
            if candidates.is_empty() {
                failed.push((
                    "variable rep".into(),
                    format!("no rep of {TEAM} in sales_rep_member"),
                ));
            }
            let mut fewest: Option<(String, Vec<(String, String)>)> = None;
            for r in candidates {
                let f = failures(&client, prometheus.port, &per_rep, &r).await;
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
            "{} of {total} dashboard queries failed or returned no series after {SETTLE:?} ($team={TEAM}, $rep={rep:?}):\n{}\n\ncontext:\n{}\n\ntargets service log:\n{}",
            failed.len(),
            failed.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("\n"),
            context.join("\n"),
            log_tail(&targets.log)
        );
    }
    for s in &skipped {
        println!("$rep: skipped {s}");
    }
    println!(
        "dashboards live: {total} queries, all returned series ($team={TEAM}, $rep={rep}; {:.1} s)",
        started.elapsed().as_secs_f64()
    );
}
