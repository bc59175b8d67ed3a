//! `salespulse-board --once` against stand-in services on 127.0.0.1.

use std::process::{Command, Output};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const DEALS: &str = r#"# HELP sales_rep_bookings Bookings.
# TYPE sales_rep_bookings gauge
sales_rep_bookings{rep="rep-001",team="team-emea",window="qtd"} 12345.5
sales_rep_bookings{rep="rep-002",team="team-amer",window="qtd"} 1.5e+05
sales_rep_bookings{rep="rep-003",team="team-amer",window="qtd"} 2.5e4
sales_rep_deals_won{rep="rep-001",team="team-emea",window="qtd"} 3
sales_rep_deals_won{rep="rep-002",team="team-amer",window="qtd"} 12
sales_org_bookings{window="today"} 1234567.891
sales_org_deals_won{window="today"} 42
sales_team_bookings{team="team-amer",window="qtd"} 175000
sales_team_bookings{team="team-emea",window="qtd"} 12345.5
"#;

const TARGETS: &str = r#"# TYPE sales_rep_rank gauge
sales_rep_rank{among="org",metric="bookings",rep="rep-001",team="team-emea",window="qtd"} 1
sales_rep_rank{among="org",metric="bookings",rep="rep-002",team="team-amer",window="qtd"} 2
sales_rep_rank{among="org",metric="bookings",rep="rep-003",team="team-amer",window="qtd"} 3
sales_period_elapsed_ratio{period="2026-Q4",period_type="quarter"} 0.5
sales_rep_attainment_ratio{metric="bookings",period="2026-Q4",period_type="quarter",rep="rep-001",team="team-emea"} 0.52
sales_rep_pace_ratio{metric="bookings",period="2026-Q4",period_type="quarter",rep="rep-001",team="team-emea"} 0.93
sales_rep_pace_ratio{metric="bookings",period="2026-Q4",period_type="quarter",rep="rep-002",team="team-amer"} 0.61
sales_team_target{metric="bookings",period="2026-Q4",period_type="quarter",team="team-amer"} 2e+05
sales_team_attainment_ratio{metric="bookings",period="2026-Q4",period_type="quarter",team="team-amer"} 0.875
"#;

/// The deals service's pipeline families, for two teams and the org (the exposition sorts
/// labels by name, as the services write them).
const PIPELINE_DEALS: &str = r#"# HELP sales_team_open_deals Open deals in the stage now.
# TYPE sales_team_open_deals gauge
sales_team_open_deals{stage="negotiation",team="team-emea"} 2
sales_team_open_deals{stage="proposal",team="team-emea"} 5
sales_team_open_deals{stage="prospecting",team="team-emea"} 21
sales_team_open_deals{stage="qualification",team="team-emea"} 8
sales_team_open_deals{stage="prospecting",team="team-amer"} 40
sales_team_open_pipeline{stage="negotiation",team="team-emea"} 60000
sales_team_open_pipeline{stage="proposal",team="team-emea"} 75000.25
sales_team_open_pipeline{stage="prospecting",team="team-emea"} 105000
sales_team_open_pipeline{stage="qualification",team="team-emea"} 48000
sales_team_stage_entered{stage="prospecting",team="team-emea",window="30d"} 17
sales_team_stage_entered{stage="prospecting",team="team-emea",window="qtd"} 40
sales_team_stage_entered{stage="qualification",team="team-emea",window="30d"} 9
sales_team_stage_entered{stage="proposal",team="team-emea",window="30d"} 6
sales_team_stage_entered{stage="negotiation",team="team-emea",window="30d"} 3
sales_team_stage_exited{stage="prospecting",team="team-emea",to="advanced",window="30d"} 9
sales_team_stage_exited{stage="prospecting",team="team-emea",to="lost",window="30d"} 3
sales_team_stage_conversion_ratio{stage="prospecting",team="team-emea",window="30d"} 0.75
sales_team_stage_conversion_ratio{stage="qualification",team="team-emea",window="30d"} 0.6
sales_team_stage_conversion_ratio{stage="proposal",team="team-emea",window="30d"} 0.5
sales_team_stage_conversion_ratio{stage="negotiation",team="team-emea",window="30d"} 0.666667
sales_team_stage_conversion_ratio{stage="prospecting",team="team-emea",window="qtd"} 0.1
sales_team_stage_seconds{stage="prospecting",team="team-emea",window="30d"} 604800
sales_team_stage_seconds{stage="qualification",team="team-emea",window="30d"} 1.0368e+06
sales_team_stage_seconds{stage="proposal",team="team-emea",window="30d"} 432000
sales_team_stage_seconds{stage="negotiation",team="team-emea",window="30d"} 216000
sales_team_stage_age_seconds{stage="prospecting",team="team-emea"} 900000
sales_team_stalled_deals{stage="prospecting",team="team-emea"} 3
sales_team_stalled_deals{stage="qualification",team="team-emea"} 1
sales_team_stalled_pipeline{stage="prospecting",team="team-emea"} 15000
sales_team_stalled_pipeline{stage="qualification",team="team-emea"} 6000
sales_team_overdue_deals{team="team-emea"} 2
sales_team_overdue_pipeline{team="team-emea"} 33000
sales_team_forecast{category="closed",period="2026-Q4",period_type="quarter",team="team-emea"} 80000
sales_team_forecast{category="commit",period="2026-Q4",period_type="quarter",team="team-emea"} 45000
sales_team_forecast_rollup{period="2026-Q4",period_type="quarter",rollup="best_case",team="team-emea"} 185000
sales_team_forecast_rollup{period="2026-Q4",period_type="quarter",rollup="commit",team="team-emea"} 125000
sales_team_forecast_rollup{period="2026-Q4",period_type="quarter",rollup="pipeline",team="team-emea"} 260000.5
sales_team_forecast_rollup{period="2026-12",period_type="month",rollup="commit",team="team-emea"} 70000
sales_team_forecast_rollup{period="2026-Q4",period_type="quarter",rollup="commit",team="team-amer"} 999999
sales_team_bookings{team="team-emea",window="qtd"} 80000
sales_org_open_deals{stage="prospecting"} 61
sales_org_open_deals{stage="proposal"} 5
sales_org_open_pipeline{stage="prospecting"} 205000
sales_org_open_pipeline{stage="proposal"} 75000.25
sales_org_stalled_deals{stage="prospecting"} 3
sales_org_stalled_pipeline{stage="prospecting"} 15000
sales_org_overdue_deals 0
sales_org_overdue_pipeline 0
sales_org_forecast_rollup{period="2026-Q4",period_type="quarter",rollup="commit"} 1.2e+06
sales_org_bookings{window="qtd"} 950000
"#;

