//! Decode + aggregate on one core, JSON and protobuf, deals and activities; how the cost per
//! record depends on the number of reps and the time span; memory per rep at steady state.
//!
//! Run: `cargo bench -p salespulse-bench --bench ingest`

use salespulse_aggregate::{ActivitiesCore, Calendar, DealsCore};
use salespulse_bench::{
    activity_records, deal_records, funnel_deal_records, live_bytes, median_secs, peak_during,
    Counting, Encoded,
};
use salespulse_decode::{Contract, Format};

#[global_allocator]
static ALLOC: Counting = Counting;

const N: usize = 400_000;
const RUNS: usize = 5;
const DAY_MS: i64 = 86_400_000;
/// The service ticks and emits once a second: at the target rates, every few hundred
/// thousand records.
const TICK_EVERY: usize = 200_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Decodes and applies every record, ticking the clock and emitting the changed series every
/// `TICK_EVERY` records.
fn ingest_deals(contract: &Contract, recs: &[Encoded], format: Format, now: i64) -> DealsCore {
    let mut core = DealsCore::new(contract, Calendar::utc(), now);
    for (i, (k, v)) in recs.iter().enumerate() {
        let _ = contract.with_deal(Some(k), v, format, now, |ev| core.apply(ev));
        if i % TICK_EVERY == 0 {
            core.tick(now + (i / TICK_EVERY) as i64 * 1000);
            let _ = core.drain_changes();
        }
    }
    core
}

fn ingest_activities(
    contract: &Contract,
    recs: &[Encoded],
    format: Format,
    now: i64,
) -> ActivitiesCore {
    let mut core = ActivitiesCore::new(contract, Calendar::utc(), now);
    for (i, (k, v)) in recs.iter().enumerate() {
        let _ = contract.with_activity(Some(k), v, format, now, |ev| core.apply(ev));
        if i % TICK_EVERY == 0 {
            core.tick(now + (i / TICK_EVERY) as i64 * 1000);
            let _ = core.drain_changes();
        }
    }
    core
}

/// Whether a case runs: all, or those whose label contains `BENCH_ONLY`.
fn wanted(label: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |f| label.contains(&f))
}

fn report(label: &str, n: usize, secs: f64) -> f64 {
    let rate = n as f64 / secs;
    println!(
        "{label:<58} {rate:>12.0} records/s  ({:.0} ns/record)",
        secs * 1e9 / n as f64
    );
    rate
}

fn main() {
    let contract = Contract::default();
    let now = now_ms();
    println!("decode + aggregate, one core, {N} records, median of {RUNS} runs\n");

    for (proto, fmt, name) in [
        (false, Format::Json, "JSON"),
        (true, Format::Protobuf, "protobuf"),
    ] {
        for reps in [100u64, 10_000] {
            let label = format!("deals {name}, {reps} reps, 30 d span");
            if !wanted(&label) {
                continue;
            }
            let recs = deal_records(N, 50_000, reps, 30 * DAY_MS, now, proto, 1);
            let s = median_secs(RUNS, || {
                std::hint::black_box(ingest_deals(&contract, &recs, fmt, now));
            });
            report(&label, N, s);
        }
        for reps in [100u64, 10_000] {
            let label = format!("activities {name}, {reps} reps, 30 d span");
            if !wanted(&label) {
                continue;
            }
            let recs = activity_records(N, reps, 30 * DAY_MS, now, proto, 2);
            let s = median_secs(RUNS, || {
                std::hint::black_box(ingest_activities(&contract, &recs, fmt, now));
            });
            report(&label, N, s);
        }
    }
    println!();
    for (span, label) in [
        (3_600_000i64, "1 h"),
        (DAY_MS, "24 h"),
        (30 * DAY_MS, "30 d"),
        (300 * DAY_MS, "300 d"),
    ] {
        let label = format!("deals protobuf, 1000 reps, facts spread over {label}");
        if !wanted(&label) {
            continue;
        }
        let recs = deal_records(N, 50_000, 1_000, span, now, true, 3);
        let s = median_secs(RUNS, || {
            std::hint::black_box(ingest_deals(&contract, &recs, Format::Protobuf, now));
        });
        report(&label, N, s);
    }

    memory_fixed_clock(&contract, now);
    memory_clock_running(&contract, now);
    memory_of_a_save(&contract, now);
}

/// The heap a snapshot takes while it is written, beyond the state: the records of the
/// snapshot bench (1,000,000 JSON deal records, 200,000 deals, 1,000 reps, 30 days; 1,000,000
/// activities of 1,000 reps over 30 days).
fn memory_of_a_save(contract: &Contract, now: i64) {
    let label = "memory while saving, 200000 deals";
    if wanted(label) {
        let mut core = DealsCore::new(contract, Calendar::utc(), now);
        for (k, v) in deal_records(1_000_000, 200_000, 1_000, 30 * DAY_MS, now, false, 11) {
            let _ = contract.with_deal(Some(&k), &v, Format::Json, now, |ev| core.apply(ev));
        }
        let _ = core.drain_changes();
        let held = format!("{} deals", core.deals());
        print_saves(label, || core.save(), &held);
    }
    let label = "memory while saving, 1000000 activities";
    if wanted(label) {
        let mut core = ActivitiesCore::new(contract, Calendar::utc(), now);
        for (k, v) in activity_records(1_000_000, 1_000, 30 * DAY_MS, now, true, 12) {
            let _ =
                contract.with_activity(Some(&k), &v, Format::Protobuf, now, |ev| core.apply(ev));
        }
        let _ = core.drain_changes();
        let held = format!("{} event ids remembered", core.remembered_ids());
        print_saves(label, || core.save(), &held);
    }
}

