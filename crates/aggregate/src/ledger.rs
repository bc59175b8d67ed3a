//! Who owns which numbers: cells of facts per (rep, team), the roster that resolves a rep's
//! team, and which subjects changed since they were last emitted.
//!
//! A cell is keyed by the rep and the team the record named itself (or none). Its effective
//! team is that team, else the rep's team on the roster, else [`UNASSIGNED`]; so a roster move
//! re-labels cells without touching their facts.

use chrono::NaiveDate;
use std::sync::Arc;

use crate::{FastMap as HashMap, FastSet as HashSet};

use crate::calendar::Bounds;
use crate::exchange::{Contribution, Router};
use crate::regions::Regions;
use crate::series::{Metric, Scope, Series, SeriesBuilder, Subject, SubjectSeries};
use crate::weekly::{Measured, Weekly};

/// Team of a record that names none and whose rep is not on the roster.
pub const UNASSIGNED: &str = "unassigned";

/// Aggregated facts of one (rep, team).
pub(crate) trait Cell {
    type Summary: Default + Clone + std::fmt::Debug;
    fn new(b: &Bounds) -> Self;
    /// Moves the cell's windows to `b`; returns whether any value changed.
    fn advance(&mut self, b: &Bounds) -> bool;
    /// True when the cell holds nothing that any series could show.
    fn is_empty(&self) -> bool;
    fn merge_into(&self, summary: &mut Self::Summary);
    /// Adds one summary to another (a team's to the org's).
    fn add_summary(into: &mut Self::Summary, from: &Self::Summary);
    /// What the cell's weekly sums measure, for a rep's consistency.
    const MEASURED: &'static [Measured];
    fn weekly(&self) -> &Weekly;
    /// Brings what the cell shows up to date with what was put in it since the last call; the
    /// ledger calls it before any summary of a changed cell is read.
    fn settle(&mut self, _b: &Bounds) {}
}

#[derive(Debug)]
struct RepEntry<C> {
    cells: Vec<(Option<Arc<str>>, C)>,
    /// A cell was handed out since the last drain (the rep is in `Ledger::touched`).
    touched: bool,
    /// Effective teams of `cells`, as indexed in `Ledger::team_index`.
    teams: Vec<Arc<str>>,
}

#[derive(Debug)]
pub(crate) struct Ledger<C: Cell> {
    reps: HashMap<Arc<str>, RepEntry<C>>,
    roster: HashMap<Arc<str>, Arc<str>>,
    team_index: HashMap<Arc<str>, HashSet<Arc<str>>>,
    names: Names,
    dirty_reps: HashSet<Arc<str>>,
    dirty_teams: HashSet<Arc<str>>,
    /// Reps whose cells were handed out since the last drain; they and their cells' teams
    /// are marked changed at the drain, so handing out a cell costs one lookup.
    touched: Vec<Arc<str>>,
    dirty_org: bool,
    unassigned: Arc<str>,
    /// Every team's summary as of the last drain: the org's is their sum, so a drain costs
    /// the cells of the teams that changed, not all cells.
    team_sums: HashMap<Arc<str>, C::Summary>,
    /// Whether each rep on the roster has a [`Metric::Member`] series.
    members: bool,
    /// Name, region and hiring date of reps on the roster that have them.
    info: HashMap<Arc<str>, RepInfo>,
    /// The clock the cells were last moved to.
    bounds: Option<Bounds>,
    /// The slots (of how many) whose subjects' series are built; all when `None`.
    owned: Option<(u32, Vec<u32>)>,
    /// The scopes whose series are built at all (a merger builds the org's and the regions'
    /// from teams' summaries, in a ledger of their own).
    builds: Builds,
    /// While recovering, every cell handed out (see [`Ledger::begin_recovery`]).
    recovering: Option<HashSet<CellKey>>,
    /// Where the cells go when this ledger is one of several that divide the records (see
    /// [`Ledger::exchange`]).
    router: Option<Router>,
    /// The `metric` label of each of [`Cell::MEASURED`].
    measured: Vec<Arc<str>>,
    regions: Regions,
    /// The roster changed since the teams' regions were derived.
    regions_stale: bool,
    dirty_regions: HashSet<Arc<str>>,
    /// Regions whose series were last emitted non-empty.
    emitted_regions: HashSet<Arc<str>>,
}

/// The scopes whose series a ledger builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builds {
    Every,
    RepsAndTeams,
    OrgAndRegions,
}

/// A cell's key: its rep and the team its records named, if any.
pub(crate) type CellKey = (Arc<str>, Option<Arc<str>>);

