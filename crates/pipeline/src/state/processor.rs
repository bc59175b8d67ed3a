//! What differs between the services: which topic they read and which core they feed.

use salespulse_aggregate::{
    ActivitiesCore, Calendar, Contribution, DealsCore, Merger, Metric, Outcome, StateError,
    SubjectSeries,
};
use salespulse_decode::{Contract, DecodeError, Format, RosterEvent};
use salespulse_targets::EventRules;

use crate::config::TopicSettings;

/// A service's aggregation core, seen from the loop.
pub trait Processor: Send + 'static {
    /// Service name: `deals` or `activities`.
    const SERVICE: &'static str;
    /// The metrics this service computes (and so owns on `sales.metrics`).
    const METRICS: &'static [Metric];

    fn new(contract: &Contract, cal: Calendar, now_ms: i64) -> Self;
    fn input_topic(topics: &TopicSettings) -> &str;
    /// Decodes and applies one input record.
    fn handle(
        &mut self,
        contract: &Contract,
        key: Option<&[u8]>,
        payload: &[u8],
        format: Format,
        now_ms: i64,
    ) -> Result<Outcome, DecodeError>;
    /// Decodes one input record without applying it: whether it would be rejected, and why.
    fn check(
        contract: &Contract,
        key: Option<&[u8]>,
        payload: &[u8],
        format: Format,
        now_ms: i64,
    ) -> Result<(), DecodeError>;
    fn roster(&mut self, ev: &RosterEvent);
    /// Sets the configured region of teams (team → region).
    fn configure_regions(&mut self, teams: &[(String, String)]);
    fn tick(&mut self, now_ms: i64);
    fn drain_changes(&mut self) -> Vec<SubjectSeries>;
    /// Every current series.
    fn snapshot(&mut self) -> Vec<SubjectSeries>;
    /// Sizes of the in-memory state, by kind.
    fn state_sizes(&self) -> Vec<(&'static str, usize)>;
    /// The state, encoded for a snapshot.
    fn save(&self) -> Vec<u8>;
    /// Loads a snapshot into a core that has applied nothing yet.
    fn restore(&mut self, state: &[u8]) -> Result<(), StateError>;
    /// Loads a snapshot given in pieces, in order and cut anywhere (its chunks as they are
    /// read); a core that rebuilds from each piece as it comes overrides this.
    fn restore_pieces(
        &mut self,
        pieces: &mut dyn Iterator<Item = Vec<u8>>,
    ) -> Result<(), StateError> {
        let mut state = Vec::new();
        for p in pieces {
            state.extend_from_slice(&p);
        }
        self.restore(&state)
    }

    /// Divided ingest (see `crate::divided`): this core holds one input partition's records
    /// and sends its cells to `slots` slots instead of building series.
    fn exchange(&mut self, slots: u32);
    /// What the cells changed since the last call add up to, for the slots that merge them.
    fn drain_contributions(&mut self) -> Vec<Contribution>;
    /// What every cell adds up to now, as contributions, leaving the drains as they are.
    fn all_contributions(&mut self) -> Vec<Contribution>;
    /// Notes the cells touched from now on: the partition's records before the committed
    /// offset are replayed, and what the run before sent for them is not known.
    fn begin_recovery(&mut self);
    /// The next contributions send every cell noted and withdraw it from every other slot.
    fn end_recovery(&mut self);
    /// The merger of this service's cells, building its series.
    fn merger(contract: &Contract, cal: Calendar, now_ms: i64, slots: u32) -> Merger;

    /// Whether this service announces celebrations (to `sales.celebrations`).
    const CELEBRATES: bool = false;
    fn enable_celebrations(&mut self, _rules: &EventRules) {}
    /// Whether the next records are live (their celebrations are announced) or replayed.
    fn set_live(&mut self, _live: bool) {}
    /// Celebrations decided since the last call.
    fn take_celebrations(&mut self) -> Vec<Celebration> {
        Vec::new()
    }
}

