//! The state of a core as bytes, so that a restart can restore it instead of replaying all
//! input history.
//!
//! What is saved is the source of truth, not what is derived from it: the latest state of
//! every deal (and its remembered event ids), or the activity buckets and remembered ids.
//! Restoring re-derives the cells from it at the current clock, so a snapshot taken before a
//! window moved restores to the same numbers as an uninterrupted run.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::activities::{ActivitiesCore, Counts, SavedBuckets, Secs, Tally};
use salespulse_decode::ForecastCategory;

use crate::deals::{DealId, DealState, DealsCore, Prepared, Preparer};
use crate::flow::{Fact, Step};

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

/// A deals core as saved: `deals` is a list of [`SavedDeal`], written from the core's map
/// by [`DealsCore::save`] ([`DealList`]) and read back deal by deal by a restore.
#[derive(Serialize, Deserialize)]
struct SavedDeals<D> {
    version: u32,
    stages: Vec<String>,
    next_seq: u64,
    deals: D,
}

/// The size of a core's last snapshot, which sizes the next one's buffer. Snapshots are
/// taken every few seconds of a state that changes little in between: with the buffer sized
/// so, a snapshot is written in one pass and its bytes are not copied by a buffer doubling as
/// it fills (which holds up to three times the snapshot at once). Measuring each snapshot's
/// size first would cost a second pass over the state.
#[derive(Debug, Default)]
pub(crate) struct SavedSize(std::sync::atomic::AtomicUsize);

impl SavedSize {
    fn encode<T: Serialize>(&self, value: &T) -> Vec<u8> {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.0.load(Relaxed);
        let out =
            postcard::to_extend(value, Vec::with_capacity(last + last / 8)).unwrap_or_default();
        self.0.store(out.len(), Relaxed);
        out
    }
}

/// A core's deals, written as a list of [`SavedDeal`].
struct DealList<'a>(&'a DealsCore);

impl Serialize for DealList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.saved_deals().map(|(id, st)| SavedDeal {
            id: Cow::Borrowed(id),
            seq: st.seq,
            rep: Cow::Borrowed(&st.rep),
            team: st.team.as_deref().map(Cow::Borrowed),
            stage: st.stage,
            amount: st.amount,
            created_at: st.created_at,
            occurred_at_ms: st.occurred_at_ms,
            closed_at: st.closed_at,
            expected: st.expected,
            recent: Recent(st.recent),
            recent_next: st.recent_next,
            category: Cow::Borrowed(st.category.label()),
            steps: Cow::Borrowed(&st.steps),
            entered: st.entered,
        }))
    }
}

/// A deal as saved. Saving borrows its strings and steps from the core; restoring borrows
/// the strings from the saved bytes.
#[derive(Serialize, Deserialize)]
struct SavedDeal<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    rep: Cow<'a, str>,
    #[serde(borrow)]
    team: Option<Cow<'a, str>>,
    stage: u8,
    amount: i128,
    created_at: i64,
    occurred_at_ms: i64,
    closed_at: Option<i64>,
    expected: Option<i32>,
    recent: Recent,
    recent_next: u8,
    #[serde(borrow)]
    category: Cow<'a, str>,
    /// Each step as the tuple of its fields, in their order.
    steps: Cow<'a, [Step]>,
    entered: i64,
}

/// An activities core as saved: `seen` is a list of (id hash, time) and `cells` a list of
/// [`SavedCell`], written from the core's maps by [`ActivitiesCore::save`] ([`SeenList`],
/// [`CellList`]) and read back as lists.
#[derive(Serialize, Deserialize)]
struct SavedActivities<S = Vec<(u64, i64)>, C = Vec<SavedCell>> {
    version: u32,
    kinds: Vec<String>,
    seen: S,
    cells: C,
}

/// The remembered ids of a core, written as a list of (id hash, time).
struct SeenList<'a>(&'a ActivitiesCore);

impl Serialize for SeenList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.seen_ids())
    }
}

/// The cells of a core, written as a list of [`SavedCell`], each made as it is written.
struct CellList<'a>(&'a ActivitiesCore);

