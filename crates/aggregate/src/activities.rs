//! Activities: counts by kind per rep, team and org over every window.
//!
//! Counts are kept in buckets, apart for each kind: one minute for the last 25 hours (so the
//! `1h` and `24h` windows are exact to the minute), one local hour of the calendar for older
//! activities (so days, weeks, months, quarters and years hold exactly their own activities in
//! every time zone). An activity counts in a window when its bucket's start lies in the window.
//!
//! Hours from before every window but `ytd` and `last_year` (before last quarter, in practice)
//! are folded into one bucket per fiscal year: no window boundary lies inside a fiscal year
//! there, so the year's bucket counts in exactly the windows its hours did. A year of a rep
//! then holds at most two quarters of hour buckets, not two years of them.

use std::sync::Arc;

use rust_decimal::Decimal;
use salespulse_decode::{ActivityEvent, Contract, MAX_KINDS};

use crate::calendar::{Bounds, Calendar, Grid, Weeks, Window, WINDOWS};
use crate::exchange::{Contribution, Exchange, MergerOf};
use crate::ledger::{Cell, Ledger};
use crate::series::{Metric, SeriesBuilder, SubjectSeries};
use crate::weekly::{Measured, Weekly};
use crate::windowed::{Measure, Windowed};
use crate::Outcome;

/// Minute buckets older than this are folded into hour buckets.
pub const MINUTE_BUCKETS_SECONDS: i64 = 25 * 3_600;

/// One number per activity kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PerKind<T>(pub [T; MAX_KINDS]);

impl<T: Default + Copy> Default for PerKind<T> {
    fn default() -> Self {
        PerKind([T::default(); MAX_KINDS])
    }
}

impl<T> Measure for PerKind<T>
where
    T: Copy + Default + PartialEq + std::ops::AddAssign + std::ops::SubAssign,
{
    fn add(&mut self, o: &Self) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a += b;
        }
    }
    fn sub(&mut self, o: &Self) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a -= b;
        }
    }
    fn is_zero(&self) -> bool {
        self.0.iter().all(|c| *c == T::default())
    }
}

/// Count per activity kind.
pub type Counts = PerKind<u32>;

/// Seconds of talk time per activity kind. A single activity counts at most `u32::MAX`
/// seconds, so the sums cannot overflow.
pub type Secs = PerKind<u64>;

/// Minute buckets for the last 25 hours, buckets of the calendar's local hours before, and
/// one bucket per fiscal year for the hours that only `ytd` and `last_year` count.
#[derive(Debug)]
pub(crate) struct Buckets<V> {
    minutes: Windowed<V>,
    hours: Windowed<V>,
    /// Keyed by the first bucket start of their fiscal year, on the hours' grid; made at the
    /// first fold, as most cells of a young service never need it (a `Windowed` holds 17 sums).
    years: Option<Box<Windowed<V>>>,
}

/// The fiscal year (`ytd`'s or `last_year`'s start) an hour before [`Bounds::hourly_since`] is
/// summed into; `None` when it is older than last year, where no window counts it.
fn year_of(t: i64, b: &Bounds) -> Option<i64> {
    let (this, last) = (b.lo[Window::Ytd.index()], b.lo[Window::LastYear.index()]);
    if t >= this {
        Some(this)
    } else if t >= last {
        Some(last)
    } else {
        None
    }
}

impl<V: Measure> Buckets<V> {
    fn new(b: &Bounds) -> Self {
        Buckets {
            minutes: Windowed::new(Grid::MINUTES, b),
            hours: Windowed::new(b.hours, b),
            years: None,
        }
    }

    /// Applies `add` to the bucket of second `t` and to the window sums it is in.
    fn add_by(&mut self, t: i64, b: &Bounds, add: impl Fn(&mut V)) {
        if self.minutes.bucket(t) < b.now - MINUTE_BUCKETS_SECONDS {
            self.hours.add_by(t, b, add);
        } else {
            self.minutes.add_by(t, b, add);
        }
    }

