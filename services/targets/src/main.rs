//! Targets service: targets, attainment, pace, projections and leaderboards per rep, team and
//! org, computed from `sales.metrics` and `sales.targets` only, on `/metrics`.
//! `salespulse-targets import FILE` loads targets from a CSV file.

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.service, "targets").context("loading the configuration")?;
    if cli.service.print_config {
        println!("{settings:#?}");
        return Ok(());
    }
    init_logging(&settings.log.format);
    match cli.command {
        Some(Command::Import { file, dry_run }) => {
            let rules = settings.target_rules()?;
            let rows = import::read(&file, &rules)?;
            if dry_run {
                println!("{}: {} targets, all valid", file.display(), rows.len());
                return Ok(());
            }
            let n = import::write(&settings, rows).await?;
            println!(
                "{}: {n} targets written to {}",
                file.display(),
                settings.topics.targets
            );
        }
        None => run_targets(settings, shutdown_signal())
            .await
            .context("salespulse-targets stopped")?,
    }
    Ok(())
}
