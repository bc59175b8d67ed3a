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