    fn advance(&mut self, b: &Bounds) -> bool {
        let mut changed = self.minutes.advance(b);
        changed |= self.hours.advance(b);
        if let Some(years) = &mut self.years {
            changed |= years.advance(b);
        }
        let folded = self.minutes.take_older_than(b.now - MINUTE_BUCKETS_SECONDS);
        changed |= !folded.is_empty();
        for (t, v) in folded {
            self.hours.add(t, &v, b);
        }
        // Late activities and restored buckets land among the hours first; both are folded
        // here, at the tick after they came.
        let folded = self.hours.take_older_than(b.hourly_since);
        changed |= !folded.is_empty();
        // A quarter's roll-over folds about half the hours; a late activity, one.
        if folded.len() * 4 >= self.hours.len().max(1) {
            self.hours.shrink_to_fit();
        }
        for (t, v) in folded {
            if let Some(year) = year_of(t, b) {
                // At or after the year's start and at or before `t`, which is on the grid.
                let years = self
                    .years
                    .get_or_insert_with(|| Box::new(Windowed::new(b.hours, b)));
                years.add(years.first_start(year), &v, b);
            }
        }
        changed
    }

    fn is_empty(&self) -> bool {
        self.minutes.is_empty()
            && self.hours.is_empty()
            && self.years.as_ref().is_none_or(|y| y.is_empty())
    }

    fn merge_into(&self, s: &mut [V; WINDOWS]) {
        for tier in [&self.minutes, &self.hours]
            .into_iter()
            .chain(self.years.as_deref())
        {
            for (acc, v) in s.iter_mut().zip(tier.sums()) {
                acc.add(v);
            }
        }
    }

    /// (minute buckets, hour and year buckets), each as (start, value). A year's bucket is
    /// saved as an hour at its start, which the first tick after a restore folds again.
    #[allow(clippy::type_complexity)]
    fn saved(&self) -> (Vec<(i64, V)>, Vec<(i64, V)>) {
        let mut hours = self.years.as_ref().map(|y| y.facts()).unwrap_or_default();
        hours.extend(self.hours.facts());
        (self.minutes.facts(), hours)
    }

    fn restore(&mut self, minutes: &[(i64, V)], hours: &[(i64, V)], b: &Bounds) {
        for (t, c) in minutes {
            self.minutes.add(*t, c, b);
        }
        for (t, c) in hours {
            self.hours.add(*t, c, b);
        }
    }
}

/// Activities and talk seconds per kind: what a subject counts in a window, and how a
/// snapshot saves a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub counts: Counts,
    pub secs: Secs,
}

impl Measure for Tally {
    fn add(&mut self, o: &Self) {
        self.counts.add(&o.counts);
        self.secs.add(&o.secs);
    }
    fn sub(&mut self, o: &Self) {
        self.counts.sub(&o.counts);
        self.secs.sub(&o.secs);
    }
    fn is_zero(&self) -> bool {
        self.counts.is_zero() && self.secs.is_zero()
    }
}

/// What one kind's bucket holds: its activities and their talk seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct KindSums {
    count: u32,
    secs: u64,
}

impl Measure for KindSums {
    fn add(&mut self, o: &Self) {
        self.count += o.count;
        self.secs += o.secs;
    }
    fn sub(&mut self, o: &Self) {
        self.count -= o.count;
        self.secs -= o.secs;
    }
    fn is_zero(&self) -> bool {
        self.count == 0 && self.secs == 0
    }
}

/// Marks a kind a cell has no buckets of in [`KindBuckets::index`].
const NO_KIND: u8 = u8::MAX;

/// A cell's buckets, kept apart for each activity kind it has seen.
///
/// A rep's hour mostly holds activities of one kind or two. A bucket of every kind (sixteen
/// counts and sixteen sums) would cost twelve times what one kind's does, and hour buckets
/// are nearly all of an activities service's memory.
#[derive(Debug)]
pub(crate) struct KindBuckets {
    /// Position in `kinds` of each kind's buckets.
    index: [u8; MAX_KINDS],
    kinds: Vec<(u8, Buckets<KindSums>)>,
}