impl Serialize for CellList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let core = self.0;
        let kinds = core.kinds().len();
        // The length comes first: a count of other cells than those written would make the
        // rest unreadable.
        let n = core.cells();
        let mut seq = s.serialize_seq(Some(n))?;
        let (mut written, mut failed) = (0, None);
        core.for_each_saved_cell(|c| {
            if failed.is_none() {
                failed = seq.serialize_element(&saved_cell(c, kinds)).err();
                written += 1;
            }
        });
        match failed {
            Some(e) => Err(e),
            None if written != n => Err(serde::ser::Error::custom(format!(
                "{written} cells written, {n} counted"
            ))),
            None => seq.end(),
        }
    }
}

/// A cell's buckets as saved: counts and talk seconds apart, seconds only for buckets that
/// have any.
fn saved_cell(c: SavedBuckets, kinds: usize) -> SavedCell {
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
    SavedCell {
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
    }
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

/// The version leads every layout, so it is read before anything else is trusted.
fn check_version(bytes: &[u8]) -> Result<(), StateError> {
    let (found, _) =
        postcard::take_from_bytes::<u32>(bytes).map_err(|e| StateError::Decode(e.to_string()))?;
    if found != VERSION {
        return Err(StateError::Version { found });
    }
    Ok(())
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StateError> {
    check_version(bytes)?;
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
    ///
    /// The deals are written from the core's map one by one, not gathered in a list first,
    /// into a buffer the size of the last snapshot's ([`SavedSize`]).
    pub fn save(&self) -> Vec<u8> {
        let saving = SavedDeals {
            version: VERSION,
            stages: self.stage_names().iter().map(|s| s.to_string()).collect(),
            next_seq: self.next_seq(),
            deals: DealList(self),
        };
        self.saved_size().encode(&saving)
    }

    /// Loads saved state (taken under the same stage list) into a core that holds no deals;
    /// the roster may already be loaded.
    ///
    /// Each deal goes into the core as it is decoded, its strings borrowed from `bytes`: no
    /// list of decoded deals is built first, to be moved and dropped again. After an error the
    /// core may hold part of the state; it is to be dropped.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        if self.deals() != 0 {
            return Err(StateError::NotEmpty);
        }
        check_version(bytes)?;
        let mut failed = None;
        let mut de = postcard::Deserializer::from_bytes(bytes);
        let decoded = serde::de::DeserializeSeed::deserialize(
            RestoreDeals {
                core: self,
                failed: &mut failed,
            },
            &mut de,
        );
        match (failed, decoded) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(StateError::Decode(e.to_string())),
            (None, Ok(())) => Ok(()),
        }
    }
}

impl DealsCore {
    /// Loads saved state as [`DealsCore::restore`] does, from the saved bytes in pieces, in
    /// order and cut anywhere (as the chunks of a snapshot are), each deal decoded as soon as
    /// its bytes are there: a start rebuilds while the rest of the snapshot is still being
    /// read. After an error the core may hold part of the state; it is to be dropped.
    pub fn restore_pieces(
        &mut self,
        pieces: impl Iterator<Item = Vec<u8>>,
    ) -> Result<(), StateError> {
        if self.deals() != 0 {
            return Err(StateError::NotEmpty);
        }
        let mut bytes = Pieces {
            buf: Vec::new(),
            at: 0,
            rest: pieces,
        };
        let found = bytes.take(|b| postcard::take_from_bytes::<u32>(b))?;
        if found != VERSION {
            return Err(StateError::Version { found });
        }
        let stages = bytes.take(|b| postcard::take_from_bytes::<Vec<String>>(b))?;
        check("deal stages", &stages, self.stage_names())?;
        let next_seq = bytes.take(|b| postcard::take_from_bytes::<u64>(b))?;
        let n = bytes.take(|b| postcard::take_from_bytes::<u64>(b))?;
        let n = usize::try_from(n).map_err(|e| StateError::Decode(e.to_string()))?;
        // A piece is dropped once decoded: what is handed on owns its strings.
        self.begin_restore(n);
        decode_and_insert(self, stages.len(), |push| {
            for _ in 0..n {
                let d = bytes.take(|b| {
                    postcard::take_from_bytes::<SavedDeal<'_>>(b).map(|(d, r)| (d.into_owned(), r))
                })?;
                push(d)?;
            }
            Ok(())
        })?;
        self.set_next_seq(next_seq);
        Ok(())
    }
}

