//! Deals: the latest state of every deal and what it contributes to its owner's numbers.
//!
//! Every applied record retracts what the deal's previous state contributed and adds what the
//! new state contributes, so an amount change, a reopening, a stage change or an owner change
//! moves the deal's numbers instead of counting it twice.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::Datelike;
use rust_decimal::Decimal;
use salespulse_decode::{Contract, DealEvent, StageKind};

use crate::calendar::{Bounds, Calendar, Window, WINDOWS};
use crate::ledger::{Cell, Ledger};
use crate::series::{ratio, Metric, SeriesBuilder, SubjectSeries};
use crate::windowed::{Measure, Windowed};
use crate::Outcome;

/// Windowed sums of deal facts; a single fact is a `DealSums` with one count set. Money is in
/// cents of the reporting currency: amounts arrive rounded to the cent, so integer sums are
/// exact and much cheaper than decimal ones.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DealSums {
    pub bookings: i128,
    pub won: i64,
    pub lost: i64,
    pub cycle_seconds: i64,
    pub created_amount: i128,
    pub created: i64,
}

impl Measure for DealSums {
    fn add(&mut self, o: &Self) {
        self.bookings += o.bookings;
        self.won += o.won;
        self.lost += o.lost;
        self.cycle_seconds += o.cycle_seconds;
        self.created_amount += o.created_amount;
        self.created += o.created;
    }
    fn sub(&mut self, o: &Self) {
        self.bookings -= o.bookings;
        self.won -= o.won;
        self.lost -= o.lost;
        self.cycle_seconds -= o.cycle_seconds;
        self.created_amount -= o.created_amount;
        self.created -= o.created;
    }
    fn is_zero(&self) -> bool {
        self.won == 0
            && self.lost == 0
            && self.created == 0
            && self.cycle_seconds == 0
            && self.bookings == 0
            && self.created_amount == 0
    }
}

/// Open pipeline of one stage, in cents.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpenStage {
    pub amount: i128,
    pub deals: i64,
    /// Amount expected to close in the current week, month, quarter and year.
    pub expected: [i128; PERIODS],
}

/// Current periods the expected pipeline is measured for: week, month, quarter, year.
const PERIODS: usize = 4;
const PERIOD_NAMES: [&str; PERIODS] = ["week", "month", "quarter", "year"];

