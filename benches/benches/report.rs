//! The quarterly report of a large org: the time `salespulse-report` takes to build its
//! tables from every series the deals service publishes for 10,000 reps.
//!
//! Run: `cargo bench -p salespulse-bench --bench report`

use salespulse_aggregate::{Calendar, DealsCore};
use salespulse_bench::{deal_records, median_secs};
use salespulse_decode::{Contract, Format};
use salespulse_publish::MetricRecord;
use salespulse_targets::{Period, PeriodType, Ramp};

fn main() {
    let contract = Contract::default();
    let now = chrono::Utc::now();
    let now_ms = now.timestamp_millis();
    let cal = Calendar::utc();
    for reps in [1_000u64, 10_000] {
        let mut core = DealsCore::new(&contract, cal, now_ms);
        for r in 0..reps {
            core.roster_upsert(&format!("rep-{r:05}"), &format!("team-{:03}", r % 500));
        }
        let deals = reps * 6;
        let records = deal_records(
            deals as usize * 5,
            deals,
            reps,
            30 * 86_400_000,
            now_ms,
            true,
            7,
        );
        for (k, v) in &records {
            let _ = contract.with_deal(Some(k), v, Format::Protobuf, now_ms, |ev| core.apply(ev));
        }
        core.tick(now_ms + 1000);
        let metrics: Vec<MetricRecord> = core
            .drain_changes()
            .iter()
            .flat_map(|s| s.series.iter().map(|x| MetricRecord::from_series(x, now)))
            .collect();
        let ramp = Ramp::default();
        let settings = salespulse_report::Settings {
            period: Period::containing(PeriodType::Quarter, now.timestamp(), &cal),
            team: None,
            now: now.timestamp(),
            calendar: &cal,
            ramp: &ramp,
            currency: "USD",
        };
        let mut rows = 0;
        let secs = median_secs(3, || {
            let report = salespulse_report::build(&metrics, &[], &settings).expect("a report");
            rows = report.reps.len() + report.teams.len();
        });
        assert!(rows as u64 > reps, "every rep and team has a row");
        println!(
            "quarterly report, {reps} reps: {} series, {rows} rows, build median {:.0} ms",
            metrics.len(),
            secs * 1000.0
        );
    }
}
