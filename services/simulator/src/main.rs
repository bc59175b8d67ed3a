//! salespulse-simulator: a seeded, reproducible simulated sales org that produces deal,
//! activity and roster records (input contract v1) to Kafka.

mod encode;
mod generate;
mod org;
mod pipeline;
mod produce;
mod rhythm;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::Parser;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::encode::Format;
use crate::generate::{Config, Generator};
use crate::produce::{Sink, Stats, TopicSpec};
use crate::rhythm::Backfill;

const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The services reject records stamped further ahead than this.
const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
const DAY_MS: i64 = 24 * 3_600_000;

/// Simulated sales org producing deals, activities and roster changes to Kafka.
///
/// The org (teams, reps) and the sequence of records follow from --seed and the other flags
/// alone: two runs with the same flags produce the same records, apart from the wall-clock
/// times of live mode. A backfill with a fixed --start is reproducible byte for byte.
///
/// The roster goes out first, then the open pipeline the org starts with (about 40 deals a rep,
/// at most 20,000, opened over the 90 days before the first record, with the records of their
/// stages so far), then the backfill (if any) as fast as possible, then live records at --rate until --records
/// is reached or SIGINT/SIGTERM arrives. On exit the producer is flushed (at most
/// --flush-seconds) and a summary is logged. A second signal exits at once.
///
/// Deals stay days in a stage, some for weeks (stalled), in a backfill as in the pipeline the
/// org starts with; live records also move deals ahead of their plan, so that stages change
/// every few seconds.
#[derive(Debug, Parser)]
#[command(name = "salespulse-simulator", version, verbatim_doc_comment)]
struct Args {
    /// Seed of the simulation. Runs with the same seed reuse the same deal and event ids.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Number of teams: team-emea, team-amer, team-apac, team-nordics, team-dach, ...
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    teams: u32,

    /// Number of reps (rep-001, rep-002, ...), assigned to the teams round-robin.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    reps: u32,

    /// Live records per second; 0 produces as fast as possible.
    #[arg(long, default_value_t = 50.0, value_parser = non_negative)]
    rate: f64,

    /// Let the live rate follow the working-day rhythm (UTC): --rate applies in weekday office
    /// hours, with less in the evening and little at night and at weekends.
    #[arg(long)]
    live_rhythm: bool,

    /// Days of history to produce first, as fast as possible, ending at --start; live mode
    /// follows unless --records is reached.
    #[arg(long, default_value_t = 0, value_name = "DAYS")]
    backfill_days: u32,

    /// Average records per simulated hour in the backfill. The working-day rhythm shapes
    /// them: most fall in weekday office hours, few at night and at weekends.
    #[arg(long, default_value_t = 600.0, value_name = "PER_HOUR", value_parser = non_negative)]
    backfill_rate: f64,

    /// End of the backfill, RFC 3339 (e.g. 2026-11-27T10:00:00Z); default now. Fixing it
    /// makes the backfill's times reproducible. Must not be in the future.
    #[arg(long, value_name = "RFC3339", value_parser = parse_start)]
    start: Option<DateTime<Utc>>,

    /// Stop after this many records in total, roster included; 0 runs until SIGINT/SIGTERM.
    #[arg(long, default_value_t = 0)]
    records: u64,

    /// How long the exit waits for the broker to acknowledge what is still in flight (a
    /// broker that is restarting may need longer); records still undelivered then are an
    /// error.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    flush_seconds: u64,

    /// Encoding of record values, announced in the `content-type` header
    /// (application/json or application/x-protobuf).
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,

    /// Chance per record of a roster change: a rep moves team, or (rarely) leaves or returns.
    #[arg(long, default_value_t = 0.002, value_name = "SHARE", value_parser = share)]
    roster_move_share: f64,

    /// Share of records that repeat an earlier record exactly, event_id included.
    #[arg(long, default_value_t = 0.01, value_name = "SHARE", value_parser = share)]
    duplicate_share: f64,

    /// Share of records that re-send an older state of a deal (new event_id) after a newer one.
    #[arg(long, default_value_t = 0.005, value_name = "SHARE", value_parser = share)]
    stale_share: f64,

    /// Share of records (activities, new deals) whose occurred_at lies hours to days in the
    /// past, never more than 30 days.
    #[arg(long, default_value_t = 0.01, value_name = "SHARE", value_parser = share)]
    late_share: f64,