#[derive(Debug)]
pub(crate) struct DealCell {
    windowed: Windowed<DealSums>,
    open: Vec<OpenStage>,
    /// Open deals with an expected close date: (day, deal) -> (stage, cents). Kept to
    /// recompute `OpenStage::expected` when the periods roll over.
    expected: BTreeMap<(i32, u64), (u8, i128)>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct DealSummary {
    sums: [DealSums; WINDOWS],
    open: Vec<OpenStage>,
}

impl DealSummary {
    /// Adds windowed sums and open pipeline (a cell's, or another summary's) to this one.
    fn add(&mut self, sums: &[DealSums; WINDOWS], open: &[OpenStage]) {
        for (acc, v) in self.sums.iter_mut().zip(sums) {
            acc.add(v);
        }
        if self.open.len() < open.len() {
            self.open.resize(open.len(), OpenStage::default());
        }
        for (acc, o) in self.open.iter_mut().zip(open) {
            acc.amount += o.amount;
            acc.deals += o.deals;
            for (a, e) in acc.expected.iter_mut().zip(o.expected) {
                *a += e;
            }
        }
    }
}

impl Cell for DealCell {
    type Summary = DealSummary;
    fn new(b: &Bounds) -> Self {
        DealCell {
            windowed: Windowed::new(b),
            open: Vec::new(),
            expected: BTreeMap::new(),
        }
    }
    fn advance(&mut self, b: &Bounds) -> bool {
        self.windowed.advance(b)
    }
    fn is_empty(&self) -> bool {
        self.windowed.is_empty() && self.open.iter().all(|o| o.deals == 0)
    }
    fn add_summary(into: &mut DealSummary, from: &DealSummary) {
        into.add(&from.sums, &from.open);
    }
    fn merge_into(&self, s: &mut DealSummary) {
        s.add(self.windowed.sums(), &self.open);
    }
}

/// How many recent event ids each deal remembers to recognise a repeated record.
pub(crate) const RECENT_IDS: usize = 8;

#[derive(Debug, Clone)]
pub(crate) struct DealState {
    pub seq: u64,
    pub rep: Arc<str>,
    pub team: Option<Arc<str>>,
    pub stage: u8,
    /// Cents of the reporting currency.
    pub amount: i128,
    pub created_at: i64,
    pub occurred_at_ms: i64,
    pub closed_at: Option<i64>,
    /// Expected close date, days from the common era.
    pub expected: Option<i32>,
    pub recent: [u64; RECENT_IDS],
    pub recent_next: u8,
}

fn id_hash(s: &str) -> u64 {
    // Fixed keys: the same id hashes the same in every process, so restarts agree.
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// What the configured stages mean, and the current periods (day ranges, start inclusive)
/// of the expected pipeline.
#[derive(Debug)]
struct Stages {
    kind: Vec<StageKind>,
    periods: [(i32, i32); PERIODS],
}

/// Day ranges of the current week, month, quarter and year at `b`.
fn current_periods(cal: &Calendar, b: &Bounds) -> [(i32, i32); PERIODS] {
    let mut out = [(0, 0); PERIODS];
    for (k, (w, months)) in [
        (Window::Wtd, 0),
        (Window::Mtd, 1),
        (Window::Qtd, 3),
        (Window::Ytd, 12),
    ]
    .into_iter()
    .enumerate()
    {
        let start = cal.local_date(b.lo[w.index()]);
        let end = if months == 0 {
            start + chrono::Duration::days(7)
        } else {
            start
                .checked_add_months(chrono::Months::new(months))
                .unwrap_or(start)
        };
        out[k] = (start.num_days_from_ce(), end.num_days_from_ce());
    }
    out
}

impl Stages {
    /// Adds (or retracts) everything one deal state contributes.
    /// The windowed facts of one deal state: created, and won or lost when closed.
    fn facts(&self, st: &DealState) -> [Option<(i64, DealSums)>; 2] {
        let created = DealSums {
            created_amount: st.amount,
            created: 1,
            ..DealSums::default()
        };
        let closed = st.closed_at.map(|c| {
            let fact = match self.kind[usize::from(st.stage)] {
                StageKind::Won => DealSums {
                    bookings: st.amount,
                    won: 1,
                    cycle_seconds: c - st.created_at,
                    ..DealSums::default()
                },
                _ => DealSums {
                    lost: 1,
                    ..DealSums::default()
                },
            };
            (c, fact)
        });
        [Some((st.created_at, created)), closed]
    }

    fn open(&self, cell: &mut DealCell, st: &DealState, add: bool) {
        if self.kind[usize::from(st.stage)] != StageKind::Open {
            return;
        }
        let i = usize::from(st.stage);
        if cell.open.len() <= i {
            cell.open.resize(i + 1, OpenStage::default());
        }
        let (amount, deals) = if add {
            (st.amount, 1)
        } else {
            (-st.amount, -1)
        };
        cell.open[i].amount += amount;
        cell.open[i].deals += deals;
        if let Some(d) = st.expected {
            for (k, (lo, hi)) in self.periods.iter().enumerate() {
                if (*lo..*hi).contains(&d) {
                    cell.open[i].expected[k] += amount;
                }
            }
            if add {
                cell.expected.insert((d, st.seq), (st.stage, st.amount));
            } else {
                cell.expected.remove(&(d, st.seq));
            }
        }
    }

    /// Recomputes a cell's expected pipeline for new current periods.
    fn reperiod(&self, cell: &mut DealCell) {
        for o in cell.open.iter_mut() {
            o.expected = [0; PERIODS];
        }
        for (&(d, _), &(stage, amount)) in &cell.expected {
            for (k, (lo, hi)) in self.periods.iter().enumerate() {
                if (*lo..*hi).contains(&d) {
                    cell.open[usize::from(stage)].expected[k] += amount;
                }
            }
        }
    }

    /// Adds (or retracts) everything one deal state contributes to a cell.
    fn contribute(&self, cell: &mut DealCell, st: &DealState, add: bool, b: &Bounds) {
        for (ts, f) in self.facts(st).into_iter().flatten() {
            if add {
                cell.windowed.add(ts, st.seq, &f, b);
            } else {
                cell.windowed.sub(ts, st.seq, &f);
            }
        }
        self.open(cell, st, add);
    }

    /// Replaces one state's contribution by another's in the same cell, touching only the
    /// facts that differ: most updates move a deal between open stages and leave its windowed
    /// facts as they were.
    fn replace(&self, cell: &mut DealCell, old: &DealState, new: &DealState, b: &Bounds) {
        let (before, after) = (self.facts(old), self.facts(new));
        for f in before.iter().flatten() {
            if !after.contains(&Some(*f)) {
                cell.windowed.sub(f.0, old.seq, &f.1);
            }
        }
        for f in after.iter().flatten() {
            if !before.contains(&Some(*f)) {
                cell.windowed.add(f.0, new.seq, &f.1, b);
            }
        }
        self.open(cell, old, false);
        self.open(cell, new, true);
    }
}

/// Latest state of every deal and the per rep, team and org numbers derived from it.
#[derive(Debug)]
pub struct DealsCore {
    stages: Stages,
    stage_prob: Vec<Decimal>,
    stage_names: Vec<Arc<str>>,
    period_names: Vec<Arc<str>>,
    cal: Calendar,
    bounds: Bounds,
    ledger: Ledger<DealCell>,
    deals: crate::FastMap<Box<str>, DealState>,
    next_seq: u64,
    /// Smallest won amount (cents) worth a celebration; `None` records none.
    big_win: Option<i128>,
    announcing: bool,
    wins: Vec<Win>,
}

/// A deal that just became won with a large amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Win {
    pub deal_id: String,
    pub rep: Arc<str>,
    pub team: Arc<str>,
    pub amount: Decimal,
    /// Unix seconds.
    pub closed_at: i64,
}

impl DealsCore {
    pub fn new(contract: &Contract, cal: Calendar, now_ms: i64) -> Self {
        let stages = contract.stages();
        DealsCore {
            stages: Stages {
                kind: stages.iter().map(|s| s.kind).collect(),
                periods: current_periods(&cal, &cal.bounds(now_ms.div_euclid(1000))),
            },
            stage_prob: stages.iter().map(|s| s.probability).collect(),
            stage_names: stages.iter().map(|s| Arc::from(s.name.as_str())).collect(),
            period_names: PERIOD_NAMES.iter().map(|p| Arc::from(*p)).collect(),
            cal,
            bounds: cal.bounds(now_ms.div_euclid(1000)),
            ledger: Ledger::new().with_members(),
            deals: crate::FastMap::default(),
            next_seq: 0,
            big_win: None,
            announcing: true,
            wins: Vec::new(),
        }
    }

    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    pub fn deals(&self) -> usize {
        self.deals.len()
    }

