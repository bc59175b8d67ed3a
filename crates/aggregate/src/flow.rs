//! How deals move: the history of a deal as the steps of its applied states, and the windowed
//! facts derived from it (stages entered and left, time in stage, close dates pushed out of or
//! pulled into a fiscal quarter).
//!
//! The facts are a pure function of the steps, so applying a record retracts the facts of the
//! old history and adds those of the new one: an owner change moves a deal's whole history,
//! and a reopened deal loses its win everywhere.

use salespulse_decode::StageKind;

use crate::calendar::{Bounds, SamePoint, Window, CURRENT, SAME_POINT, WINDOWS};

/// A set of windows: bit `w` for window `w`.
pub(crate) type Mask = u32;
use crate::schedule::Schedule;

/// Most steps a deal remembers; older ones are forgotten (see docs/metrics.md).
pub(crate) const MAX_STEPS: usize = 64;

/// An applied state that changed the deal's stage, close time or expected close quarter.
///
/// A deal keeps up to [`MAX_STEPS`] of these, so their size is most of a busy deal's memory:
/// the optional fields hold a value no real time or quarter takes instead of an `Option`'s
/// tag, which makes a step 32 bytes rather than 48. Saved state holds steps as tuples of the
/// [`SavedStep`] fields in their order (`crate::state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "SavedStep", into = "SavedStep")]
pub(crate) struct Step {
    /// When the state took effect (Unix seconds): its `occurred_at`, or for the first step
    /// the deal's creation if earlier.
    pub at: i64,
    /// Cents of the reporting currency.
    pub amount: i64,
    /// Close time of a closed state (Unix seconds), or [`NO_TIME`].
    closed_at: i64,
    /// Fiscal quarter of the expected close date, or [`NO_QUARTER`].
    quarter: i32,
    pub stage: u8,
}

/// No close time: far outside the times a timestamp can be parsed into.
const NO_TIME: i64 = i64::MIN;
/// No expected close quarter: a quarter index of a year no date reaches.
const NO_QUARTER: i32 = i32::MIN;

impl Step {
    pub fn new(
        at: i64,
        stage: u8,
        closed_at: Option<i64>,
        amount: i64,
        quarter: Option<i32>,
    ) -> Step {
        Step {
            at,
            amount,
            closed_at: closed_at.unwrap_or(NO_TIME),
            quarter: quarter.unwrap_or(NO_QUARTER),
            stage,
        }
    }

    /// Close time of a closed state (Unix seconds).
    pub fn closed_at(&self) -> Option<i64> {
        (self.closed_at != NO_TIME).then_some(self.closed_at)
    }

    /// Fiscal quarter (see [`crate::Calendar::fiscal_quarter_index`]) of the expected close
    /// date.
    pub fn quarter(&self) -> Option<i32> {
        (self.quarter != NO_QUARTER).then_some(self.quarter)
    }
}

// The size that the history cap's memory figures in docs/benchmarks.md rest on.
const _: () = assert!(std::mem::size_of::<Step>() == 32);

/// A step as saved state holds it.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedStep {
    at: i64,
    stage: u8,
    closed_at: Option<i64>,
    amount: i64,
    quarter: Option<i32>,
}

impl From<SavedStep> for Step {
    fn from(s: SavedStep) -> Step {
        Step::new(s.at, s.stage, s.closed_at, s.amount, s.quarter)
    }
}

impl From<Step> for SavedStep {
    fn from(s: Step) -> SavedStep {
        SavedStep {
            at: s.at,
            stage: s.stage,
            closed_at: s.closed_at(),
            amount: s.amount,
            quarter: s.quarter(),
        }
    }
}

/// Where a deal that left a stage went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Advanced = 0,
    Won = 1,
    Lost = 2,
    Regressed = 3,
}

pub(crate) const EXITS: usize = 4;
pub(crate) const EXIT_LABELS: [&str; EXITS] = ["advanced", "won", "lost", "regressed"];

