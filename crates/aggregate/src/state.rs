//! The state of a core as bytes, so that a restart can restore it instead of replaying all
//! input history.
//!
//! What is saved is the source of truth, not what is derived from it: the latest state of
//! every deal (and its remembered event ids), or the activity buckets and remembered ids.
//! Restoring re-derives the cells from it at the current clock, so a snapshot taken before a
//! window moved restores to the same numbers as an uninterrupted run.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::activities::{ActivitiesCore, Counts, SavedBuckets, Secs, Tally};
use salespulse_decode::ForecastCategory;

use crate::deals::{DealId, DealState, DealsCore};
use crate::flow::Step;

/// Layout version of the encoded state; a snapshot of another version is not restored.
const VERSION: u32 = 4;

/// Why saved state cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the saved state does not decode: {0}")]
    Decode(String),
    #[error("the saved state has layout version {found}, this build reads {VERSION}")]
    Version { found: u32 },
    #[error("state can only be restored into an empty core")]
    NotEmpty,
    #[error(
        "the saved state was taken with other {what} ({saved}); this configuration has {current}"
    )]
    Config {
        what: &'static str,
        saved: String,
        current: String,
    },
}

#[derive(Serialize, Deserialize)]
struct SavedDeals {
    version: u32,
    stages: Vec<String>,
    next_seq: u64,
    deals: Vec<SavedDeal>,
}

/// (at, stage, closed_at, amount, quarter) of one step of a deal's history.
type SavedStep = (i64, u8, Option<i64>, i64, Option<i32>);

#[derive(Serialize, Deserialize)]
struct SavedDeal {
    id: String,
    seq: u64,
    rep: String,
    team: Option<String>,
    stage: u8,
    amount: i128,
    created_at: i64,
    occurred_at_ms: i64,
    closed_at: Option<i64>,
    expected: Option<i32>,
    recent: Vec<u64>,
    recent_next: u8,
    category: String,
    steps: Vec<SavedStep>,
    entered: i64,
}

#[derive(Serialize, Deserialize)]
struct SavedActivities {
    version: u32,
    kinds: Vec<String>,
    seen: Vec<(u64, i64)>,
    cells: Vec<SavedCell>,
}

#[derive(Serialize, Deserialize)]
struct SavedCell {
    rep: String,
    team: Option<String>,
    minutes: Vec<(i64, Vec<u32>)>,
    hours: Vec<(i64, Vec<u32>)>,
    talk_minutes: Vec<(i64, Vec<u64>)>,
    talk_hours: Vec<(i64, Vec<u64>)>,
    /// Activities per week kept for consistency: (week number, count).
    weeks: Vec<(i64, u64)>,
}

fn check(what: &'static str, saved: &[String], current: &[Arc<str>]) -> Result<(), StateError> {
    if saved
        .iter()
        .map(String::as_str)
        .eq(current.iter().map(|s| &**s))
    {
        return Ok(());
    }
    Err(StateError::Config {
        what,
        saved: saved.join(","),
        current: current.iter().map(|s| &**s).collect::<Vec<_>>().join(","),
    })
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StateError> {
    // The version leads every layout, so it is read before anything else is trusted.
    let (found, _) =
        postcard::take_from_bytes::<u32>(bytes).map_err(|e| StateError::Decode(e.to_string()))?;
    if found != VERSION {
        return Err(StateError::Version { found });
    }
    postcard::from_bytes(bytes).map_err(|e| StateError::Decode(e.to_string()))
}

fn counts(v: &[u32]) -> Counts {
    let mut c = Counts::default();
    for (a, b) in c.0.iter_mut().zip(v) {
        *a = *b;
    }
    c
}

fn secs(v: &[u64]) -> Secs {
    let mut c = Secs::default();
    for (a, b) in c.0.iter_mut().zip(v) {
        *a = *b;
    }
    c
}

impl DealsCore {
    /// Every deal's latest state, encoded.
    pub fn save(&self) -> Vec<u8> {
        let (next_seq, deals) = self.saved_deals();
        let saved = SavedDeals {
            version: VERSION,
            stages: self.stage_names().iter().map(|s| s.to_string()).collect(),
            next_seq,
            deals: deals
                .map(|(id, st)| SavedDeal {
                    id: id.to_owned(),
                    seq: st.seq,
                    rep: st.rep.to_string(),
                    team: st.team.as_deref().map(str::to_owned),
                    stage: st.stage,
                    amount: st.amount,
                    created_at: st.created_at,
                    occurred_at_ms: st.occurred_at_ms,
                    closed_at: st.closed_at,
                    expected: st.expected,
                    recent: st.recent.to_vec(),
                    recent_next: st.recent_next,
                    category: st.category.label().to_owned(),
                    steps: st
                        .steps
                        .iter()
                        .map(|s| (s.at, s.stage, s.closed_at, s.amount, s.quarter))
                        .collect(),
                    entered: st.entered,
                })
                .collect(),
        };
        postcard::to_stdvec(&saved).unwrap_or_default()
    }

    /// Loads saved state (taken under the same stage list) into a core that holds no deals;
    /// the roster may already be loaded.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let saved: SavedDeals = decode(bytes)?;
        check("deal stages", &saved.stages, self.stage_names())?;
        if self.deals() != 0 {
            return Err(StateError::NotEmpty);
        }
        self.begin_restore(saved.deals.len());
        for d in saved.deals {
            let mut recent = [0; crate::deals::RECENT_IDS];
            for (r, s) in recent.iter_mut().zip(&d.recent) {
                *r = *s;
            }
            let rep = self.intern(&d.rep);
            let team = d.team.as_deref().map(|t| self.intern(t));
            let st = DealState {
                seq: d.seq,
                rep,
                team,
                stage: d.stage,
                amount: d.amount,
                created_at: d.created_at,
                occurred_at_ms: d.occurred_at_ms,
                closed_at: d.closed_at,
                expected: d.expected,
                recent,
                recent_next: d.recent_next % crate::deals::RECENT_IDS as u8,
                due: i64::MAX,
                open: None,
                status_due: i64::MAX,
                category: ForecastCategory::from_label(&d.category).ok_or_else(|| {
                    StateError::Decode(format!(
                        "deal {} has no forecast category {:?}",
                        d.id, d.category
                    ))
                })?,
                steps: d
                    .steps
                    .iter()
                    .map(|&(at, stage, closed_at, amount, quarter)| Step {
                        at,
                        stage,
                        closed_at,
                        amount,
                        quarter,
                    })
                    .collect(),
                entered: d.entered,
            };
            if std::iter::once(st.stage)
                .chain(st.steps.iter().map(|s| s.stage))
                .any(|s| usize::from(s) >= saved.stages.len())
            {
                return Err(StateError::Decode(format!(
                    "deal {} has no stage {}",
                    d.id, st.stage
                )));
            }
            self.insert_state(DealId::new(&d.id), st);
        }
        self.set_next_seq(saved.next_seq);
        Ok(())
    }
}