    /// Share of records that break the contract: invalid JSON/protobuf, a missing field, a
    /// negative amount, an unknown stage, kind, currency or forecast category, a far-future
    /// time or an empty id.
    /// Only deals and activities get them; the compacted roster would keep them for good.
    #[arg(long, default_value_t = 0.002, value_name = "SHARE", value_parser = share)]
    malformed_share: f64,

    /// Topic of deal records (key deal_id).
    #[arg(long, default_value = "sales.deals", value_name = "TOPIC")]
    deals_topic: String,

    /// Topic of activity records (key rep_id).
    #[arg(long, default_value = "sales.activities", value_name = "TOPIC")]
    activities_topic: String,

    /// Compacted topic of roster records (key rep_id).
    #[arg(long, default_value = "sales.roster", value_name = "TOPIC")]
    roster_topic: String,

    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = "127.0.0.1:19092")]
    bootstrap: String,

    /// librdkafka producer property, repeatable (e.g. -X security.protocol=SASL_SSL
    /// -X sasl.mechanism=PLAIN). Overrides the defaults enable.idempotence=true, linger.ms=5 and
    /// compression.type=lz4.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = property)]
    property: Vec<(String, String)>,

    /// Do not create missing topics (deals and activities with 3 partitions, the roster
    /// compacted with 1); for clusters where topics are managed elsewhere.
    #[arg(long)]
    no_create_topics: bool,

    /// Replication factor of the topics the simulator creates.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=32))]
    replication_factor: i32,
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a non-negative number, got {s:?}")),
    }
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a share between 0 and 1, got {s:?}")),
    }
}

