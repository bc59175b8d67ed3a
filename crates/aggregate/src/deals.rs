//! Deals: the latest state of every deal and what it contributes to its owner's numbers.
//!
//! Every applied record retracts what the deal's previous state contributed and adds what the
//! new state contributes, so an amount change, a reopening, a stage change or an owner change
//! moves the deal's numbers instead of counting it twice.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use salespulse_decode::{Contract, DealEvent, ForecastCategory, StageKind};

use crate::calendar::{Bounds, Calendar, Window, WINDOWS};
use crate::exchange::{Contribution, Exchange, MergerOf};
use crate::flow::{
    self, Exit, Fact, FlowCell, FlowClock, Fold, Scratch, Slots, Step, StepChange, EXIT_LABELS,
};
use crate::ledger::{Cell, Ledger};
use crate::schedule::Schedule;
use crate::series::{ratio, Metric, Scope, SeriesBuilder, SubjectSeries};
use crate::weekly::{Measured, WeekSums, Weekly};
use crate::windowed::Measure;
use crate::Outcome;

/// Windowed sums of deal facts; a single fact is a `DealSums` with one count set. Money is in
/// cents of the reporting currency: amounts arrive rounded to the cent, so integer sums are
/// exact and much cheaper than decimal ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenStage {
    pub amount: i128,
    pub deals: i64,
    /// Amount expected to close in the current week, month, quarter and year.
    pub expected: [i128; PERIODS],
    /// Sum of the seconds at which the open deals entered the stage.
    pub entered_sum: i128,
    pub stalled_deals: i64,
    pub stalled_amount: i128,
}

/// Current periods the expected pipeline is measured for: week, month, quarter, year.
const PERIODS: usize = 4;
const PERIOD_NAMES: [&str; PERIODS] = ["week", "month", "quarter", "year"];
/// Indexes into [`PERIODS`] of the forecast's periods, with their `period_type` label.
const FORECAST_PERIODS: [(usize, &str); 2] = [(1, "month"), (2, "quarter")];
const CATEGORIES: usize = ForecastCategory::ALL.len();
/// Roll-ups of a forecast call: each adds one category to the one before.
const ROLLUPS: [(&str, ForecastCategory); 3] = [
    ("commit", ForecastCategory::Commit),
    ("best_case", ForecastCategory::BestCase),
    ("pipeline", ForecastCategory::Pipeline),
];

/// What the open deals of a cell (or of a summary of cells) add up to now.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct OpenTotals {
    stages: Vec<OpenStage>,
    overdue_deals: i64,
    overdue_amount: i128,
    /// Amount expected to close in each current period, by forecast category.
    forecast: [[i128; PERIODS]; CATEGORIES],
    /// Amount with no expected close date, by forecast category.
    undated: [i128; CATEGORIES],
}

impl OpenTotals {
    fn add(&mut self, o: &OpenTotals) {
        if self.stages.len() < o.stages.len() {
            self.stages.resize(o.stages.len(), OpenStage::default());
        }
        for (acc, x) in self.stages.iter_mut().zip(&o.stages) {
            acc.amount += x.amount;
            acc.deals += x.deals;
            for (a, e) in acc.expected.iter_mut().zip(x.expected) {
                *a += e;
            }
            acc.entered_sum += x.entered_sum;
            acc.stalled_deals += x.stalled_deals;
            acc.stalled_amount += x.stalled_amount;
        }
        self.overdue_deals += o.overdue_deals;
        self.overdue_amount += o.overdue_amount;
        for (acc, x) in self.forecast.iter_mut().zip(&o.forecast) {
            for (a, v) in acc.iter_mut().zip(x) {
                *a += v;
            }
        }
        for (a, v) in self.undated.iter_mut().zip(&o.undated) {
            *a += v;
        }
    }

    /// Adds (`sign` 1) or retracts (-1) an open deal's part of the totals.
    fn add_open(&mut self, d: &OpenDeal, sign: i128, periods: &[(i32, i32); PERIODS]) {
        let i = usize::from(d.stage);
        if self.stages.len() <= i {
            self.stages.resize(i + 1, OpenStage::default());
        }
        let amount = sign * d.amount;
        let o = &mut self.stages[i];
        o.amount += amount;
        o.deals += sign as i64;
        o.entered_sum += sign * i128::from(d.entered);
        if d.expected.is_none() {
            self.undated[d.forecast_category().index()] += amount;
        }
        self.add_expected(d, sign, periods);
        self.add_status(d, sign);
    }

    /// Adds (or retracts) an open deal's amount in the current periods it is expected in.
    fn add_expected(&mut self, d: &OpenDeal, sign: i128, periods: &[(i32, i32); PERIODS]) {
        let Some(day) = d.expected else { return };
        let c = d.forecast_category().index();
        for (k, (lo, hi)) in periods.iter().enumerate() {
            if (*lo..*hi).contains(&day) {
                self.stages[usize::from(d.stage)].expected[k] += sign * d.amount;
                self.forecast[c][k] += sign * d.amount;
            }
        }
    }

    /// Forgets the amounts expected in the current periods (when they roll over).
    fn clear_expected(&mut self) {
        for o in self.stages.iter_mut() {
            o.expected = [0; PERIODS];
        }
        self.forecast = [[0; PERIODS]; CATEGORIES];
    }

    fn add_status(&mut self, d: &OpenDeal, sign: i128) {
        let amount = sign * d.amount;
        if d.stalled {
            let o = &mut self.stages[usize::from(d.stage)];
            o.stalled_deals += sign as i64;
            o.stalled_amount += amount;
        }
        if d.overdue {
            self.overdue_deals += sign as i64;
            self.overdue_amount += amount;
        }
    }

    fn any_open(&self) -> bool {
        self.stages.iter().any(|o| o.deals != 0)
    }

    fn deals(&self) -> i64 {
        self.stages.iter().map(|o| o.deals).sum()
    }
}

/// An open deal as its cell counts it now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenDeal {
    stage: u8,
    category: ForecastCategory,
    amount: i128,
    /// When it entered its stage (Unix seconds).
    entered: i64,
    /// Expected close date, days from the common era.
    expected: Option<i32>,
    /// First second at which it counts as stalled.
    stall_at: i64,
    /// First second at which it counts as overdue (local midnight after its expected date).
    overdue_at: Option<i64>,
    stalled: bool,
    overdue: bool,
}