/// Slot layout of the flow facts for `n` stages. Counts first — per stage, entered and exits
/// by destination side by side (a step touches the slots of the stage it leaves together),
/// then pushed and pulled-in — then the sums that need 128 bits: seconds per stage, pushed and
/// pulled-in amounts. A cell keeps the counts in 64 bits, half the memory a moved history
/// touches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slots {
    pub n: usize,
}

/// Count slots per stage.
const PER_STAGE: usize = 1 + EXITS;

impl Slots {
    pub fn entered(self, stage: usize) -> usize {
        stage * PER_STAGE
    }
    pub fn exited(self, stage: usize, to: Exit) -> usize {
        stage * PER_STAGE + 1 + to as usize
    }
    pub fn pushed(self) -> usize {
        self.n * PER_STAGE
    }
    pub fn pulled(self) -> usize {
        self.pushed() + 1
    }
    /// The first slot of the 128-bit sums.
    pub fn first_wide(self) -> usize {
        self.pushed() + 2
    }
    pub fn seconds(self, stage: usize) -> usize {
        self.first_wide() + stage
    }
    pub fn pushed_amount(self) -> usize {
        self.first_wide() + self.n
    }
    pub fn pulled_amount(self) -> usize {
        self.pushed_amount() + 1
    }
}

/// One derived fact: at second `ts`, add `value` to `slot`.
pub(crate) type Fact = (i64, usize, i128);

/// What a history says: its facts, and the open stage the deal is in now with the second it
/// entered it (`None` when closed).
#[cfg(test)]
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Derived {
    pub facts: Vec<Fact>,
    pub visit: Option<(u8, i64)>,
}

/// What [`push_step`] did to a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepChange {
    /// The state changed nothing the facts depend on.
    Unchanged,
    /// The step was appended.
    Appended,
    /// The step was appended and old steps forgotten.
    Rewritten,
}

/// Appends the step of a new applied state, if it changes anything the facts depend on.
pub(crate) fn push_step(
    steps: &mut Vec<Step>,
    step: Step,
    kinds: &[StageKind],
    horizon: i64,
) -> StepChange {
    if let Some(last) = steps.last() {
        if last.stage == step.stage
            && last.closed_at == step.closed_at
            && last.quarter == step.quarter
        {
            return StepChange::Unchanged;
        }
    }
    if steps.len() >= MAX_STEPS && steps.len() == steps.capacity() {
        // At the cap the push is followed by forgetting the oldest step: room for one more
        // step, not twice as many (which a deal would then hold for good).
        steps.reserve_exact(1);
    }
    steps.push(step);
    let len = steps.len();
    // A first visit that ended before every window changes no number once forgotten: its
    // facts all lie before the horizon, and the next step starts its own visit.
    let open = |s: &Step| kinds.get(usize::from(s.stage)) == Some(&StageKind::Open);
    while steps.len() > 2
        && steps[1].at < horizon
        && open(&steps[0])
        && open(&steps[1])
        && steps[0].stage != steps[1].stage
    {
        steps.remove(0);
    }
    if steps.len() > MAX_STEPS {
        steps.remove(0);
    }
    if steps.len() == len {
        StepChange::Appended
    } else {
        StepChange::Rewritten
    }
}

/// Whether appending a step to `steps` may forget old ones (see [`push_step`]): the facts of
/// the history before must then be derived in full, before it changes.
pub(crate) fn may_forget(steps: &[Step], horizon: i64) -> bool {
    steps.len() >= MAX_STEPS || steps.get(1).is_some_and(|s| s.at < horizon)
}

/// Where derived facts go: a list, or nowhere when only the state of the fold matters.
pub(crate) trait FactSink {
    fn push(&mut self, fact: Fact);
}

impl FactSink for Vec<Fact> {
    fn push(&mut self, fact: Fact) {
        Vec::push(self, fact);
    }
}

/// Drops every fact.
struct Discard;

impl FactSink for Discard {
    fn push(&mut self, _: Fact) {}
}

/// Reusable lists for the facts of one record, so that applying it allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Facts of the history before the record.
    pub old: Vec<Fact>,
    /// Facts of the history after it.
    pub new: Vec<Fact>,
    /// Facts of `old` not in `new`.
    pub gone: Vec<Fact>,
    /// Facts of `new` not in `old`.
    pub came: Vec<Fact>,
}

