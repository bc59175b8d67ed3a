//! Shared helpers of the benchmarks: synthetic records, a counting allocator, medians.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use prost::Message;
use salespulse_decode::pb;

pub mod broker;

/// Counts live heap bytes, to report memory per rep. The allocation itself is the services'
/// allocator (mimalloc, see `services/deals/src/main.rs`), so that the time a bench measures
/// is what a service spends allocating; the bytes counted are those asked for, whatever the
/// allocator.
#[derive(Debug)]
pub struct Counting;

pub static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most bytes live at once while [`peak_during`] runs (tracked only then, so that the
/// other benches pay no more than the live count).
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TRACKING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn grew(live: usize) {
    if TRACKING.load(Ordering::Relaxed) {
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size());
        mimalloc::MiMalloc.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        mimalloc::MiMalloc.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // Both blocks are live while the old one is copied into the new.
        grew(LIVE.fetch_add(new, Ordering::Relaxed) + new);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        mimalloc::MiMalloc.realloc(p, l, new)
    }
}

pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// What `f` returns, and the most heap it had allocated at once beyond what was live before
/// it (counted with [`Counting`] as the global allocator).
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = live_bytes();
    PEAK.store(before, Ordering::Relaxed);
    TRACKING.store(true, Ordering::Relaxed);
    let out = f();
    TRACKING.store(false, Ordering::Relaxed);
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(before))
}

/// A small deterministic generator (xorshift), so runs are comparable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

const STAGES: [&str; 6] = [
    "prospecting",
    "qualification",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
];
const KINDS: [&str; 5] = ["call", "email", "meeting", "demo", "task"];

fn rfc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// One encoded record: key and value.
pub type Encoded = (Vec<u8>, Vec<u8>);

/// `n` deal records over `deals` deals owned by `reps` reps, spread over `span_ms` before `now_ms`.
pub fn deal_records(
    n: usize,
    deals: u64,
    reps: u64,
    span_ms: i64,
    now_ms: i64,
    proto: bool,
    seed: u64,
) -> Vec<Encoded> {
    let shape = Shape {
        deals,
        reps,
        span_ms,
        now_ms,
        proto,
        in_turn: false,
    };
    encode_deals(n, &shape, seed, |r, _, _| STAGES[r.below(6) as usize])
}

/// As [`deal_records`], but each deal goes through the funnel once, as deals do: the deals take
/// turns, `n / deals` records each, and a deal's stage follows its share of them (prospecting
/// to negotiation, then won or lost for good) while the records in between change its amount.
/// Ten times the records on the same deals are ten times the updates, not the stage changes.
pub fn funnel_deal_records(
    n: usize,
    deals: u64,
    reps: u64,
    span_ms: i64,
    now_ms: i64,
    seed: u64,
) -> Vec<Encoded> {
    let shape = Shape {
        deals,
        reps,
        span_ms,
        now_ms,
        proto: true,
        in_turn: true,
    };
    let per_deal = (n as i64 / deals.max(1) as i64).max(1);
    encode_deals(n, &shape, seed, move |_, d, seq| {
        let open = (seq - 1) * 5 / per_deal;
        if open < 4 {
            STAGES[open as usize]
        } else {
            STAGES[4 + (d % 2) as usize]
        }
    })
}

/// The key space and time span of generated deal records.
#[derive(Clone, Copy)]
struct Shape {
    deals: u64,
    reps: u64,
    span_ms: i64,
    now_ms: i64,
    proto: bool,
    /// Deals in turn rather than at random, each closing once.
    in_turn: bool,
}

/// `n` deal records of `shape`, each for a deal at random, in the stage `stage(rng, deal,
/// record number of the deal)` gives.
fn encode_deals(
    n: usize,
    shape: &Shape,
    seed: u64,
    mut stage_of: impl FnMut(&mut Rng, u64, i64) -> &'static str,
) -> Vec<Encoded> {
    let Shape {
        deals,
        reps,
        span_ms,
        now_ms,
        proto,
        in_turn,
    } = *shape;
    let mut r = Rng::new(seed);
    let mut seq = vec![0i64; deals as usize];
    let mut first_close = vec![None; if in_turn { deals as usize } else { 0 }];
    (0..n)
        .map(|i| {
            let d = if in_turn {
                i as u64 % deals.max(1)
            } else {
                r.below(deals)
            };
            seq[d as usize] += 1;
            let created = now_ms - span_ms + (d as i64 * 7919) % span_ms.max(1);
            let occurred = (created + seq[d as usize] * 60_000).min(now_ms);
            let stage = stage_of(&mut r, d, seq[d as usize]);
            let mut closed = stage.starts_with("closed").then_some(occurred);
            if in_turn {
                // A deal through the funnel closes once: its later records repeat that time.
                closed = closed.map(|c| *first_close[d as usize].get_or_insert(c));
            }
            let amount = format!("{}.{:02}", 1000 + r.below(200_000), r.below(100));
            let rep = format!("rep-{:05}", (d * 31 + r.below(2)) % reps);
            let deal_id = format!("deal-{d:07}");
            let event_id = format!("ev-{i:09}");
            let value = if proto {
                pb::Deal {
                    event_id,
                    deal_id: deal_id.clone(),
                    rep_id: rep,
                    team_id: None,
                    stage: stage.into(),
                    amount,
                    currency: if i % 10 == 0 {
                        "EUR".into()
                    } else {
                        "USD".into()
                    },
                    created_at: Some(ts(created)),
                    occurred_at: Some(ts(occurred)),
                    closed_at: closed.map(ts),
                    expected_close_date: None,
                    forecast_category: None,
                }
                .encode_to_vec()
            } else {
                let mut v = serde_json::json!({
                    "event_id": event_id, "deal_id": deal_id, "rep_id": rep, "stage": stage,
                    "amount": amount, "currency": if i % 10 == 0 { "EUR" } else { "USD" },
                    "created_at": rfc(created), "occurred_at": rfc(occurred),
                });
                if let Some(c) = closed {
                    v["closed_at"] = serde_json::json!(rfc(c));
                }
                serde_json::to_vec(&v).unwrap_or_default()
            };
            (deal_id.into_bytes(), value)
        })
        .collect()
}

/// `n` activity records for `reps` reps, spread over `span_ms` before `now_ms`.
pub fn activity_records(
    n: usize,
    reps: u64,
    span_ms: i64,
    now_ms: i64,
    proto: bool,
    seed: u64,
) -> Vec<Encoded> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|i| {
            let rep = format!("rep-{:05}", r.below(reps));
            let at = now_ms - r.below(span_ms.max(1) as u64) as i64;
            let kind = KINDS[r.below(5) as usize];
            let event_id = format!("act-{seed}-{i:09}");
            let value = if proto {
                pb::Activity {
                    event_id,
                    rep_id: rep.clone(),
                    team_id: None,
                    kind: kind.into(),
                    occurred_at: Some(ts(at)),
                    deal_id: None,
                    duration_seconds: Some(120),
                }
                .encode_to_vec()
            } else {
                serde_json::to_vec(&serde_json::json!({
                    "event_id": event_id, "rep_id": rep, "kind": kind, "occurred_at": rfc(at),
                    "duration_seconds": 120,
                }))
                .unwrap_or_default()
            };
            (rep.into_bytes(), value)
        })
        .collect()
}

/// Renders `/metrics` as a scrape does and returns its size in bytes (the pieces summed).
pub fn scrape_bytes(state: &salespulse_expose::AppState) -> usize {
    salespulse_expose::render(state)
        .iter()
        .map(|p| p.len())
        .sum()
}

/// Runs `f` `runs` times and returns the median seconds.
pub fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}
