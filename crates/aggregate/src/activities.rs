//! Activities: counts by kind per rep, team and org over every window.
//!
//! Counts are kept in buckets: one minute for the last 25 hours (so the `1h` and `24h` windows
//! are exact to the minute), one hour for older activities. An activity counts in a window when
//! its bucket's start lies in the window.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rust_decimal::Decimal;
use salespulse_decode::{ActivityEvent, Contract, MAX_KINDS};

use crate::calendar::{Bounds, Calendar, Window, WINDOWS};
use crate::ledger::{Cell, Ledger};
use crate::series::{Metric, SeriesBuilder, SubjectSeries};
use crate::windowed::{Measure, Windowed};
use crate::Outcome;

/// Minute buckets older than this are folded into hour buckets.
pub const MINUTE_BUCKETS_SECONDS: i64 = 25 * 3_600;

/// Bucket start of an activity at second `t`, once the clock has reached `now`.
pub fn bucket_of(t: i64, now: i64) -> i64 {
    let minute = t - t.rem_euclid(60);
    if minute < now - MINUTE_BUCKETS_SECONDS {
        t - t.rem_euclid(3_600)
    } else {
        minute
    }
}

/// Count per activity kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts(pub [u32; MAX_KINDS]);

impl Measure for Counts {
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
        self.0.iter().all(|c| *c == 0)
    }
}

#[derive(Debug)]
pub(crate) struct ActivityCell {
    minutes: Windowed<Counts>,
    hours: Windowed<Counts>,
}

impl Cell for ActivityCell {
    type Summary = [Counts; WINDOWS];
    fn new(b: &Bounds) -> Self {
        ActivityCell {
            minutes: Windowed::new(b),
            hours: Windowed::new(b),
        }
    }
    fn advance(&mut self, b: &Bounds) -> bool {
        let mut changed = self.minutes.advance(b);
        changed |= self.hours.advance(b);
        let folded = self.minutes.take_older_than(b.now - MINUTE_BUCKETS_SECONDS);
        changed |= !folded.is_empty();
        for (t, _, v) in folded {
            self.hours.add(t - t.rem_euclid(3_600), 0, &v, b);
        }
        changed
    }
    fn is_empty(&self) -> bool {
        self.minutes.is_empty() && self.hours.is_empty()
    }
    fn add_summary(into: &mut [Counts; WINDOWS], from: &[Counts; WINDOWS]) {
        for (a, b) in into.iter_mut().zip(from) {
            a.add(b);
        }
    }
    fn merge_into(&self, s: &mut [Counts; WINDOWS]) {
        for ((acc, m), h) in s.iter_mut().zip(self.minutes.sums()).zip(self.hours.sums()) {
            acc.add(m);
            acc.add(h);
        }
    }
}

/// Rolling activity counts per rep, team and org.
#[derive(Debug)]
pub struct ActivitiesCore {
    kinds: Vec<Arc<str>>,
    cal: Calendar,
    bounds: Bounds,
    ledger: Ledger<ActivityCell>,
    /// Event ids (hashed) of the activities still inside the longest window, with their time.
    seen: crate::FastMap<u64, i64>,
    pruned_at: i64,
}

impl ActivitiesCore {
    pub fn new(contract: &Contract, cal: Calendar, now_ms: i64) -> Self {
        let now = now_ms.div_euclid(1000);
        ActivitiesCore {
            kinds: contract
                .kinds()
                .iter()
                .map(|k| Arc::from(k.as_str()))
                .collect(),
            cal,
            bounds: cal.bounds(now),
            ledger: Ledger::new(),
            seen: crate::FastMap::default(),
            pruned_at: now,
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
        let mut h = std::hash::DefaultHasher::new();
        ev.event_id.hash(&mut h);
        match self.seen.entry(h.finish()) {
            std::collections::hash_map::Entry::Occupied(_) => return Outcome::Duplicate,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(t);
            }
        }
        let b = self.bounds;
        let rep = self.ledger.intern(&ev.rep_id);
        let team = ev.team_id.as_deref().map(|t| self.ledger.intern(t));
        let cell = self.ledger.cell(&rep, team.as_ref(), &b);
        let mut one = Counts::default();
        one.0[usize::from(ev.kind)] = 1;
        let minute = t - t.rem_euclid(60);
        if minute < b.now - MINUTE_BUCKETS_SECONDS {
            cell.hours.add(t - t.rem_euclid(3_600), 0, &one, &b);
        } else {
            cell.minutes.add(minute, 0, &one, &b);
        }
        Outcome::Applied
    }

