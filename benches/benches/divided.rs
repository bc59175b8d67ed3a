//! Divided ingest on the aggregation core: the same records on one core, and divided by their
//! key over three source cores (as the partitions of the input topic divide them) whose cells
//! three mergers sum, each owning a third of the slots. Reports the work of each part (one
//! thread, so its seconds are CPU seconds), what the sources send to the mergers, and the
//! state each part holds.
//!
//! Run: `cargo bench -p salespulse-bench --bench divided`

use std::time::Instant;

use salespulse_aggregate::{ActivitiesCore, Calendar, Contribution, DealsCore, Merger};
use salespulse_bench::{activity_records, deal_records, median_secs, Encoded};
use salespulse_decode::{Contract, Format};

const N: usize = 1_000_000;
const REPS: u64 = 1_000;
const TEAMS: u64 = 20;
const SOURCES: usize = 3;
const SLOTS: u32 = 12;
const RUNS: usize = 3;
const DAY_MS: i64 = 86_400_000;
/// Records between two ticks: a service at 300,000 records/s ticks about every 0.3 s.
const TICK_EVERY: usize = 100_000;

/// The part of the ingest a source or the single core does.
trait Source {
    fn new(contract: &Contract, now: i64) -> Self;
    fn apply(&mut self, contract: &Contract, key: &[u8], value: &[u8], now: i64);
    fn tick(&mut self, now: i64);
    fn roster(&mut self, rep: &str, team: &str);
    fn exchange(&mut self);
    fn drain_changes(&mut self) -> usize;
    fn drain_contributions(&mut self) -> Vec<Contribution>;
    /// (what the state counts, how many)
    fn held(&self) -> (&'static str, usize);
    fn merger(contract: &Contract, now: i64) -> Merger;
}

impl Source for DealsCore {
    fn new(contract: &Contract, now: i64) -> Self {
        DealsCore::new(contract, Calendar::utc(), now)
    }
    fn apply(&mut self, contract: &Contract, key: &[u8], value: &[u8], now: i64) {
        let _ = contract.with_deal(Some(key), value, Format::Protobuf, now, |ev| {
            DealsCore::apply(self, ev)
        });
    }
    fn tick(&mut self, now: i64) {
        DealsCore::tick(self, now);
    }
    fn roster(&mut self, rep: &str, team: &str) {
        self.roster_upsert(rep, team);
    }
    fn exchange(&mut self) {
        DealsCore::exchange(self, SLOTS);
    }
    fn drain_changes(&mut self) -> usize {
        DealsCore::drain_changes(self).len()
    }
    fn drain_contributions(&mut self) -> Vec<Contribution> {
        DealsCore::drain_contributions(self)
    }
    fn held(&self) -> (&'static str, usize) {
        ("deals", self.deals())
    }
    fn merger(contract: &Contract, now: i64) -> Merger {
        Merger::deals(contract, Calendar::utc(), now, SLOTS)
    }
}

impl Source for ActivitiesCore {
    fn new(contract: &Contract, now: i64) -> Self {
        ActivitiesCore::new(contract, Calendar::utc(), now)
    }
    fn apply(&mut self, contract: &Contract, key: &[u8], value: &[u8], now: i64) {
        let _ = contract.with_activity(Some(key), value, Format::Protobuf, now, |ev| {
            ActivitiesCore::apply(self, ev)
        });
    }
    fn tick(&mut self, now: i64) {
        ActivitiesCore::tick(self, now);
    }
    fn roster(&mut self, rep: &str, team: &str) {
        self.roster_upsert(rep, team);
    }
    fn exchange(&mut self) {
        ActivitiesCore::exchange(self, SLOTS);
    }
    fn drain_changes(&mut self) -> usize {
        ActivitiesCore::drain_changes(self).len()
    }
    fn drain_contributions(&mut self) -> Vec<Contribution> {
        ActivitiesCore::drain_contributions(self)
    }
    fn held(&self) -> (&'static str, usize) {
        ("event ids", self.remembered_ids())
    }
    fn merger(contract: &Contract, now: i64) -> Merger {
        Merger::activities(contract, Calendar::utc(), now, SLOTS)
    }
}

fn roster(mut f: impl FnMut(&str, &str)) {
    for r in 0..REPS {
        f(&format!("rep-{r:05}"), &format!("team-{:02}", r % TEAMS));
    }
}

/// The partition of a key: FNV-1a, as fixed as Kafka's murmur2 and as even.
fn partition_of(key: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % SOURCES as u64) as usize
}

fn single<S: Source>(contract: &Contract, recs: &[Encoded], now: i64) -> (usize, usize) {
    let mut core = S::new(contract, now);
    roster(|r, t| core.roster(r, t));
    let mut series = 0;
    for (i, (k, v)) in recs.iter().enumerate() {
        core.apply(contract, k, v, now);
        if (i + 1) % TICK_EVERY == 0 {
            core.tick(now + (i / TICK_EVERY) as i64 * 1000);
            series += core.drain_changes();
        }
    }
    (core.held().1, series)
}

struct Divided {
    /// Seconds of each source, then of each merger.
    sources: Vec<f64>,
    mergers: Vec<f64>,
    /// Of the mergers' seconds, those spent applying contributions.
    applying: f64,
    records: Vec<usize>,
    held: Vec<usize>,
    contributions: usize,
    bytes: usize,
    cells: Vec<usize>,
}