impl OpenDeal {
    /// The first second at which its stalled or overdue status changes (`i64::MAX`: never).
    fn next_change(&self) -> i64 {
        let stall = if self.stalled {
            i64::MAX
        } else {
            self.stall_at
        };
        let overdue = self
            .overdue_at
            .filter(|_| !self.overdue)
            .unwrap_or(i64::MAX);
        stall.min(overdue)
    }

    /// Its status at `now`.
    fn at(self, now: i64) -> OpenDeal {
        OpenDeal {
            stalled: now >= self.stall_at,
            overdue: self.overdue_at.is_some_and(|t| now >= t),
            ..self
        }
    }

    /// The forecast category it counts in: an open deal marked closed counts as commit until
    /// it is won.
    fn forecast_category(&self) -> ForecastCategory {
        match self.category {
            ForecastCategory::Closed => ForecastCategory::Commit,
            c => c,
        }
    }
}

#[derive(Debug)]
pub(crate) struct DealCell {
    /// Window sums of the deals' created, won and lost facts; the facts stay with the deals
    /// and [`FlowClock`] says when they change windows, as for the flow facts.
    sums: [DealSums; WINDOWS],
    flow: FlowCell,
    open: OpenTotals,
    /// Minute of the clock the stage ages were last measured at.
    minute: i64,
    /// Bookings (cents) and deals won per week of their close, for the rep's consistency.
    weekly: Weekly,
}

/// What a cell adds up to, as sent to the slots: the window sums in rows of
/// [`crate::wire`], most of which are zero or repeat the window before.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct DealSummary {
    #[serde(with = "sums_wire")]
    sums: [DealSums; WINDOWS],
    open: OpenTotals,
    /// Window sums of each flow slot (see [`Slots`]).
    #[serde(with = "crate::wire::rows")]
    flow: Vec<[i128; WINDOWS]>,
    /// Bookings (cents) per kept week.
    weeks: WeekSums,
}

/// `[DealSums; WINDOWS]` as one [`crate::wire`] row per measure.
mod sums_wire {
    use super::{DealSums, WINDOWS};
    use crate::wire::{narrow, Row};

    const MEASURES: usize = 6;