/// Where a history stands after some of its steps: the open visit (stage, entered), the last
/// step of the closed run the deal is in, and the step before.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fold {
    visit: Option<(u8, i64)>,
    closed: Option<Step>,
    prev: Option<Step>,
}

impl Fold {
    /// Takes one more step, pushing the facts it settles.
    fn step(&mut self, st: &Step, kinds: &[StageKind], slots: Slots, out: &mut impl FactSink) {
        let is_open = |s: u8| kinds.get(usize::from(s)) == Some(&StageKind::Open);
        if !is_open(st.stage) {
            self.closed = Some(*st);
            self.prev = Some(*st);
            return;
        }
        let reopened = self.closed.take().is_some();
        match self.visit {
            None => {
                out.push((st.at, slots.entered(usize::from(st.stage)), 1));
                self.visit = Some((st.stage, st.at));
            }
            Some((v, e)) if v != st.stage => {
                let to = if st.stage > v {
                    Exit::Advanced
                } else {
                    Exit::Regressed
                };
                leave(out, slots, v, e, st.at, to);
                out.push((st.at, slots.entered(usize::from(st.stage)), 1));
                self.visit = Some((st.stage, st.at));
            }
            Some(_) => {}
        }
        if !reopened {
            if let (Some(a), Some(b)) = (self.prev.and_then(|p| p.quarter()), st.quarter()) {
                let amount = i128::from(st.amount);
                if b > a {
                    out.push((st.at, slots.pushed(), 1));
                    out.push((st.at, slots.pushed_amount(), amount));
                } else if b < a {
                    out.push((st.at, slots.pulled(), 1));
                    out.push((st.at, slots.pulled_amount(), amount));
                }
            }
        }
        self.prev = Some(*st);
    }

    /// Pushes the facts of the closed run the history ends in, if any; returns the open visit
    /// the deal is in (none when closed).
    fn finish(
        &self,
        kinds: &[StageKind],
        slots: Slots,
        out: &mut impl FactSink,
    ) -> Option<(u8, i64)> {
        let Some(c) = self.closed else {
            return self.visit;
        };
        if let Some((v, e)) = self.visit {
            let t = c.closed_at().unwrap_or(c.at);
            let to = if kinds.get(usize::from(c.stage)) == Some(&StageKind::Won) {
                Exit::Won
            } else {
                Exit::Lost
            };
            leave(out, slots, v, e, t, to);
        }
        None
    }

    pub(crate) fn over(steps: &[Step], kinds: &[StageKind], slots: Slots) -> Fold {
        let mut f = Fold::default();
        for st in steps {
            f.step(st, kinds, slots, &mut Discard);
        }
        f
    }
}

/// The facts of a history, by the rules of docs/metrics.md ("How deals move").
#[cfg(test)]
pub(crate) fn derive(steps: &[Step], kinds: &[StageKind], slots: Slots) -> Derived {
    let mut facts = Vec::new();
    let visit = derive_into(steps, kinds, slots, &mut facts);
    Derived { facts, visit }
}

/// The facts of a history, by the rules of docs/metrics.md ("How deals move"), into a reused
/// list (the deals core keeps one); returns the open visit.
pub(crate) fn derive_into(
    steps: &[Step],
    kinds: &[StageKind],
    slots: Slots,
    out: &mut Vec<Fact>,
) -> Option<(u8, i64)> {
    out.clear();
    let mut f = Fold::default();
    for st in steps {
        f.step(st, kinds, slots, out);
    }
    f.finish(kinds, slots, out)
}

/// What appending `step` to the history `before` changes: the facts it loses and those it
/// gains, and the open visit after. The facts of the common prefix are never built.
#[cfg(test)]
pub(crate) fn append(
    before: &[Step],
    step: &Step,
    kinds: &[StageKind],
    slots: Slots,
) -> (Vec<Fact>, Vec<Fact>, Option<(u8, i64)>) {
    let mut s = Scratch::default();
    let visit = Fold::over(before, kinds, slots).append(step, kinds, slots, &mut s);
    (s.gone, s.came, visit)
}