impl KindBuckets {
    fn new() -> Self {
        KindBuckets {
            index: [NO_KIND; MAX_KINDS],
            kinds: Vec::new(),
        }
    }

    fn of_kind(&mut self, k: usize, b: &Bounds) -> &mut Buckets<KindSums> {
        let mut i = usize::from(self.index[k]);
        if i == usize::from(NO_KIND) {
            i = self.kinds.len();
            self.index[k] = i as u8;
            self.kinds.push((k as u8, Buckets::new(b)));
        }
        &mut self.kinds[i].1
    }

    /// Counts one activity of kind `k` at second `t` with `secs` seconds of talk.
    fn add(&mut self, t: i64, k: usize, secs: u64, b: &Bounds) {
        let one = KindSums { count: 1, secs };
        self.of_kind(k, b).add_by(t, b, |s| s.add(&one));
    }

    fn advance(&mut self, b: &Bounds) -> bool {
        let mut changed = false;
        for (_, buckets) in &mut self.kinds {
            changed |= buckets.advance(b);
        }
        if self.kinds.iter().any(|(_, k)| k.is_empty()) {
            self.kinds.retain(|(_, k)| !k.is_empty());
            self.index = [NO_KIND; MAX_KINDS];
            for (i, (k, _)) in self.kinds.iter().enumerate() {
                self.index[usize::from(*k)] = i as u8;
            }
        }
        changed
    }

    fn is_empty(&self) -> bool {
        self.kinds.iter().all(|(_, k)| k.is_empty())
    }

    fn merge_into(&self, s: &mut ActivitySummary) {
        let mut sums = [KindSums::default(); WINDOWS];
        for (k, buckets) in &self.kinds {
            let k = usize::from(*k);
            sums.fill(KindSums::default());
            buckets.merge_into(&mut sums);
            for (acc, v) in s.iter_mut().zip(&sums) {
                acc.counts.0[k] += v.count;
                acc.secs.0[k] += v.secs;
            }
        }
    }

    /// (minute buckets, hour and year buckets) as in [`Buckets::saved`], the kinds of a
    /// bucket's start together.
    #[allow(clippy::type_complexity)]
    fn saved(&self) -> (Vec<(i64, Tally)>, Vec<(i64, Tally)>) {
        let mut minutes = std::collections::BTreeMap::<i64, Tally>::new();
        let mut hours = std::collections::BTreeMap::<i64, Tally>::new();
        for (k, buckets) in &self.kinds {
            let k = usize::from(*k);
            let (m, h) = buckets.saved();
            for (into, tier) in [(&mut minutes, m), (&mut hours, h)] {
                for (t, v) in tier {
                    let tally = into.entry(t).or_default();
                    tally.counts.0[k] += v.count;
                    tally.secs.0[k] += v.secs;
                }
            }
        }
        (minutes.into_iter().collect(), hours.into_iter().collect())
    }

    fn restore(&mut self, minutes: &[(i64, Tally)], hours: &[(i64, Tally)], b: &Bounds) {
        for k in 0..MAX_KINDS {
            let of = |tier: &[(i64, Tally)]| -> Vec<(i64, KindSums)> {
                tier.iter()
                    .map(|(t, v)| {
                        let sums = KindSums {
                            count: v.counts.0[k],
                            secs: v.secs.0[k],
                        };
                        (*t, sums)
                    })
                    .filter(|(_, v)| !v.is_zero())
                    .collect()
            };
            let (m, h) = (of(minutes), of(hours));
            if !m.is_empty() || !h.is_empty() {
                self.of_kind(k, b).restore(&m, &h, b);
            }
        }
    }

    /// Minute, hour and fiscal-year buckets held, each kind's counted apart.
    fn held(&self) -> [usize; 3] {
        let mut out = [0; 3];
        for (_, b) in &self.kinds {
            out[0] += b.minutes.len();
            out[1] += b.hours.len();
            out[2] += b.years.as_ref().map_or(0, |y| y.len());
        }
        out
    }
}