    pub fn serialize<S: serde::Serializer>(
        sums: &[DealSums; WINDOWS],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut rows = [[0i128; WINDOWS]; MEASURES];
        for (w, v) in sums.iter().enumerate() {
            rows[0][w] = v.bookings;
            rows[1][w] = v.won.into();
            rows[2][w] = v.lost.into();
            rows[3][w] = v.cycle_seconds.into();
            rows[4][w] = v.created_amount;
            rows[5][w] = v.created.into();
        }
        crate::wire::serialize_rows(rows.iter(), s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<[DealSums; WINDOWS], D::Error> {
        use serde::de::Error;
        let rows: Vec<Row> = crate::wire::deserialize_rows(d)?;
        let [bookings, won, lost, cycle, created_amount, created]: [Row; MEASURES] = rows
            .try_into()
            .map_err(|r: Vec<Row>| D::Error::invalid_length(r.len(), &"6 rows of deal sums"))?;
        let mut sums = [DealSums::default(); WINDOWS];
        for (w, v) in sums.iter_mut().enumerate() {
            *v = DealSums {
                bookings: bookings[w],
                won: narrow(won[w]).map_err(D::Error::custom)?,
                lost: narrow(lost[w]).map_err(D::Error::custom)?,
                cycle_seconds: narrow(cycle[w]).map_err(D::Error::custom)?,
                created_amount: created_amount[w],
                created: narrow(created[w]).map_err(D::Error::custom)?,
            };
        }
        Ok(sums)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[derive(serde::Serialize, serde::Deserialize)]
        struct Sums(#[serde(with = "super")] [DealSums; WINDOWS]);

        #[test]
        fn deal_sums_round_trip_and_refuse_what_does_not_fit() {
            let mut sums = [DealSums::default(); WINDOWS];
            sums[3] = DealSums {
                bookings: 348_902_204,
                won: 30,
                lost: -34,
                cycle_seconds: i64::MAX,
                created_amount: i128::MIN,
                created: i64::MIN,
            };
            sums[7] = sums[3];
            sums[16].won = 1;
            let bytes = postcard::to_stdvec(&Sums(sums)).expect("as built");
            assert_eq!(
                postcard::from_bytes::<Sums>(&bytes).expect("as built").0,
                sums
            );

            let mut rows = [[0i128; WINDOWS]; MEASURES];
            rows[1][0] = i128::from(i64::MAX) + 1;
            let mut wide = Vec::new();
            crate::wire::put_rows(&mut wide, rows.iter());
            let bytes = crate::wire::postcard_bytes(&wide);
            assert!(postcard::from_bytes::<Sums>(&bytes).is_err());
            // Five rows are not deal sums.
            let mut five = Vec::new();
            crate::wire::put_rows(&mut five, rows[..5].iter());
            let bytes = crate::wire::postcard_bytes(&five);
            assert!(postcard::from_bytes::<Sums>(&bytes).is_err());
        }
    }
}

impl DealSummary {
    /// Adds windowed sums and open pipeline (a cell's, or another summary's) to this one.
    fn add(&mut self, sums: &[DealSums; WINDOWS], open: &OpenTotals) {
        for (acc, v) in self.sums.iter_mut().zip(sums) {
            acc.add(v);
        }
        self.open.add(open);
    }
}

impl DealCell {
    /// Adds (`sign` 1) or retracts (-1) a windowed fact in the windows of `mask`.
    fn add_fact(&mut self, f: &DealSums, sign: i8, mask: flow::Mask) {
        if mask == 0 {
            return;
        }
        let k = i64::from(sign);
        for w in flow::windows_of(mask) {
            let sum = &mut self.sums[w];
            sum.bookings += f.bookings * i128::from(k);
            sum.won += f.won * k;
            sum.lost += f.lost * k;
            sum.cycle_seconds += f.cycle_seconds * k;
            sum.created_amount += f.created_amount * i128::from(k);
            sum.created += f.created * k;
        }
    }
}

impl Cell for DealCell {
    type Summary = DealSummary;
    fn new(b: &Bounds) -> Self {
        DealCell {
            sums: [DealSums::default(); WINDOWS],
            flow: FlowCell::default(),
            open: OpenTotals::default(),
            minute: b.now.div_euclid(60),
            weekly: Weekly::new(b),
        }
    }
    fn advance(&mut self, b: &Bounds) -> bool {
        // A rep whose weeks moved has new consistency numbers, even when none is left.
        let had_weeks = !self.weekly.is_empty();
        let mut changed = self.weekly.roll(b) && had_weeks;
        let minute = b.now.div_euclid(60);
        if minute != self.minute {
            self.minute = minute;
            // Stage ages move with the clock, measured once a minute.
            changed |= self.open.any_open();
        }
        changed
    }
    fn is_empty(&self) -> bool {
        self.sums.iter().all(DealSums::is_zero)
            && self.flow.is_empty()
            && !self.open.any_open()
            && self.weekly.is_empty()
    }
    fn add_summary(into: &mut DealSummary, from: &DealSummary) {
        into.add(&from.sums, &from.open);
        flow::add_sums(&mut into.flow, &from.flow);
        into.weeks.add(&from.weeks);
    }
    fn merge_into(&self, s: &mut DealSummary) {
        s.add(&self.sums, &self.open);
        self.flow.merge_into(&mut s.flow);
        self.weekly.add_to(0, &mut s.weeks);
    }
    const MEASURED: &'static [Measured] = crate::weekly::DEALS_MEASURED;
    fn weekly(&self) -> &Weekly {
        &self.weekly
    }
}

/// How many recent event ids each deal remembers to recognise a repeated record.
pub(crate) const RECENT_IDS: usize = 8;

#[derive(Debug)]
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
    pub category: ForecastCategory,
    /// The steps of its history that the flow facts are derived from.
    pub steps: Vec<Step>,
    /// When it entered its current stage, if open (derived from `steps`).
    pub entered: i64,
    /// When its flow facts may next change windows (see [`FlowClock`]).
    pub due: i64,
    /// What it counts in its cell's open pipeline (derived; none when closed).
    pub open: Option<OpenDeal>,
    /// When its stalled or overdue status may next change.
    pub status_due: i64,
}

/// A deal id, held inline when it is up to 24 bytes long (CRM ids are).
pub(crate) type DealId = compact_str::CompactString;

/// A restored deal made ready for a core by a [`Preparer`]; its facts are kept apart.
pub(crate) struct Prepared {
    pub id: DealId,
    pub st: DealState,
    /// When its facts may next change windows.
    pub next: i64,
}

/// Works out what a restored deal's place in the core depends on besides the core's maps
/// and cells: its ids' shared copies, its facts, when they next change windows, its open
/// pipeline part. A restore does not move the clock, so this is done from copies of the
/// stages and the clock's windows on the thread that decodes, while another inserts
/// ([`DealsCore::insert_prepared`]).
pub(crate) struct Preparer {
    stages: Stages,
    clock: FlowClock,
    now: i64,
    /// The ids the core held when the restore began, and those met since: a deal carries the
    /// core's own copy, which the core then takes as it is.
    names: crate::ledger::Names,
    scratch: Vec<Fact>,
}

impl Preparer {
    pub fn name(&mut self, s: &str) -> Arc<str> {
        self.names.intern(s)
    }

    /// Fills in what `st` derives from its history and appends its facts to `facts`.
    pub fn prepare(&mut self, id: DealId, mut st: DealState, facts: &mut Vec<Fact>) -> Prepared {
        flow::derive_into(
            &st.steps,
            &self.stages.kind,
            self.stages.slots,
            &mut self.scratch,
        );
        let next = self
            .clock
            .next_change(&self.scratch)
            .min(self.stages.next_change(&st, &self.clock));
        st.open = self.stages.open_deal(&st, self.now);
        facts.extend_from_slice(&self.scratch);
        Prepared { id, st, next }
    }
}

fn id_hash(s: &str) -> u64 {
    crate::ids::event_id_hash(s)
}

/// What the configured stages mean, and the current periods (day ranges, start inclusive)
/// of the expected pipeline.
#[derive(Debug, Clone)]
struct Stages {
    kind: Vec<StageKind>,
    periods: [(i32, i32); PERIODS],
    slots: Slots,
    /// Seconds an open deal may stay in each stage before it is stalled.
    stall_secs: Vec<i64>,
    cal: Calendar,
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
    /// The earliest second at which one of a state's windowed facts changes windows.
    fn next_change(&self, st: &DealState, clock: &FlowClock) -> i64 {
        self.facts(st)
            .into_iter()
            .flatten()
            .map(|(ts, _)| clock.next_at(ts))
            .min()
            .unwrap_or(i64::MAX)
    }

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

    /// What an open deal state counts in its cell's open pipeline at `now`.
    fn open_deal(&self, st: &DealState, now: i64) -> Option<OpenDeal> {
        if self.kind[usize::from(st.stage)] != StageKind::Open {
            return None;
        }
        let stall_at = st.entered + self.stall_secs[usize::from(st.stage)] + 1;
        let overdue_at = st
            .expected
            .and_then(|d| NaiveDate::from_num_days_from_ce_opt(d + 1))
            .map(|d| self.cal.local_midnight(d));
        Some(OpenDeal {
            stage: st.stage,
            category: st.category,
            amount: st.amount,
            entered: st.entered,
            expected: st.expected,
            stall_at,
            overdue_at,
            stalled: now >= stall_at,
            overdue: overdue_at.is_some_and(|t| now >= t),
        })
    }

    /// Adds (or retracts) everything one deal state contributes to a cell; `flow` are the
    /// facts of its history.
    #[allow(clippy::too_many_arguments)]
    fn contribute(
        &self,
        cell: &mut DealCell,
        st: &DealState,
        add: bool,
        flow: &[Fact],
        clock: &FlowClock,
        b: &Bounds,
    ) {
        for (ts, f) in self.facts(st).into_iter().flatten() {
            cell.add_fact(&f, if add { 1 } else { -1 }, clock.mask(ts));
            self.add_week(cell, ts, &f, if add { 1 } else { -1 }, b);
        }
        cell.flow
            .apply(flow, if add { 1 } else { -1 }, clock, self.slots);
        if let Some(d) = &st.open {
            cell.open
                .add_open(d, if add { 1 } else { -1 }, &self.periods);
        }
    }

    /// Adds (or retracts) a won fact to the week of its close, for consistency.
    fn add_week(&self, cell: &mut DealCell, ts: i64, f: &DealSums, sign: i128, b: &Bounds) {
        if f.won != 0 {
            let week = self.cal.week_at(ts, b);
            cell.weekly
                .add(week, [f.bookings, i128::from(f.won)], sign, b);
        }
    }

    /// Replaces one state's contribution by another's in the same cell, touching only the
    /// facts that differ: most updates move a deal between open stages and leave its windowed
    /// facts as they were.
    fn replace(
        &self,
        cell: &mut DealCell,
        old: &DealState,
        new: &DealState,
        flow: Option<(&[Fact], &[Fact])>,
        clock: &FlowClock,
        b: &Bounds,
    ) {
        let (before, after) = (self.facts(old), self.facts(new));
        for f in before.iter().flatten() {
            if !after.contains(&Some(*f)) {
                cell.add_fact(&f.1, -1, clock.mask(f.0));
                self.add_week(cell, f.0, &f.1, -1, b);
            }
        }
        for f in after.iter().flatten() {
            if !before.contains(&Some(*f)) {
                cell.add_fact(&f.1, 1, clock.mask(f.0));
                self.add_week(cell, f.0, &f.1, 1, b);
            }
        }
        // A new step mostly ends one visit and starts another: only the few facts that differ
        // between the two histories are retracted and added.
        if let Some((gone, came)) = flow {
            cell.flow.apply(gone, -1, clock, self.slots);
            cell.flow.apply(came, 1, clock, self.slots);
        }
        if let Some(d) = &old.open {
            cell.open.add_open(d, -1, &self.periods);
        }
        if let Some(d) = &new.open {
            cell.open.add_open(d, 1, &self.periods);
        }
    }
}

/// Latest state of every deal and the per rep, team and org numbers derived from it.
#[derive(Debug)]
pub struct DealsCore {
    stages: Stages,
    labels: Labels,
    cal: Calendar,
    bounds: Bounds,
    ledger: Ledger<DealCell>,
    /// Keyed by the id held in the entry itself (up to 24 bytes): a lookup compares it
    /// where it finds the entry, rather than following a pointer to another cache line.
    deals: crate::FastMap<DealId, DealState>,
    /// Deal ids by sequence number, to find the deal whose flow facts change windows.
    ids: crate::FastMap<u64, DealId>,
    clock: FlowClock,
    /// When each open deal's stalled or overdue status may next change.
    status: Schedule,
    scratch: Scratch,
    next_seq: u64,
    /// Smallest won amount (cents) worth a celebration; `None` records none.
    big_win: Option<i128>,
    announcing: bool,
    wins: Vec<Win>,
    saved_size: crate::state::SavedSize,
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
        let bounds = cal.bounds(now_ms.div_euclid(1000));
        let labels = Labels::new(contract, &cal, &bounds);
        DealsCore {
            stages: Stages {
                kind: stages.iter().map(|s| s.kind).collect(),
                periods: current_periods(&cal, &bounds),
                slots: Slots { n: stages.len() },
                stall_secs: stages
                    .iter()
                    .map(|s| i64::from(s.stall_days) * 86_400)
                    .collect(),
                cal,
            },
            labels,
            cal,
            bounds,
            ledger: Ledger::new().with_members(),
            deals: crate::FastMap::default(),
            ids: crate::FastMap::default(),
            clock: FlowClock::new(&bounds),
            status: Schedule::default(),
            scratch: Scratch::default(),
            next_seq: 0,
            big_win: None,
            announcing: true,
            wins: Vec::new(),
            saved_size: Default::default(),
        }
    }

    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    pub fn deals(&self) -> usize {
        self.deals.len()
    }

    /// Before `n` deals are restored: the maps and the schedules get room for them, rather
    /// than moving every deal held each time they grow.
    pub(crate) fn begin_restore(&mut self, n: usize) {
        self.deals.reserve(n);
        self.ids.reserve(n);
        self.clock.reserve(n);
        self.status.reserve(n);
    }

    /// Applies one validated record at the clock of the last [`DealsCore::tick`].
    pub fn apply(&mut self, ev: &DealEvent<'_>) -> Outcome {
        let h = id_hash(&ev.event_id);
        // Most records go to the cell of the rep they name: its lookup starts before the deal
        // map's, so that the two wait for memory together (see `Ledger::warm`).
        self.ledger.warm(&ev.rep_id);
        // One lookup: the previous state is read in place, its history taken out, and replaced
        // through the same reference at the end.
        let mut slot = self.deals.get_mut(ev.deal_id.as_ref());
        let old_steps = match slot.as_deref_mut() {
            Some(st) => {
                if st.recent.contains(&h) {
                    return Outcome::Duplicate;
                }
                st.recent[usize::from(st.recent_next)] = h;
                st.recent_next = (st.recent_next + 1) % RECENT_IDS as u8;
                if ev.occurred_at < st.occurred_at_ms {
                    return Outcome::Stale;
                }
                std::mem::take(&mut st.steps)
            }
            None => Vec::new(),
        };
        let previous = slot.as_deref();
        let kind = self.stages.kind[usize::from(ev.stage)];
        let closed_at = match kind {
            StageKind::Open => None,
            _ => Some(match (ev.closed_at, &previous) {
                (Some(c), _) => c.div_euclid(1000),
                (None, Some(p)) if p.closed_at.is_some() => p.closed_at.unwrap_or_default(),
                (None, _) => ev.occurred_at.div_euclid(1000),
            }),
        };
        // Most records name the deal's owner again: share its ids without interning them.
        let rep = match &previous {
            Some(p) if *p.rep == *ev.rep_id => p.rep.clone(),
            _ => self.ledger.intern(&ev.rep_id),
        };
        let team = match (ev.team_id.as_deref(), &previous) {
            (Some(t), Some(p)) if p.team.as_deref() == Some(t) => p.team.clone(),
            (Some(t), _) => Some(self.ledger.intern(t)),
            (None, _) => None,
        };
        let (seq, recent, recent_next) = match &previous {
            Some(p) => (p.seq, p.recent, p.recent_next),
            None => {
                self.next_seq += 1;
                let mut recent = [0; RECENT_IDS];
                recent[0] = h;
                (self.next_seq, recent, 1)
            }
        };
        let amount = cents(ev.amount);
        let occurred = ev.occurred_at.div_euclid(1000);
        let created_at = ev.created_at.div_euclid(1000);
        let step = Step::new(
            if previous.is_some() {
                occurred
            } else {
                created_at.min(occurred)
            },
            ev.stage,
            closed_at,
            i64::try_from(amount).unwrap_or(i64::MAX),
            ev.expected_close_date
                .map(|d| self.cal.fiscal_quarter_index(d)),
        );
        let (kinds, slots) = (&self.stages.kind, self.stages.slots);
        let moved = previous
            .as_ref()
            .is_some_and(|p| !Arc::ptr_eq(&p.rep, &rep) || p.team != team);
        let mut sc = std::mem::take(&mut self.scratch);
        // The old history's facts in full when the deal changes hands or may forget steps;
        // otherwise only where its fold stands.
        let full = moved || flow::may_forget(&old_steps, self.bounds.horizon);
        sc.old.clear();
        let fold = if full {
            flow::derive_into(&old_steps, kinds, slots, &mut sc.old);
            None
        } else {
            Some(Fold::over(&old_steps, kinds, slots))
        };
        let mut steps = old_steps;
        let change = flow::push_step(&mut steps, step, kinds, self.bounds.horizon);
        // Whether `sc.gone` and `sc.came` hold what the history loses and gains, and the
        // entry of its open visit.
        let (delta, entered) = match (&previous, change, fold) {
            (Some(p), StepChange::Unchanged, _) => {
                if moved {
                    sc.new.clone_from(&sc.old);
                }
                (false, p.entered)
            }
            (Some(_), StepChange::Appended, Some(fold)) => {
                let visit = fold.append(&step, kinds, slots, &mut sc);
                (true, visit.map_or(0, |v| v.1))
            }
            _ => {
                let visit = flow::derive_into(&steps, kinds, slots, &mut sc.new);
                // A new deal or a new owner takes every fact; only a history that forgot steps
                // in the same cell needs what changed.
                let same_cell = previous.is_some() && !moved;
                if same_cell {
                    sc.difference();
                }
                (same_cell, visit.map_or(0, |v| v.1))
            }
        };
        let gained: &[Fact] = if moved || previous.is_none() {
            &sc.new
        } else if delta {
            &sc.came
        } else {
            &[]
        };
        let mut next = DealState {
            seq,
            rep,
            team,
            stage: ev.stage,
            amount,
            created_at,
            occurred_at_ms: ev.occurred_at,
            closed_at,
            expected: ev.expected_close_date.map(|d| d.num_days_from_ce()),
            recent,
            recent_next,
            category: ev.forecast_category,
            steps,
            entered,
            due: previous.as_ref().map_or(i64::MAX, |p| p.due),
            open: None,
            status_due: i64::MAX,
        };
        let b = self.bounds;
        let first = self.stages.next_change(&next, &self.clock);
        next.due = self
            .clock
            .schedule(seq, next.due, first.min(self.clock.next_change(gained)));
        next.open = self.stages.open_deal(&next, b.now);
        let status_due = previous.as_ref().map_or(i64::MAX, |p| p.status_due);
        next.status_due = self.status.schedule(
            seq,
            status_due,
            next.open.map_or(i64::MAX, |d| d.next_change()),
        );
        match &previous {
            // The common case: the same owner, so one cell takes both the retraction and the
            // new contribution.
            Some(p) if !moved => {
                let cell = self.ledger.cell(&next.rep, next.team.as_ref(), &b);
                let flow = delta.then_some((&sc.gone[..], &sc.came[..]));
                self.stages.replace(cell, p, &next, flow, &self.clock, &b);
            }
            // A new owner: the old cell loses every fact of the old history, the new one gains
            // every fact of the new.
            Some(p) => {
                let cell = self.ledger.cell(&p.rep, p.team.as_ref(), &b);
                self.stages
                    .contribute(cell, p, false, &sc.old, &self.clock, &b);
                let cell = self.ledger.cell(&next.rep, next.team.as_ref(), &b);
                self.stages
                    .contribute(cell, &next, true, &sc.new, &self.clock, &b);
                self.ledger.release(&p.rep, p.team.as_ref());
            }
            None => {
                let cell = self.ledger.cell(&next.rep, next.team.as_ref(), &b);
                self.stages
                    .contribute(cell, &next, true, &sc.new, &self.clock, &b);
                self.ids.insert(seq, DealId::from(ev.deal_id.as_ref()));
            }
        }
        self.scratch = sc;
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
        match slot {
            Some(st) => *st = next,
            None => {
                self.deals.insert(DealId::from(ev.deal_id.as_ref()), next);
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
        // Flow facts change windows first, while the cells that count them still exist.
        let moved = self.clock.advance(&self.bounds);
        self.cross(&moved);
        self.restatus();
        self.ledger.advance(&self.bounds);
        let periods = current_periods(&self.cal, &self.bounds);
        if periods != self.stages.periods {
            self.stages.periods = periods;
            self.labels.set_current(&self.cal, &self.bounds);
            self.reperiod();
        }
        if now.div_euclid(3_600) != hour {
            self.ledger.gc_names();
        }
        self.drop_stale_dues();
    }

    /// Drops the schedules' stale entries once they outnumber the deals: a deal made due
    /// earlier leaves its later entry behind, and a busy deal may do so at every record.
    fn drop_stale_dues(&mut self) {
        let (ids, deals) = (&self.ids, &self.deals);
        let due_of = |seq: u64| ids.get(&seq).and_then(|id| deals.get(id));
        let limit = 2 * deals.len() + 4_096;
        if self.clock.scheduled() > limit {
            self.clock
                .retain(|(at, seq)| due_of(seq).is_some_and(|st| st.due == at));
        }
        if self.status.len() > limit {
            self.status
                .retain(|(at, seq)| due_of(seq).is_some_and(|st| st.status_due == at));
        }
    }

    /// Moves the facts that entered or left windows in their owner's cell, and schedules each
    /// deal looked at for the next change of its facts.
    fn cross(&mut self, moved: &flow::Moved) {
        let (kinds, slots) = (&self.stages.kind, self.stages.slots);
        let b = self.bounds;
        if moved.deals.is_none() {
            self.clock.clear();
        }
        let (clock, ledger, stages) = (&mut self.clock, &mut self.ledger, &self.stages);
        let mut facts = Vec::new();
        let mut visit = |st: &mut DealState| {
            for (ts, f) in stages.facts(st).into_iter().flatten() {
                let (before, after) = (moved.mask(ts), clock.mask(ts));
                if before != after {
                    let cell = ledger.cell(&st.rep, st.team.as_ref(), &b);
                    cell.add_fact(&f, 1, after & !before);
                    cell.add_fact(&f, -1, before & !after);
                }
            }
            flow::derive_into(&st.steps, kinds, slots, &mut facts);
            for &(ts, slot, v) in &facts {
                let (before, after) = (moved.mask(ts), clock.mask(ts));
                if before != after {
                    let cell = ledger.cell(&st.rep, st.team.as_ref(), &b);
                    cell.flow.apply_masked(slot, v, after & !before, slots);
                    cell.flow.apply_masked(slot, -v, before & !after, slots);
                }
            }
            let next = clock.next_change(&facts).min(stages.next_change(st, clock));
            st.due = clock.schedule(st.seq, i64::MAX, next);
        };
        match &moved.deals {
            Some(due) => {
                for &(at, seq) in due {
                    let Some(st) = self.ids.get(&seq).and_then(|id| self.deals.get_mut(id)) else {
                        continue;
                    };
                    // A stale entry: the deal was made due earlier since.
                    if st.due == at {
                        visit(st);
                    }
                }
            }
            None => self.deals.values_mut().for_each(visit),
        }
    }

    /// Sets the stalled and overdue status of the open deals due for it.
    fn restatus(&mut self) {
        let b = self.bounds;
        for (at, seq) in self.status.take_until(b.now) {
            let Some(st) = self.ids.get(&seq).and_then(|id| self.deals.get_mut(id)) else {
                continue;
            };
            if st.status_due != at {
                continue;
            }
            st.status_due = i64::MAX;
            let Some(old) = st.open else { continue };
            let new = old.at(b.now);
            if (new.stalled, new.overdue) != (old.stalled, old.overdue) {
                let cell = self.ledger.cell(&st.rep, st.team.as_ref(), &b);
                cell.open.add_status(&old, -1);
                cell.open.add_status(&new, 1);
                st.open = Some(new);
            }
            st.status_due = self.status.schedule(seq, i64::MAX, new.next_change());
        }
    }

    /// Recomputes every open deal's amounts expected in the current periods, which rolled
    /// over (about once a day).
    fn reperiod(&mut self) {
        self.ledger.touch_all(|cell| cell.open.clear_expected());
        let b = self.bounds;
        for st in self.deals.values() {
            if let Some(d) = &st.open {
                let cell = self.ledger.cell(&st.rep, st.team.as_ref(), &b);
                cell.open.add_expected(d, 1, &self.stages.periods);
            }
        }
    }

    /// Number of (rep, team) cells held.
    pub fn cells(&self) -> usize {
        self.ledger.cells()
    }

    pub(crate) fn stage_names(&self) -> &[Arc<str>] {
        &self.labels.stage_names
    }

    pub(crate) fn saved_size(&self) -> &crate::state::SavedSize {
        &self.saved_size
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub(crate) fn saved_deals(&self) -> impl ExactSizeIterator<Item = (&str, &DealState)> {
        self.deals.iter().map(|(k, v)| (&**k, v))
    }

    /// What a restore prepares its deals with, beside the core (see [`Preparer`]).
    pub(crate) fn preparer(&self) -> Preparer {
        Preparer {
            stages: self.stages.clone(),
            clock: self.clock.windows_only(),
            now: self.bounds.now,
            names: self.ledger.names(),
            scratch: Vec::new(),
        }
    }

    /// Adds a restored deal state made ready by a [`Preparer`] and its contribution, as if its
    /// record had just been applied to a core that had never seen the deal.
    pub(crate) fn insert_prepared(&mut self, p: Prepared, facts: &[Fact]) {
        let b = self.bounds;
        let Prepared { id, mut st, next } = p;
        st.rep = self.ledger.adopt(st.rep);
        st.team = st.team.map(|t| self.ledger.adopt(t));
        st.due = self.clock.schedule(st.seq, i64::MAX, next);
        st.status_due = self.status.schedule(
            st.seq,
            i64::MAX,
            st.open.map_or(i64::MAX, |d| d.next_change()),
        );
        let cell = self.ledger.cell(&st.rep, st.team.as_ref(), &b);
        self.stages
            .contribute(cell, &st, true, facts, &self.clock, &b);
        self.ids.insert(st.seq, id.clone());
        self.deals.insert(id, st);
    }

    pub(crate) fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    /// Sets the configured region of teams (team → region); other teams take the region
    /// most of their reps have on the roster.
    pub fn configure_regions(&mut self, teams: &[(String, String)]) {
        self.ledger.configure_regions(teams);
    }

    /// Applies one roster record.
    pub fn roster(&mut self, ev: &salespulse_decode::RosterEvent) {
        self.ledger.roster(ev);
    }

    pub fn roster_upsert(&mut self, rep: &str, team: &str) {
        self.ledger.roster_upsert(rep, team);
    }

    /// Sets a rep's name, region and hiring date as the roster gives them.
    pub fn roster_info(
        &mut self,
        rep: &str,
        name: Option<&str>,
        region: Option<&str>,
        hired_at: Option<chrono::NaiveDate>,
    ) {
        self.ledger.roster_info(rep, name, region, hired_at);
    }

    pub fn roster_remove(&mut self, rep: &str) {
        self.ledger.roster_remove(rep);
    }

    /// The series of every subject changed since the last call.
    pub fn drain_changes(&mut self) -> Vec<SubjectSeries> {
        self.labels.now = self.bounds.now;
        let labels = &self.labels;
        self.ledger
            .drain(&|s: &DealSummary, b: &mut SeriesBuilder<'_>| build(labels, s, b))
    }

    /// Every current series.
    pub fn snapshot(&mut self) -> Vec<SubjectSeries> {
        let labels = Labels {
            now: self.bounds.now,
            ..self.labels.clone()
        };
        self.ledger
            .snapshot(&|s: &DealSummary, b: &mut SeriesBuilder<'_>| build(&labels, s, b))
    }
}

impl Exchange for DealCell {
    type Labels = Labels;
    const MEMBERS: bool = true;
    fn moves_each_minute(s: &DealSummary) -> bool {
        s.open.any_open()
    }
    fn relabel(l: &mut Labels, cal: &Calendar, b: &Bounds) -> bool {
        let minute = l.now.div_euclid(60);
        l.now = b.now;
        if minute == b.now.div_euclid(60) {
            return false;
        }
        let before = (std::mem::take(&mut l.current), l.weeks.0);
        l.set_current(cal, b);
        before != (l.current.clone(), l.weeks.0)
    }
    fn build(l: &Labels, s: &DealSummary, out: &mut SeriesBuilder<'_>) {
        build(l, s, out);
    }
}

impl DealsCore {
    /// Makes this core one of several that divide the deals: it sends its cells to `slots`
    /// slots ([`DealsCore::drain_contributions`]) instead of building series.
    pub fn exchange(&mut self, slots: u32) {
        self.ledger.exchange(slots);
    }

    /// What the cells changed since the last call add up to, for the slots that merge them.
    pub fn drain_contributions(&mut self) -> Vec<Contribution> {
        self.ledger.drain_contributions(self.bounds.now)
    }

    /// What every cell (and team) adds up to now, for a merger filled from its sources
    /// rather than from the topic; the next drain sends what it would have sent.
    pub fn all_contributions(&mut self) -> Vec<Contribution> {
        self.ledger.all_contributions(self.bounds.now)
    }

    /// From now until [`DealsCore::end_recovery`], the cells touched (by a restored state and
    /// the input replayed after it) are noted: what the run before sent for them is unknown.
    pub fn begin_recovery(&mut self) {
        self.ledger.begin_recovery();
    }

    /// The next [`DealsCore::drain_contributions`] sends every cell noted since
    /// [`DealsCore::begin_recovery`] and withdraws it from every other slot.
    pub fn end_recovery(&mut self) {
        self.ledger.end_recovery();
    }
}

/// The merger of deal cells (see `exchange.rs`).
pub(crate) fn merger(
    contract: &Contract,
    cal: Calendar,
    now_ms: i64,
    slots: u32,
) -> MergerOf<DealCell> {
    let bounds = cal.bounds(now_ms.div_euclid(1000));
    let labels = Labels::new(contract, &cal, &bounds);
    MergerOf::new(cal, bounds, labels, slots)
}

/// Label values and settings the series of a subject are built with.
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    stage_names: Vec<Arc<str>>,
    stage_prob: Vec<Decimal>,
    /// Indexes of the open stages.
    open_stages: Vec<usize>,
    period_names: Vec<Arc<str>>,
    exits: Vec<Arc<str>>,
    categories: Vec<Arc<str>>,
    rollups: Vec<Arc<str>>,
    forecast_periods: Vec<Arc<str>>,
    /// Names of the current periods of [`FORECAST_PERIODS`] (`2026-11`, `2026-Q4`).
    current: Vec<Arc<str>>,
    /// The first kept week and the names (their Mondays, `2026-11-23`) of the kept weeks up
    /// to the current one.
    weeks: (i64, Vec<Arc<str>>),
    /// The clock (Unix seconds) the series are built at.
    now: i64,
}

impl Labels {
    fn new(contract: &Contract, cal: &Calendar, bounds: &Bounds) -> Labels {
        let stages = contract.stages();
        let arcs = |v: &[&str]| v.iter().map(|p| Arc::from(*p)).collect::<Vec<Arc<str>>>();
        let mut labels = Labels {
            stage_names: stages.iter().map(|s| Arc::from(s.name.as_str())).collect(),
            stage_prob: stages.iter().map(|s| s.probability).collect(),
            open_stages: stages
                .iter()
                .enumerate()
                .filter(|(_, s)| s.kind == StageKind::Open)
                .map(|(i, _)| i)
                .collect(),
            period_names: arcs(&PERIOD_NAMES),
            exits: arcs(&EXIT_LABELS),
            categories: ForecastCategory::ALL
                .iter()
                .map(|c| Arc::from(c.label()))
                .collect(),
            rollups: arcs(&ROLLUPS.map(|r| r.0)),
            forecast_periods: arcs(&FORECAST_PERIODS.map(|p| p.1)),
            current: Vec::new(),
            weeks: (0, Vec::new()),
            now: bounds.now,
        };
        labels.set_current(cal, bounds);
        labels
    }

    fn set_current(&mut self, cal: &Calendar, b: &Bounds) {
        let (quarter, month) = cal.period_names(cal.local_date(b.now));
        self.current = vec![Arc::from(month), Arc::from(quarter)];
        let first = b.week - b.kept as i64;
        self.weeks = (first, (first..=b.week).map(|w| week_name(cal, w)).collect());
    }

    /// The name of week `w`, one of the kept weeks.
    fn week(&self, w: i64) -> Option<&Arc<str>> {
        let (first, names) = &self.weeks;
        usize::try_from(w - first).ok().and_then(|i| names.get(i))
    }
}

/// A week's name: the local date of its Monday.
fn week_name(cal: &Calendar, w: i64) -> Arc<str> {
    Arc::from(cal.local_date(cal.week_start(w)).to_string())
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

fn build(l: &Labels, s: &DealSummary, b: &mut SeriesBuilder<'_>) {
    if b.scope != Scope::Rep {
        for (week, cents) in s.weeks.nonzero() {
            if let Some(name) = l.week(week) {
                b.push(Metric::WeeklyBookings, None, Some(name), money(cents));
            }
        }
    }
    let any_window = s.sums.iter().any(|x| !x.is_zero());
    let any_open = s.open.any_open();
    let any_flow = s.flow.iter().any(|w| w.iter().any(|v| *v != 0));
    if !any_window && !any_open && !any_flow {
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
            if w.is_same_point() {
                continue;
            }
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
            if let Some(v) = velocity(s.open.deals(), x) {
                b.push(Metric::PipelineVelocity, Some(w), None, v);
            }
        }
    }
    if any_flow {
        build_flow(l, &s.flow, b);
    }
    if any_open {
        build_open(l, &s.open, b);
    }
    if any_open || any_window {
        build_forecast(l, s, b);
    }
}

/// Open deals × win rate × average deal size ÷ mean sales cycle in days, from the exact sums:
/// open × bookings × won × 86,400 ÷ ((won + lost) × cycle seconds).
fn velocity(open: i64, x: &DealSums) -> Option<Decimal> {
    if x.won == 0 || x.cycle_seconds <= 0 {
        return None;
    }
    let num = Decimal::from(open)
        .checked_mul(money(x.bookings))?
        .checked_mul(Decimal::from(x.won))?
        .checked_mul(Decimal::from(86_400))?;
    let den = Decimal::from(x.won + x.lost).checked_mul(Decimal::from(x.cycle_seconds))?;
    ratio(num, den)
}

fn build_flow(l: &Labels, flow: &[[i128; WINDOWS]], b: &mut SeriesBuilder<'_>) {
    let slots = Slots {
        n: l.stage_names.len(),
    };
    let sum = |slot: usize, w: Window| flow.get(slot).map_or(0, |x| x[w.index()]);
    let any = |slot: usize| flow.get(slot).is_some_and(|x| x.iter().any(|v| *v != 0));
    let exits = [Exit::Advanced, Exit::Won, Exit::Lost, Exit::Regressed];
    for &i in &l.open_stages {
        let stage = Some(&l.stage_names[i]);
        let used: Vec<Exit> = exits
            .into_iter()
            .filter(|to| any(slots.exited(i, *to)))
            .collect();
        if !any(slots.entered(i)) && used.is_empty() {
            continue;
        }
        for w in Window::periods() {
            let entered = Decimal::from(sum(slots.entered(i), w) as i64);
            b.push(Metric::StageEntered, Some(w), stage, entered);
            let mut left = 0i128;
            let mut converted = 0i128;
            for to in exits {
                let n = sum(slots.exited(i, to), w);
                left += n;
                if matches!(to, Exit::Advanced | Exit::Won) {
                    converted += n;
                }
                if used.contains(&to) {
                    b.push_labels(
                        Metric::StageExited,
                        Some(w),
                        [stage, Some(&l.exits[to as usize]), None],
                        Decimal::from(n as i64),
                    );
                }
            }
            let (left, converted) = (Decimal::from(left as i64), Decimal::from(converted as i64));
            if let Some(r) = ratio(converted, left) {
                b.push(Metric::StageConversionRatio, Some(w), stage, r);
            }
            let seconds = Decimal::from_i128_with_scale(sum(slots.seconds(i), w), 0);
            if let Some(r) = ratio(seconds, left) {
                b.push(Metric::StageSeconds, Some(w), stage, r);
            }
        }
    }
    let moves = [
        slots.pushed(),
        slots.pushed_amount(),
        slots.pulled(),
        slots.pulled_amount(),
    ];
    if moves.iter().any(|m| any(*m)) {
        for w in Window::periods() {
            let count = |slot| Decimal::from(sum(slot, w) as i64);
            b.push(
                Metric::CloseDatePushed,
                Some(w),
                None,
                count(slots.pushed()),
            );
            b.push(
                Metric::CloseDatePulledIn,
                Some(w),
                None,
                count(slots.pulled()),
            );
            let amount = |slot| money(sum(slot, w));
            b.push(
                Metric::PipelinePushed,
                Some(w),
                None,
                amount(slots.pushed_amount()),
            );
            b.push(
                Metric::PipelinePulledIn,
                Some(w),
                None,
                amount(slots.pulled_amount()),
            );
        }
    }
}

fn build_open(l: &Labels, open: &OpenTotals, b: &mut SeriesBuilder<'_>) {
    let mut weighted = Decimal::ZERO;
    // Stage ages are measured at the start of the current minute, so that they change once a
    // minute rather than at every tick.
    let now = l.now - l.now.rem_euclid(60);
    for (i, o) in open.stages.iter().enumerate() {
        if o.deals == 0 {
            continue;
        }
        let stage = l.stage_names.get(i);
        let amount = money(o.amount);
        b.push(Metric::OpenPipeline, None, stage, amount);
        weighted += amount * l.stage_prob.get(i).copied().unwrap_or_default();
        let deals = Decimal::from(o.deals);
        b.push(Metric::OpenDeals, None, stage, deals);
        let age = i128::from(now) * i128::from(o.deals) - o.entered_sum;
        if let Some(r) = ratio(Decimal::from_i128_with_scale(age, 0), deals) {
            b.push(Metric::StageAgeSeconds, None, stage, r);
        }
        b.push(
            Metric::StalledDeals,
            None,
            stage,
            Decimal::from(o.stalled_deals),
        );
        b.push(
            Metric::StalledPipeline,
            None,
            stage,
            money(o.stalled_amount),
        );
    }
    b.push(Metric::WeightedPipeline, None, None, weighted);
    b.push(
        Metric::OverdueDeals,
        None,
        None,
        Decimal::from(open.overdue_deals),
    );
    b.push(
        Metric::OverduePipeline,
        None,
        None,
        money(open.overdue_amount),
    );
    for (k, name) in l.period_names.iter().enumerate() {
        let mut amount = Decimal::ZERO;
        let mut weighted = Decimal::ZERO;
        for (i, o) in open.stages.iter().enumerate() {
            let a = money(o.expected[k]);
            amount += a;
            weighted += a * l.stage_prob.get(i).copied().unwrap_or_default();
        }
        b.push(Metric::PipelineExpected, None, Some(name), amount);
        b.push(Metric::WeightedPipelineExpected, None, Some(name), weighted);
    }
    for c in ForecastCategory::ALL {
        if c != ForecastCategory::Closed {
            b.push(
                Metric::ForecastUndated,
                None,
                Some(&l.categories[c.index()]),
                money(open.undated[c.index()]),
            );
        }
    }
}

/// Labels of a forecast series: its category or roll-up, the period type and the period.
fn forecast_labels<'a>(l: &'a Labels, j: usize, first: &'a Arc<str>) -> [Option<&'a Arc<str>>; 3] {
    [Some(first), Some(&l.forecast_periods[j]), l.current.get(j)]
}

fn build_forecast(l: &Labels, s: &DealSummary, b: &mut SeriesBuilder<'_>) {
    for (j, (k, _)) in FORECAST_PERIODS.iter().enumerate() {
        let window = if *k == 1 { Window::Mtd } else { Window::Qtd };
        let labels = |first| forecast_labels(l, j, first);
        let mut amounts = [Decimal::ZERO; CATEGORIES];
        for c in ForecastCategory::ALL {
            amounts[c.index()] = if c == ForecastCategory::Closed {
                money(s.sums[window.index()].bookings)
            } else {
                money(s.open.forecast[c.index()][*k])
            };
            b.push_labels(
                Metric::Forecast,
                None,
                labels(&l.categories[c.index()]),
                amounts[c.index()],
            );
        }
        let mut rollup = amounts[ForecastCategory::Closed.index()];
        for (r, (_, c)) in ROLLUPS.iter().enumerate() {
            rollup += amounts[c.index()];
            b.push_labels(Metric::ForecastRollup, None, labels(&l.rollups[r]), rollup);
        }
    }
}