impl Fold {
    /// What taking `step` after this point changes: `gone` and `came` of `s` (its `old` and
    /// `new` hold only the facts the step settles); returns the open visit after.
    pub(crate) fn append(
        self,
        step: &Step,
        kinds: &[StageKind],
        slots: Slots,
        s: &mut Scratch,
    ) -> Option<(u8, i64)> {
        s.old.clear();
        s.new.clear();
        self.finish(kinds, slots, &mut s.old);
        let mut g = self;
        g.step(step, kinds, slots, &mut s.new);
        let visit = g.finish(kinds, slots, &mut s.new);
        s.difference();
        visit
    }
}

impl Scratch {
    /// Sets `gone` and `came` to the multiset differences of `old` and `new` (sorting both).
    pub(crate) fn difference(&mut self) {
        self.old.sort_unstable();
        self.new.sort_unstable();
        self.gone.clear();
        self.came.clear();
        let (old, new) = (&self.old, &self.new);
        let (mut i, mut j) = (0, 0);
        while i < old.len() && j < new.len() {
            match old[i].cmp(&new[j]) {
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    self.gone.push(old[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.came.push(new[j]);
                    j += 1;
                }
            }
        }
        self.gone.extend_from_slice(&old[i..]);
        self.came.extend_from_slice(&new[j..]);
    }
}

/// The facts of `old` not in `new` and those of `new` not in `old`, each counted as often as
/// it occurs (a multiset difference).
#[cfg(test)]
pub(crate) fn difference(old: Vec<Fact>, new: Vec<Fact>) -> (Vec<Fact>, Vec<Fact>) {
    let mut s = Scratch {
        old,
        new,
        ..Scratch::default()
    };
    s.difference();
    (s.gone, s.came)
}

fn leave(facts: &mut impl FactSink, slots: Slots, stage: u8, entered: i64, at: i64, to: Exit) {
    let s = usize::from(stage);
    facts.push((at, slots.exited(s, to), 1));
    facts.push((at, slots.seconds(s), i128::from((at - entered).max(0))));
}

/// Window sums of flow facts per slot. The facts themselves stay with their deals (they are a
/// function of the steps), and [`FlowClock`] says when they change windows: so moving a deal
/// to another owner is arithmetic on two cells' sums, not a search per fact.
#[derive(Debug, Default)]
pub(crate) struct FlowCell {
    /// Slots below this are counts (see [`Slots`]).
    first_wide: usize,
    counts: Vec<[i64; WINDOWS]>,
    wide: Vec<[i128; WINDOWS]>,
}

impl FlowCell {
    /// Adds (`sign` 1) or retracts (-1) facts in the windows that count them now.
    pub fn apply(&mut self, facts: &[Fact], sign: i128, clock: &FlowClock, slots: Slots) {
        for &(ts, slot, v) in facts {
            self.apply_masked(slot, sign * v, clock.mask(ts), slots);
        }
    }

    /// Adds `v` to `slot` in the windows of `mask` (bit `w` for window `w`).
    pub fn apply_masked(&mut self, slot: usize, v: i128, mask: Mask, slots: Slots) {
        if mask == 0 || v == 0 {
            return;
        }
        self.first_wide = slots.first_wide();
        if slot < self.first_wide {
            // A count fact is one deal: ±1.
            debug_assert!(v.abs() == 1, "count fact {v}");
            add_masked(&mut self.counts, slot, v as i64, mask);
        } else {
            add_masked(&mut self.wide, slot - self.first_wide, v, mask);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|s| s.iter().all(|v| *v == 0))
            && self.wide.iter().all(|s| s.iter().all(|v| *v == 0))
    }

    /// Adds this cell's sums to per-slot window sums.
    pub fn merge_into(&self, into: &mut Vec<[i128; WINDOWS]>) {
        let len = if self.wide.is_empty() {
            self.counts.len()
        } else {
            self.first_wide + self.wide.len()
        };
        if into.len() < len {
            into.resize(len, [0; WINDOWS]);
        }
        for (acc, row) in into.iter_mut().zip(&self.counts) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += i128::from(*v);
            }
        }
        for (acc, row) in into[self.first_wide.min(len)..].iter_mut().zip(&self.wide) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    }
}

