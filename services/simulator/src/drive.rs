//! The generator thread and what runs beside it: records produced in the order of the plan,
//! live ones paced, progress logged, and the signals that stop it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{info, warn};

use crate::generate::Generator;
use crate::produce::{self, Sink, Stats};
use crate::rhythm::{self, Backfill};

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What the generator thread does, in order.
#[derive(Debug)]
pub struct Plan {
    pub backfill: Option<Backfill>,
    pub rate: f64,
    pub live_rhythm: bool,
    /// `u64::MAX` when unlimited.
    pub limit: u64,
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
pub fn run(
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

pub fn log_progress(s: &produce::Snapshot, per_second: f64, message: &str) {
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

/// Raises `stop` at the first SIGINT or SIGTERM; a second one exits at once, without the
/// flush.
pub fn stop_on_signals(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        signalled().await;
        info!("signal received: stopping, then flushing");
        stop.store(true, Ordering::Relaxed);
        signalled().await;
        warn!("second signal: exiting without waiting for the flush");
        std::process::exit(130);
    });
}

/// Logs what was produced every few seconds, until aborted.
pub fn log_progress_every(stats: Arc<Stats>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
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
    })
}
