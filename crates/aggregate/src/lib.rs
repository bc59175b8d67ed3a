//! The aggregation core of salespulse: pure and I/O-free.
//!
//! Records go in through `apply`, the clock through `tick(now)`; `drain_changes` returns the
//! series of every rep, team and the org that changed since the last call. Nothing here reads
//! a clock, a socket or a file, so every number can be checked against a recomputation from
//! the raw records.

mod activities;
mod calendar;
mod deals;
mod diff;
mod exchange;
mod flow;
mod ids;
mod ledger;
mod regions;
mod schedule;
mod series;
mod state;
mod weekly;
mod windowed;
mod wire;

pub use activities::{ActivitiesCore, Counts, MINUTE_BUCKETS_SECONDS};
pub use calendar::{
    first_full_week, Bounds, Calendar, CalendarError, Grid, Window, CONSISTENCY_WEEKS, WINDOWS,
};
pub use deals::{DealSums, DealsCore, Win};
pub use diff::{
    metric_of_key, of_activities, series_key, series_of_key, subject_of_key, Change, Differ,
};
pub use exchange::{slot_of, Contribution, Merger, PartError, ORG_SLOT, PART_LAYOUT};
pub use ledger::UNASSIGNED;
pub use series::{Extra, Metric, Scope, Series, Subject, SubjectSeries, MAX_EXTRA, RATIO_DP};
pub use state::StateError;
pub use windowed::{Measure, Windowed};

/// Hash maps of the hot path. The hasher is seeded per process, so an adversary cannot aim
/// for collisions; nothing here depends on iteration order.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// What applying a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The record changed the state (possibly leaving every number as it was).
    Applied,
    /// Its event id was seen before.
    Duplicate,
    /// Older than what is already applied, or than every window.
    Stale,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
        }
    }
}
