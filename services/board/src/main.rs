//! `salespulse-board`: the sales-floor leaderboard in a terminal, for whoever has no Grafana,
//! or (`--view pipeline`) a team's or the org's pipeline: stages, stalled and overdue deals
//! and the quarter forecast.
//!
//! Polls the deals and targets services' `/metrics` and redraws; either service may be down,
//! in which case the board shows what the other one has.

mod parse;
mod pipeline;
mod view;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::builder::PossibleValuesParser;
use clap::error::ErrorKind;
use clap::{CommandFactory as _, Parser};
use tokio::time::MissedTickBehavior;

use crate::parse::Sample;

const CLEAR: &str = "\x1b[2J\x1b[H";

/// What the board shows.
const VIEWS: [&str; 2] = ["leaderboard", "pipeline"];

/// Terminal view of the sales-floor leaderboard, or of a team's or the org's pipeline, read
/// from the deals and targets services' Prometheus /metrics endpoints.
#[derive(Debug, Parser)]
#[command(name = "salespulse-board", version)]
struct Args {
    /// Metrics endpoint of the deals service.
    #[arg(long, default_value = "http://127.0.0.1:9101/metrics")]
    deals_url: String,

    /// Metrics endpoint of the targets service (ranks, attainment, pace, team targets).
    #[arg(long, default_value = "http://127.0.0.1:9103/metrics")]
    targets_url: String,

    /// What to show: the rep and team leaderboard, or the pipeline (open deals and amount by
    /// stage, stage conversion and mean days in stage over 30 days, stalled and overdue deals,
    /// the quarter forecast roll-ups next to closed and the target) of a team or the org.
    #[arg(long, default_value = "leaderboard", value_parser = PossibleValuesParser::new(VIEWS))]
    view: String,

    /// The team of the pipeline view (default: the whole org).
    #[arg(long)]
    team: Option<String>,

    /// Window of the leaderboard's bookings, deals won and rank columns.
    #[arg(long, default_value = "qtd", value_parser = PossibleValuesParser::new(view::WINDOWS))]
    window: String,

    /// How many reps the leaderboard lists.
    #[arg(long, default_value_t = 15)]
    top: usize,

    /// Seconds between redraws.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    interval: u64,

    /// Print the board once, without clearing the screen, and exit (status 1 if neither
    /// service could be read).
    #[arg(long)]
    once: bool,

    /// No ANSI colors (also off when the NO_COLOR environment variable is set).
    #[arg(long)]
    no_color: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.team.is_some() && args.view != "pipeline" {
        Args::command()
            .error(
                ErrorKind::ArgumentConflict,
                "--team selects the team of --view pipeline",
            )
            .exit();
    }
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("salespulse-board: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        // A hung service must not stall the board for longer than about one redraw.
        .timeout(Duration::from_secs(args.interval.clamp(2, 10)))
        .build()
        .context("building the HTTP client")?;
    let color = !args.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());

    if args.once {
        let (screen, reachable) = frame(&client, &args, color).await;
        let mut out = std::io::stdout().lock();
        out.write_all(screen.as_bytes())?;
        out.flush()?;
        return Ok(if reachable {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    let mut tick = tokio::time::interval(Duration::from_secs(args.interval));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // One future for the whole run, so a Ctrl-C during a fetch is not lost between polls.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(ExitCode::SUCCESS),
            screen = async {
                tick.tick().await;
                frame(&client, &args, color).await.0
            } => {
                let mut out = std::io::stdout().lock();
                out.write_all(CLEAR.as_bytes())?;
                out.write_all(screen.as_bytes())?;
                out.flush()?;
            }
        }
    }
}

/// One screen, and whether at least one service answered.
async fn frame(client: &reqwest::Client, args: &Args, color: bool) -> (String, bool) {
    let (deals, targets) = tokio::join!(
        fetch(client, &args.deals_url),
        fetch(client, &args.targets_url)
    );
    let mut notices = Vec::new();
    let mut ok = |name: &str, url: &str, r: anyhow::Result<Vec<Sample>>| match r {
        Ok(samples) => Some(samples),
        Err(e) => {
            notices.push(format!("{name} service unreachable at {url}: {e}"));
            None
        }
    };
    let deals = ok("deals", &args.deals_url, deals);
    let targets = ok("targets", &args.targets_url, targets);
    let reachable = deals.is_some() || targets.is_some();
    let time = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let screen = if args.view == "pipeline" {
        let p = pipeline::build(deals.as_deref(), targets.as_deref(), args.team.as_deref());
        pipeline::render(&p, &time, &notices, color)
    } else {
        let board = view::build(deals.as_deref(), targets.as_deref(), &args.window, args.top);
        view::render(&board, &time, &notices, color)
    };
    (screen, reachable)
}

async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<Sample>> {
    let response = client.get(url).send().await.map_err(root_cause)?;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!("HTTP {status}");
    }
    let text = response.text().await.map_err(root_cause)?;
    Ok(parse::parse(&text))
}

/// reqwest's top-level message repeats the URL and hides why; the innermost cause
/// ("Connection refused", "operation timed out") is what fits on the notice line.
fn root_cause(e: reqwest::Error) -> anyhow::Error {
    let timed_out = e.is_timeout();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if timed_out {
        anyhow::anyhow!("timed out")
    } else {
        anyhow::anyhow!("{cause}")
    }
}