/// What a rep's cells add up to, for the slots that merge them (see `exchange.rs`).
pub(crate) struct RepCells<S> {
    pub rep: Arc<str>,
    pub cells: Vec<CellPart<S>>,
}

/// One cell of [`RepCells`].
pub(crate) struct CellPart<S> {
    /// The team its records named, if any.
    pub team: Option<Arc<str>>,
    /// That team, else the rep's roster team, else [`UNASSIGNED`].
    pub effective: Arc<str>,
    pub summary: S,
    pub weekly: Weekly,
}

/// What the roster says about a rep besides its team.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepInfo {
    pub name: Option<Arc<str>>,
    pub region: Option<Arc<str>>,
    /// `YYYY-MM-DD`.
    pub hired_at: Option<Arc<str>>,
}

impl<C: Cell> Ledger<C> {
    pub fn new() -> Self {
        Ledger {
            reps: HashMap::default(),
            roster: HashMap::default(),
            team_index: HashMap::default(),
            names: Names::default(),
            dirty_reps: HashSet::default(),
            dirty_teams: HashSet::default(),
            touched: Vec::new(),
            dirty_org: false,
            unassigned: Arc::from(UNASSIGNED),
            team_sums: HashMap::default(),
            members: false,
            info: HashMap::default(),
            bounds: None,
            owned: None,
            builds: Builds::Every,
            recovering: None,
            router: None,
            measured: C::MEASURED.iter().map(|m| Arc::from(m.name)).collect(),
            regions: Regions::default(),
            regions_stale: false,
            dirty_regions: HashSet::default(),
            emitted_regions: HashSet::default(),
        }
    }

    /// Sets the configured region of teams (team → region); other teams take the region most
    /// of their reps have on the roster.
    pub fn configure_regions(&mut self, teams: &[(String, String)]) {
        let teams: Vec<(Arc<str>, Arc<str>)> = teams
            .iter()
            .map(|(t, r)| (self.intern(t), self.intern(r)))
            .collect();
        self.regions.configure(teams);
        self.regions_stale = true;
    }

    /// The region of a team, when there are regions.
    fn region_of(&self, team: &Arc<str>) -> Option<Arc<str>> {
        self.regions.region_of(team, &self.unassigned)
    }

    /// Derives the teams' regions again if the roster changed since: every region shown before
    /// and every region now is then emitted again.
    fn settle_regions(&mut self) {
        if !std::mem::take(&mut self.regions_stale) {
            return;
        }
        let changed = self
            .regions
            .derive(&self.roster, &self.info, &self.unassigned);
        if !changed.is_empty() {
            self.dirty_regions
                .extend(self.emitted_regions.iter().cloned());
            let now: Vec<Arc<str>> = self
                .team_index
                .keys()
                .filter_map(|t| self.region_of(t))
                .collect();
            self.dirty_regions.extend(now);
        }
    }

    /// Gives every rep on the roster a [`Metric::Member`] series under its roster team. One
    /// service per deployment does, so that each series has one owner.
    pub fn with_members(mut self) -> Self {
        self.members = true;
        self
    }