fn divided<S: Source>(contract: &Contract, recs: &[Encoded], now: i64) -> Divided {
    let mut parts: Vec<Vec<&Encoded>> = vec![Vec::new(); SOURCES];
    for r in recs {
        parts[partition_of(&r.0)].push(r);
    }
    let mut out = Divided {
        sources: Vec::new(),
        mergers: vec![0.0; SOURCES],
        applying: 0.0,
        records: parts.iter().map(Vec::len).collect(),
        held: Vec::new(),
        contributions: 0,
        bytes: 0,
        cells: Vec::new(),
    };
    // Each source runs alone, as on its own instance; what it sends is kept per tick.
    let ticks = recs.len() / TICK_EVERY;
    let mut sent: Vec<Vec<Vec<Contribution>>> = vec![vec![Vec::new(); SOURCES]; ticks];
    for (p, part) in parts.iter().enumerate() {
        let began = Instant::now();
        let mut core = S::new(contract, now);
        core.exchange();
        roster(|r, t| core.roster(r, t));
        // The same ticks as the single core: every TICK_EVERY records of the whole input.
        let per_tick = part.len().div_ceil(ticks.max(1));
        for (i, (k, v)) in part.iter().map(|r| (&r.0, &r.1)).enumerate() {
            core.apply(contract, k, v, now);
            if (i + 1) % per_tick == 0 || i + 1 == part.len() {
                let t = (i / per_tick).min(ticks - 1);
                core.tick(now + t as i64 * 1000);
                sent[t][p].extend(core.drain_contributions());
            }
        }
        out.sources.push(began.elapsed().as_secs_f64());
        out.held.push(core.held().1);
    }
    for tick in &sent {
        for c in tick.iter().flatten() {
            out.contributions += 1;
            out.bytes += c.value.as_ref().map_or(0, Vec::len);
        }
    }
    // Each merger owns every third slot and takes what is sent to them.
    for (m, secs) in out.mergers.iter_mut().enumerate() {
        let owned: Vec<u32> = (0..SLOTS).filter(|s| *s as usize % SOURCES == m).collect();
        let began = Instant::now();
        let mut merger = S::merger(contract, now);
        merger.set_owned(owned.clone());
        roster(|r, t| merger.roster_upsert(r, t));
        for (t, tick) in sent.iter().enumerate() {
            let applying = Instant::now();
            for (source, cs) in tick.iter().enumerate() {
                for c in cs.iter().filter(|c| owned.contains(&c.slot)) {
                    let _ = merger.apply(c, source as u32);
                }
            }
            out.applying += applying.elapsed().as_secs_f64();
            merger.tick(now + t as i64 * 1000);
            std::hint::black_box(merger.drain_changes());
        }
        *secs = began.elapsed().as_secs_f64();
        out.cells.push(merger.cells());
    }
    out
}

fn case<S: Source>(label: &str, contract: &Contract, recs: &[Encoded], now: i64) {
    let one = median_secs(RUNS, || {
        std::hint::black_box(single::<S>(contract, recs, now));
    });
    let (held, series) = single::<S>(contract, recs, now);
    let mut runs: Vec<Divided> = (0..RUNS)
        .map(|_| divided::<S>(contract, recs, now))
        .collect();
    runs.sort_by(|a, b| {
        let total = |d: &Divided| d.sources.iter().chain(&d.mergers).sum::<f64>();
        total(a).total_cmp(&total(b))
    });
    let d = &runs[RUNS / 2];
    let sources: f64 = d.sources.iter().sum();
    let mergers: f64 = d.mergers.iter().sum();
    let what = S::new(contract, now).held().0;
    println!("{label}: {} records, {REPS} reps in {TEAMS} teams, {SOURCES} sources, {SLOTS} slots, a tick every {TICK_EVERY} records", recs.len());
    println!(
        "  one core:  {one:.2} s ({:.0} records/s), {held} {what} held, {series} subjects emitted",
        recs.len() as f64 / one
    );
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    println!(
        "  divided:   sources {} = {sources:.2} s, mergers {} = {mergers:.2} s ({:.2} s applying contributions); work {:.2}x one core's",
        fmt(&d.sources),
        fmt(&d.mergers),
        d.applying,
        (sources + mergers) / one
    );
    println!(
        "  records per source {:?} (sum {}), {what} held per source {:?} ({:.2}, {:.2}, {:.2} of one core's)",
        d.records,
        d.records.iter().sum::<usize>(),
        d.held,
        d.held[0] as f64 / held as f64,
        d.held[1] as f64 / held as f64,
        d.held[2] as f64 / held as f64,
    );
    println!(
        "  sent: {} contributions, {:.1} MiB; cells held per merger {:?}\n",
        d.contributions,
        d.bytes as f64 / 1048576.0,
        d.cells
    );
}

fn main() {
    let contract = Contract::default();
    let now = chrono::Utc::now().timestamp_millis();
    println!("divided ingest, median of {RUNS} runs (protobuf)\n");
    let wanted = |l: &str| std::env::var("BENCH_ONLY").map_or(true, |f| l.contains(&f));
    if wanted("deals") {
        let recs = deal_records(N, 200_000, REPS, 30 * DAY_MS, now, true, 1);
        case::<DealsCore>("deals", &contract, &recs, now);
    }
    if wanted("activities") {
        let recs = activity_records(N, REPS, 30 * DAY_MS, now, true, 2);
        case::<ActivitiesCore>("activities", &contract, &recs, now);
    }
}
