//! The cost of one clock tick (windows moved, changed series built) against the number of
//! (rep, team) cells held: a flood of distinct rep ids, one activity each in the last hour,
//! none on the roster, as in the hostile-input test; then busy reps, each with activities of
//! the default contract's five kinds over the last 30 days. Then what a tick of the deals
//! service exports while 1,000 deal records a second come in (as in `target/release/latency`):
//! the changed subjects' series built, and compared with what was emitted before (the differ).
//!
//! Run: `cargo bench -p salespulse-bench --bench tick`

use std::borrow::Cow;
use std::time::Instant;

use salespulse_aggregate::{ActivitiesCore, Calendar, DealsCore, Differ};
use salespulse_bench::deal_records;
use salespulse_decode::{ActivityEvent, Contract, Format};

const TICKS: usize = 5;

fn main() {
    let contract = Contract::default();
    let now = chrono::Utc::now().timestamp_millis();
    println!("one tick (1 s later) of the activities core, median of {TICKS}\n");
    for reps in [10_000usize, 100_000, 1_000_000] {
        let mut core = ActivitiesCore::new(&contract, Calendar::utc(), now);
        for i in 0..reps {
            let ev = ActivityEvent {
                event_id: Cow::Owned(format!("a{i}")),
                rep_id: Cow::Owned(format!("flood-{i}")),
                team_id: None,
                kind: 1,
                occurred_at: now - 60_000 - (i as i64 % 3_000_000),
                deal_id: None,
                duration_seconds: None,
            };
            core.apply(&ev);
        }
        let _ = core.drain_changes();
        let mut advance = Vec::new();
        let mut drain = Vec::new();
        for k in 1..=TICKS {
            let s = Instant::now();
            core.tick(now + k as i64 * 1000);
            advance.push(s.elapsed().as_secs_f64());
            let s = Instant::now();
            std::hint::black_box(core.drain_changes());
            drain.push(s.elapsed().as_secs_f64());
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[TICKS / 2] * 1000.0
        };
        println!(
            "{reps:>9} distinct reps ({} cells): windows moved {:>9.2} ms, changed series built {:>9.2} ms",
            core.cells(),
            median(advance),
            median(drain)
        );
    }
    println!();
    for reps in [1_000usize, 10_000] {
        let mut core = ActivitiesCore::new(&contract, Calendar::utc(), now);
        let per_rep = 100;
        for i in 0..reps * per_rep {
            let ev = ActivityEvent {
                event_id: Cow::Owned(format!("b{i}")),
                rep_id: Cow::Owned(format!("rep-{}", i % reps)),
                team_id: None,
                kind: (i / reps % 5) as u8,
                // Spread over 30 days, a different hour for each of a rep's activities.
                occurred_at: now - 60_000 - (i / reps) as i64 * 25_920_000,
                deal_id: None,
                duration_seconds: Some(120),
            };
            core.apply(&ev);
        }
        let _ = core.drain_changes();
        let mut advance = Vec::new();
        for k in 1..=TICKS {
            let s = Instant::now();
            core.tick(now + k as i64 * 1000);
            advance.push(s.elapsed().as_secs_f64());
            std::hint::black_box(core.drain_changes());
        }
        advance.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{reps:>9} busy reps, {per_rep} activities of 5 kinds each over 30 days: windows moved {:>9.2} ms",
            advance[TICKS / 2] * 1000.0
        );
    }
    println!();
    export(&contract, now);
}

/// Records a tick brings at 1,000 a second, ticks 150 ms apart.
const RECORDS_PER_TICK: usize = 150;
const EXPORT_TICKS: usize = 200;

/// A deals core with `reps` reps on the roster, warmed with 30 days of deals, then ticked
/// every [`RECORDS_PER_TICK`] records: the median time to build the changed subjects' series
/// and to compare them with what was emitted.
fn export(contract: &Contract, now: i64) {
    for reps in [20u64, 1_000] {
        let mut core = DealsCore::new(contract, Calendar::utc(), now);
        for r in 0..reps {
            core.roster_upsert(&format!("rep-{r:05}"), &format!("team-{:03}", r % 5));
        }
        let warm = deal_records(20_000, 4_000, reps, 30 * 86_400_000, now, true, 7);
        let live = deal_records(
            RECORDS_PER_TICK * EXPORT_TICKS,
            4_000,
            reps,
            60_000,
            now,
            true,
            8,
        );
        let apply = |core: &mut DealsCore, records: &[(Vec<u8>, Vec<u8>)]| {
            for (k, v) in records {
                let _ = contract.with_deal(Some(k), v, Format::Protobuf, now, |ev| core.apply(ev));
            }
        };
        apply(&mut core, &warm);
        let mut differ = Differ::default();
        core.tick(now);
        let _ = differ.diff(core.drain_changes());
        let (mut built, mut compared, mut changed, mut series) =
            (Vec::new(), Vec::new(), 0usize, 0usize);
        for (k, records) in live.chunks(RECORDS_PER_TICK).enumerate() {
            apply(&mut core, records);
            core.tick(now + k as i64 * 150);
            let s = Instant::now();
            let subjects = core.drain_changes();
            built.push(s.elapsed().as_secs_f64());
            series += subjects.iter().map(|s| s.series.len()).sum::<usize>();
            let s = Instant::now();
            let changes = differ.diff(subjects);
            compared.push(s.elapsed().as_secs_f64());
            changed += changes.len();
            std::hint::black_box(changes);
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2] * 1000.0
        };
        let ticks = live.len().div_ceil(RECORDS_PER_TICK);
        println!(
            "deals, {reps:>5} busy reps, {RECORDS_PER_TICK} records a tick: {} series of the changed subjects a tick, {} changed; built {:>6.2} ms, compared {:>6.2} ms (medians of {ticks} ticks)",
            series / ticks,
            changed / ticks,
            median(built),
            median(compared)
        );
    }
}
