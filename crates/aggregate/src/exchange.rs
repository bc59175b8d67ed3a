//! Dividing ingest: a core that holds only some input partitions' records sends what each of
//! its (rep, team) cells adds up to — a *contribution* — to the slots that need it, and a
//! [`Merger`] per slot sums the contributions of every source into the series it owns.
//!
//! Every number of the single core is a function of per-cell sums (window sums, open
//! pipeline, flow sums, weekly sums) that add over records. A cell of one partition's core
//! therefore holds part of the cell of a core that saw every record, and the sum of the parts
//! is that cell: a merger that holds, per cell, the latest part of every source builds
//! exactly the series the single core would. The test `tests/reference.rs` checks it against
//! a naive recomputation from the records.
//!
//! Where a cell goes: a subject's series are built from cells in one slot, the subject's
//! [`slot_of`]:
//! - a rep's series need all its cells: every cell goes to its rep's slot;
//! - a team's series need every cell whose effective team it is: to that team's slot;
//!
//! The org's and the regions' series, built in [`ORG_SLOT`], need every team: each source
//! sends that slot its teams' summaries, one contribution per slot of the teams (see
//! [`Contribution::teams`]), so that slot 0 merges a part per team and source rather than
//! every cell.
//!
//! A contribution is keyed by (source partition, rep, team named by the records); the latest
//! value of a key replaces the one before and `None` withdraws it, as on a compacted topic.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use salespulse_decode::Contract;

use crate::calendar::{Bounds, Calendar};
use crate::ledger::{Builds, Cell, CellKey, Ledger, RepCells};
use crate::series::{SeriesBuilder, Subject, SubjectSeries};
use crate::weekly::Weekly;
use crate::{FastMap, FastSet};

/// The slot of the org's and the regions' series, which need every cell.
pub const ORG_SLOT: u32 = 0;

/// Layout of the parts as encoded ([`Part`], [`crate::wire`]). The topic that carries them
/// is named with it, so that a build never reads parts of a layout it would misread: a
/// build with another layout starts a topic of its own, filled by its first rebuild.
pub const PART_LAYOUT: u32 = 3;

/// The slot a subject's series are built in, the same in every process and release: FNV-1a
/// of its scope and id (regions and the org: [`ORG_SLOT`]).
pub fn slot_of(subject: &Subject, slots: u32) -> u32 {
    let h = match subject {
        Subject::Org | Subject::Region(_) => return ORG_SLOT,
        Subject::Rep(r) => crate::ids::fnv1a([&b"rep/"[..], r.as_bytes()]),
        Subject::Team(t) => crate::ids::fnv1a([&b"team/"[..], t.as_bytes()]),
    };
    (h % u64::from(slots.max(1))) as u32
}

/// What one cell of a source core adds to the slot it is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub slot: u32,
    pub rep: Arc<str>,
    /// The team the cell's records named, if any.
    pub team: Option<Arc<str>>,
    /// The encoded part ([`decode_part`]); `None` withdraws the part sent before.
    pub value: Option<Vec<u8>>,
}

impl Contribution {
    /// The summaries of the teams of slot `group` that a source holds, for the org's slot.
    /// Rep ids are never empty (the decoder refuses them), so an empty rep marks it, and
    /// its team is the group's number.
    pub fn teams(group: u32, value: Option<Vec<u8>>) -> Self {
        Contribution {
            slot: ORG_SLOT,
            rep: Arc::from(""),
            team: Some(Arc::from(group.to_string())),
            value,
        }
    }

    /// The group of a contribution of [`Contribution::teams`]; `None` for a cell's.
    fn teams_group(&self) -> Option<Result<u32, PartError>> {
        if !self.rep.is_empty() {
            return None;
        }
        Some(
            self.team
                .as_deref()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| PartError(format!("teams of no slot: {:?}", self.team))),
        )
    }
}

/// Why a contribution is not merged.
#[derive(Debug, thiserror::Error)]
#[error("a contribution does not decode: {0}")]
pub struct PartError(String);