const PIPELINE_TARGETS: &str = r#"# TYPE sales_team_target gauge
sales_team_target{metric="bookings",period="2026-Q4",period_type="quarter",team="team-emea"} 250000
sales_team_target{metric="bookings",period="2027-Q1",period_type="quarter",team="team-emea"} 300000
sales_team_target{metric="bookings",period="2026-12",period_type="month",team="team-emea"} 90000
sales_team_forecast{metric="bookings",period="2026-Q4",period_type="quarter",team="team-emea"} 1
sales_team_forecast_coverage{period="2026-Q4",period_type="quarter",rollup="commit",team="team-emea"} 0.5
sales_org_target{metric="bookings",period="2026-Q4",period_type="quarter"} 1e+06
"#;

/// Answers every request on a fresh 127.0.0.1 port with `body`; returns the /metrics URL.
async fn serve(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}/metrics")
}

/// A 127.0.0.1 URL nothing listens on.
async fn closed() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/metrics")
}

async fn board(deals: String, targets: String, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_salespulse-board"));
    cmd.args(["--once", "--deals-url", &deals, "--targets-url", &targets])
        .args(extra)
        .env_remove("NO_COLOR");
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run salespulse-board")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_both_services() {
    let (deals, targets) = (serve(DEALS).await, serve(TARGETS).await);
    let o = board(deals, targets, &["--no-color", "--top", "2"]).await;
    let out = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(!out.contains('\x1b'), "{out}");
    assert!(!out.contains("unreachable"), "{out}");
    let header = out.lines().next().unwrap_or_default();
    assert!(header.contains("window qtd"), "{header}");
    assert!(
        header.contains("bookings 1,234,567.89, deals won 42"),
        "{header}"
    );

    let r1 = line_of(&out, "rep-001");
    for part in ["team-emea", "12,345.50", "3", "█████░░░░░ 52%", "0.93"] {
        assert!(r1.contains(part), "{part:?} not in {r1:?}");
    }
    let r2 = line_of(&out, "rep-002");
    assert!(r2.contains("150,000.00") && r2.contains("12"), "{r2:?}");
    assert!(out.find("rep-001") < out.find("rep-002"), "{out}");
    assert!(!out.contains("rep-003"), "{out}");
    assert!(out.contains("showing 2 of 3 reps"), "{out}");

    let amer = team_line(&out, "team-amer");
    for part in ["175,000.00", "200,000.00", "█████████░ 88%"] {
        assert!(amer.contains(part), "{part:?} not in {amer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_without_targets_service_ranks_by_bookings() {
    let (deals, targets) = (serve(DEALS).await, closed().await);
    let o = board(deals, targets.clone(), &[]).await;
    let out = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(
        !out.contains("\x1b[2J"),
        "--once must not clear the screen: {out:?}"
    );
    let notice = line_of(&out, "unreachable");
    assert!(
        notice.starts_with("! targets service unreachable at"),
        "{notice}"
    );
    assert!(notice.contains(&targets), "{notice}");
    assert_eq!(out.matches("unreachable").count(), 1, "{out}");

    let p1 = out.find("rep-002").unwrap_or(usize::MAX);
    let p2 = out.find("rep-003").unwrap_or(usize::MAX);
    let p3 = out.find("rep-001").unwrap_or(usize::MAX);
    assert!(p1 < p2 && p2 < p3 && p3 < usize::MAX, "{out}");
    let r1 = line_of(&out, "rep-001");
    assert!(r1.trim_start().starts_with("3  rep-001"), "{r1:?}");
    assert!(!r1.contains('%') && !r1.contains("0.93"), "{r1:?}");
}

/// The roster's names on the deals service's /metrics, as it writes them (labels sorted):
/// rep-001 and rep-002 named, rep-003 on the roster without a name (its id).
const NAMES: &str = r#"# HELP sales_rep_info 1 for every rep on the roster, under its roster team, with its name (the id when the roster names none) and region
# TYPE sales_rep_info gauge
sales_rep_info{name="Ada Lovelace",region="europe",rep="rep-001",team="team-emea"} 1
sales_rep_info{name="Bela Bianchi",region="americas",rep="rep-002",team="team-amer"} 1
sales_rep_info{name="rep-003",rep="rep-003",team="team-amer"} 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_shows_reps_under_their_roster_names() {
    let with_names: &'static str = Box::leak(format!("{DEALS}{NAMES}").into_boxed_str());
    let (deals, targets) = (serve(with_names).await, serve(TARGETS).await);
    let o = board(deals, targets, &["--no-color"]).await;
    let out = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    let r1 = line_of(&out, "Ada Lovelace");
    assert!(r1.trim_start().starts_with("1  Ada Lovelace"), "{r1:?}");
    for part in ["team-emea", "12,345.50", "█████░░░░░ 52%", "0.93"] {
        assert!(r1.contains(part), "{part:?} not in {r1:?}");
    }
    let r2 = line_of(&out, "Bela Bianchi");
    assert!(r2.trim_start().starts_with("2  Bela Bianchi"), "{r2:?}");
    assert!(r2.contains("150,000.00"), "{r2:?}");
    // The roster names none: the id.
    let r3 = line_of(&out, "rep-003");
    assert!(r3.trim_start().starts_with("3  rep-003"), "{r3:?}");
    assert!(
        !out.contains("rep-001") && !out.contains("rep-002"),
        "{out}"
    );

    // The same services without sales_rep_info: the ids.
    let (deals, targets) = (serve(DEALS).await, serve(TARGETS).await);
    let out = stdout(&board(deals, targets, &["--no-color"]).await);
    assert!(
        line_of(&out, "rep-001")
            .trim_start()
            .starts_with("1  rep-001"),
        "{out}"
    );
    assert!(!out.contains("Ada Lovelace"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_nothing_reachable_still_prints() {
    let (deals, targets) = (closed().await, closed().await);
    let o = board(deals, targets, &["--no-color"]).await;
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(out.matches("unreachable").count(), 2, "{out}");
    assert!(out.contains("No rep data"), "{out}");
    assert!(o.stderr.is_empty(), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colors_unless_disabled() {
    let (deals, targets) = (serve(DEALS).await, serve(TARGETS).await);
    let o = board(deals, targets, &["--window", "qtd"]).await;
    let out = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(
        line_of(&out, "rep-002").contains("\x1b[31m0.61\x1b[0m"),
        "{out:?}"
    );
    // 0.93 sits in the uncolored band.
    assert!(!line_of(&out, "rep-001").contains('\x1b'), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_pipeline_of_a_team() {
    let (deals, targets) = (serve(PIPELINE_DEALS).await, serve(PIPELINE_TARGETS).await);
    let o = board(
        deals,
        targets,
        &["--view", "pipeline", "--team", "team-emea", "--no-color"],
    )
    .await;
    let out = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(
        !out.contains('\x1b') && !out.contains("unreachable"),
        "{out}"
    );
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.ends_with("| pipeline of team team-emea | quarter 2026-Q4"),
        "{header}"
    );

    // Stages in pipeline order: open deals and amount now; entered, conversion and mean days
    // in stage over 30 days; stalled now.
    let stages: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| ["prospecting", "qualification", "proposal", "negotiation"].contains(w))
        .collect();
    assert_eq!(
        stages,
        vec!["prospecting", "qualification", "proposal", "negotiation"],
        "{out}"
    );
    let row = |stage: &str| -> Vec<String> {
        team_line(&out, stage)
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        row("prospecting"),
        [
            "prospecting",
            "21",
            "105,000.00",
            "17",
            "75%",
            "7.0",
            "3",
            "15,000.00"
        ]
    );
    assert_eq!(
        row("qualification"),
        [
            "qualification",
            "8",
            "48,000.00",
            "9",
            "60%",
            "12.0",
            "1",
            "6,000.00"
        ]
    );
    assert_eq!(
        row("negotiation"),
        ["negotiation", "2", "60,000.00", "3", "67%", "2.5"]
    );
    assert_eq!(
        row("Total"),
        ["Total", "36", "288,000.25", "4", "21,000.00"]
    );
    assert!(
        out.contains("Stalled: 4 deals, 21,000.00 | Overdue: 2 deals, 33,000.00"),
        "{out}"
    );

    // The quarter's roll-ups, smallest first, next to closed and against the quarter target.
    assert!(
        team_line(&out, "Forecast 2026-Q4").contains("Of target"),
        "{out}"
    );
    assert_eq!(row("closed"), ["closed", "80,000.00", "███░░░░░░░ 32%"]);
    assert_eq!(row("commit"), ["commit", "125,000.00", "█████░░░░░ 50%"]);
    assert_eq!(
        row("best_case"),
        ["best_case", "185,000.00", "███████░░░ 74%"]
    );
    assert_eq!(
        row("pipeline"),
        ["pipeline", "260,000.50", "██████████ 104%"]
    );
    assert_eq!(row("target"), ["target", "250,000.00"]);
    assert!(
        !out.contains("team-amer") && !out.contains("999,999"),
        "{out}"
    );
    // The leaderboard is not shown.
    assert!(
        !out.contains("No rep data") && !out.contains("No team data"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_pipeline_of_the_org_without_targets_service() {
    let (deals, targets) = (serve(PIPELINE_DEALS).await, closed().await);
    let o = board(deals, targets, &["--view", "pipeline"]).await;
    let out = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.contains("| pipeline of org | quarter 2026-Q4"),
        "{header}"
    );
    assert!(line_of(&out, "unreachable").starts_with("! targets service unreachable at"));
    let prospecting = team_line(&out, "prospecting");
    for part in ["61", "205,000.00", "15,000.00"] {
        assert!(
            prospecting.contains(part),
            "{part:?} not in {prospecting:?}"
        );
    }
    // Stalled in red; nothing overdue.
    assert!(
        out.contains("Stalled: \x1b[31m3 deals, 15,000.00\x1b[0m | Overdue: 0 deals, 0.00\n"),
        "{out:?}"
    );
    assert!(team_line(&out, "commit").contains("1,200,000.00"), "{out}");
    assert!(team_line(&out, "closed").contains("950,000.00"), "{out}");
    // No targets service: no target, nothing against it.
    assert_eq!(team_line(&out, "target").trim_end(), "target", "{out}");
    assert!(!out.contains('%'), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_pipeline_of_an_unknown_team() {
    let (deals, targets) = (serve(PIPELINE_DEALS).await, serve(PIPELINE_TARGETS).await);
    let o = board(
        deals,
        targets,
        &["--view", "pipeline", "--team", "team-nord", "--no-color"],
    )
    .await;
    let out = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(
        out.contains("No pipeline data for the team team-nord."),
        "{out}"
    );
    assert!(out.contains("Stalled: - | Overdue: -"), "{out}");
}

#[test]
fn team_is_for_the_pipeline_view() {
    let bin = env!("CARGO_BIN_EXE_salespulse-board");
    for args in [
        &["--once", "--team", "team-emea"][..],
        &["--once", "--view", "leaderboard", "--team", "team-emea"],
        &["--once", "--view", "funnel"],
    ] {
        let o = Command::new(bin).args(args).output().expect("run");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(o.stdout.is_empty(), "{args:?}: {o:?}");
    }
}

#[test]
fn rejects_unknown_window_and_documents_flags() {
    let bin = env!("CARGO_BIN_EXE_salespulse-board");
    let o = Command::new(bin)
        .args(["--once", "--window", "fortnight"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let help = Command::new(bin).arg("--help").output().expect("run");
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--view",
        "--team",
        "--deals-url",
        "--targets-url",
        "--window",
        "--top",
        "--interval",
        "--once",
        "--no-color",
    ] {
        assert!(text.contains(flag), "{flag} missing from\n{text}");
    }
}