/// A celebration to announce: its key on the celebrations topic (which announces it once),
/// its kind, and its record's value, JSON written once when it is decided.
#[derive(Debug, Clone)]
pub struct Celebration {
    pub key: String,
    /// `big_win`, …: the `celebration` field of the value.
    pub kind: &'static str,
    pub value: Vec<u8>,
}

/// A big win's record on the celebrations topic. The fields are in the order of their names,
/// as the JSON objects of the topic's other writers are.
#[derive(serde::Serialize)]
struct BigWin<'a> {
    amount: rust_decimal::Decimal,
    celebration: &'static str,
    closed_at: String,
    deal_id: &'a str,
    rep: &'a str,
    team: &'a str,
}

/// The kind of a deal won for at least the configured amount.
const BIG_WIN: &str = "big_win";

impl Celebration {
    fn big_win(w: &salespulse_aggregate::Win) -> Self {
        let closed_at = chrono::DateTime::from_timestamp(w.closed_at, 0)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let value = BigWin {
            amount: w.amount,
            celebration: BIG_WIN,
            closed_at,
            deal_id: &w.deal_id,
            rep: &w.rep,
            team: &w.team,
        };
        Celebration {
            key: format!("{BIG_WIN}/{}", w.deal_id),
            kind: BIG_WIN,
            value: serde_json::to_vec(&value).unwrap_or_default(),
        }
    }
}

impl Processor for DealsCore {
    const SERVICE: &'static str = "deals";
    const METRICS: &'static [Metric] = &Metric::DEALS;

    fn new(contract: &Contract, cal: Calendar, now_ms: i64) -> Self {
        DealsCore::new(contract, cal, now_ms)
    }
    fn input_topic(topics: &TopicSettings) -> &str {
        &topics.deals
    }
    fn handle(
        &mut self,
        contract: &Contract,
        key: Option<&[u8]>,
        payload: &[u8],
        format: Format,
        now_ms: i64,
    ) -> Result<Outcome, DecodeError> {
        contract.with_deal(key, payload, format, now_ms, |ev| self.apply(ev))
    }
    fn check(
        contract: &Contract,
        key: Option<&[u8]>,
        payload: &[u8],
        format: Format,
        now_ms: i64,
    ) -> Result<(), DecodeError> {
        contract.with_deal(key, payload, format, now_ms, |_| ())
    }
    fn roster(&mut self, ev: &RosterEvent) {
        DealsCore::roster(self, ev);
    }
    fn configure_regions(&mut self, teams: &[(String, String)]) {
        Self::configure_regions(self, teams);
    }
    fn tick(&mut self, now_ms: i64) {
        DealsCore::tick(self, now_ms);
    }
    fn drain_changes(&mut self) -> Vec<SubjectSeries> {
        DealsCore::drain_changes(self)
    }
    fn snapshot(&mut self) -> Vec<SubjectSeries> {
        DealsCore::snapshot(self)
    }
    fn state_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("deals", self.deals()), ("cells", self.cells())]
    }
    fn save(&self) -> Vec<u8> {
        DealsCore::save(self)
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), StateError> {
        DealsCore::restore(self, state)
    }
    fn restore_pieces(
        &mut self,
        pieces: &mut dyn Iterator<Item = Vec<u8>>,
    ) -> Result<(), StateError> {
        DealsCore::restore_pieces(self, pieces)
    }
    fn exchange(&mut self, slots: u32) {
        DealsCore::exchange(self, slots);
    }
    fn drain_contributions(&mut self) -> Vec<Contribution> {
        DealsCore::drain_contributions(self)
    }
    fn all_contributions(&mut self) -> Vec<Contribution> {
        DealsCore::all_contributions(self)
    }
    fn begin_recovery(&mut self) {
        DealsCore::begin_recovery(self);
    }
    fn end_recovery(&mut self) {
        DealsCore::end_recovery(self);
    }
    fn merger(contract: &Contract, cal: Calendar, now_ms: i64, slots: u32) -> Merger {
        Merger::deals(contract, cal, now_ms, slots)
    }

    const CELEBRATES: bool = true;
    fn enable_celebrations(&mut self, rules: &EventRules) {
        self.track_big_wins(rules.big_deal_amount);
    }
    fn set_live(&mut self, live: bool) {
        self.set_announcing(live);
    }
    fn take_celebrations(&mut self) -> Vec<Celebration> {
        self.take_wins().iter().map(Celebration::big_win).collect()
    }
}