    pub fn tick(&mut self, now_ms: i64) {
        let now = now_ms.div_euclid(1000);
        if now <= self.bounds.now {
            return;
        }
        self.bounds = self.cal.bounds(now);
        self.ledger.advance(&self.bounds);
        if now - self.pruned_at >= 3_600 {
            let horizon = self.bounds.horizon;
            self.seen.retain(|_, t| *t >= horizon);
            self.ledger.gc_names();
            self.pruned_at = now;
        }
    }

    /// Number of (rep, team) cells held.
    pub fn cells(&self) -> usize {
        self.ledger.cells()
    }

    pub(crate) fn kinds(&self) -> &[Arc<str>] {
        &self.kinds
    }

    pub(crate) fn seen_ids(&self) -> Vec<(u64, i64)> {
        self.seen.iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub(crate) fn set_seen(&mut self, ids: Vec<(u64, i64)>) {
        self.seen.extend(ids);
    }

    /// Buckets of every cell: (rep, own team, minute buckets, hour buckets).
    #[allow(clippy::type_complexity)]
    pub(crate) fn saved_cells(
        &self,
    ) -> Vec<(
        Arc<str>,
        Option<Arc<str>>,
        Vec<(i64, Counts)>,
        Vec<(i64, Counts)>,
    )> {
        let mut out = Vec::new();
        self.ledger.for_each_cell(|rep, team, cell| {
            let facts = |w: &Windowed<Counts>| w.facts().map(|(t, _, c)| (t, *c)).collect();
            out.push((
                rep.clone(),
                team.cloned(),
                facts(&cell.minutes),
                facts(&cell.hours),
            ));
        });
        out
    }

    /// Adds restored buckets to a (rep, team) cell, at the current clock.
    pub(crate) fn insert_cell(
        &mut self,
        rep: &str,
        team: Option<&str>,
        minutes: &[(i64, Counts)],
        hours: &[(i64, Counts)],
    ) {
        let b = self.bounds;
        let rep = self.ledger.intern(rep);
        let team = team.map(|t| self.ledger.intern(t));
        let cell = self.ledger.cell(&rep, team.as_ref(), &b);
        for (t, c) in minutes {
            cell.minutes.add(*t, 0, c, &b);
        }
        for (t, c) in hours {
            cell.hours.add(*t, 0, c, &b);
        }
        if cell.is_empty() {
            self.ledger.release(&rep, team.as_ref());
        }
    }

    pub fn roster_upsert(&mut self, rep: &str, team: &str) {
        self.ledger.roster_upsert(rep, team);
    }

    pub fn roster_remove(&mut self, rep: &str) {
        self.ledger.roster_remove(rep);
    }

    pub fn drain_changes(&mut self) -> Vec<SubjectSeries> {
        let kinds = self.kinds.clone();
        self.ledger
            .drain(&|s: &[Counts; WINDOWS], b: &mut SeriesBuilder<'_>| build(&kinds, s, b))
    }

    pub fn snapshot(&self) -> Vec<SubjectSeries> {
        self.ledger
            .snapshot(&|s: &[Counts; WINDOWS], b: &mut SeriesBuilder<'_>| build(&self.kinds, s, b))
    }
}

fn build(kinds: &[Arc<str>], s: &[Counts; WINDOWS], b: &mut SeriesBuilder<'_>) {
    for (k, name) in kinds.iter().enumerate() {
        if s.iter().all(|c| c.0[k] == 0) {
            continue;
        }
        for w in Window::ALL {
            b.push(
                Metric::Activities,
                Some(w),
                Some(name),
                Decimal::from(s[w.index()].0[k]),
            );
        }
    }
}