    /// Applies one validated record at the clock of the last [`DealsCore::tick`].
    pub fn apply(&mut self, ev: &DealEvent<'_>) -> Outcome {
        let h = id_hash(&ev.event_id);
        let previous = match self.deals.get_mut(ev.deal_id.as_ref()) {
            Some(st) => {
                if st.recent.contains(&h) {
                    return Outcome::Duplicate;
                }
                st.recent[usize::from(st.recent_next)] = h;
                st.recent_next = (st.recent_next + 1) % RECENT_IDS as u8;
                if ev.occurred_at < st.occurred_at_ms {
                    return Outcome::Stale;
                }
                Some(st.clone())
            }
            None => None,
        };
        let kind = self.stages.kind[usize::from(ev.stage)];
        let closed_at = match kind {
            StageKind::Open => None,
            _ => Some(match (ev.closed_at, &previous) {
                (Some(c), _) => c.div_euclid(1000),
                (None, Some(p)) if p.closed_at.is_some() => p.closed_at.unwrap_or_default(),
                (None, _) => ev.occurred_at.div_euclid(1000),
            }),
        };
        let rep = self.ledger.intern(&ev.rep_id);
        let team = ev.team_id.as_deref().map(|t| self.ledger.intern(t));
        let (seq, recent, recent_next) = match &previous {
            Some(p) => (p.seq, p.recent, p.recent_next),
            None => {
                self.next_seq += 1;
                let mut recent = [0; RECENT_IDS];
                recent[0] = h;
                (self.next_seq, recent, 1)
            }
        };
        let next = DealState {
            seq,
            rep,
            team,
            stage: ev.stage,
            amount: cents(ev.amount),
            created_at: ev.created_at.div_euclid(1000),
            occurred_at_ms: ev.occurred_at,
            closed_at,
            expected: ev.expected_close_date.map(|d| d.num_days_from_ce()),
            recent,
            recent_next,
        };
        let b = self.bounds;
        match &previous {
            // The common case: the same owner, so one cell takes both the retraction and the
            // new contribution.
            Some(p) if Arc::ptr_eq(&p.rep, &next.rep) && p.team == next.team => {
                let cell = self.ledger.cell(&next.rep, next.team.as_ref(), &b);
                self.stages.replace(cell, p, &next, &b);
            }
            Some(p) => {
                let cell = self.ledger.cell(&p.rep, p.team.as_ref(), &b);
                self.stages.contribute(cell, p, false, &b);
                let cell = self.ledger.cell(&next.rep, next.team.as_ref(), &b);
                self.stages.contribute(cell, &next, true, &b);
                self.ledger.release(&p.rep, p.team.as_ref());
            }
            None => {
                let cell = self.ledger.cell(&next.rep, next.team.as_ref(), &b);
                self.stages.contribute(cell, &next, true, &b);
            }
        }
        if let Some(min) = self.big_win.filter(|_| self.announcing) {
            let was_won = previous
                .as_ref()
                .is_some_and(|p| self.stages.kind[usize::from(p.stage)] == StageKind::Won);
            if kind == StageKind::Won && !was_won && next.amount >= min {
                self.wins.push(Win {
                    deal_id: ev.deal_id.to_string(),
                    rep: next.rep.clone(),
                    team: self.ledger.effective(&next.rep, next.team.as_ref()),
                    amount: money(next.amount),
                    closed_at: next.closed_at.unwrap_or_default(),
                });
            }
        }
        match self.deals.get_mut(ev.deal_id.as_ref()) {
            Some(st) => *st = next,
            None => {
                self.deals.insert(Box::from(ev.deal_id.as_ref()), next);
            }
        }
        Outcome::Applied
    }