fn add_masked<T>(rows: &mut Vec<[T; WINDOWS]>, i: usize, v: T, mask: Mask)
where
    T: Copy + Default + std::ops::AddAssign,
{
    if rows.len() <= i {
        rows.resize(i + 1, [T::default(); WINDOWS]);
    }
    let row = &mut rows[i];
    for w in windows_of(mask) {
        row[w] += v;
    }
}

/// The windows of `mask`, in order. Only their sums are touched: a fact of the current
/// periods is in about half the windows, and with many cells the sums are not in cache, so
/// each sum left alone is memory not read.
pub(crate) fn windows_of(mask: Mask) -> impl Iterator<Item = usize> {
    let mut m = mask & ((1 << WINDOWS) - 1);
    std::iter::from_fn(move || {
        (m != 0).then(|| {
            let w = m.trailing_zeros() as usize;
            m &= m - 1;
            w
        })
    })
}

/// Where the windows of every deal cell stand, and when each deal's facts (its flow facts, and
/// its created, won and lost facts) next change windows.
///
/// A fact enters the windows when the clock reaches it and leaves a rolling window when its
/// start passes it; the to-date windows start anew at local midnights, when every deal is
/// looked at again. So a deal needs attention only at the earliest such second of its facts,
/// and a record that adds facts later than that (the usual case: a new step happens now)
/// touches no index at all.
#[derive(Debug)]
pub(crate) struct FlowClock {
    /// When each deal's facts may next change windows.
    due: Schedule,
    lo: [i64; WINDOWS],
    hi: [i64; WINDOWS],
    same: [SamePoint; SAME_POINT.len()],
}

/// The deals whose facts may have changed windows when the clock moved, and the windows'
/// bounds before the move (see [`FlowClock::advance`]).
#[derive(Debug)]
pub(crate) struct Moved {
    /// `None`: a to-date window started anew, so every deal.
    pub deals: Option<Vec<crate::schedule::Due>>,
    pub lo: [i64; WINDOWS],
    pub hi: [i64; WINDOWS],
}

impl Moved {
    /// The windows a fact at `ts` was counted in before the move.
    pub fn mask(&self, ts: i64) -> Mask {
        window_mask(&self.lo, &self.hi, ts)
    }
}

/// Index and length (seconds) of each rolling window, shortest first.
fn rolling() -> impl Iterator<Item = (usize, i64)> {
    Window::ALL
        .into_iter()
        .filter_map(|w| w.rolling_seconds().map(|len| (w.index(), len)))
}

impl FlowClock {
    pub fn new(b: &Bounds) -> Self {
        FlowClock {
            due: Schedule::default(),
            lo: b.lo,
            hi: b.hi,
            same: b.same,
        }
    }

    /// The windows that count a fact at second `ts`.
    pub fn mask(&self, ts: i64) -> Mask {
        window_mask(&self.lo, &self.hi, ts)
    }

    /// The earliest second at which one of `facts` changes windows other than at a midnight
    /// (see [`FlowClock::next_at`]).
    pub fn next_change(&self, facts: &[Fact]) -> i64 {
        facts
            .iter()
            .map(|f| self.next_at(f.0))
            .min()
            .unwrap_or(i64::MAX)
    }

    /// The earliest second at which a fact at `ts` changes windows other than at a midnight:
    /// when the clock reaches it, when it leaves the shortest rolling window counting it, or
    /// when a same-point window reaches it.
    pub fn next_at(&self, ts: i64) -> i64 {
        let now = self.hi[0];
        if ts > now {
            return ts;
        }
        let leaves = rolling()
            .find(|(w, _)| self.lo[*w] <= ts)
            .map_or(i64::MAX, |(_, len)| ts + len);
        let reached = SAME_POINT
            .iter()
            .zip(&self.same)
            .filter(|((_, w), _)| self.lo[w.index()] <= ts && ts > self.hi[w.index()])
            .map(|(_, p)| p.reaches(ts))
            .min()
            .unwrap_or(i64::MAX);
        leaves.min(reached)
    }