impl ActivitiesCore {
    /// Every activity bucket and remembered event id, encoded.
    pub fn save(&self) -> Vec<u8> {
        let kinds = self.kinds().len();
        // Counts and talk seconds are saved apart, seconds only for buckets that have any.
        let pack = |v: &[(i64, Tally)]| -> Vec<(i64, Vec<u32>)> {
            v.iter()
                .map(|(t, c)| (*t, c.counts.0[..kinds].to_vec()))
                .collect()
        };
        let pack_secs = |v: &[(i64, Tally)]| -> Vec<(i64, Vec<u64>)> {
            v.iter()
                .filter(|(_, c)| c.secs.0.iter().any(|s| *s != 0))
                .map(|(t, c)| (*t, c.secs.0[..kinds].to_vec()))
                .collect()
        };
        let saved = SavedActivities {
            version: VERSION,
            kinds: self.kinds().iter().map(|s| s.to_string()).collect(),
            seen: self.seen_ids(),
            cells: self
                .saved_cells()
                .into_iter()
                .map(|c| SavedCell {
                    rep: c.rep.to_string(),
                    team: c.team.as_deref().map(str::to_owned),
                    minutes: pack(&c.minutes),
                    hours: pack(&c.hours),
                    talk_minutes: pack_secs(&c.minutes),
                    talk_hours: pack_secs(&c.hours),
                    weeks: c
                        .weeks
                        .iter()
                        .map(|(w, n)| (*w, u64::try_from(*n).unwrap_or_default()))
                        .collect(),
                })
                .collect(),
        };
        postcard::to_stdvec(&saved).unwrap_or_default()
    }

    /// Loads saved state (taken under the same kind list) into a core that holds no
    /// activities; the roster may already be loaded.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let saved: SavedActivities = decode(bytes)?;
        check("activity kinds", &saved.kinds, self.kinds())?;
        if self.cells() != 0 || self.remembered_ids() != 0 {
            return Err(StateError::NotEmpty);
        }
        self.set_seen(saved.seen);
        for c in saved.cells {
            let tallies = |counts_of: &[(i64, Vec<u32>)], secs_of: &[(i64, Vec<u64>)]| {
                // A bucket's seconds are added to its counts by time (equal times merge).
                let mut out: Vec<(i64, Tally)> = counts_of
                    .iter()
                    .map(|(t, x)| {
                        (
                            *t,
                            Tally {
                                counts: counts(x),
                                secs: Secs::default(),
                            },
                        )
                    })
                    .collect();
                out.extend(secs_of.iter().map(|(t, x)| {
                    (
                        *t,
                        Tally {
                            counts: Counts::default(),
                            secs: secs(x),
                        },
                    )
                }));
                out
            };
            let buckets = SavedBuckets {
                rep: Arc::from(c.rep.as_str()),
                team: c.team.as_deref().map(Arc::from),
                minutes: tallies(&c.minutes, &c.talk_minutes),
                hours: tallies(&c.hours, &c.talk_hours),
                weeks: c.weeks.iter().map(|(w, n)| (*w, i128::from(*n))).collect(),
            };
            self.insert_cell(&c.rep, c.team.as_deref(), &buckets);
        }
        Ok(())
    }
}