    /// Records every deal that becomes won with at least `min` (reporting currency) from now
    /// on, for [`DealsCore::take_wins`].
    pub fn track_big_wins(&mut self, min: Decimal) {
        self.big_win = Some(cents(min));
    }

    /// Whether records applied from now on may record wins: off while replaying records whose
    /// wins an earlier run already announced.
    pub fn set_announcing(&mut self, on: bool) {
        self.announcing = on;
    }

    /// The big wins recorded since the last call.
    pub fn take_wins(&mut self) -> Vec<Win> {
        std::mem::take(&mut self.wins)
    }

    /// Moves the clock forward (never back) and every window with it.
    pub fn tick(&mut self, now_ms: i64) {
        let now = now_ms.div_euclid(1000);
        if now <= self.bounds.now {
            return;
        }
        let hour = self.bounds.now.div_euclid(3_600);
        self.bounds = self.cal.bounds(now);
        self.ledger.advance(&self.bounds);
        let periods = current_periods(&self.cal, &self.bounds);
        if periods != self.stages.periods {
            self.stages.periods = periods;
            let stages = &self.stages;
            self.ledger.touch_all(|cell| stages.reperiod(cell));
        }
        if now.div_euclid(3_600) != hour {
            self.ledger.gc_names();
        }
    }

    /// Number of (rep, team) cells held.
    pub fn cells(&self) -> usize {
        self.ledger.cells()
    }

    pub(crate) fn stage_names(&self) -> &[Arc<str>] {
        &self.stage_names
    }

    pub(crate) fn saved_deals(&self) -> (u64, impl Iterator<Item = (&str, &DealState)>) {
        (self.next_seq, self.deals.iter().map(|(k, v)| (&**k, v)))
    }

    pub(crate) fn intern(&mut self, s: &str) -> Arc<str> {
        self.ledger.intern(s)
    }