/// Saved bytes arriving in pieces: what is decoded is taken from the front, and a value cut
/// by the end of a piece is decoded again once the next piece is there.
struct Pieces<I> {
    buf: Vec<u8>,
    at: usize,
    rest: I,
}

impl<I: Iterator<Item = Vec<u8>>> Pieces<I> {
    fn take<T>(
        &mut self,
        decode: impl Fn(&[u8]) -> postcard::Result<(T, &[u8])>,
    ) -> Result<T, StateError> {
        loop {
            let left = &self.buf[self.at..];
            match decode(left) {
                Ok((t, rest)) => {
                    self.at += left.len() - rest.len();
                    return Ok(t);
                }
                Err(postcard::Error::DeserializeUnexpectedEnd) => {
                    let Some(next) = self.rest.next() else {
                        return Err(StateError::Decode("the saved state ends early".into()));
                    };
                    self.buf.drain(..self.at);
                    self.at = 0;
                    if self.buf.is_empty() {
                        self.buf = next;
                    } else {
                        self.buf.extend_from_slice(&next);
                    }
                }
                Err(e) => return Err(StateError::Decode(e.to_string())),
            }
        }
    }
}

impl SavedDeal<'_> {
    fn into_owned(self) -> SavedDeal<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        SavedDeal {
            id: own(self.id),
            rep: own(self.rep),
            team: self.team.map(own),
            category: own(self.category),
            steps: Cow::Owned(self.steps.into_owned()),
            ..self
        }
    }
}

/// The recent event ids of a deal, saved as a list and read back into a fixed array (a saved
/// list is never longer).
struct Recent([u64; crate::deals::RECENT_IDS]);

impl Serialize for Recent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0)
    }
}

impl<'de> Deserialize<'de> for Recent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Recent;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "at most {} event ids", crate::deals::RECENT_IDS)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Recent, A::Error> {
                let mut r = [0; crate::deals::RECENT_IDS];
                let mut n = 0;
                while let Some(id) = seq.next_element::<u64>()? {
                    match r.get_mut(n) {
                        Some(slot) => *slot = id,
                        None => return Err(serde::de::Error::invalid_length(n + 1, &self)),
                    }
                    n += 1;
                }
                Ok(Recent(r))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Decodes a [`SavedDeals`] into `core`, deal by deal. A saved state that decodes but does
/// not fit this core (other stages, a stage or category it does not know) is told by
/// `failed`, not as a decoding error.
struct RestoreDeals<'c> {
    core: &'c mut DealsCore,
    failed: &'c mut Option<StateError>,
}

impl<'de> serde::de::DeserializeSeed<'de> for RestoreDeals<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        const FIELDS: &[&str] = &["version", "stages", "next_seq", "deals"];
        d.deserialize_struct("SavedDeals", FIELDS, self)
    }
}

impl<'de> serde::de::Visitor<'de> for RestoreDeals<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("saved deals")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let missing = |what| A::Error::custom(format!("the saved deals end before their {what}"));
        let _version: u32 = seq.next_element()?.ok_or_else(|| missing("version"))?;
        let stages: Vec<String> = seq.next_element()?.ok_or_else(|| missing("stages"))?;
        if let Err(e) = check("deal stages", &stages, self.core.stage_names()) {
            *self.failed = Some(e);
            return Err(A::Error::custom("other stages"));
        }
        let next_seq: u64 = seq.next_element()?.ok_or_else(|| missing("sequence"))?;
        let deals = InsertDeals {
            core: &mut *self.core,
            failed: &mut *self.failed,
            stages: stages.len(),
        };
        seq.next_element_seed(deals)?
            .ok_or_else(|| missing("deals"))?;
        self.core.set_next_seq(next_seq);
        Ok(())
    }
}

/// The saved deals, each inserted into `core` as it is decoded.
struct InsertDeals<'c> {
    core: &'c mut DealsCore,
    failed: &'c mut Option<StateError>,
    stages: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for InsertDeals<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for InsertDeals<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of saved deals")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.core.begin_restore(seq.size_hint().unwrap_or(0));
        let failed = self.failed;
        decode_and_insert(self.core, self.stages, |push| {
            while let Some(d) = seq.next_element::<SavedDeal<'de>>()? {
                if let Err(e) = push(d) {
                    *failed = Some(e);
                    return Err(serde::de::Error::custom("a deal that does not fit"));
                }
            }
            Ok(())
        })
    }
}