/// A cell's part as sent: its summary and its weekly sums (a rep's consistency), with the
/// sequence of the drain that sent it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Part<S> {
    /// Grows with every drain of the source core, and with the clock across the cores that
    /// hold one partition in turn: of the parts of one source held in several slots, the
    /// newest counts.
    seq: u64,
    summary: S,
    weekly: Weekly,
}

/// The summaries of a source's teams of one slot as sent to the org's slot, with the
/// sequence of the drain that sent them.
#[derive(serde::Serialize, serde::Deserialize)]
struct TeamsPart<S> {
    seq: u64,
    teams: Vec<(String, S)>,
}

/// A cell whose contributions a [`Merger`] can sum.
pub(crate) trait Exchange: Cell
where
    Self::Summary: Serialize + DeserializeOwned,
{
    /// What the series are built with besides the summary (label values, the clock).
    type Labels;
    /// Whether the rep's roster team gets a `member` series (one service per deployment).
    const MEMBERS: bool;
    /// Whether a summary's series move with the clock alone, once a minute (stage ages).
    fn moves_each_minute(s: &Self::Summary) -> bool;
    /// Moves the labels to the clock; returns whether every subject must be built again
    /// (the current periods rolled over).
    fn relabel(labels: &mut Self::Labels, cal: &Calendar, b: &Bounds) -> bool;
    fn build(labels: &Self::Labels, s: &Self::Summary, out: &mut SeriesBuilder<'_>);
}

/// A slot's number and the summaries of the teams of that slot a source holds.
pub(crate) type TeamGroup<S> = (u32, Vec<(Arc<str>, S)>);

/// (team named by a cell's records, slot) of a part sent.
type Sent = (Option<Arc<str>>, u32);

/// Where a source core sent each cell last, so that a cell that moves (its rep's roster team
/// changed) or empties is withdrawn where it was.
#[derive(Debug, Default, Clone)]
pub(crate) struct Router {
    slots: u32,
    /// Sequence of the last drain (see [`Part`]).
    seq: u64,
    /// Per rep: (team named by the cell's records, slot) of every part sent and standing.
    sent: FastMap<Arc<str>, Vec<Sent>>,
    /// Groups (slots of their teams) whose teams' summaries were sent and stand.
    teams_sent: FastSet<u32>,
    /// Set by [`Router::unknown`]: the run before may have sent any group.
    teams_unknown: bool,
}

impl Router {
    pub fn new(slots: u32) -> Self {
        Router {
            slots: slots.max(1),
            seq: 0,
            sent: FastMap::default(),
            teams_sent: FastSet::default(),
            teams_unknown: false,
        }
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Cells whose parts may be in any slot (a restored core does not know what the run
    /// before it sent): their next routing withdraws them from every slot they do not go to.
    pub fn unknown(&mut self, cells: &FastSet<CellKey>) {
        self.teams_unknown = true;
        for (rep, team) in cells {
            let sent = self.sent.entry(rep.clone()).or_default();
            for slot in 0..self.slots {
                if !sent.contains(&(team.clone(), slot)) {
                    sent.push((team.clone(), slot));
                }
            }
        }
    }

    /// The contributions of the drained reps: each cell to its slots, and a withdrawal where
    /// a cell was sent before and is not now.
    pub fn route<S: Serialize>(
        &mut self,
        drained: Vec<RepCells<S>>,
        now: i64,
    ) -> Vec<Contribution> {
        self.seq = (self.seq + 1).max(u64::try_from(now).unwrap_or(0).saturating_mul(1000));
        let mut out = Vec::new();
        for rc in drained {
            let mut now: Vec<Sent> = Vec::new();
            for cell in rc.cells {
                let mut targets = vec![
                    slot_of(&Subject::Rep(rc.rep.clone()), self.slots),
                    slot_of(&Subject::Team(cell.effective), self.slots),
                ];
                targets.sort_unstable();
                targets.dedup();
                let value = postcard::to_stdvec(&Part {
                    seq: self.seq,
                    summary: cell.summary,
                    weekly: cell.weekly,
                })
                .ok();
                for slot in targets {
                    now.push((cell.team.clone(), slot));
                    out.push(Contribution {
                        slot,
                        rep: rc.rep.clone(),
                        team: cell.team.clone(),
                        value: value.clone(),
                    });
                }
            }
            let before = self.sent.remove(&rc.rep).unwrap_or_default();
            for (team, slot) in before {
                if !now.contains(&(team.clone(), slot)) {
                    out.push(Contribution {
                        slot,
                        rep: rc.rep.clone(),
                        team,
                        value: None,
                    });
                }
            }
            if !now.is_empty() {
                self.sent.insert(rc.rep, now);
            }
        }
        out
    }

    /// The groups to send at this drain: those of `teams` (touched since the last), and,
    /// after [`Router::unknown`], every group.
    pub fn team_groups(&self, teams: &[Arc<str>]) -> Vec<u32> {
        let mut groups: Vec<u32> = if self.teams_unknown {
            (0..self.slots).collect()
        } else {
            teams
                .iter()
                .map(|t| slot_of(&Subject::Team(t.clone()), self.slots))
                .collect()
        };
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// The contributions of the groups' teams' summaries to the org's slot; a group with no
    /// team left is withdrawn if it was sent. Call after [`Router::route`] of the same drain,
    /// whose sequence it shares.
    pub fn route_teams<S: Serialize>(&mut self, groups: Vec<TeamGroup<S>>) -> Vec<Contribution> {
        let unknown = std::mem::take(&mut self.teams_unknown);
        let mut out = Vec::new();
        for (group, teams) in groups {
            if teams.is_empty() {
                if self.teams_sent.remove(&group) || unknown {
                    out.push(Contribution::teams(group, None));
                }
                continue;
            }
            let part = TeamsPart {
                seq: self.seq,
                teams: teams.into_iter().map(|(t, s)| (t.to_string(), s)).collect(),
            };
            self.teams_sent.insert(group);
            out.push(Contribution::teams(group, postcard::to_stdvec(&part).ok()));
        }
        out
    }
}

/// One source's part of a cell as held in one slot.
#[derive(Debug)]
pub(crate) struct MergedPart<S> {
    source: u32,
    slot: u32,
    seq: u64,
    /// FNV-1a of the part as sent.
    digest: u64,
    summary: S,
    weekly: Weekly,
}

/// A cell of a merger: the latest part of each source in each owned slot (a source sends the
/// same part to every slot of the cell), and the sum of each source's newest.
#[derive(Debug)]
pub(crate) struct Merged<C: Exchange>
where
    C::Summary: Serialize + DeserializeOwned,
{
    /// (source, slot, sequence, summary, weekly sums).
    parts: Vec<MergedPart<C::Summary>>,
    /// A part changed since `sum` and `weekly` were computed.
    stale: bool,
    sum: C::Summary,
    weekly: Weekly,
    minute: i64,
    _cell: PhantomData<C>,
}

impl<C: Exchange> Merged<C>
where
    C::Summary: Serialize + DeserializeOwned,
{
    /// Replaces (or withdraws, with `None`) the part of `source` in `slot`. The sum follows
    /// at [`Cell::settle`]: the parts of every source that sent since the last drain are
    /// summed once.
    fn set(&mut self, source: u32, slot: u32, part: Option<(Part<C::Summary>, u64)>) {
        self.parts.retain(|p| (p.source, p.slot) != (source, slot));
        if let Some((p, digest)) = part {
            self.parts.push(MergedPart {
                source,
                slot,
                seq: p.seq,
                digest,
                summary: p.summary,
                weekly: p.weekly,
            });
        }
        self.stale = true;
    }

    fn resum(&mut self, b: &Bounds) {
        self.stale = false;
        let mut sum = C::Summary::default();
        let mut weekly = Weekly::new(b);
        for p in &mut self.parts {
            p.weekly.roll(b);
        }
        for (i, p) in self.parts.iter().enumerate() {
            // One part per source: its newest, the first of equals.
            let newest =
                self.parts.iter().enumerate().all(|(j, q)| {
                    q.source != p.source || q.seq < p.seq || (q.seq == p.seq && j >= i)
                });
            if newest {
                C::add_summary(&mut sum, &p.summary);
                weekly.add_weekly(&p.weekly);
            }
        }
        self.sum = sum;
        self.weekly = weekly;
    }
}

impl<C: Exchange> Cell for Merged<C>
where
    C::Summary: Serialize + DeserializeOwned,
{
    type Summary = C::Summary;
    fn new(b: &Bounds) -> Self {
        Merged {
            parts: Vec::new(),
            stale: false,
            sum: C::Summary::default(),
            weekly: Weekly::new(b),
            minute: b.now.div_euclid(60),
            _cell: PhantomData,
        }
    }
    fn advance(&mut self, b: &Bounds) -> bool {
        // The parts' own numbers move when their sources send them again; what moves here is
        // what the series derive from the clock: the weeks of consistency and stage ages.
        self.settle(b);
        let had_weeks = !self.weekly.is_empty();
        let mut changed = false;
        if self.weekly.roll(b) {
            self.resum(b);
            changed |= had_weeks;
        }
        let minute = b.now.div_euclid(60);
        if minute != self.minute {
            self.minute = minute;
            changed |= C::moves_each_minute(&self.sum);
        }
        changed
    }
    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
    fn merge_into(&self, s: &mut C::Summary) {
        C::add_summary(s, &self.sum);
    }
    fn add_summary(into: &mut C::Summary, from: &C::Summary) {
        C::add_summary(into, from);
    }
    const MEASURED: &'static [crate::weekly::Measured] = C::MEASURED;
    fn weekly(&self) -> &Weekly {
        &self.weekly
    }
    fn settle(&mut self, b: &Bounds) {
        if self.stale {
            self.resum(b);
        }
    }
}

/// The series of the subjects of some slots, summed from the contributions sent to them.
#[derive(Debug)]
pub(crate) struct MergerOf<C: Exchange>
where
    C::Summary: Serialize + DeserializeOwned,
{
    cal: Calendar,
    bounds: Bounds,
    labels: C::Labels,
    /// The cells: the reps' and teams' series.
    ledger: Ledger<Merged<C>>,
    /// The teams' summaries sent to the org's slot, a cell per team (its rep and team both
    /// the team's id): the org's and the regions' series.
    org: Ledger<Merged<C>>,
    /// The teams held from each (source, group) of [`Contribution::teams`].
    org_groups: FastMap<(u32, u32), Vec<Arc<str>>>,
    slots: u32,
    owned: Vec<u32>,
}

impl<C: Exchange> MergerOf<C>
where
    C::Summary: Serialize + DeserializeOwned,
    C::Labels: std::fmt::Debug,
{
    pub fn new(cal: Calendar, bounds: Bounds, labels: C::Labels, slots: u32) -> Self {
        let ledger = Ledger::new().building(Builds::RepsAndTeams);
        MergerOf {
            cal,
            bounds,
            labels,
            ledger: if C::MEMBERS {
                ledger.with_members()
            } else {
                ledger
            },
            org: Ledger::new().building(Builds::OrgAndRegions),
            org_groups: FastMap::default(),
            slots: slots.max(1),
            owned: Vec::new(),
        }
    }

    fn owns(&self, s: &Subject) -> bool {
        self.owned.contains(&slot_of(s, self.slots))
    }

    pub fn apply(&mut self, c: &Contribution, source: u32) -> Result<(), PartError> {
        if let Some(group) = c.teams_group() {
            return self.apply_teams(group?, c.value.as_deref(), source);
        }
        let b = self.bounds;
        let rep = self.ledger.intern(&c.rep);
        let team = c.team.as_deref().map(|t| self.ledger.intern(t));
        let part = match &c.value {
            Some(v) => Some(self.decode(&rep, team.as_ref(), source, v)?),
            None => None,
        };
        if part.is_none() && !self.ledger.has_cell(&rep, team.as_ref()) {
            return Ok(());
        }
        self.ledger
            .cell(&rep, team.as_ref(), &b)
            .set(source, c.slot, part);
        self.ledger.release(&rep, team.as_ref());
        Ok(())
    }

    /// Replaces the summaries of the teams of `group` held from `source` (`None`: withdraws
    /// them).
    fn apply_teams(
        &mut self,
        group: u32,
        value: Option<&[u8]>,
        source: u32,
    ) -> Result<(), PartError> {
        let part: Option<TeamsPart<C::Summary>> = value
            .map(|v| postcard::from_bytes(v).map_err(|e| PartError(e.to_string())))
            .transpose()?;
        let b = self.bounds;
        let mut now: Vec<Arc<str>> = Vec::new();
        if let Some(p) = part {
            for (team, summary) in p.teams {
                let team = self.org.intern(&team);
                let part = Part {
                    seq: p.seq,
                    summary,
                    weekly: Weekly::default(),
                };
                self.org
                    .cell(&team, Some(&team), &b)
                    .set(source, ORG_SLOT, Some((part, 0)));
                now.push(team);
            }
        }
        let before = self.org_groups.remove(&(source, group)).unwrap_or_default();
        for team in before.iter().filter(|t| !now.contains(t)) {
            if self.org.has_cell(team, Some(team)) {
                self.org
                    .cell(team, Some(team), &b)
                    .set(source, ORG_SLOT, None);
                self.org.release(team, Some(team));
            }
        }
        if !now.is_empty() {
            self.org_groups.insert((source, group), now);
        }
        Ok(())
    }

    /// A part as sent, and its digest. A source sends the same part to each slot of the
    /// cell: one already held from another slot (same source, same bytes) is copied, not
    /// decoded again.
    fn decode(
        &self,
        rep: &Arc<str>,
        team: Option<&Arc<str>>,
        source: u32,
        v: &[u8],
    ) -> Result<(Part<C::Summary>, u64), PartError> {
        let digest = crate::ids::fnv1a([v]);
        let held = self.ledger.get(rep, team).and_then(|cell| {
            cell.parts
                .iter()
                .find(|p| p.source == source && p.digest == digest)
        });
        let part = match held {
            Some(p) => Part {
                seq: p.seq,
                summary: p.summary.clone(),
                weekly: p.weekly.clone(),
            },
            None => postcard::from_bytes(v).map_err(|e| PartError(e.to_string()))?,
        };
        Ok((part, digest))
    }

    pub fn tick(&mut self, now_ms: i64) {
        let now = now_ms.div_euclid(1000);
        if now <= self.bounds.now {
            return;
        }
        let hour = self.bounds.now.div_euclid(3_600);
        self.bounds = self.cal.bounds(now);
        let relabelled = C::relabel(&mut self.labels, &self.cal, &self.bounds);
        for l in [&mut self.ledger, &mut self.org] {
            l.advance(&self.bounds);
            if relabelled {
                l.touch_all(|_| ());
            }
            if now.div_euclid(3_600) != hour {
                l.gc_names();
            }
        }
    }

    pub fn set_owned(&mut self, owned: Vec<u32>) {
        self.ledger.set_owned(self.slots, owned.clone());
        self.org.set_owned(self.slots, owned.clone());
        self.owned = owned;
    }

    /// Forgets every part held from a slot not in `slots`, and the cells left empty.
    pub fn keep_slots(&mut self, slots: &[u32]) {
        if !slots.contains(&ORG_SLOT) {
            self.org_groups.clear();
        }
        for l in [&mut self.ledger, &mut self.org] {
            l.touch_all(|cell| {
                let before = cell.parts.len();
                cell.parts.retain(|p| slots.contains(&p.slot));
                cell.stale |= cell.parts.len() != before;
            });
            let mut empty = Vec::new();
            l.for_each_cell(|rep, team, cell| {
                if cell.is_empty() {
                    empty.push((rep.clone(), team.cloned()));
                }
            });
            for (rep, team) in empty {
                l.release(&rep, team.as_ref());
            }
        }
    }

    /// Applies `f` to both ledgers (the roster and the regions are the same for both).
    pub fn ledgers(&mut self, mut f: impl FnMut(&mut Ledger<Merged<C>>)) {
        f(&mut self.ledger);
        f(&mut self.org);
    }

    pub fn drain_changes(&mut self) -> Vec<SubjectSeries> {
        let labels = &self.labels;
        let build = |s: &C::Summary, b: &mut SeriesBuilder<'_>| C::build(labels, s, b);
        let mut out = self.ledger.drain(&build);
        out.extend(self.org.drain(&build));
        out.retain(|s| self.owns(&s.subject));
        out
    }

    pub fn snapshot(&mut self) -> Vec<SubjectSeries> {
        let labels = &self.labels;
        let build = |s: &C::Summary, b: &mut SeriesBuilder<'_>| C::build(labels, s, b);
        let mut out = self.ledger.snapshot(&build);
        out.extend(self.org.snapshot(&build));
        out.retain(|s| self.owns(&s.subject));
        out.sort_by(|a, b| a.subject.cmp(&b.subject));
        out
    }

    /// Cells held, and teams' summaries held for the org.
    pub fn cells(&self) -> usize {
        self.ledger.cells() + self.org.cells()
    }
}

/// The series of the subjects of some slots, summed from the contributions of every source
/// core (see the module's documentation).
#[derive(Debug)]
pub struct Merger(Family);

#[derive(Debug)]
enum Family {
    Deals(Box<MergerOf<crate::deals::DealCell>>),
    Activities(Box<MergerOf<crate::activities::ActivityCell>>),
}

/// Calls the same method on either family's merger.
macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match &mut $self.0 {
            Family::Deals($m) => $e,
            Family::Activities($m) => $e,
        }
    };
}

impl Merger {
    /// A merger of deal cells, building the series of the deals service.
    pub fn deals(contract: &Contract, cal: Calendar, now_ms: i64, slots: u32) -> Self {
        Merger(Family::Deals(Box::new(crate::deals::merger(
            contract, cal, now_ms, slots,
        ))))
    }

    /// A merger of activity cells, building the series of the activities service.
    pub fn activities(contract: &Contract, cal: Calendar, now_ms: i64, slots: u32) -> Self {
        Merger(Family::Activities(Box::new(crate::activities::merger(
            contract, cal, now_ms, slots,
        ))))
    }

    /// The slots whose subjects' series this merger builds; it holds whatever it is sent.
    pub fn set_owned(&mut self, owned: Vec<u32>) {
        each!(self, m => m.set_owned(owned))
    }

    /// Forgets what was sent to slots not in `slots`: a merger that gives slots up holds what
    /// it would hold had it read only those it keeps.
    pub fn keep_slots(&mut self, slots: &[u32]) {
        each!(self, m => m.keep_slots(slots))
    }

    /// Merges a contribution sent by source partition `source`.
    pub fn apply(&mut self, c: &Contribution, source: u32) -> Result<(), PartError> {
        each!(self, m => m.apply(c, source))
    }

    pub fn tick(&mut self, now_ms: i64) {
        each!(self, m => m.tick(now_ms))
    }

    pub fn configure_regions(&mut self, teams: &[(String, String)]) {
        each!(self, m => m.ledgers(|l| l.configure_regions(teams)))
    }

    /// Applies one roster record.
    pub fn roster(&mut self, ev: &salespulse_decode::RosterEvent) {
        each!(self, m => m.ledgers(|l| l.roster(ev)))
    }

    pub fn roster_upsert(&mut self, rep: &str, team: &str) {
        each!(self, m => m.ledgers(|l| l.roster_upsert(rep, team)))
    }

    pub fn roster_info(
        &mut self,
        rep: &str,
        name: Option<&str>,
        region: Option<&str>,
        hired_at: Option<chrono::NaiveDate>,
    ) {
        each!(self, m => m.ledgers(|l| l.roster_info(rep, name, region, hired_at)))
    }

    pub fn roster_remove(&mut self, rep: &str) {
        each!(self, m => m.ledgers(|l| l.roster_remove(rep)))
    }

    /// Series of the owned subjects that changed since the last call.
    pub fn drain_changes(&mut self) -> Vec<SubjectSeries> {
        each!(self, m => m.drain_changes())
    }

    /// Every current series of the owned subjects.
    pub fn snapshot(&mut self) -> Vec<SubjectSeries> {
        each!(self, m => m.snapshot())
    }

    /// Number of (rep, team) cells held.
    pub fn cells(&mut self) -> usize {
        each!(self, m => m.cells())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A group is sent while it has teams and withdrawn once when it has none; after
    /// `unknown`, every group is sent or withdrawn, whatever this run sent.
    #[test]
    fn team_groups_are_sent_and_withdrawn() {
        let mut r = Router::new(4);
        let team = |t: &str| (Arc::<str>::from(t), 7u8);
        let groups = |out: &[Contribution]| -> Vec<(u32, bool)> {
            out.iter()
                .map(|c| {
                    let g = c.teams_group().expect("a teams part").expect("a group");
                    (g, c.value.is_some())
                })
                .collect()
        };
        let sent = r.route_teams(vec![(1, vec![team("a"), team("b")]), (2, vec![])]);
        assert_eq!(
            groups(&sent),
            [(1, true)],
            "an empty group never sent is not sent"
        );
        assert!(sent.iter().all(|c| c.slot == ORG_SLOT && c.rep.is_empty()));
        let part: TeamsPart<u8> =
            postcard::from_bytes(sent[0].value.as_deref().expect("a value")).expect("decodes");
        assert_eq!(part.teams, [("a".to_owned(), 7), ("b".to_owned(), 7)]);
        let none: Vec<TeamGroup<u8>> = vec![(1, vec![])];
        assert_eq!(groups(&r.route_teams(none.clone())), [(1, false)]);
        assert!(r.route_teams(none).is_empty(), "withdrawn once");

        r.unknown(&FastSet::default());
        let all = r.team_groups(&[]);
        assert_eq!(all, [0, 1, 2, 3]);
        let out = r.route_teams(
            all.into_iter()
                .map(|g| (g, if g == 3 { vec![team("c")] } else { vec![] }))
                .collect(),
        );
        assert_eq!(
            groups(&out),
            [(0, false), (1, false), (2, false), (3, true)]
        );
        assert_eq!(r.team_groups(&[Arc::from("c")]).len(), 1, "known again");
    }

    #[test]
    fn a_cell_is_not_a_teams_part() {
        let cell = Contribution {
            slot: 0,
            rep: Arc::from("rep-1"),
            team: Some(Arc::from("3")),
            value: None,
        };
        assert!(cell.teams_group().is_none());
        assert_eq!(
            Contribution::teams(5, None)
                .teams_group()
                .map(|g| g.expect("a group")),
            Some(5)
        );
        let bad = Contribution {
            team: Some(Arc::from("x")),
            ..Contribution::teams(0, None)
        };
        assert!(matches!(bad.teams_group(), Some(Err(_))));
    }

    #[test]
    fn slots_are_stable_and_spread() {
        let n = 12;
        assert_eq!(slot_of(&Subject::Org, n), ORG_SLOT);
        assert_eq!(slot_of(&Subject::Region("emea".into()), n), ORG_SLOT);
        let a = slot_of(&Subject::Rep("rep-001".into()), n);
        assert_eq!(a, slot_of(&Subject::Rep("rep-001".into()), n));
        // Fixed values: a change of the hash would move every subject at an upgrade.
        assert_eq!(
            slot_of(&Subject::Team("team-emea".into()), 1_000_003),
            207_716
        );
        let mut used = BTreeSet::new();
        for i in 0..200 {
            used.insert(slot_of(&Subject::Rep(format!("rep-{i:03}").into()), n));
            used.insert(slot_of(&Subject::Team(format!("team-{i}").into()), n));
        }
        assert_eq!(used.len(), 12, "200 reps and teams use every slot");
        assert!(used.iter().all(|s| (0..n).contains(s)));
    }
}