    /// The same windows with nothing scheduled: what [`FlowClock::next_change`] needs.
    pub fn windows_only(&self) -> FlowClock {
        FlowClock {
            due: Schedule::default(),
            lo: self.lo,
            hi: self.hi,
            same: self.same,
        }
    }

    /// Makes `seq` due at `next` if that is earlier than `due` (see [`Schedule::schedule`]).
    pub fn schedule(&mut self, seq: u64, due: i64, next: i64) -> i64 {
        self.due.schedule(seq, due, next)
    }

    /// Forgets every due second (before every deal is scheduled again).
    pub fn clear(&mut self) {
        self.due.clear();
    }

    /// See [`Schedule::len`].
    pub fn scheduled(&self) -> usize {
        self.due.len()
    }

    /// See [`Schedule::retain`].
    pub fn retain(&mut self, live: impl FnMut(crate::schedule::Due) -> bool) {
        self.due.retain(live);
    }

    /// See [`Schedule::reserve`].
    pub fn reserve(&mut self, n: usize) {
        self.due.reserve(n);
    }

    /// Moves the windows to `b` and returns the deals to look at again.
    pub fn advance(&mut self, b: &Bounds) -> Moved {
        // A to-date window starting anew moves the closed and same-point windows too.
        let moved_day = Window::ALL
            .into_iter()
            .take(CURRENT)
            .filter(|w| w.rolling_seconds().is_none())
            .any(|w| b.lo[w.index()] != self.lo[w.index()]);
        let now = self.hi[0].max(b.now);
        let deals = (!moved_day).then(|| self.due.take_until(now));
        let before = Moved {
            deals,
            lo: self.lo,
            hi: self.hi,
        };
        self.lo = b.lo;
        for (h, new) in self.hi.iter_mut().zip(b.hi) {
            *h = if moved_day { new } else { (*h).max(new) };
        }
        self.same = b.same;
        before
    }
}

fn window_mask(lo: &[i64; WINDOWS], hi: &[i64; WINDOWS], ts: i64) -> Mask {
    let mut m = 0;
    for (w, (l, h)) in lo.iter().zip(hi).enumerate() {
        m |= Mask::from(*l <= ts && ts <= *h) << w;
    }
    m
}

