//! The cost of one clock tick (windows moved, changed series built) against the number of
//! (rep, team) cells held: a flood of distinct rep ids, one activity each in the last hour,
//! none on the roster, as in the hostile-input test; then busy reps, each with activities of
//! the default contract's five kinds over the last 30 days.
//!
//! Run: `cargo bench -p salespulse-bench --bench tick`

use std::borrow::Cow;
use std::time::Instant;

use salespulse_aggregate::{ActivitiesCore, Calendar};
use salespulse_decode::{ActivityEvent, Contract};

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
}