#[derive(Debug)]
pub(crate) struct ActivityCell {
    buckets: KindBuckets,
    /// Activities of every kind per week, for the rep's consistency.
    weekly: Weekly,
}

/// Counts and talk seconds of one subject per window. Sent to the slots as two
/// [`crate::wire`] rows per kind (counts, seconds): a rep's activities are of few kinds, so
/// most rows are zero.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ActivitySummary(pub [Tally; WINDOWS]);

impl std::ops::Deref for ActivitySummary {
    type Target = [Tally; WINDOWS];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ActivitySummary {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl serde::Serialize for ActivitySummary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut rows = [[0i128; WINDOWS]; 2 * MAX_KINDS];
        for (w, t) in self.0.iter().enumerate() {
            for k in 0..MAX_KINDS {
                rows[2 * k][w] = t.counts.0[k].into();
                rows[2 * k + 1][w] = t.secs.0[k].into();
            }
        }
        crate::wire::serialize_rows(rows.iter(), s)
    }
}

impl<'de> serde::Deserialize<'de> for ActivitySummary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let rows = crate::wire::deserialize_rows(d)?;
        if rows.len() != 2 * MAX_KINDS {
            return Err(D::Error::invalid_length(rows.len(), &"two rows per kind"));
        }
        let mut s = ActivitySummary::default();
        for (w, t) in s.0.iter_mut().enumerate() {
            for k in 0..MAX_KINDS {
                t.counts.0[k] = crate::wire::narrow(rows[2 * k][w]).map_err(D::Error::custom)?;
                t.secs.0[k] = crate::wire::narrow(rows[2 * k + 1][w]).map_err(D::Error::custom)?;
            }
        }
        Ok(s)
    }
}

impl Cell for ActivityCell {
    type Summary = ActivitySummary;
    fn new(b: &Bounds) -> Self {
        ActivityCell {
            buckets: KindBuckets::new(),
            weekly: Weekly::new(b),
        }
    }
    fn advance(&mut self, b: &Bounds) -> bool {
        // A rep whose weeks moved has new consistency numbers, even when none is left.
        let had_weeks = !self.weekly.is_empty();
        let rolled = self.weekly.roll(b) && had_weeks;
        self.buckets.advance(b) | rolled
    }
    fn is_empty(&self) -> bool {
        self.buckets.is_empty() && self.weekly.is_empty()
    }
    fn add_summary(into: &mut ActivitySummary, from: &ActivitySummary) {
        for (a, b) in into.iter_mut().zip(from.iter()) {
            a.add(b);
        }
    }
    fn merge_into(&self, s: &mut ActivitySummary) {
        self.buckets.merge_into(s);
    }
    const MEASURED: &'static [Measured] = crate::weekly::ACTIVITIES_MEASURED;
    fn weekly(&self) -> &Weekly {
        &self.weekly
    }
}

/// Rolling activity counts per rep, team and org.
#[derive(Debug)]
pub struct ActivitiesCore {
    kinds: Vec<Arc<str>>,
    cal: Calendar,
    bounds: Bounds,
    /// The weeks kept at `bounds`, for an activity's week without a time zone lookup.
    weeks: Weeks,
    ledger: Ledger<ActivityCell>,
    /// Event ids (hashed) of the activities counted within the duplicate window, with the
    /// clock (Unix seconds) they were counted at.
    seen: crate::FastMap<u64, i64>,
    /// Seconds an id is remembered (the contract's `duplicate_window_days`).
    duplicate_window: i64,
    pruned_at: i64,
    saved_size: crate::state::SavedSize,
}

impl ActivitiesCore {
    pub fn new(contract: &Contract, cal: Calendar, now_ms: i64) -> Self {
        let now = now_ms.div_euclid(1000);
        let bounds = cal.bounds(now);
        ActivitiesCore {
            kinds: contract
                .kinds()
                .iter()
                .map(|k| Arc::from(k.as_str()))
                .collect(),
            cal,
            bounds,
            weeks: cal.weeks(&bounds),
            ledger: Ledger::new(),
            seen: crate::FastMap::default(),
            duplicate_window: contract.duplicate_window_seconds,
            pruned_at: now,
            saved_size: Default::default(),
        }
    }

    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    pub fn remembered_ids(&self) -> usize {
        self.seen.len()
    }