/// Runs `decode` on this thread while another inserts into `core` what it decodes: `decode`
/// hands each deal to `push`, which checks it and prepares it (its facts, when they next
/// change windows, its open pipeline part: see [`crate::deals::Preparer`]) on this thread;
/// the other adds it to the deal map, the schedules and its cell's sums. The two halves
/// take about the same time. A deal that does not fit this core is `push`'s error.
fn decode_and_insert<'d, E>(
    core: &mut DealsCore,
    stages: usize,
    decode: impl FnOnce(&mut dyn FnMut(SavedDeal<'d>) -> Result<(), StateError>) -> Result<(), E>,
) -> Result<(), E> {
    let mut preparer = core.preparer();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(INSERT_QUEUE);
        let inserter = scope.spawn(move || {
            for batch in rx {
                let mut facts = batch.facts.as_slice();
                for (p, n) in batch.deals {
                    let (mine, rest) = facts.split_at(n);
                    core.insert_prepared(p, mine);
                    facts = rest;
                }
            }
        });
        let mut batch = Batch::default();
        let decoded = decode(&mut |d| {
            let before = batch.facts.len();
            let p = prepare_saved(&mut preparer, d, stages, &mut batch.facts)?;
            batch.deals.push((p, batch.facts.len() - before));
            if batch.deals.len() == INSERT_BATCH {
                // The inserting thread only stops when this one does.
                let _ = tx.send(std::mem::take(&mut batch));
            }
            Ok(())
        });
        let _ = tx.send(batch);
        drop(tx);
        inserter
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        decoded
    })
}

/// Prepared deals on their way to the inserting thread, with their facts one after the other.
#[derive(Default)]
struct Batch {
    deals: Vec<(Prepared, usize)>,
    facts: Vec<Fact>,
}

/// Deals handed from the decoding thread to the inserting one at a time, and batches that
/// may wait between them.
const INSERT_BATCH: usize = 256;
const INSERT_QUEUE: usize = 8;

fn prepare_saved(
    prep: &mut Preparer,
    d: SavedDeal<'_>,
    stages: usize,
    facts: &mut Vec<Fact>,
) -> Result<Prepared, StateError> {
    let category = ForecastCategory::from_label(&d.category).ok_or_else(|| {
        StateError::Decode(format!(
            "deal {} has no forecast category {:?}",
            d.id, d.category
        ))
    })?;
    if std::iter::once(d.stage)
        .chain(d.steps.iter().map(|s| s.stage))
        .any(|s| usize::from(s) >= stages)
    {
        return Err(StateError::Decode(format!(
            "deal {} has no stage {}",
            d.id, d.stage
        )));
    }
    let rep = prep.name(&d.rep);
    let team = d.team.as_deref().map(|t| prep.name(t));
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
        recent: d.recent.0,
        recent_next: d.recent_next % crate::deals::RECENT_IDS as u8,
        due: i64::MAX,
        open: None,
        status_due: i64::MAX,
        category,
        steps: d.steps.into_owned(),
        entered: d.entered,
    };
    Ok(prep.prepare(DealId::new(&d.id), st, facts))
}