    /// Adds a restored deal state and its contribution, as if its record had just been
    /// applied to a core that had never seen the deal.
    pub(crate) fn insert_state(&mut self, id: Box<str>, st: DealState) {
        let b = self.bounds;
        let cell = self.ledger.cell(&st.rep, st.team.as_ref(), &b);
        self.stages.contribute(cell, &st, true, &b);
        self.deals.insert(id, st);
    }

    pub(crate) fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    pub fn roster_upsert(&mut self, rep: &str, team: &str) {
        self.ledger.roster_upsert(rep, team);
    }

    pub fn roster_remove(&mut self, rep: &str) {
        self.ledger.roster_remove(rep);
    }

    /// The series of every subject changed since the last call.
    pub fn drain_changes(&mut self) -> Vec<SubjectSeries> {
        let names = self.stage_names.clone();
        let probs = self.stage_prob.clone();
        let periods = self.period_names.clone();
        self.ledger
            .drain(&|s: &DealSummary, b: &mut SeriesBuilder<'_>| {
                build(&names, &probs, &periods, s, b)
            })
    }

    /// Every current series.
    pub fn snapshot(&self) -> Vec<SubjectSeries> {
        self.ledger
            .snapshot(&|s: &DealSummary, b: &mut SeriesBuilder<'_>| {
                build(
                    &self.stage_names,
                    &self.stage_prob,
                    &self.period_names,
                    s,
                    b,
                )
            })
    }
}

/// Converts an amount already rounded to the cent into cents.
fn cents(amount: Decimal) -> i128 {
    let scale = amount.scale();
    let m = amount.mantissa();
    if scale <= 2 {
        m * 10i128.pow(2 - scale)
    } else {
        // Not produced by the decoder (it rounds to the cent); round here too to stay total.
        let r =
            amount.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        r.mantissa() * 10i128.pow(2 - r.scale())
    }
}

fn money(cents: i128) -> Decimal {
    Decimal::from_i128_with_scale(cents, 2)
}

fn build(
    stage_names: &[Arc<str>],
    stage_prob: &[Decimal],
    period_names: &[Arc<str>],
    s: &DealSummary,
    b: &mut SeriesBuilder<'_>,
) {
    let any_window = s.sums.iter().any(|x| !x.is_zero());
    let any_open = s.open.iter().any(|o| o.deals != 0);
    if !any_window && !any_open {
        return;
    }
    if any_window {
        for w in Window::ALL {
            let x = &s.sums[w.index()];
            let won = Decimal::from(x.won);
            let lost = Decimal::from(x.lost);
            let bookings = money(x.bookings);
            b.push(Metric::Bookings, Some(w), None, bookings);
            b.push(Metric::DealsWon, Some(w), None, won);
            b.push(Metric::DealsLost, Some(w), None, lost);
            b.push(
                Metric::PipelineCreated,
                Some(w),
                None,
                money(x.created_amount),
            );
            if let Some(r) = ratio(won, won + lost) {
                b.push(Metric::WinRate, Some(w), None, r);
            }
            if let Some(r) = ratio(bookings, won) {
                b.push(Metric::AvgDealSize, Some(w), None, r);
            }
            if let Some(r) = ratio(Decimal::from(x.cycle_seconds), won) {
                b.push(Metric::SalesCycleSeconds, Some(w), None, r);
            }
        }
    }
    if any_open {
        let mut weighted = Decimal::ZERO;
        for (i, o) in s.open.iter().enumerate() {
            if o.deals != 0 {
                let amount = money(o.amount);
                b.push(Metric::OpenPipeline, None, stage_names.get(i), amount);
                weighted += amount * stage_prob.get(i).copied().unwrap_or_default();
            }
        }
        b.push(Metric::WeightedPipeline, None, None, weighted);
        for (k, name) in period_names.iter().enumerate() {
            let mut amount = Decimal::ZERO;
            let mut weighted = Decimal::ZERO;
            for (i, o) in s.open.iter().enumerate() {
                let a = money(o.expected[k]);
                amount += a;
                weighted += a * stage_prob.get(i).copied().unwrap_or_default();
            }
            b.push(Metric::PipelineExpected, None, Some(name), amount);
            b.push(Metric::WeightedPipelineExpected, None, Some(name), weighted);
        }
    }
}
