//! Rebuilding a core from its snapshot, without a broker: the part of a restart that grows
//! with the state. The records are those of the restore bench (`target/release/restore`):
//! 1,000,000 JSON deal records, 200,000 deals, 1,000 reps, 30 days; and 1,000,000 activities
//! of 1,000 reps over 30 days.
//!
//! Run: `cargo bench -p salespulse-bench --bench snapshot`

use salespulse_aggregate::{ActivitiesCore, Calendar, DealsCore};
use salespulse_bench::{activity_records, deal_records, median_secs};
use salespulse_decode::{Contract, Format};

/// The services' allocator: a rebuild allocates every deal's history.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N: usize = 1_000_000;
const RUNS: usize = 5;
const DAY_MS: i64 = 86_400_000;

fn main() {
    let contract = Contract::default();
    let now = chrono::Utc::now().timestamp_millis();
    println!("a core rebuilt from its snapshot, {N} records, median of {RUNS} runs\n");

    let mut deals = DealsCore::new(&contract, Calendar::utc(), now);
    for (k, v) in deal_records(N, 200_000, 1_000, 30 * DAY_MS, now, false, 11) {
        let _ = contract.with_deal(Some(&k), &v, Format::Json, now, |ev| deals.apply(ev));
    }
    let _ = deals.drain_changes();
    let saved = deals.save();
    // What a snapshot costs the loop before its chunks are produced.
    let save = median_secs(RUNS, || {
        std::hint::black_box(deals.save());
    });
    println!(
        "deals, {} deals: saved in {:.3} s ({:.2} µs a deal)",
        deals.deals(),
        save,
        save * 1e6 / deals.deals() as f64
    );
    // Up to its first tick, as a service is before it takes its slots over.
    let restore = median_secs(RUNS, || {
        let mut core = DealsCore::new(&contract, Calendar::utc(), now);
        core.restore(&saved).expect("the snapshot restores");
        core.tick(now + 1_000);
        std::hint::black_box(core);
    });
    println!(
        "deals, {} deals, snapshot {:.1} MiB: restored and ticked in {:.3} s ({:.2} µs a deal)",
        deals.deals(),
        saved.len() as f64 / 1048576.0,
        restore,
        restore * 1e6 / deals.deals() as f64
    );

    let mut acts = ActivitiesCore::new(&contract, Calendar::utc(), now);
    for (k, v) in activity_records(N, 1_000, 30 * DAY_MS, now, true, 12) {
        let _ = contract.with_activity(Some(&k), &v, Format::Protobuf, now, |ev| acts.apply(ev));
    }
    let _ = acts.drain_changes();
    let saved = acts.save();
    let save = median_secs(RUNS, || {
        std::hint::black_box(acts.save());
    });
    println!("activities, {} cells: saved in {save:.3} s", acts.cells());
    let restore = median_secs(RUNS, || {
        let mut core = ActivitiesCore::new(&contract, Calendar::utc(), now);
        core.restore(&saved).expect("the snapshot restores");
        core.tick(now + 1_000);
        std::hint::black_box(core);
    });
    println!(
        "activities, {} cells, {} ids remembered, snapshot {:.1} MiB: restored and ticked in {:.3} s",
        acts.cells(),
        acts.remembered_ids(),
        saved.len() as f64 / 1048576.0,
        restore
    );
}
