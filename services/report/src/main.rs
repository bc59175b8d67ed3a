//! `salespulse-report`: the quarterly report, from `sales.metrics` and `sales.targets`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use salespulse_pipeline::{read_to_end, ServiceArgs, Settings};
use salespulse_publish::MetricRecord;
use salespulse_report::{build, render, Format};
use salespulse_targets::{Period, Target};

/// The quarterly report: per team and per rep, bookings against target, attainment, win rate,
/// average deal size, sales cycle, pipeline created, activities, rank and consistency, with
/// charts (HTML). Covers the current quarter (to date) and the last one (closed).
#[derive(Debug, Parser)]
#[command(name = "salespulse-report", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
    /// The fiscal quarter, e.g. 2026-Q3.
    #[arg(long)]
    period: String,
    /// Only this team and its reps.
    #[arg(long)]
    team: Option<String>,
    /// html (tables and charts), csv or md.
    #[arg(long, value_enum, default_value_t = Format::Html)]
    format: Format,
    /// Where to write the report.
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.service, "report").context("loading the configuration")?;
    if cli.service.print_config {
        println!("{settings:#?}");
        return Ok(());
    }
    salespulse_pipeline::init_logging(&settings.log.format);
    let period = Period::parse(&cli.period)?;
    let calendar = settings.calendar()?;
    let ramp = settings.ramp()?;
    let rules = settings.target_rules()?;

    let (records, targets) = read_published(&settings, &rules).await?;
    let report = build(
        &records,
        &targets,
        &salespulse_report::Settings {
            period,
            team: cli.team.as_deref(),
            now: chrono::Utc::now().timestamp(),
            calendar: &calendar,
            ramp: &ramp,
            currency: settings.contract.reporting_currency.as_str(),
        },
    )?;
    let text = match cli.format {
        Format::Html => render::html(&report).map_err(anyhow::Error::msg)?,
        Format::Csv => render::csv(&report).map_err(anyhow::Error::msg)?,
        Format::Md => render::markdown(&report),
    };
    std::fs::write(&cli.out, text).with_context(|| format!("writing {}", cli.out.display()))?;
    println!(
        "{}: {} of {} ({} teams, {} reps)",
        cli.out.display(),
        report.period,
        report.team.as_deref().unwrap_or("the org"),
        report.teams.len(),
        report.reps.len()
    );
    Ok(())
}

/// The latest value of every key of the metrics and targets topics. Both are compacted: the
/// latest record of a key is its value, a tombstone none.
async fn read_published(
    settings: &Settings,
    rules: &salespulse_targets::TargetRules,
) -> anyhow::Result<(Vec<MetricRecord>, Vec<Target>)> {
    let format = settings.publish.format;
    let mut metrics: HashMap<String, MetricRecord> = HashMap::new();
    let mut unreadable = 0usize;
    read_to_end(
        settings,
        &settings.topics.metrics,
        |key, payload| match payload.map(|p| salespulse_publish::decode(p, format)) {
            None => {
                metrics.remove(key);
            }
            Some(Some(r)) => {
                metrics.insert(key.to_owned(), r);
            }
            Some(None) => unreadable += 1,
        },
    )
    .await
    .with_context(|| format!("reading {}", settings.topics.metrics))?;
    let mut targets: HashMap<String, Target> = HashMap::new();
    read_to_end(settings, &settings.topics.targets, |key, payload| {
        match payload.map(|p| rules.parse(p)) {
            None => {
                targets.remove(key);
            }
            Some(Ok(t)) => {
                targets.insert(key.to_owned(), t);
            }
            // Bad target records are dead-lettered by the targets service.
            Some(Err(_)) => unreadable += 1,
        }
    })
    .await
    .with_context(|| format!("reading {}", settings.topics.targets))?;
    if unreadable > 0 {
        tracing::warn!(
            records = unreadable,
            "records that cannot be read were left out"
        );
    }
    if metrics.is_empty() {
        bail!(
            "{} holds no metrics: are the deals and activities services running against this broker?",
            settings.topics.metrics
        );
    }

    Ok((
        metrics.into_values().collect(),
        targets.into_values().collect(),
    ))
}