impl ActivitiesCore {
    /// Every activity bucket and remembered event id, encoded. The ids and the cells are
    /// written from the core one by one, not gathered in lists first, into a buffer the size
    /// of the last snapshot's ([`SavedSize`]).
    pub fn save(&self) -> Vec<u8> {
        self.saved_size().encode(&SavedActivities {
            version: VERSION,
            kinds: self.kinds().iter().map(|s| s.to_string()).collect(),
            seen: SeenList(self),
            cells: CellList(self),
        })
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use rust_decimal::Decimal;
    use salespulse_decode::{Contract, ContractConfig, DealEvent};

    use super::*;
    use crate::Calendar;

    const NOW_MS: i64 = 1_780_000_000_000;

    #[test]
    fn activities_are_saved_in_the_layout_of_lists_and_restore_to_the_same_state() {
        let contract = Contract::default();
        let mut core = ActivitiesCore::new(&contract, Calendar::utc(), NOW_MS);
        for i in 0..40i64 {
            let ev = salespulse_decode::ActivityEvent {
                event_id: Cow::Owned(format!("a{i}")),
                rep_id: Cow::Owned(format!("rep-{}", i % 3)),
                team_id: (i % 4 != 0).then_some(Cow::Borrowed("team-1")),
                kind: u8::try_from(i % 3).expect("small"),
                occurred_at: NOW_MS - i * 3_600_000,
                deal_id: None,
                duration_seconds: (i % 2 == 0).then_some(60 + i),
            };
            core.apply(&ev);
        }
        let saved = core.save();
        let again = core.save();
        assert_eq!(again, saved);
        assert_eq!(again.capacity(), saved.len() + saved.len() / 8);
        // Written from the core's maps, the bytes are those of the same state as lists.
        let lists: SavedActivities = postcard::from_bytes(&saved).expect("decodes");
        assert_eq!(lists.seen.len(), 40);
        assert_eq!(lists.cells.len(), core.cells());
        assert_eq!(postcard::to_stdvec(&lists).expect("encodes"), saved);
        let mut restored = ActivitiesCore::new(&contract, Calendar::utc(), NOW_MS);
        restored.restore(&saved).expect("restores");
        assert_eq!(restored.remembered_ids(), 40);
        assert_eq!(restored.cells(), core.cells());
    }

    /// Deals in every stage, two reps, one without a team, each moved once.
    fn core_with_deals(contract: &Contract) -> DealsCore {
        let mut core = DealsCore::new(contract, Calendar::utc(), NOW_MS);
        for i in 0..12u8 {
            for (n, stage) in [0, i % 6].into_iter().enumerate() {
                let at = NOW_MS - 86_400_000 + i64::from(i) * 60_000 + n as i64 * 1_000;
                let ev = DealEvent {
                    event_id: Cow::Owned(format!("e{i}-{n}")),
                    deal_id: Cow::Owned(format!("deal-{i}")),
                    rep_id: Cow::Borrowed(if i % 2 == 0 { "rep-a" } else { "rep-b" }),
                    team_id: (i % 3 != 0).then_some(Cow::Borrowed("team-1")),
                    stage,
                    amount: Decimal::new(125_000 + i64::from(i), 2),
                    created_at: NOW_MS - 86_400_000,
                    occurred_at: at,
                    closed_at: (stage >= 4).then_some(at),
                    expected_close_date: None,
                    forecast_category: contract.stages()[usize::from(stage)].forecast_category,
                };
                core.apply(&ev);
            }
        }
        core
    }

    #[test]
    fn restored_deals_save_as_they_were_saved() {
        let contract = Contract::default();
        let saved = core_with_deals(&contract).save();
        let mut restored = DealsCore::new(&contract, Calendar::utc(), NOW_MS);
        restored.restore(&saved).expect("the state restores");
        assert_eq!(restored.deals(), 12);
        // The same deals, in the order of their sequence numbers (a map's order is its own).
        let in_order = |bytes: &[u8]| {
            let mut s: SavedDeals<Vec<SavedDeal>> = postcard::from_bytes(bytes).expect("decodes");
            s.deals.sort_by_key(|d| d.seq);
            postcard::to_stdvec(&s).expect("encodes")
        };
        assert_eq!(in_order(&restored.save()), in_order(&saved));
        // A snapshot's buffer is sized by the one before.
        let (first, again) = (restored.save(), restored.save());
        assert_eq!(again.capacity(), first.len() + first.len() / 8);
        assert!(matches!(
            restored.restore(&saved),
            Err(StateError::NotEmpty)
        ));
    }

    #[test]
    fn saved_bytes_in_pieces_restore_what_the_whole_restores() {
        let contract = Contract::default();
        let core = core_with_deals(&contract);
        let saved = core.save();
        let mut whole = DealsCore::new(&contract, Calendar::utc(), NOW_MS);
        whole.restore(&saved).expect("the state restores");
        let in_order = |bytes: &[u8]| {
            let mut s: SavedDeals<Vec<SavedDeal>> = postcard::from_bytes(bytes).expect("decodes");
            s.deals.sort_by_key(|d| d.seq);
            postcard::to_stdvec(&s).expect("encodes")
        };
        // Pieces of one byte, of a size that cuts values anywhere, and one piece.
        for size in [1, 7, 64, saved.len()] {
            let mut pieced = DealsCore::new(&contract, Calendar::utc(), NOW_MS);
            pieced
                .restore_pieces(saved.chunks(size).map(<[u8]>::to_vec))
                .expect("the pieces restore");
            assert_eq!(pieced.deals(), whole.deals(), "pieces of {size}");
            assert_eq!(
                in_order(&pieced.save()),
                in_order(&whole.save()),
                "pieces of {size}"
            );
            assert_eq!(pieced.snapshot(), whole.snapshot(), "pieces of {size}");
        }
        // Cut short, or of other stages, they are refused.
        let mut short = DealsCore::new(&contract, Calendar::utc(), NOW_MS);
        let cut = saved[..saved.len() - 3].chunks(100).map(<[u8]>::to_vec);
        assert!(matches!(
            short.restore_pieces(cut),
            Err(StateError::Decode(_))
        ));
        let mut fewer = ContractConfig::default();
        fewer.stages.remove(1);
        let other = Contract::new(fewer).expect("a valid contract");
        let mut refused = DealsCore::new(&other, Calendar::utc(), NOW_MS);
        assert!(matches!(
            refused.restore_pieces(saved.chunks(100).map(<[u8]>::to_vec)),
            Err(StateError::Config { .. })
        ));
    }

    /// The layout of version 4 as first written, with owned values: a snapshot of this build
    /// decodes into it and encodes back to the same bytes, so snapshots written before and
    /// after borrowed saving read the same.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Version4 {
        version: u32,
        stages: Vec<String>,
        next_seq: u64,
        #[allow(clippy::type_complexity)]
        deals: Vec<(
            String,
            u64,
            String,
            Option<String>,
            u8,
            i128,
            i64,
            i64,
            Option<i64>,
            Option<i32>,
            Vec<u64>,
            u8,
            String,
            Vec<(i64, u8, Option<i64>, i64, Option<i32>)>,
            i64,
        )>,
    }