    pub fn apply(&mut self, ev: &ActivityEvent<'_>) -> Outcome {
        let t = ev.occurred_at.div_euclid(1000);
        if t < self.bounds.horizon {
            // Older than every window: it can change no number.
            return Outcome::Stale;
        }
        let b = self.bounds;
        // A repeat within the window is a duplicate, whenever the pruning below runs.
        let counted_since = b.now - self.duplicate_window;
        match self.seen.entry(crate::ids::event_id_hash(&ev.event_id)) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if *o.get() > counted_since {
                    return Outcome::Duplicate;
                }
                o.insert(b.now);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(b.now);
            }
        }
        let cell = self
            .ledger
            .cell_named(&ev.rep_id, ev.team_id.as_deref(), &b);
        let k = usize::from(ev.kind);
        let secs = ev
            .duration_seconds
            .filter(|d| *d > 0)
            .map_or(0, |d| d.min(i64::from(u32::MAX)) as u64);
        cell.buckets.add(t, k, secs, &b);
        let week = self
            .weeks
            .week_of(t)
            .unwrap_or_else(|| self.cal.week_at(t, &b));
        cell.weekly.add(week, [1, 0], 1, &b);
        Outcome::Applied
    }

    pub fn tick(&mut self, now_ms: i64) {
        let now = now_ms.div_euclid(1000);
        if now <= self.bounds.now {
            return;
        }
        let week = self.bounds.week;
        self.bounds = self.cal.bounds(now);
        if self.bounds.week != week {
            self.weeks = self.cal.weeks(&self.bounds);
        }
        self.ledger.advance(&self.bounds);
        if now - self.pruned_at >= 3_600 {
            let counted_since = now - self.duplicate_window;
            self.seen.retain(|_, t| *t > counted_since);
            self.ledger.gc_names();
            self.pruned_at = now;
        }
    }

    /// Number of (rep, team) cells held.
    pub fn cells(&self) -> usize {
        self.ledger.cells()
    }

    /// Minute, hour and fiscal-year buckets held, over all cells and kinds.
    pub fn buckets_held(&self) -> [usize; 3] {
        let mut out = [0; 3];
        self.ledger.for_each_cell(|_, _, c| {
            for (all, n) in out.iter_mut().zip(c.buckets.held()) {
                *all += n;
            }
        });
        out
    }

    pub(crate) fn kinds(&self) -> &[Arc<str>] {
        &self.kinds
    }

    pub(crate) fn saved_size(&self) -> &crate::state::SavedSize {
        &self.saved_size
    }

    pub(crate) fn seen_ids(&self) -> impl ExactSizeIterator<Item = (u64, i64)> + '_ {
        self.seen.iter().map(|(k, v)| (*k, *v))
    }

    pub(crate) fn set_seen(&mut self, ids: Vec<(u64, i64)>) {
        self.seen.extend(ids);
    }

    /// Hands the buckets of every cell to `f`, one cell at a time.
    pub(crate) fn for_each_saved_cell(&self, mut f: impl FnMut(SavedBuckets)) {
        self.ledger.for_each_cell(|rep, team, cell| {
            let (minutes, hours) = cell.buckets.saved();
            f(SavedBuckets {
                rep: rep.clone(),
                team: team.cloned(),
                minutes,
                hours,
                weeks: cell.weekly.saved(),
            });
        });
    }

    /// Adds restored buckets to a (rep, team) cell, at the current clock.
    pub(crate) fn insert_cell(&mut self, rep: &str, team: Option<&str>, saved: &SavedBuckets) {
        let b = self.bounds;
        let rep = self.ledger.intern(rep);
        let team = team.map(|t| self.ledger.intern(t));
        let cell = self.ledger.cell(&rep, team.as_ref(), &b);
        cell.buckets.restore(&saved.minutes, &saved.hours, &b);
        for (week, n) in &saved.weeks {
            cell.weekly.add(*week, [*n, 0], 1, &b);
        }
        if cell.is_empty() {
            self.ledger.release(&rep, team.as_ref());
        }
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

    pub fn drain_changes(&mut self) -> Vec<SubjectSeries> {
        let kinds = self.kinds.clone();
        self.ledger
            .drain(&|s: &ActivitySummary, b: &mut SeriesBuilder<'_>| build(&kinds, s, b))
    }

    pub fn snapshot(&mut self) -> Vec<SubjectSeries> {
        self.ledger
            .snapshot(&|s: &ActivitySummary, b: &mut SeriesBuilder<'_>| build(&self.kinds, s, b))
    }
}

impl Exchange for ActivityCell {
    type Labels = Vec<Arc<str>>;
    const MEMBERS: bool = false;
    fn moves_each_minute(_: &ActivitySummary) -> bool {
        false
    }
    fn relabel(_: &mut Vec<Arc<str>>, _: &Calendar, _: &Bounds) -> bool {
        false
    }
    fn build(kinds: &Vec<Arc<str>>, s: &ActivitySummary, out: &mut SeriesBuilder<'_>) {
        build(kinds, s, out);
    }
}

impl ActivitiesCore {
    /// Makes this core one of several that divide the activities: it sends its cells to
    /// `slots` slots ([`ActivitiesCore::drain_contributions`]) instead of building series.
    pub fn exchange(&mut self, slots: u32) {
        self.ledger.exchange(slots);
    }

    /// What the cells changed since the last call add up to, for the slots that merge them.
    pub fn drain_contributions(&mut self) -> Vec<Contribution> {
        self.ledger.drain_contributions(self.bounds.now)
    }

    /// As [`crate::DealsCore::all_contributions`].
    pub fn all_contributions(&mut self) -> Vec<Contribution> {
        self.ledger.all_contributions(self.bounds.now)
    }

    /// As [`crate::DealsCore::begin_recovery`].
    pub fn begin_recovery(&mut self) {
        self.ledger.begin_recovery();
    }

    /// As [`crate::DealsCore::end_recovery`].
    pub fn end_recovery(&mut self) {
        self.ledger.end_recovery();
    }
}

/// The merger of activity cells (see `exchange.rs`).
pub(crate) fn merger(
    contract: &Contract,
    cal: Calendar,
    now_ms: i64,
    slots: u32,
) -> MergerOf<ActivityCell> {
    let bounds = cal.bounds(now_ms.div_euclid(1000));
    let kinds = contract
        .kinds()
        .iter()
        .map(|k| Arc::from(k.as_str()))
        .collect();
    MergerOf::new(cal, bounds, kinds, slots)
}

/// The buckets of one (rep, own team) cell, as saved in a snapshot.
#[derive(Debug)]
pub(crate) struct SavedBuckets {
    pub rep: Arc<str>,
    pub team: Option<Arc<str>>,
    pub minutes: Vec<(i64, Tally)>,
    pub hours: Vec<(i64, Tally)>,
    /// Activities per week (see [`Weekly`]).
    pub weeks: Vec<(i64, i128)>,
}

fn build(kinds: &[Arc<str>], s: &ActivitySummary, b: &mut SeriesBuilder<'_>) {
    for (k, name) in kinds.iter().enumerate() {
        if s.iter().all(|c| c.counts.0[k] == 0) {
            continue;
        }
        for w in Window::ALL {
            b.push(
                Metric::Activities,
                Some(w),
                Some(name),
                Decimal::from(s[w.index()].counts.0[k]),
            );
        }
    }
    for (k, name) in kinds.iter().enumerate() {
        if s.iter().all(|c| c.secs.0[k] == 0) {
            continue;
        }
        for w in Window::periods() {
            b.push(
                Metric::ActivitySeconds,
                Some(w),
                Some(name),
                Decimal::from(s[w.index()].secs.0[k]),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    /// Each window's count recomputed from the raw activities: an activity counts where the
    /// start of its minute (last 25 hours) or of its UTC hour lies.
    fn naive(acts: &[i64], b: &Bounds) -> [i128; WINDOWS] {
        let mut out = [0; WINDOWS];
        for &t in acts {
            let minute = t - t.rem_euclid(60);
            let start = if minute < b.now - MINUTE_BUCKETS_SECONDS {
                t - t.rem_euclid(3_600)
            } else {
                minute
            };
            for (w, n) in out.iter_mut().enumerate() {
                if b.lo[w] <= start && start <= b.hi[w] {
                    *n += 1;
                }
            }
        }
        out
    }

    /// Two and a half years of a busy rep, with late activities, a restore and two fiscal
    /// years rolling over: every window matches the raw activities at every tick, and no more
    /// than two quarters of hours are held.
    #[test]
    fn hours_folded_into_fiscal_years_count_as_before_and_stay_bounded() {
        let cal = Calendar::utc();
        let start = 1_735_689_600 + 3 * 3_600; // 2025-01-01T03:00:00Z
        let mut b = cal.bounds(start);
        let mut buckets: Buckets<i128> = Buckets::new(&b);
        let mut acts = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: i64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as i64
        };
        let mut most_hours = 0;
        for day in 1..=900 {
            let now = start + day * DAY;
            for _ in 0..12 {
                // Mostly within the last day; one in twelve up to 400 days late.
                let t = if next(12) == 0 {
                    now - next(400 * DAY)
                } else {
                    now - next(DAY)
                };
                if t >= b.horizon {
                    buckets.add_by(t, &b, |s| *s += 1);
                    acts.push(t);
                }
            }
            b = cal.bounds(now);
            buckets.advance(&b);
            acts.retain(|t| *t >= b.horizon);
            if day == 450 {
                let (minutes, hours) = buckets.saved();
                buckets = Buckets::new(&b);
                buckets.restore(&minutes, &hours, &b);
                buckets.advance(&b);
            }
            let mut got = [0i128; WINDOWS];
            buckets.merge_into(&mut got);
            assert_eq!(got, naive(&acts, &b), "day {day}");
            assert!(
                buckets.years.as_ref().map_or(0, |y| y.len()) <= 2,
                "day {day}"
            );
            let oldest_hour = buckets.hours.facts().first().map_or(i64::MAX, |f| f.0);
            assert!(oldest_hour >= b.hourly_since, "day {day}");
            most_hours = most_hours.max(buckets.hours.len());
        }
        // Last quarter and this one, at most 184 days of hours, where all the hours since
        // the start of last year were held before.
        assert!(most_hours <= 184 * 24, "{most_hours} hour buckets");
        let mut hours: Vec<i64> = acts.iter().map(|t| t - t.rem_euclid(3_600)).collect();
        hours.sort_unstable();
        hours.dedup();
        assert!(
            hours.len() > 2 * most_hours,
            "{} against {most_hours}",
            hours.len()
        );
    }

    #[test]
    fn a_summary_round_trips_and_refuses_sums_past_its_kinds() {
        let mut s = ActivitySummary::default();
        s[0].counts.0[3] = 7;
        s[16].counts.0[15] = u32::MAX;
        s[16].secs.0[15] = u64::MAX;
        let bytes = postcard::to_stdvec(&s).expect("encodes");
        assert_eq!(
            postcard::from_bytes::<ActivitySummary>(&bytes).expect("as built"),
            s
        );

        // A count past u32, and a row too few.
        let mut rows = [[0i128; WINDOWS]; 2 * MAX_KINDS];
        rows[0][0] = i128::from(u32::MAX) + 1;
        for rows in [&rows[..], &rows[1..]] {
            let mut inner = Vec::new();
            crate::wire::put_rows(&mut inner, rows.iter());
            let bytes = crate::wire::postcard_bytes(&inner);
            assert!(postcard::from_bytes::<ActivitySummary>(&bytes).is_err());
        }
    }
}