/// Adds per-slot window sums (a cell's or a team's) to others.
pub(crate) fn add_sums(into: &mut Vec<[i128; WINDOWS]>, from: &[[i128; WINDOWS]]) {
    if into.len() < from.len() {
        into.resize(from.len(), [0; WINDOWS]);
    }
    for (acc, f) in into.iter_mut().zip(from) {
        for (a, v) in acc.iter_mut().zip(f) {
            *a += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [StageKind; 6] = [
        StageKind::Open,
        StageKind::Open,
        StageKind::Open,
        StageKind::Open,
        StageKind::Won,
        StageKind::Lost,
    ];
    const S: Slots = Slots { n: 6 };

    fn step(at: i64, stage: u8) -> Step {
        Step::new(at, stage, (stage >= 4).then_some(at), 100, None)
    }

    #[test]
    fn a_reopened_win_leaves_no_trace_of_the_win() {
        let d = derive(&[step(0, 2), step(10, 4), step(20, 2)], &K, S);
        assert_eq!(d.facts, vec![(0, S.entered(2), 1)]);
        assert_eq!(d.visit, Some((2, 0)));
    }

    #[test]
    fn reopening_into_another_stage_leaves_the_stage_closed_from() {
        let d = derive(&[step(0, 2), step(10, 4), step(20, 1)], &K, S);
        assert_eq!(
            d.facts,
            vec![
                (0, S.entered(2), 1),
                (20, S.exited(2, Exit::Regressed), 1),
                (20, S.seconds(2), 20),
                (20, S.entered(1), 1),
            ]
        );
    }

    #[test]
    fn a_close_counts_once_with_the_last_closed_state() {
        let d = derive(&[step(0, 0), step(5, 4), step(9, 5)], &K, S);
        assert_eq!(
            d.facts,
            vec![
                (0, S.entered(0), 1),
                (9, S.exited(0, Exit::Lost), 1),
                (9, S.seconds(0), 9),
            ]
        );
        assert_eq!(d.visit, None);
    }

    #[test]
    fn close_date_moves_count_across_quarters_only() {
        let q = |at, quarter| Step::new(at, 1, None, 100, Some(quarter));
        let d = derive(&[q(0, 8), q(1, 8), q(2, 9), q(3, 7)], &K, S);
        let moves: Vec<_> = d.facts.iter().filter(|f| f.1 >= S.pushed()).collect();
        assert_eq!(
            moves,
            vec![
                &(2, S.pushed(), 1),
                &(2, S.pushed_amount(), 100),
                &(3, S.pulled(), 1),
                &(3, S.pulled_amount(), 100),
            ]
        );
    }

    #[test]
    fn appending_a_step_changes_what_deriving_both_histories_does() {
        let q = |at, stage, quarter| Step::new(at, stage, None, 100, Some(quarter));
        let history = [
            q(0, 1, 8),
            q(5, 2, 9),
            step(9, 4),
            q(12, 2, 9),
            q(20, 3, 7),
            step(30, 5),
            step(31, 4),
            q(40, 0, 9),
        ];
        for n in 0..history.len() {
            let (before, next) = (&history[..n], &history[n]);
            let (gone, came, visit) = append(before, next, &K, S);
            let old = derive(before, &K, S);
            let new = derive(&history[..=n], &K, S);
            assert_eq!((gone, came), difference(old.facts, new.facts), "step {n}");
            assert_eq!(visit, new.visit, "step {n}");
        }
    }

    #[test]
    fn only_the_facts_that_differ_are_exchanged() {
        let a = vec![(1, 0, 1), (2, 3, 1), (2, 3, 1), (5, 1, 7)];
        let b = vec![(2, 3, 1), (5, 1, 7), (6, 2, 1), (1, 0, 1)];
        assert_eq!(difference(a, b), (vec![(2, 3, 1)], vec![(6, 2, 1)]));
    }

    #[test]
    fn forgetting_a_visit_before_the_horizon_keeps_the_current_entry() {
        let mut steps = Vec::new();
        for (at, stage) in [(0, 0), (10, 1), (20, 2)] {
            push_step(&mut steps, step(at, stage), &K, 15);
        }
        assert_eq!(steps.len(), 2);
        assert_eq!(derive(&steps, &K, S).visit, Some((2, 20)));
    }

    #[test]
    fn a_deal_is_due_when_a_fact_leaves_its_shortest_window_or_the_clock_reaches_it() {
        let cal = crate::Calendar::utc();
        // 06:00 UTC: no to-date window starts anew within the next hours.
        let t0 = 20_000 * 86_400 + 6 * 3_600;
        let mut clock = FlowClock::new(&cal.bounds(t0));
        let past = [(t0 - 10, 0, 1)];
        let next = clock.next_change(&past);
        assert_eq!(next, t0 - 10 + 3_600);
        assert_eq!(clock.schedule(7, i64::MAX, next), next);
        assert_eq!(clock.advance(&cal.bounds(next - 1)).deals, Some(vec![]));
        assert_eq!(clock.mask(t0 - 10) & 1, 1, "still in the last hour");
        let moved = clock.advance(&cal.bounds(next));
        assert_eq!(moved.deals, Some(vec![(next, 7)]));
        assert_eq!((moved.mask(t0 - 10) & 1, clock.mask(t0 - 10) & 1), (1, 0));

        let future = [(t0 + 100_000, 0, 1)];
        assert_eq!(clock.next_change(&future), t0 + 100_000);
        assert_eq!(
            clock.mask(t0 + 100_000),
            0,
            "not counted before the clock reaches it"
        );
        // A later fact does not put off an earlier due second.
        assert_eq!(clock.schedule(8, t0 + 5_000, t0 + 9_000), t0 + 5_000);
        // Midnight: every deal is looked at again.
        assert_eq!(clock.advance(&cal.bounds(t0 + 18 * 3_600)).deals, None);
    }
}