    #[test]
    fn saved_deals_keep_the_layout_of_their_version() {
        let saved = core_with_deals(&Contract::default()).save();
        let old: Version4 = postcard::from_bytes(&saved).expect("decodes in the first layout");
        assert_eq!(old.deals.len(), 12);
        assert!(old
            .deals
            .iter()
            .all(|d| d.10.len() == crate::deals::RECENT_IDS));
        assert_eq!(postcard::to_stdvec(&old).expect("encodes"), saved);
    }

    #[test]
    fn state_that_does_not_fit_is_refused() {
        let contract = Contract::default();
        let saved = core_with_deals(&contract).save();
        let fresh = |c: &Contract| DealsCore::new(c, Calendar::utc(), NOW_MS);

        let mut fewer = ContractConfig::default();
        fewer.stages.remove(1);
        let fewer = Contract::new(fewer).expect("a valid contract");
        assert!(matches!(
            fresh(&fewer).restore(&saved),
            Err(StateError::Config {
                what: "deal stages",
                ..
            })
        ));

        let mut other_version = saved.clone();
        other_version[0] = (VERSION + 1) as u8;
        assert!(matches!(
            fresh(&contract).restore(&other_version),
            Err(StateError::Version { found }) if found == VERSION + 1
        ));

        let cut = &saved[..saved.len() - 7];
        assert!(matches!(
            fresh(&contract).restore(cut),
            Err(StateError::Decode(_))
        ));

        // A deal in a stage past the stage list.
        let mut bad: SavedDeals<Vec<SavedDeal>> = postcard::from_bytes(&saved).expect("decodes");
        bad.deals[3].stage = 9;
        let bad = postcard::to_stdvec(&bad).expect("encodes");
        let refused = fresh(&contract).restore(&bad);
        assert!(
            matches!(&refused, Err(StateError::Decode(why)) if why.contains("no stage 9")),
            "{refused:?}"
        );
    }
}
