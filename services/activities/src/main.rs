//! Activities service: rolling activity counts by kind per rep, team and org.
//!
//! Reads `sales.activities` and `sales.roster`; serves `/metrics`, `/healthz`, `/readyz`;
//! publishes every change to `sales.metrics` and rejected records to `sales.deadletter`.

use anyhow::Context;
use clap::Parser;
use salespulse_aggregate::ActivitiesCore;
use salespulse_pipeline::{init_logging, run, shutdown_signal, ServiceArgs, Settings};

/// Activities service: rolling activity counts by kind per rep, team and org.
#[derive(Debug, Parser)]
#[command(name = "salespulse-activities", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
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
    let settings =
        Settings::load(&cli.service, "activities").context("loading the configuration")?;
    if cli.service.print_config {
        println!("{settings:#?}");
        return Ok(());
    }
    init_logging(&settings.log.format);
    run::<ActivitiesCore>(settings, shutdown_signal())
        .await
        .context("salespulse-activities stopped")?;
    Ok(())
}