/// The peak heap of a core's first snapshot and of the one after it (a service takes one
/// every `snapshot_interval_seconds`).
fn print_saves(label: &str, save: impl Fn() -> Vec<u8>, held: &str) {
    for which in ["first", "next"] {
        let (saved, peak) = peak_during(&save);
        println!(
            "{label}, {which} snapshot: {:.1} MiB at the peak for a snapshot of {:.1} MiB ({held})",
            peak as f64 / 1048576.0,
            saved.len() as f64 / 1048576.0,
        );
    }
}

/// Live heap after ingesting at one instant, against ten times the records on the same keys:
/// deals with a stage at random on every record, deals through the funnel, activities.
/// Filtered by "memory at steady state", and by "random stages", "funnel" or "activities".
fn memory_fixed_clock(contract: &Contract, now: i64) {
    let deals: [(&str, Generator); 2] = [
        ("deals, random stages", |n, now| {
            deal_records(n, 20_000, 10_000, 30 * DAY_MS, now, true, 4)
        }),
        ("deals through the funnel", |n, now| {
            funnel_deal_records(n, 20_000, 10_000, 30 * DAY_MS, now, 4)
        }),
    ];
    for (name, records) in deals {
        for (n, x) in [(200_000usize, "1x"), (2_000_000, "10x")] {
            let label = format!(
                "memory at steady state, {name}, 10000 reps, 20000 deals, {x} records ({n})"
            );
            if wanted(&label) {
                let recs = records(n, now);
                let (core, used) =
                    live_heap(|| ingest_deals(contract, &recs, Format::Protobuf, now));
                let held = format!("{} deals held", core.deals());
                print_heap(&label, used, 10_000, &held);
            }
        }
    }
    for (n, x) in [(200_000usize, "1x"), (2_000_000, "10x")] {
        let label = format!("memory at steady state, activities, 10000 reps, {x} records ({n})");
        if wanted(&label) {
            let recs = activity_records(n, 10_000, 30 * DAY_MS, now, true, 5);
            let (core, used) =
                live_heap(|| ingest_activities(contract, &recs, Format::Protobuf, now));
            let ids = core.remembered_ids();
            print_heap(&label, used, 10_000, &format!("{ids} event ids remembered"));
        }
    }
}

/// Records of a memory case: (count, now in ms).
type Generator = fn(usize, i64) -> Vec<Encoded>;

/// What `f` returns, and the heap it leaves allocated.
fn live_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = live_bytes();
    let out = f();
    (out, live_bytes().saturating_sub(before))
}

fn print_heap(label: &str, used: usize, reps: usize, held: &str) {
    println!(
        "{label}: {:>8.1} MiB, {:>7.0} bytes/rep, {held}",
        used as f64 / 1048576.0,
        used as f64 / reps as f64
    );
}

/// A live service: the clock runs with the records, so that activity ids leave the duplicate
/// window as they would in production. Ten times the days is ten times the records on the
/// same reps: 10 and 100 days are younger than the two quarters of hour buckets a cell keeps
/// at most; 300 days hold such two quarters whole (April to September), as 3,000 days do.
fn memory_clock_running(contract: &Contract, now: i64) {
    for (days, per_hour, step_hours) in [
        (10i64, 2_000usize, 1i64),
        (100, 2_000, 1),
        (300, 200, 6),
        (3_000, 200, 6),
    ] {
        let label = format!("memory with the clock running, {days} days");
        if !wanted(&label) {
            continue;
        }
        let start = now - days * DAY_MS;
        let before = live_bytes();
        let mut core = ActivitiesCore::new(contract, Calendar::utc(), start);
        let step = step_hours * 3_600_000;
        for h in 0..days * 24 / step_hours {
            let end = start + (h + 1) * step;
            core.tick(end);
            let n = per_hour * step_hours as usize;
            let recs = activity_records(n, 1_000, step, end, true, 1_000 + h as u64);
            for (k, v) in &recs {
                let _ =
                    contract.with_activity(Some(k), v, Format::Protobuf, end, |ev| core.apply(ev));
            }
            drop(recs);
            let _ = core.drain_changes();
        }
        let used = live_bytes().saturating_sub(before);
        let held = format!(
            "{} event ids remembered, {:?} minute/hour/year buckets",
            core.remembered_ids(),
            core.buckets_held()
        );
        let records = days as usize * 24 * per_hour;
        let label =
            format!("{label}, activities, 1000 reps, {per_hour} an hour ({records} records)");
        print_heap(&label, used, 1_000, &held);
    }
}
