//! `/metrics` with 10,000 reps: render time, and the ingest rate while it is being scraped
//! continuously from another thread.
//!
//! Run: `cargo bench -p salespulse-bench --bench exposition`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use salespulse_aggregate::{series_of_key, subject_of_key, Calendar, Change, DealsCore, Differ};
use salespulse_bench::{deal_records, live_bytes, median_secs, scrape_bytes, Counting};
use salespulse_decode::{Contract, Format};
use salespulse_expose::{render, AppState, Board, Health};

// The services' allocator, counting what is held.
#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    let contract = Contract::default();
    let now = chrono::Utc::now().timestamp_millis();
    let reps = 10_000u64;
    // Reps must be on the roster for their series to show.
    let mut core = DealsCore::new(&contract, Calendar::utc(), now);
    for r in 0..reps {
        core.roster_upsert(&format!("rep-{r:05}"), &format!("team-{:03}", r % 500));
    }
    let warm = deal_records(300_000, 60_000, reps, 30 * 86_400_000, now, true, 7);
    for (k, v) in &warm {
        let _ = contract.with_deal(Some(k), v, Format::Protobuf, now, |ev| core.apply(ev));
    }
    core.tick(now + 1000);
    let board = Arc::new(Board::default());
    let mut shown = Differ::default();
    let changes = shown.diff(core.drain_changes());
    let before = live_bytes();
    board.apply(&changes);
    let held = live_bytes().saturating_sub(before);
    println!(
        "board: {} series, {:.1} MiB held ({} bytes a series)",
        board.len(),
        held as f64 / 1048576.0,
        held / board.len().max(1)
    );
    read_back(&changes);
    let state = AppState {
        board: board.clone(),
        health: Health::new("bench"),
        ready: Arc::new(AtomicBool::new(true)),
        snapshot: Arc::default(),
    };
    let mut bytes = 0;
    let render_s = median_secs(5, || bytes = scrape_bytes(&state));
    println!(
        "/metrics with {reps} reps: {} series, {:.1} MiB, render median {:.0} ms",
        board.len(),
        bytes as f64 / 1048576.0,
        render_s * 1000.0
    );

    let load = deal_records(400_000, 60_000, reps, 30 * 86_400_000, now, true, 8);
    let ingest = |scraping: bool| {
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicUsize::new(0));
        let scraper = scraping.then(|| {
            let (st, stop, scrapes) = (state.clone(), stop.clone(), scrapes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(render(&st));
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            })
        });
        let mut c = DealsCore::new(&contract, Calendar::utc(), now);
        for r in 0..reps {
            c.roster_upsert(&format!("rep-{r:05}"), &format!("team-{:03}", r % 500));
        }
        let mut d = Differ::default();
        let start = Instant::now();
        let mut last_emit = Instant::now();
        for (i, (k, v)) in load.iter().enumerate() {
            let _ = contract.with_deal(Some(k), v, Format::Protobuf, now, |ev| c.apply(ev));
            // The service emits once a second; emit as often here so that the board the
            // scraper reads is being written too.
            if last_emit.elapsed().as_millis() >= 1000 || i + 1 == load.len() {
                c.tick(now + i as i64);
                board.apply(&d.diff(c.drain_changes()));
                last_emit = Instant::now();
            }
        }
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        if let Some(t) = scraper {
            let _ = t.join();
        }
        (load.len() as f64 / secs, scrapes.load(Ordering::Relaxed))
    };
    let (idle, _) = ingest(false);
    let (busy, scrapes) = ingest(true);
    println!(
        "ingest (decode + aggregate + board updates), no scrapes:        {idle:>10.0} records/s"
    );
    println!("ingest while another thread scrapes /metrics back to back:     {busy:>10.0} records/s ({scrapes} scrapes, ratio {:.2})", busy / idle);
}

/// What a start or a rebuild spends turning the metrics topic's records back into series to
/// serve (the keys parsed by `series_of_key`, each checked by writing it again): with 10,000
/// reps, every series of the board.
fn read_back(changes: &[Change]) {
    let records: Vec<(&str, rust_decimal::Decimal, Option<&str>)> = changes
        .iter()
        .filter_map(|c| {
            let s = c.series.as_ref()?;
            Some((c.key.as_str(), s.value, s.name.as_deref()))
        })
        .collect();
    let mut parsed = 0;
    let secs = median_secs(5, || {
        parsed = records
            .iter()
            .filter(|(k, v, n)| subject_of_key(k).is_some() && series_of_key(k, *v, *n).is_some())
            .count();
    });
    assert_eq!(parsed, records.len(), "every key written parses back");
    println!(
        "series read back from their keys: {parsed} of {}, median {:.0} ms ({:.2} us a series)",
        records.len(),
        secs * 1000.0,
        secs * 1e6 / parsed.max(1) as f64
    );
}