fn parse_start(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

fn property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// What the generator thread does, in order.
#[derive(Debug)]
struct Plan {
    backfill: Option<Backfill>,
    rate: f64,
    live_rhythm: bool,
    /// `u64::MAX` when unlimited.
    limit: u64,
}

/// Spaces live records `1 / rate` apart on average. Small gaps accumulate until they are
/// worth a sleep, so high rates are met despite the coarse granularity of sleeping.
#[derive(Debug)]
struct Pacer {
    rate: f64,
    rhythm: bool,
    due: Instant,
}

impl Pacer {
    fn new(rate: f64, rhythm: bool) -> Pacer {
        Pacer {
            rate,
            rhythm,
            due: Instant::now(),
        }
    }

    /// Sleeps until the next record is due; returns early when `stop` is raised.
    fn wait(&mut self, stop: &AtomicBool) {
        if self.rate <= 0.0 {
            return;
        }
        loop {
            let now = Instant::now();
            if self.due <= now + Duration::from_millis(1) || stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep((self.due - now).min(Duration::from_millis(100)));
        }
        let now = Instant::now();
        // After a stall (a full queue, a suspended process) start afresh instead of bursting
        // to catch up.
        if now.saturating_duration_since(self.due) > Duration::from_secs(1) {
            self.due = now;
        }
        let weight = if self.rhythm {
            rhythm::weight(Utc::now().timestamp_millis()).max(0.01)
        } else {
            1.0
        };
        // A rate so low that the gap overflows a Duration is as good as an hour.
        self.due += Duration::try_from_secs_f64(1.0 / (self.rate * weight))
            .unwrap_or(Duration::from_secs(3600));
    }
}

/// Produces records until the plan is done or `stop` is raised; returns how many were queued.
fn run(
    mut generator: Generator,
    sink: &Sink,
    plan: Plan,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let mut sent = 0u64;
    let running = |sent: u64| sent < plan.limit && !stop.load(Ordering::Relaxed);
    for r in generator.take_roster() {
        if !running(sent) || !sink.send(&r, stop)? {
            return Ok(sent);
        }
        sent += 1;
    }
    if let Some(mut backfill) = plan.backfill {
        let started = sent;
        while running(sent) {
            let Some(r) = generator.backfill_record(&mut backfill) else {
                break;
            };
            if !sink.send(&r, stop)? {
                return Ok(sent);
            }
            sent += 1;
        }
        info!(records = sent - started, "backfill done");
    }
    let mut pacer = Pacer::new(plan.rate, plan.live_rhythm);
    while running(sent) {
        pacer.wait(stop);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let r = generator.next_record(Utc::now().timestamp_millis());
        if !sink.send(&r, stop)? {
            break;
        }
        sent += 1;
    }
    Ok(sent)
}

async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the simulator");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn log_progress(s: &produce::Snapshot, per_second: f64, message: &str) {
    info!(
        deals = s.deals,
        activities = s.activities,
        roster = s.roster,
        total = s.produced(),
        duplicates = s.duplicates,
        stale = s.stale,
        late = s.late,
        malformed = s.malformed,
        delivered = s.delivered,
        failed = s.failed,
        records_per_second = format_args!("{per_second:.0}"),
        "{message}"
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let cfg = Config {
        seed: args.seed,
        teams: args.teams as usize,
        reps: args.reps as usize,
        format: args.format,
        roster_move_share: args.roster_move_share,
        duplicate_share: args.duplicate_share,
        stale_share: args.stale_share,
        late_share: args.late_share,
        malformed_share: args.malformed_share,
    };
    let generator = Generator::new(cfg).context("invalid simulation flags")?;

    let now = Utc::now();
    let end = args.start.unwrap_or(now);
    if end.timestamp_millis() > now.timestamp_millis() + MAX_FUTURE_MS {
        bail!("--start {end} is in the future; the services reject records stamped more than 5 minutes ahead");
    }
    let backfill = (args.backfill_days > 0).then(|| {
        let end_ms = end.timestamp_millis();
        let start_ms = end_ms - i64::from(args.backfill_days) * DAY_MS;
        Backfill::new(start_ms, end_ms, args.backfill_rate)
    });

    let client = produce::client_config(&args.bootstrap, &args.property);
    let topics = [
        args.deals_topic.clone(),
        args.activities_topic.clone(),
        args.roster_topic.clone(),
    ];
    if !args.no_create_topics {
        let specs = [
            TopicSpec {
                name: &args.deals_topic,
                partitions: 3,
                compacted: false,
            },
            TopicSpec {
                name: &args.activities_topic,
                partitions: 3,
                compacted: false,
            },
            TopicSpec {
                name: &args.roster_topic,
                partitions: 1,
                compacted: true,
            },
        ];
        produce::ensure_topics(&client, &specs, args.replication_factor)
            .await
            .with_context(|| format!("creating topics on {}", args.bootstrap))?;
    }

    let stats = Arc::new(Stats::default());
    let sink = Sink::new(&client, topics, Arc::clone(&stats))
        .with_context(|| format!("creating a Kafka producer for {}", args.bootstrap))?;

    let stop = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            signalled().await;
            info!("signal received: stopping, then flushing");
            stop.store(true, Ordering::Relaxed);
            signalled().await;
            warn!("second signal: exiting without waiting for the flush");
            std::process::exit(130);
        }
    });

    let started = Instant::now();
    let progress = tokio::spawn({
        let stats = Arc::clone(&stats);
        async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            let mut last = (0u64, Instant::now());
            loop {
                tick.tick().await;
                let s = stats.snapshot();
                let now = Instant::now();
                let secs = now.duration_since(last.1).as_secs_f64().max(1e-9);
                log_progress(&s, (s.produced() - last.0) as f64 / secs, "progress");
                last = (s.produced(), now);
            }
        }
    });

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
    let plan = Plan {
        backfill,
        rate: args.rate,
        live_rhythm: args.live_rhythm,
        limit: if args.records == 0 {
            u64::MAX
        } else {
            args.records
        },
    };
    let flush_timeout = Duration::from_secs(args.flush_seconds);
    let (result, in_flight) = tokio::task::spawn_blocking({
        let stop = Arc::clone(&stop);
        move || {
            let result = run(generator, &sink, plan, &stop);
            let produced = started.elapsed();
            let in_flight = sink.flush(flush_timeout);
            (result.map(|n| (n, produced)), in_flight)
        }
    })
    .await
    .context("the generator thread panicked")?;
    progress.abort();

    let (_, produced_in) = result?;
    let s = stats.snapshot();
    log_progress(
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_documents_every_flag() {
        Args::command().debug_assert();
        for arg in Args::command().get_arguments() {
            assert!(arg.get_help().is_some(), "{} has no help", arg.get_id());
        }
    }

    #[test]
    fn properties_parse() {
        assert_eq!(
            property("sasl.password=a=b"),
            Ok(("sasl.password".into(), "a=b".into()))
        );
        assert!(property("linger.ms").is_err());
        assert!(share("1.5").is_err());
        assert!(non_negative("-1").is_err());
    }
}
