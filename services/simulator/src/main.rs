//! salespulse-simulator: a seeded, reproducible simulated sales org that produces deal,
//! activity and roster records (input contract v1) to Kafka.

mod cli;
mod drive;
mod encode;
mod generate;
mod org;
mod pipeline;
mod produce;
mod rhythm;

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use clap::Parser;
use tracing::info;
use tracing_subscriber::EnvFilter;

use crate::cli::Args;
use crate::generate::Generator;
use crate::produce::{Sink, Stats};

/// The services reject records stamped further ahead than this.
const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let generator = Generator::new(args.config()).context("invalid simulation flags")?;
    let now = Utc::now();
    let end = args.start.unwrap_or(now);
    if end.timestamp_millis() > now.timestamp_millis() + MAX_FUTURE_MS {
        bail!("--start {end} is in the future; the services reject records stamped more than 5 minutes ahead");
    }
    let client = produce::client_config(&args.bootstrap, &args.property);
    if !args.no_create_topics {
        produce::ensure_topics(&client, &args.topic_specs(), args.replication_factor)
            .await
            .with_context(|| format!("creating topics on {}", args.bootstrap))?;
    }
    let stats = Arc::new(Stats::default());
    let sink = Sink::new(&client, args.topics(), Arc::clone(&stats))
        .with_context(|| format!("creating a Kafka producer for {}", args.bootstrap))?;
    let stop = Arc::new(AtomicBool::new(false));
    drive::stop_on_signals(Arc::clone(&stop));
    let started = Instant::now();
    let progress = drive::log_progress_every(Arc::clone(&stats));

    info!(
        seed = args.seed,
        teams = generator.org().teams().len(),
        reps = generator.org().reps().len(),
        format = ?args.format,
        bootstrap = %args.bootstrap,
        backfill_days = args.backfill_days,
        backfill_end = %end,
        rate = args.rate,
        records = args.records,
        "simulating"
    );
    let plan = args.plan(end);
    let flush_timeout = Duration::from_secs(args.flush_seconds);
    let (result, in_flight) = tokio::task::spawn_blocking(move || {
        let result = drive::run(generator, &sink, plan, &stop);
        let produced = started.elapsed();
        let in_flight = sink.flush(flush_timeout);
        (result.map(|n| (n, produced)), in_flight)
    })
    .await
    .context("the generator thread panicked")?;
    progress.abort();

    let (_, produced_in) = result?;
    let s = stats.snapshot();
    drive::log_progress(
        &s,
        s.produced() as f64 / produced_in.as_secs_f64().max(1e-9),
        &format!(
            "finished: {} records in {:.1} s, {} s including the flush",
            s.produced(),
            produced_in.as_secs_f64(),
            started.elapsed().as_secs()
        ),
    );
    if in_flight > 0 {
        bail!(
            "{in_flight} records were still undelivered when the {} s flush ended",
            flush_timeout.as_secs()
        );
    }
    if s.failed > 0 {
        bail!("{} records could not be delivered", s.failed);
    }
    Ok(())
}