    /// A shared copy of an id, so that deals and cells do not each own one.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        self.names.intern(s)
    }

    /// A copy of the interned ids (for [`crate::deals::Preparer`]).
    pub fn names(&self) -> Names {
        self.names.clone()
    }

    /// See [`Names::adopt`].
    pub fn adopt(&mut self, a: Arc<str>) -> Arc<str> {
        self.names.adopt(a)
    }

    /// Drops interned ids nothing refers to any more.
    pub fn gc_names(&mut self) {
        self.names.0.retain(|a| Arc::strong_count(a) > 1);
    }

    pub fn effective(&self, rep: &str, team: Option<&Arc<str>>) -> Arc<str> {
        team.or_else(|| self.roster.get(rep))
            .unwrap_or(&self.unassigned)
            .clone()
    }

    /// The cell of `(rep, team)`, created when missing; the rep, its team and the org are
    /// marked as changed.
    pub fn cell(&mut self, rep: &Arc<str>, team: Option<&Arc<str>>, b: &Bounds) -> &mut C {
        self.dirty_org = true;
        if let Some(seen) = &mut self.recovering {
            seen.insert((rep.clone(), team.cloned()));
        }
        // The clock moves at `advance`; a cell handed out before the first tick sets it.
        if self.bounds.is_none() {
            self.bounds = Some(*b);
        }
        let found = self
            .reps
            .get(rep)
            .and_then(|e| e.cells.iter().position(|(t, _)| t.as_ref() == team));
        let pos = match found {
            Some(p) => p,
            None => {
                let entry = self.reps.entry(rep.clone()).or_insert_with(|| RepEntry {
                    cells: Vec::new(),
                    touched: false,
                    teams: Vec::new(),
                });
                entry.cells.push((team.cloned(), C::new(b)));
                self.reindex(rep);
                self.reps.get(rep).map(|e| e.cells.len() - 1).unwrap_or(0)
            }
        };
        let entry = self
            .reps
            .get_mut(rep)
            .expect("entry exists: inserted above");
        if !entry.touched {
            entry.touched = true;
            self.touched.push(rep.clone());
        }
        &mut entry.cells[pos].1
    }

    /// Reads the rep's first cell, so that its cache lines are on their way while the caller
    /// does other work. With thousands of reps the cells are out of cache: a deal record would
    /// otherwise wait for the deal map's entry and only then, after it, for the cell.
    pub fn warm(&self, rep: &str) {
        if let Some(e) = self.reps.get(rep) {
            std::hint::black_box(e.cells.first().map(|(team, _)| team.is_some()));
        }
    }

    /// [`Ledger::cell`] by name: a cell that exists is found without interning its rep and
    /// team (a lookup in the names and two shared counts changed, for every record).
    pub fn cell_named(&mut self, rep: &str, team: Option<&str>, b: &Bounds) -> &mut C {
        let found = match (&self.recovering, &self.bounds) {
            (None, Some(_)) => self.reps.get_key_value(rep).and_then(|(key, e)| {
                let pos = e.cells.iter().position(|(t, _)| t.as_deref() == team)?;
                Some((pos, (!e.touched).then(|| key.clone())))
            }),
            _ => None,
        };
        let Some((pos, first_touch)) = found else {
            let rep = self.intern(rep);
            let team = team.map(|t| self.intern(t));
            return self.cell(&rep, team.as_ref(), b);
        };
        self.dirty_org = true;
        if let Some(key) = first_touch {
            self.touched.push(key);
        }
        let entry = self.reps.get_mut(rep).expect("found above");
        entry.touched = true;
        &mut entry.cells[pos].1
    }

    /// Marks the reps whose cells were handed out, and their cells' teams, as changed.
    fn mark_touched(&mut self) {
        for rep in std::mem::take(&mut self.touched) {
            if let Some(entry) = self.reps.get_mut(&rep) {
                entry.touched = false;
                if let Some(b) = &self.bounds {
                    for (_, c) in &mut entry.cells {
                        c.settle(b);
                    }
                }
                for (t, _) in &entry.cells {
                    let eff = t.as_ref().or_else(|| self.roster.get(&rep));
                    self.dirty_teams
                        .insert(eff.unwrap_or(&self.unassigned).clone());
                }
            }
            self.dirty_reps.insert(rep);
        }
    }

    /// Whether `(rep, team)` has a cell.
    pub fn has_cell(&self, rep: &str, team: Option<&Arc<str>>) -> bool {
        self.get(rep, team).is_some()
    }

    /// The cell of `(rep, team)`, if there is one.
    pub fn get(&self, rep: &str, team: Option<&Arc<str>>) -> Option<&C> {
        let entry = self.reps.get(rep)?;
        entry
            .cells
            .iter()
            .find(|(t, _)| t.as_ref() == team)
            .map(|(_, c)| c)
    }

    /// Builds only the series of the subjects of `owned` among `slots` slots (see
    /// [`crate::slot_of`]); the cells of other subjects are held all the same.
    pub fn set_owned(&mut self, slots: u32, owned: Vec<u32>) {
        self.owned = Some((slots, owned));
    }

    /// Builds the series of `scopes` only.
    pub fn building(mut self, scopes: Builds) -> Self {
        self.builds = scopes;
        self
    }

    fn owns(&self, subject: &Subject) -> bool {
        let org = matches!(subject, Subject::Org | Subject::Region(_));
        let scoped = match self.builds {
            Builds::Every => true,
            Builds::RepsAndTeams => !org,
            Builds::OrgAndRegions => org,
        };
        scoped
            && self
                .owned
                .as_ref()
                .is_none_or(|(n, o)| o.contains(&crate::exchange::slot_of(subject, *n)))
    }

    /// Starts noting every cell handed out, besides those held now: a restored core that
    /// replays its input does not know where the run before it sent them.
    pub fn begin_recovery(&mut self) {
        let mut seen = HashSet::default();
        for (rep, entry) in &self.reps {
            for (team, _) in &entry.cells {
                seen.insert((rep.clone(), team.clone()));
            }
        }
        self.recovering = Some(seen);
    }

    /// The cells noted since [`Ledger::begin_recovery`] are marked as changed, and the next
    /// [`Ledger::drain_contributions`] sends each of them and withdraws it from every other
    /// slot: where the run before sent them is unknown.
    pub fn end_recovery(&mut self) {
        let seen = self.recovering.take().unwrap_or_default();
        for (rep, _) in &seen {
            self.dirty_reps.insert(rep.clone());
        }
        if let Some(r) = &mut self.router {
            r.unknown(&seen);
        }
    }

    /// Makes this ledger one of several that divide the records: it sends its cells to
    /// `slots` slots ([`Ledger::drain_contributions`]) instead of building series.
    pub fn exchange(&mut self, slots: u32) {
        self.router = Some(Router::new(slots));
    }

    /// What the cells changed since the last call add up to, for the slots that merge them
    /// (none unless [`Ledger::exchange`] was called), and for the org's slot the summaries
    /// of the teams those changes touched, with every other team of their slots.
    pub fn drain_contributions(&mut self, now: i64) -> Vec<Contribution>
    where
        C::Summary: serde::Serialize,
    {
        let Some(mut router) = self.router.take() else {
            return Vec::new();
        };
        let (cells, teams) = self.drain_cells();
        let groups = router.team_groups(&teams);
        let out = self.route(&mut router, cells, groups, now);
        self.router = Some(router);
        out
    }

    /// The contributions of `cells`, then those of the teams of the slots `groups`, through
    /// `router`.
    fn route(
        &self,
        router: &mut Router,
        cells: Vec<RepCells<C::Summary>>,
        groups: Vec<u32>,
        now: i64,
    ) -> Vec<Contribution>
    where
        C::Summary: serde::Serialize,
    {
        let mut out = router.route(cells, now);
        let teams = groups
            .into_iter()
            .map(|g| (g, self.teams_of_group(g, router.slots())))
            .collect();
        out.extend(router.route_teams(teams));
        out
    }

    /// The summaries of the teams whose series are built in slot `group` of `slots`.
    fn teams_of_group(&self, group: u32, slots: u32) -> Vec<(Arc<str>, C::Summary)> {
        let mut teams: Vec<&Arc<str>> = self
            .team_index
            .keys()
            .filter(|t| crate::exchange::slot_of(&Subject::Team((*t).clone()), slots) == group)
            .collect();
        teams.sort();
        teams
            .into_iter()
            .filter_map(|t| self.summary_of_team(t).map(|s| (t.clone(), s)))
            .collect()
    }

    /// What every cell and every team of every slot adds up to now, as contributions (none
    /// unless [`Ledger::exchange`] was called), without changing what the drains send: the
    /// sum of these over every source is what the merged slots hold once each source's
    /// next drain is on the topic.
    pub fn all_contributions(&mut self, now: i64) -> Vec<Contribution>
    where
        C::Summary: serde::Serialize,
    {
        let Some(mut router) = self.router.clone() else {
            return Vec::new();
        };
        // Settles what changed since the last drain; it stays marked for the next.
        self.mark_touched();
        let mut reps: Vec<&Arc<str>> = self.reps.keys().collect();
        reps.sort();
        let cells = reps.into_iter().map(|r| self.rep_cells(r)).collect();
        let groups = (0..router.slots()).collect();
        let mut out = self.route(&mut router, cells, groups, now);
        out.retain(|c| c.value.is_some());
        out
    }

    /// The cells of every rep that changed since the last call, instead of their series, and
    /// the teams those changes touched: a core that holds only some partitions' records sends
    /// them to be merged. What changed for the regions and the org follows from the teams.
    fn drain_cells(&mut self) -> (Vec<RepCells<C::Summary>>, Vec<Arc<str>>) {
        self.mark_touched();
        let teams: Vec<Arc<str>> = self.dirty_teams.drain().collect();
        self.dirty_regions.clear();
        self.dirty_org = false;
        let mut reps: Vec<Arc<str>> = self.dirty_reps.drain().collect();
        reps.sort();
        let cells = reps.iter().map(|r| self.rep_cells(r)).collect();
        (cells, teams)
    }

    /// What each cell of `rep` adds up to.
    fn rep_cells(&self, rep: &Arc<str>) -> RepCells<C::Summary> {
        let cells = self
            .reps
            .get(rep)
            .map(|e| {
                e.cells
                    .iter()
                    .map(|(team, cell)| {
                        let mut summary = C::Summary::default();
                        cell.merge_into(&mut summary);
                        CellPart {
                            team: team.clone(),
                            effective: self.effective(rep, team.as_ref()),
                            summary,
                            weekly: cell.weekly().clone(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        RepCells {
            rep: rep.clone(),
            cells,
        }
    }

    /// Removes the cell of `(rep, team)` if it holds nothing.
    pub fn release(&mut self, rep: &Arc<str>, team: Option<&Arc<str>>) {
        let Some(entry) = self.reps.get_mut(rep) else {
            return;
        };
        let before = entry.cells.len();
        entry
            .cells
            .retain(|(t, c)| t.as_ref() != team || !c.is_empty());
        if entry.cells.len() != before {
            self.reindex(rep);
        }
    }

    /// Recomputes which teams a rep's cells count in, marking teams that gain or lose it.
    fn reindex(&mut self, rep: &Arc<str>) {
        let Some(entry) = self.reps.get(rep) else {
            return;
        };
        let mut now: Vec<Arc<str>> = entry
            .cells
            .iter()
            .map(|(t, _)| self.effective(rep, t.as_ref()))
            .collect();
        now.sort();
        now.dedup();
        let old = std::mem::take(&mut self.reps.get_mut(rep).expect("checked above").teams);
        for t in old.iter().filter(|t| !now.contains(t)) {
            if let Some(set) = self.team_index.get_mut(t) {
                set.remove(rep);
                if set.is_empty() {
                    self.team_index.remove(t);
                }
            }
            self.dirty_teams.insert(t.clone());
        }
        for t in now.iter().filter(|t| !old.contains(t)) {
            self.team_index
                .entry(t.clone())
                .or_default()
                .insert(rep.clone());
            self.dirty_teams.insert(t.clone());
        }
        let empty = now.is_empty();
        if let Some(e) = self.reps.get_mut(rep) {
            e.teams = now;
        }
        if empty {
            self.reps.remove(rep);
        }
    }

    /// Applies one roster record: a rep joins or moves (with its name, region and hiring
    /// date), or leaves.
    pub fn roster(&mut self, ev: &salespulse_decode::RosterEvent) {
        match ev {
            salespulse_decode::RosterEvent::Upsert {
                rep_id,
                team_id,
                name,
                region,
                hired_at,
            } => {
                self.roster_upsert(rep_id, team_id);
                self.roster_info(rep_id, name.as_deref(), region.as_deref(), *hired_at);
            }
            salespulse_decode::RosterEvent::Remove { rep_id } => self.roster_remove(rep_id),
        }
    }

    pub fn roster_upsert(&mut self, rep: &str, team: &str) {
        self.regions_stale = true;
        let rep = self.intern(rep);
        let team = self.intern(team);
        if self.roster.get(&rep) == Some(&team) {
            return;
        }
        // Cells that name no team change hands even when the set of teams stays the same.
        let before = self.effective(&rep, None);
        self.dirty_teams.insert(before);
        self.dirty_teams.insert(team.clone());
        self.roster.insert(rep.clone(), team);
        self.dirty_reps.insert(rep.clone());
        self.reindex(&rep);
    }

    /// Sets a rep's name, region and hiring date; its series carry the name from now on.
    pub fn roster_info(
        &mut self,
        rep: &str,
        name: Option<&str>,
        region: Option<&str>,
        hired_at: Option<NaiveDate>,
    ) {
        let info = RepInfo {
            name: name.map(|n| self.intern(n)),
            region: region.map(|r| self.intern(r)),
            hired_at: hired_at.map(|d| self.intern(&d.to_string())),
        };
        let rep = self.intern(rep);
        if self.info.get(&rep).unwrap_or(&RepInfo::default()) == &info {
            return;
        }
        self.regions_stale = true;
        if info == RepInfo::default() {
            self.info.remove(&rep);
        } else {
            self.info.insert(rep.clone(), info);
        }
        self.dirty_reps.insert(rep);
    }

    pub fn roster_remove(&mut self, rep: &str) {
        self.regions_stale = true;
        self.info.remove(rep);
        if let Some((rep, team)) = self.roster.remove_entry(rep) {
            self.dirty_teams.insert(team);
            self.dirty_teams.insert(self.unassigned.clone());
            self.dirty_reps.insert(rep.clone());
            self.reindex(&rep);
        }
    }

    /// Moves every cell to `b`, marking what changed, and drops cells left empty.
    pub fn advance(&mut self, b: &Bounds) {
        self.bounds = Some(*b);
        let mut emptied = Vec::new();
        let mut changed = Vec::new();
        for (rep, entry) in self.reps.iter_mut() {
            for (team, cell) in entry.cells.iter_mut() {
                if cell.advance(b) {
                    changed.push((rep.clone(), team.clone()));
                }
                if cell.is_empty() {
                    emptied.push((rep.clone(), team.clone()));
                }
            }
        }
        for (rep, team) in changed {
            let eff = self.effective(&rep, team.as_ref());
            self.dirty_teams.insert(eff);
            self.dirty_reps.insert(rep);
            self.dirty_org = true;
        }
        for (rep, team) in emptied {
            self.release(&rep, team.as_ref());
        }
    }

    /// Applies `f` to every cell and marks every subject as changed (used when the current
    /// periods roll over, about once a day).
    pub fn touch_all(&mut self, mut f: impl FnMut(&mut C)) {
        for (rep, entry) in self.reps.iter_mut() {
            for (_, cell) in entry.cells.iter_mut() {
                f(cell);
            }
            self.dirty_reps.insert(rep.clone());
            self.dirty_teams.extend(entry.teams.iter().cloned());
        }
        self.dirty_org = true;
    }

    pub fn cells(&self) -> usize {
        self.reps.values().map(|e| e.cells.len()).sum()
    }

    /// Visits every cell with its rep and the team its records named (if any).
    pub fn for_each_cell(&self, mut f: impl FnMut(&Arc<str>, Option<&Arc<str>>, &C)) {
        for (rep, entry) in &self.reps {
            for (team, cell) in &entry.cells {
                f(rep, team.as_ref(), cell);
            }
        }
    }

    fn summaries_of_rep(&self, rep: &str) -> Vec<(Arc<str>, C::Summary)> {
        let mut out: Vec<(Arc<str>, C::Summary)> = Vec::new();
        if !self.roster.contains_key(rep) {
            return out;
        }
        let Some(entry) = self.reps.get(rep) else {
            return out;
        };
        for (team, cell) in &entry.cells {
            let eff = self.effective(rep, team.as_ref());
            let pos = match out.iter().position(|(t, _)| *t == eff) {
                Some(p) => p,
                None => {
                    out.push((eff, C::Summary::default()));
                    out.len() - 1
                }
            };
            cell.merge_into(&mut out[pos].1);
        }
        out
    }

    /// A rep's consistency over the last complete weeks, under its roster team: its weekly
    /// sums under every team, from its first full week after `hired_at` on.
    fn push_consistency(
        &self,
        rep: &Arc<str>,
        name: Option<&Arc<str>>,
        info: Option<&RepInfo>,
        series: &mut Vec<Series>,
    ) {
        let (Some(team), Some(b), Some(entry)) = (
            self.roster.get(rep),
            self.bounds.as_ref(),
            self.reps.get(rep),
        ) else {
            return;
        };
        // Series exist while a measured week, the current or the next holds a fact.
        if C::MEASURED.is_empty() || !entry.cells.iter().any(|(_, c)| c.weekly().any_measured(b)) {
            return;
        }
        let mut weeks = Vec::new();
        for (_, cell) in &entry.cells {
            cell.weekly().merge_complete(&mut weeks, b);
        }
        let first_week = b.week - b.weeks as i64;
        let hired = info
            .and_then(|i| i.hired_at.as_deref())
            .and_then(|d| d.parse::<NaiveDate>().ok())
            .map_or(first_week, crate::calendar::first_full_week);
        let first = usize::try_from(hired - first_week).unwrap_or(0);
        let mut builder = SeriesBuilder {
            scope: Scope::Rep,
            rep: Some(rep),
            team: Some(team),
            region: None,
            name,
            out: series,
        };
        crate::weekly::push_consistency(C::MEASURED, &weeks, first, &self.measured, &mut builder);
    }

    /// The series of `region` from its teams' summaries; none without a team.
    fn region_series<'s, F>(
        region: &Arc<str>,
        teams: impl Iterator<Item = std::borrow::Cow<'s, C::Summary>>,
        build: &F,
    ) -> Vec<Series>
    where
        C::Summary: 's,
        F: Fn(&C::Summary, &mut SeriesBuilder<'_>),
    {
        let mut series = Vec::new();
        let mut s = C::Summary::default();
        let mut any = false;
        for t in teams {
            C::add_summary(&mut s, &t);
            any = true;
        }
        if any {
            build(
                &s,
                &mut SeriesBuilder {
                    scope: Scope::Region,
                    rep: None,
                    team: None,
                    region: Some(region),
                    name: None,
                    out: &mut series,
                },
            );
        }
        series
    }

    fn summary_of_team(&self, team: &Arc<str>) -> Option<C::Summary> {
        let reps = self.team_index.get(team)?;
        let mut s = C::Summary::default();
        for rep in reps {
            let Some(entry) = self.reps.get(rep) else {
                continue;
            };
            for (t, cell) in &entry.cells {
                if self.effective(rep, t.as_ref()) == *team {
                    cell.merge_into(&mut s);
                }
            }
        }
        Some(s)
    }

    fn summary_of_org(&self) -> Option<C::Summary> {
        if self.reps.is_empty() {
            return None;
        }
        let mut s = C::Summary::default();
        for entry in self.reps.values() {
            for (_, cell) in &entry.cells {
                cell.merge_into(&mut s);
            }
        }
        Some(s)
    }

    /// The current series of one subject.
    pub fn series_of<F>(&self, subject: &Subject, build: &F) -> SubjectSeries
    where
        F: Fn(&C::Summary, &mut SeriesBuilder<'_>),
    {
        let mut series: Vec<Series> = Vec::new();
        match subject {
            Subject::Rep(rep) => {
                let info = self.info.get(rep);
                let name = info.and_then(|i| i.name.as_ref());
                for (team, s) in self.summaries_of_rep(rep) {
                    build(
                        &s,
                        &mut SeriesBuilder {
                            scope: Scope::Rep,
                            rep: Some(rep),
                            team: Some(&team),
                            region: None,
                            name,
                            out: &mut series,
                        },
                    );
                }
                if let Some(team) = self.roster.get(rep).filter(|_| self.members) {
                    let mut b = SeriesBuilder {
                        scope: Scope::Rep,
                        rep: Some(rep),
                        team: Some(team),
                        region: None,
                        name,
                        out: &mut series,
                    };
                    let one = rust_decimal::Decimal::ONE;
                    b.push(Metric::Member, None, None, one);
                    // The name falls back to the id, so that a board joining on it always has one.
                    let region = info.and_then(|i| i.region.as_ref());
                    let hired_at = info.and_then(|i| i.hired_at.as_ref());
                    b.push_labels(
                        Metric::Info,
                        None,
                        [Some(name.unwrap_or(rep)), region, hired_at],
                        one,
                    );
                }
                self.push_consistency(rep, name, info, &mut series);
            }
            Subject::Region(region) => {
                let teams = self
                    .team_index
                    .keys()
                    .filter(|t| self.region_of(t).as_ref() == Some(region))
                    .filter_map(|t| self.summary_of_team(t))
                    .map(std::borrow::Cow::Owned);
                series = Self::region_series(region, teams, build);
            }
            Subject::Team(team) => {
                if let Some(s) = self.summary_of_team(team) {
                    build(
                        &s,
                        &mut SeriesBuilder {
                            scope: Scope::Team,
                            rep: None,
                            team: Some(team),
                            region: None,
                            name: None,
                            out: &mut series,
                        },
                    );
                }
            }
            Subject::Org => {
                if let Some(s) = self.summary_of_org() {
                    build(
                        &s,
                        &mut SeriesBuilder {
                            scope: Scope::Org,
                            rep: None,
                            team: None,
                            region: None,
                            name: None,
                            out: &mut series,
                        },
                    );
                }
            }
        }
        SubjectSeries {
            subject: subject.clone(),
            series,
        }
    }

    /// Series of every subject that changed since the last call.
    pub fn drain<F>(&mut self, build: &F) -> Vec<SubjectSeries>
    where
        F: Fn(&C::Summary, &mut SeriesBuilder<'_>),
    {
        self.mark_touched();
        self.settle_regions();
        let mut out: Vec<SubjectSeries> = Vec::new();
        let mut reps: Vec<Arc<str>> = self.dirty_reps.drain().collect();
        reps.sort();
        for rep in reps {
            let subject = Subject::Rep(rep);
            if self.owns(&subject) {
                out.push(self.series_of(&subject, build));
            }
        }
        // A team's summary is needed for its own series and, with every other team's, for the
        // org's and the regions'.
        let org = self.owns(&Subject::Org);
        // Every change to a team's numbers marks it dirty, so after this loop `team_sums`
        // holds every team's current summary.
        let mut teams: Vec<Arc<str>> = self.dirty_teams.drain().collect();
        teams.sort();
        for team in teams {
            let owned = self.owns(&Subject::Team(team.clone()));
            if !owned && !org {
                continue;
            }
            if let Some(region) = self.region_of(&team) {
                self.dirty_regions.insert(region);
            }
            let mut series = Vec::new();
            match self.summary_of_team(&team) {
                Some(s) if !owned => {
                    self.team_sums.insert(team.clone(), s);
                    continue;
                }
                Some(s) => {
                    build(
                        &s,
                        &mut SeriesBuilder {
                            scope: Scope::Team,
                            rep: None,
                            team: Some(&team),
                            region: None,
                            name: None,
                            out: &mut series,
                        },
                    );
                    self.team_sums.insert(team.clone(), s);
                }
                None => {
                    self.team_sums.remove(&team);
                    if !owned {
                        continue;
                    }
                }
            }
            out.push(SubjectSeries {
                subject: Subject::Team(team),
                series,
            });
        }
        // A region's summary is the sum of its teams' (all current after the loop above).
        let mut regions: Vec<Arc<str>> = self.dirty_regions.drain().collect();
        regions.sort();
        regions.retain(|r| self.owns(&Subject::Region(r.clone())));
        for region in regions {
            let teams = self
                .team_sums
                .iter()
                .filter(|(team, _)| self.region_of(team).as_ref() == Some(&region))
                .map(|(_, t)| std::borrow::Cow::Borrowed(t));
            let series = Self::region_series(&region, teams, build);
            if series.is_empty() {
                self.emitted_regions.remove(&region);
            } else {
                self.emitted_regions.insert(region.clone());
            }
            out.push(SubjectSeries {
                subject: Subject::Region(region),
                series,
            });
        }
        if std::mem::take(&mut self.dirty_org) && org {
            let mut series = Vec::new();
            if !self.reps.is_empty() {
                let mut s = C::Summary::default();
                for t in self.team_sums.values() {
                    C::add_summary(&mut s, t);
                }
                build(
                    &s,
                    &mut SeriesBuilder {
                        scope: Scope::Org,
                        rep: None,
                        team: None,
                        region: None,
                        name: None,
                        out: &mut series,
                    },
                );
            }
            out.push(SubjectSeries {
                subject: Subject::Org,
                series,
            });
        }
        out
    }

    /// Series of every subject that has any.
    pub fn snapshot<F>(&mut self, build: &F) -> Vec<SubjectSeries>
    where
        F: Fn(&C::Summary, &mut SeriesBuilder<'_>),
    {
        // What a snapshot shows is what later drains change: the regions are settled first.
        self.settle_regions();
        if let Some(b) = &self.bounds {
            for rep in &self.touched {
                for (_, c) in self
                    .reps
                    .get_mut(rep)
                    .into_iter()
                    .flat_map(|e| &mut e.cells)
                {
                    c.settle(b);
                }
            }
        }
        let mut subjects: Vec<Subject> = self.roster.keys().cloned().map(Subject::Rep).collect();
        subjects.extend(self.team_index.keys().cloned().map(Subject::Team));
        let mut regions: Vec<Arc<str>> = self
            .team_index
            .keys()
            .filter_map(|t| self.region_of(t))
            .collect();
        regions.sort();
        regions.dedup();
        subjects.extend(regions.into_iter().map(Subject::Region));
        subjects.push(Subject::Org);
        subjects.retain(|s| self.owns(s));
        subjects.sort();
        let out: Vec<SubjectSeries> = subjects
            .iter()
            .map(|s| self.series_of(s, build))
            .filter(|s| !s.series.is_empty())
            .collect();
        for s in &out {
            if let Subject::Region(r) = &s.subject {
                self.emitted_regions.insert(r.clone());
            }
        }
        out
    }
}

/// Ids held once and shared: each deal and cell refers to the one copy of its rep's and team's
/// ids.
#[derive(Debug, Clone, Default)]
pub struct Names(HashSet<Arc<str>>);

impl Names {
    /// The shared copy of `s`, made when it is new.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }

    /// Interns `a`, taking it as the shared copy when its id is new; one that is the shared
    /// copy already comes back as it is, with no count changed.
    pub fn adopt(&mut self, a: Arc<str>) -> Arc<str> {
        match self.0.get(&*a) {
            Some(have) if Arc::ptr_eq(have, &a) => a,
            Some(have) => have.clone(),
            None => {
                self.0.insert(a.clone());
                a
            }
        }
    }
}