impl Processor for ActivitiesCore {
    const SERVICE: &'static str = "activities";
    const METRICS: &'static [Metric] = &Metric::ACTIVITIES;

    fn new(contract: &Contract, cal: Calendar, now_ms: i64) -> Self {
        ActivitiesCore::new(contract, cal, now_ms)
    }
    fn input_topic(topics: &TopicSettings) -> &str {
        &topics.activities
    }
    fn handle(
        &mut self,
        contract: &Contract,
        key: Option<&[u8]>,
        payload: &[u8],
        format: Format,
        now_ms: i64,
    ) -> Result<Outcome, DecodeError> {
        contract.with_activity(key, payload, format, now_ms, |ev| self.apply(ev))
    }
    fn check(
        contract: &Contract,
        key: Option<&[u8]>,
        payload: &[u8],
        format: Format,
        now_ms: i64,
    ) -> Result<(), DecodeError> {
        contract.with_activity(key, payload, format, now_ms, |_| ())
    }
    fn roster(&mut self, ev: &RosterEvent) {
        ActivitiesCore::roster(self, ev);
    }
    fn configure_regions(&mut self, teams: &[(String, String)]) {
        Self::configure_regions(self, teams);
    }
    fn tick(&mut self, now_ms: i64) {
        ActivitiesCore::tick(self, now_ms);
    }
    fn drain_changes(&mut self) -> Vec<SubjectSeries> {
        ActivitiesCore::drain_changes(self)
    }
    fn snapshot(&mut self) -> Vec<SubjectSeries> {
        ActivitiesCore::snapshot(self)
    }
    fn state_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("cells", self.cells()),
            ("event_ids", self.remembered_ids()),
        ]
    }
    fn save(&self) -> Vec<u8> {
        ActivitiesCore::save(self)
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), StateError> {
        ActivitiesCore::restore(self, state)
    }
    fn exchange(&mut self, slots: u32) {
        ActivitiesCore::exchange(self, slots);
    }
    fn drain_contributions(&mut self) -> Vec<Contribution> {
        ActivitiesCore::drain_contributions(self)
    }
    fn all_contributions(&mut self) -> Vec<Contribution> {
        ActivitiesCore::all_contributions(self)
    }
    fn begin_recovery(&mut self) {
        ActivitiesCore::begin_recovery(self);
    }
    fn end_recovery(&mut self) {
        ActivitiesCore::end_recovery(self);
    }
    fn merger(contract: &Contract, cal: Calendar, now_ms: i64, slots: u32) -> Merger {
        Merger::activities(contract, cal, now_ms, slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The record of a big win is the JSON object subscribers read: compared with the object
    /// built field by field.
    #[test]
    fn a_big_win_is_announced_as_its_json_object() {
        let w = salespulse_aggregate::Win {
            deal_id: "d-\"7\"".into(),
            rep: Arc::from("r-1"),
            team: Arc::from("Émeraude"),
            amount: "12500.50".parse().expect("decimal"),
            closed_at: 1_796_600_000,
        };
        let c = Celebration::big_win(&w);
        assert_eq!(c.key, "big_win/d-\"7\"");
        assert_eq!(c.kind, "big_win");
        let expected = serde_json::json!({
            "celebration": "big_win", "deal_id": "d-\"7\"", "rep": "r-1", "team": "Émeraude",
            "amount": "12500.50", "closed_at": "2026-12-06T23:33:20Z",
        });
        let value: serde_json::Value = serde_json::from_slice(&c.value).expect("JSON");
        assert_eq!(value, expected);
        assert_eq!(c.value, serde_json::to_vec(&expected).expect("JSON"));
    }
}
