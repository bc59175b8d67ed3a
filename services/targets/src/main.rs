//! Targets service: targets, attainment, pace, projections and leaderboards per rep, team and
//! org, computed from `sales.metrics` and `sales.targets` only, on `/metrics`.
//! `salespulse-targets import FILE` loads targets from a CSV file, `import-plan FILE`
//! compensation plans.

mod import;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use salespulse_pipeline::{init_logging, run_targets, shutdown_signal, ServiceArgs, Settings};

/// Targets service: attainment, pace, projections and leaderboards from sales.metrics and
/// sales.targets.
#[derive(Debug, Parser)]
#[command(name = "salespulse-targets", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a CSV file of targets (scope,id,metric,kind,period,value,currency) and produce it
    /// to the targets topic; a file with any bad row writes nothing.
    Import {
        file: PathBuf,
        /// Only check the file.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check a CSV file of compensation plans, one row per tier (plan,reps,otv,currency,metric,
    /// period_type,tier_from,tier_to,rate,decelerator_below,decelerator_factor,cap; see
    /// docs/targets.md), and produce one plan per rep to the plans topic; a file with any bad
    /// row writes nothing.
    ImportPlan {
        file: PathBuf,
        /// Only check the file.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Reads `file` with `read` and, unless `dry_run`, produces its records to `topic`.
async fn import(
    settings: &Settings,
    file: &std::path::Path,
    dry_run: bool,
    what: &str,
    topic: &str,
    read: fn(
        &std::path::Path,
        &salespulse_targets::TargetRules,
    ) -> anyhow::Result<Vec<import::Record>>,
) -> anyhow::Result<()> {
    let rules = settings.target_rules()?;
    let rows = read(file, &rules)?;
    if dry_run {
        println!("{}: {} {what}, all valid", file.display(), rows.len());
        return Ok(());
    }
    let n = import::write(settings, topic, rows).await?;
    println!("{}: {n} {what} written to {topic}", file.display());
    Ok(())
}

/// The services allocate and free many short-lived buffers per tick from several threads
/// (the loop, librdkafka's delivery reports); mimalloc keeps that off the global lock and the
/// page-fault path that the system allocator takes (`salespulse_pipeline::allocator`: how long
/// it keeps what was freed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Before the runtime's threads start.
    salespulse_pipeline::allocator::keep_freed_memory();
    serve()
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.service, "targets").context("loading the configuration")?;
    if cli.service.print_config {
        println!("{settings:#?}");
        return Ok(());
    }
    init_logging(&settings.log.format);
    match cli.command {
        Some(Command::Import { file, dry_run }) => {
            let topic = &settings.topics.targets;
            import(&settings, &file, dry_run, "targets", topic, import::read).await?;
        }
        Some(Command::ImportPlan { file, dry_run }) => {
            let topic = &settings.topics.plans;
            import(
                &settings,
                &file,
                dry_run,
                "rep plans",
                topic,
                import::read_plans,
            )
            .await?;
        }
        None => run_targets(settings, shutdown_signal())
            .await
            .context("salespulse-targets stopped")?,
    }
    Ok(())
}
