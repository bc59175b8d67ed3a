//! The record generator: deals moving through their stages, activities, roster changes and
//! the faults a real CRM integration produces. Pure: the caller supplies every instant, so the
//! same seed, configuration and instants always give the same records.
//!
//! Deals follow a schedule: each stage visit is planned to last days (see [`crate::pipeline`])
//! and the deal moves when the visit is due, so a backfill, whose instants span days, shows
//! stage times and ages in days. Live instants pass too slowly for that schedule alone, so a
//! share of the deal changes also moves the deal that is due next ahead of its time: live
//! runs show stage changes every few seconds, as a compressed clock would.

use std::collections::VecDeque;

use chrono::{DateTime, NaiveDate};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use crate::encode::{garble, Format, WireActivity, WireDeal};
use crate::org::Org;
use crate::pipeline::{
    days_after, entry_call, next_stage, pulled_in, pushed, recall, slipped, visit_ms, Fate, DAY_MS,
    HOUR_MS, NEGOTIATION, PROPOSAL, STAGES, WON,
};
use crate::rhythm::{self, Backfill, PEAK_WEIGHT};

const KINDS: [(&str, u32); 5] = [
    ("email", 40),
    ("call", 30),
    ("meeting", 12),
    ("task", 12),
    ("demo", 6),
];
const CURRENCIES: [(&str, u32); 3] = [("USD", 70), ("EUR", 20), ("GBP", 10)];
/// Where lost deals drop out, by open stage: most die early.
const LOST_AT: [(usize, u32); 4] = [(0, 35), (1, 30), (2, 20), (3, 15)];

/// The services only look back this far, so a late record must not be older.
const LATE_HORIZON_MS: i64 = 30 * DAY_MS;

/// Share of ordinary records that are activities; the rest are deal changes.
const ACTIVITY_SHARE: f64 = 0.68;
const WIN_SHARE: f64 = 0.3;
/// Open deals per rep around which creation and closing balance out.
const OPEN_PER_REP: usize = 40;
/// The most deals the org starts with; a larger org fills its pipeline as it goes.
const OPENING_DEALS: usize = 20_000;
/// How long before the first instant the deals of the opening pipeline may have been created.
const HISTORY_MS: i64 = 90 * DAY_MS;
/// Shares of the deal changes with no deal due that edit a deal without moving it, and that
/// move the deal due next ahead of its time. In a backfill the early moves shorten stage
/// visits somewhat, which still last days; live, where little falls due, they are what keeps
/// stages changing every few seconds.
const EDIT_SHARE: f64 = 0.05;
const EARLY_SHARE: f64 = 0.05;
/// Chances that a deal change with nothing due opens a deal, below and above the target.
const CREATE_BELOW_TARGET: f64 = 0.6;
const CREATE_ABOVE_TARGET: f64 = 0.01;
/// Share of won deals that come back to negotiation days later, as when a signature falls
/// through, and how many days later.
const REOPEN_SHARE: f64 = 0.04;
const REOPEN_AFTER_DAYS: std::ops::Range<i64> = 1..10;
/// Share of new deals that get an expected close date; the rest have none yet.
const DATED_SHARE: f64 = 0.85;
/// Earlier records kept for re-sending as duplicates.
const RECENT_RECORDS: usize = 256;
/// Closed deals kept for stale re-sends.
const CLOSED_DEALS: usize = 512;

/// Kafka topic of a record; the names are configured by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Deals,
    Activities,
    Roster,
}

impl Topic {
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a deliberately malformed record breaks the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformation {
    /// Not JSON (or not protobuf) at all.
    Garbled,
    MissingField,
    NegativeAmount,
    UnknownStage,
    UnknownKind,
    UnknownCurrency,
    FarFuture,
    EmptyId,
    /// A deal's forecast_category that is none of the five.
    UnknownForecastCategory,
}

impl Malformation {
    pub const ALL: [Malformation; 9] = [
        Malformation::Garbled,
        Malformation::MissingField,
        Malformation::NegativeAmount,
        Malformation::UnknownStage,
        Malformation::UnknownKind,
        Malformation::UnknownCurrency,
        Malformation::FarFuture,
        Malformation::EmptyId,
        Malformation::UnknownForecastCategory,
    ];
}

/// A deliberately injected oddity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// An exact copy of an earlier record, event id included.
    Duplicate,
    /// An older state of a deal, under a new event id, after a newer state was sent.
    Stale,
    /// A change that happened hours ago and arrives only now.
    Late,
    Malformed(Malformation),
}

/// One Kafka record, ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: Topic,
    pub key: String,
    pub value: Vec<u8>,
    /// Value of the `content-type` header.
    pub content_type: &'static str,
    pub fault: Option<Fault>,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub teams: usize,
    pub reps: usize,
    pub format: Format,
    /// Chance per record of a roster change.
    pub roster_move_share: f64,
    pub duplicate_share: f64,
    pub stale_share: f64,
    pub late_share: f64,
    pub malformed_share: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 42,
            teams: 4,
            reps: 24,
            format: Format::Json,
            roster_move_share: 0.002,
            duplicate_share: 0.01,
            stale_share: 0.005,
            late_share: 0.01,
            malformed_share: 0.002,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{name} must be between 0 and 1, got {value}")]
    Share { name: &'static str, value: f64 },
    #[error("the duplicate, stale, late and malformed shares add up to {0:.3}, more than 1")]
    FaultsExceedOne(f64),
    #[error("the org needs at least one team and one rep")]
    EmptyOrg,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.teams == 0 || self.reps == 0 {
            return Err(ConfigError::EmptyOrg);
        }
        let shares = [
            ("--roster-move-share", self.roster_move_share),
            ("--duplicate-share", self.duplicate_share),
            ("--stale-share", self.stale_share),
            ("--late-share", self.late_share),
            ("--malformed-share", self.malformed_share),
        ];
        for (name, value) in shares {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::Share { name, value });
            }
        }
        let faults =
            self.duplicate_share + self.stale_share + self.late_share + self.malformed_share;
        if faults > 1.0 {
            return Err(ConfigError::FaultsExceedOne(faults));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct DealState {
    deal_id: String,
    /// Index of the owner in the org.
    rep: usize,
    /// Set on the few deals whose CRM record names a team; the rest take the roster's.
    team_id: Option<String>,
    stage: usize,
    amount_cents: i64,
    currency: &'static str,
    created_ms: i64,
    occurred_ms: i64,
    closed_ms: Option<i64>,
    expected_close: Option<NaiveDate>,
    /// The rep's forecast call, when the record names one instead of leaving the stage's.
    forecast: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Deal {
    state: DealState,
    /// The state before the last change, for stale re-sends.
    prev: Option<DealState>,
    fate: Fate,
    /// When the current stage visit is planned to end; for a won deal that will be reopened,
    /// when it reopens.
    due_ms: i64,
    /// Moves back a stage so far.
    regressions: u8,
}

/// A deal change that does not move the deal to another stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    Owner,
    Amount,
    /// The close date slips by days or weeks.
    Slip,
    /// The close date moves into a later fiscal quarter.
    Push,
    /// The close date moves into an earlier fiscal quarter.
    PullIn,
    /// The close date is cleared until the buyer names one again.
    Undate,
    /// The rep changes the forecast call.
    Call,
}

const EDITS: [(Edit, u32); 7] = [
    (Edit::Owner, 6),
    (Edit::Amount, 22),
    (Edit::Slip, 18),
    (Edit::Push, 14),
    (Edit::PullIn, 8),
    (Edit::Undate, 3),
    (Edit::Call, 25),
];

/// The next scheduled deal change: an open deal's move, or a won deal's reopening.
#[derive(Debug, Clone, Copy)]
enum Due {
    Open(usize),
    Reopen(usize),
}

/// The simulated org and everything that happens in it.
#[derive(Debug)]
pub struct Generator {
    cfg: Config,
    rng: ChaCha8Rng,
    org: Org,
    open: Vec<Deal>,
    closed: VecDeque<Deal>,
    /// Won deals that will be reopened when due.
    reopening: Vec<Deal>,
    /// Whether the opening pipeline has gone out.
    opened: bool,
    /// No scheduled change is due before this instant.
    due_floor: i64,
    recent: VecDeque<Record>,
    pending: VecDeque<Record>,
    next_deal: u64,
    /// Latest instant seen; instants never go back even if the caller's clock does.
    clock_ms: i64,
    /// The caller's "now" (the end of a backfill), which bounds lateness and futurity.
    reference_ms: i64,
}

pub(crate) fn pick<T: Copy, R: Rng>(rng: &mut R, weighted: &[(T, u32)]) -> T {
    let total: u32 = weighted.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total.max(1));
    for &(v, w) in weighted {
        if x < w {
            return v;
        }
        x -= w;
    }
    weighted[0].0
}

fn date_of(ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

/// Cents for an amount in dollars kept within 2k–200k: mostly round hundreds, as people quote
/// them, the rest to the cent.
fn round_amount<R: Rng>(rng: &mut R, dollars: f64) -> i64 {
    let dollars = dollars.clamp(2_000.0, 200_000.0);
    if rng.random_bool(0.8) {
        (dollars / 100.0).round() as i64 * 10_000
    } else {
        (dollars * 100.0).round() as i64
    }
}

pub(crate) fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Generator {
    pub fn new(cfg: Config) -> Result<Generator, ConfigError> {
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let org = Org::new(
            &mut rng,
            cfg.teams,
            cfg.reps,
            chrono::Utc::now().date_naive(),
        );
        let mut g = Generator {
            cfg,
            rng,
            org,
            open: Vec::new(),
            closed: VecDeque::new(),
            reopening: Vec::new(),
            opened: false,
            due_floor: i64::MIN,
            recent: VecDeque::new(),
            pending: VecDeque::new(),
            next_deal: 0,
            clock_ms: 0,
            reference_ms: 0,
        };
        // The services resolve teams through the roster, so it goes out before anything else.
        g.pending = (0..g.org.reps().len())
            .map(|i| g.roster_record(i))
            .collect();
        Ok(g)
    }

    pub fn org(&self) -> &Org {
        &self.org
    }

    /// The full roster, if it has not gone out yet; the records after it come from
    /// [`Generator::next_record`] and [`Generator::backfill_record`].
    pub fn take_roster(&mut self) -> Vec<Record> {
        self.pending.drain(..).collect()
    }

    /// The next record of a backfill, stamped by its simulated clock; `None` once the backfill
    /// has reached its end.
    pub fn backfill_record(&mut self, backfill: &mut Backfill) -> Option<Record> {
        if let Some(r) = self.pending.pop_front() {
            return Some(r);
        }
        self.reference_ms = self.reference_ms.max(backfill.end_ms());
        let t = backfill.advance(&mut self.rng)?;
        Some(self.next_record(t))
    }

    /// The next record at `now_ms` (Unix ms). The roster comes first, then the opening
    /// pipeline (see [`Generator::open_pipeline`]).
    pub fn next_record(&mut self, now_ms: i64) -> Record {
        if let Some(r) = self.pending.pop_front() {
            return r;
        }
        let now = now_ms.max(self.clock_ms);
        self.clock_ms = now;
        self.reference_ms = self.reference_ms.max(now);
        if !self.opened {
            self.opened = true;
            self.open_pipeline(now);
            if let Some(r) = self.pending.pop_front() {
                return r;
            }
        }
        if self.rng.random::<f64>() < self.cfg.roster_move_share {
            if let Some(r) = self.roster_change() {
                return r;
            }
        }
        let roll: f64 = self.rng.random();
        let c = &self.cfg;
        let dup = c.duplicate_share;
        let stale = dup + c.stale_share;
        let late = stale + c.late_share;
        let malformed = late + c.malformed_share;
        let injected = if roll < dup {
            self.duplicate()
        } else if roll < stale {
            self.stale()
        } else if roll < late {
            self.late(now)
        } else if roll < malformed {
            Some(self.malformed(now))
        } else {
            None
        };
        // A fault that has nothing to work on yet (no earlier record to repeat) gives way to
        // an ordinary record.
        injected.unwrap_or_else(|| self.ordinary(now))
    }

    fn record(&self, topic: Topic, key: String, value: Vec<u8>, fault: Option<Fault>) -> Record {
        Record {
            topic,
            key,
            value,
            content_type: self.cfg.format.content_type(),
            fault,
        }
    }

    fn remember(&mut self, r: &Record) {
        if self.recent.len() == RECENT_RECORDS {
            self.recent.pop_front();
        }
        self.recent.push_back(r.clone());
    }

    /// A random version 4 UUID; drawn from the seeded generator so that runs repeat.
    fn event_id(&mut self) -> String {
        let v: u128 = self.rng.random();
        let v = (v & !(0xf << 76)) | (0x4 << 76);
        let v = (v & !(0x3 << 62)) | (0x2 << 62);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            v >> 96,
            (v >> 80) & 0xffff,
            (v >> 64) & 0xffff,
            (v >> 48) & 0xffff,
            v & 0xffff_ffff_ffff
        )
    }

    fn roster_record(&self, rep: usize) -> Record {
        let entry = self.org.roster_entry(rep);
        let value = entry.encode(self.cfg.format);
        self.record(Topic::Roster, entry.rep_id, value, None)
    }

    fn roster_change(&mut self) -> Option<Record> {
        let (rep, _) = self.org.change(&mut self.rng)?;
        Some(self.roster_record(rep))
    }

    fn ordinary(&mut self, now: i64) -> Record {
        let r = if self.rng.random_bool(ACTIVITY_SHARE) {
            self.activity_record(now, None)
        } else {
            self.deal_change(now)
        };
        self.remember(&r);
        r
    }

    fn duplicate(&mut self) -> Option<Record> {
        if self.recent.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.recent.len());
        let mut r = self.recent[i].clone();
        r.fault = Some(Fault::Duplicate);
        Some(r)
    }

    fn stale(&mut self) -> Option<Record> {
        let n = self.open.len() + self.closed.len();
        if n == 0 {
            return None;
        }
        for _ in 0..8 {
            let i = self.rng.random_range(0..n);
            let deal = match self.open.get(i) {
                Some(d) => d,
                None => &self.closed[i - self.open.len()],
            };
            if let Some(prev) = deal.prev.clone() {
                let event_id = self.event_id();
                let value = self.wire_deal(&prev, event_id).encode(self.cfg.format);
                return Some(self.record(Topic::Deals, prev.deal_id, value, Some(Fault::Stale)));
            }
        }
        None
    }

    fn late(&mut self, now: i64) -> Option<Record> {
        // Log-uniform between one hour and a week: mostly hours, sometimes days.
        let hours = (7.0f64 * 24.0).powf(self.rng.random::<f64>());
        let on_deal = self.rng.random_bool(0.35);
        let t = (now - (hours * HOUR_MS as f64) as i64)
            .max(self.reference_ms - LATE_HORIZON_MS + HOUR_MS);
        if t > now - HOUR_MS {
            return None;
        }
        let r = if on_deal {
            self.late_deal(t)
        } else {
            self.activity_record(t, Some(Fault::Late))
        };
        self.remember(&r);
        Some(r)
    }

    /// The first record of a deal that was opened, and maybe advanced, hours ago. Updating an
    /// existing deal instead would need one whose last change is older still; which deals
    /// qualify would depend on the wall clock, and two live runs with one seed would diverge.
    fn late_deal(&mut self, t: i64) -> Record {
        let opened = t - self.rng.random_range(0..6 * HOUR_MS);
        let mut deal = self.new_deal(opened);
        let stage = self.rng.random_range(0..NEGOTIATION);
        deal.state.occurred_ms = t;
        enter_stage(&mut self.rng, &mut deal, stage);
        let r = self.deal_record(&deal.state, Some(Fault::Late));
        self.add_open(deal);
        r
    }

    fn malformed(&mut self, now: i64) -> Record {
        let m = *Malformation::ALL
            .choose(&mut self.rng)
            .unwrap_or(&Malformation::Garbled);
        let on_deal = match m {
            Malformation::NegativeAmount
            | Malformation::UnknownStage
            | Malformation::UnknownCurrency
            | Malformation::UnknownForecastCategory => true,
            Malformation::UnknownKind => false,
            _ => self.rng.random_bool(0.5),
        };
        let format = self.cfg.format;
        let fault = Some(Fault::Malformed(m));
        let future = self.reference_ms.max(now)
            + self.rng.random_range(30..400) * DAY_MS
            + self.rng.random_range(0..DAY_MS);
        if on_deal {
            let state = match self.open.choose(&mut self.rng) {
                Some(d) => d.state.clone(),
                None => self.new_deal(now).state,
            };
            let event_id = self.event_id();
            let mut w = self.wire_deal(&state, event_id);
            let key = w.deal_id.clone();
            let value = match m {
                Malformation::Garbled => {
                    let cut = self.rng.random();
                    garble(&w.encode(format), format, cut)
                }
                Malformation::MissingField if format == Format::Json => {
                    let fields = [
                        "event_id",
                        "deal_id",
                        "rep_id",
                        "stage",
                        "amount",
                        "currency",
                        "created_at",
                        "occurred_at",
                    ];
                    let field = fields.choose(&mut self.rng).copied().unwrap_or("stage");
                    w.json_without(field)
                }
                Malformation::MissingField => {
                    // Protobuf strings default to empty; only messages can be absent.
                    if self.rng.random_bool(0.5) {
                        w.created_at = None;
                    } else {
                        w.occurred_at = None;
                    }
                    w.encode(format)
                }
                Malformation::NegativeAmount => {
                    w.amount = format!("-{}", w.amount);
                    w.encode(format)
                }
                Malformation::UnknownStage | Malformation::UnknownKind => {
                    let bad = ["won", "Closed Won", "discovery", "PROPOSAL", "on_hold"];
                    w.stage = bad.choose(&mut self.rng).copied().unwrap_or("won").into();
                    w.encode(format)
                }
                Malformation::UnknownCurrency => {
                    let bad = ["JPY", "usd", "BTC", "CHF", "XXX"];
                    w.currency = bad.choose(&mut self.rng).copied().unwrap_or("JPY").into();
                    w.encode(format)
                }
                Malformation::UnknownForecastCategory => {
                    // What a free-text CRM field or another tool's picklist lets through.
                    let bad = ["maybe", "Commit", "upside", "BEST_CASE", "won"];
                    let bad = bad.choose(&mut self.rng).copied().unwrap_or("maybe");
                    w.forecast_category = Some(bad.into());
                    w.encode(format)
                }
                Malformation::FarFuture => {
                    w.occurred_at = Some(future);
                    w.encode(format)
                }
                Malformation::EmptyId => {
                    match self.rng.random_range(0..3) {
                        0 => w.event_id.clear(),
                        1 => w.deal_id.clear(),
                        _ => w.rep_id.clear(),
                    }
                    w.encode(format)
                }
            };
            self.record(Topic::Deals, key, value, fault)
        } else {
            let mut w = self.activity_wire(now);
            let key = w.rep_id.clone();
            let value = match m {
                Malformation::Garbled => {
                    let cut = self.rng.random();
                    garble(&w.encode(format), format, cut)
                }
                Malformation::MissingField if format == Format::Json => {
                    let fields = ["event_id", "rep_id", "kind", "occurred_at"];
                    let field = fields.choose(&mut self.rng).copied().unwrap_or("kind");
                    w.json_without(field)
                }
                Malformation::MissingField => {
                    w.occurred_at = None;
                    w.encode(format)
                }
                Malformation::FarFuture => {
                    w.occurred_at = Some(future);
                    w.encode(format)
                }
                Malformation::EmptyId => {
                    if self.rng.random_bool(0.5) {
                        w.event_id.clear();
                    } else {
                        w.rep_id.clear();
                    }
                    w.encode(format)
                }
                // Deal-only breakages never land here; the kind is what an activity can get
                // wrong instead.
                _ => {
                    let bad = ["sms", "linkedin", "Call", "webinar", "lunch"];
                    w.kind = bad.choose(&mut self.rng).copied().unwrap_or("sms").into();
                    w.encode(format)
                }
            };
            self.record(Topic::Activities, key, value, fault)
        }
    }

    fn activity_wire(&mut self, t: i64) -> WireActivity {
        let linked = self.rng.random_bool(0.35);
        let mut rep = None;
        let mut deal_id = None;
        if linked {
            if let Some(d) = self.open.choose(&mut self.rng) {
                if self.org.is_active(d.state.rep) {
                    rep = Some(d.state.rep);
                    deal_id = Some(d.state.deal_id.clone());
                }
            }
        }
        let rep = match rep {
            Some(r) => r,
            None => self.org.random_active(&mut self.rng),
        };
        let kind = pick(&mut self.rng, &KINDS);
        let duration_seconds = match kind {
            "call" => Some(self.rng.random_range(45..1800)),
            "meeting" => Some(self.rng.random_range(1..=4) * 900),
            "demo" => Some(self.rng.random_range(2..=6) * 900),
            "task" if self.rng.random_bool(0.3) => Some(self.rng.random_range(5..=60) * 60),
            _ => None,
        };
        let team_id = self
            .rng
            .random_bool(0.05)
            .then(|| self.org.team_of(rep).to_owned());
        WireActivity {
            event_id: self.event_id(),
            rep_id: self.org.rep(rep).id.clone(),
            team_id,
            kind: kind.to_owned(),
            occurred_at: Some(t),
            deal_id,
            duration_seconds,
        }
    }

    fn activity_record(&mut self, t: i64, fault: Option<Fault>) -> Record {
        let w = self.activity_wire(t);
        let value = w.encode(self.cfg.format);
        self.record(Topic::Activities, w.rep_id, value, fault)
    }

    fn wire_deal(&self, s: &DealState, event_id: String) -> WireDeal {
        WireDeal {
            event_id,
            deal_id: s.deal_id.clone(),
            rep_id: self.org.rep(s.rep).id.clone(),
            team_id: s.team_id.clone(),
            stage: STAGES[s.stage].to_owned(),
            amount: Decimal::new(s.amount_cents, 2).to_string(),
            currency: s.currency.to_owned(),
            created_at: Some(s.created_ms),
            occurred_at: Some(s.occurred_ms),
            closed_at: s.closed_ms,
            expected_close_date: s.expected_close.map(|d| d.format("%Y-%m-%d").to_string()),
            forecast_category: s.forecast.map(str::to_owned),
        }
    }

    fn deal_record(&mut self, s: &DealState, fault: Option<Fault>) -> Record {
        let event_id = self.event_id();
        let value = self.wire_deal(s, event_id).encode(self.cfg.format);
        self.record(Topic::Deals, s.deal_id.clone(), value, fault)
    }

    fn draw_amount(&mut self) -> i64 {
        let z = standard_normal(&mut self.rng);
        let dollars = (15_000f64.ln() + 0.9 * z).exp();
        round_amount(&mut self.rng, dollars)
    }

    fn next_deal_id(&mut self) -> String {
        self.next_deal += 1;
        // The seed is part of the id so that runs with different seeds never share deals.
        format!("deal-{}-{:06}", self.cfg.seed, self.next_deal)
    }

    fn new_deal(&mut self, created: i64) -> Deal {
        let mut deal = self.draw_deal(created);
        deal.state.deal_id = self.next_deal_id();
        deal
    }

    /// A deal opened at `created`, in prospecting, still without its id.
    fn draw_deal(&mut self, created: i64) -> Deal {
        let rep = self.org.random_active(&mut self.rng);
        let currency = pick(&mut self.rng, &CURRENCIES);
        let amount_cents = self.draw_amount();
        let team_id = self
            .rng
            .random_bool(0.06)
            .then(|| self.org.team_of(rep).to_owned());
        let expected_close = self.rng.random_bool(DATED_SHARE).then(|| {
            let days = self.rng.random_range(14..120);
            date_of(created + days * DAY_MS)
        });
        let fate = if self.rng.random_bool(WIN_SHARE) {
            Fate::Won
        } else {
            Fate::LostAt(pick(&mut self.rng, &LOST_AT))
        };
        let mut deal = Deal {
            state: DealState {
                deal_id: String::new(),
                rep,
                team_id,
                stage: 0,
                amount_cents,
                currency,
                created_ms: created,
                occurred_ms: created,
                closed_ms: None,
                expected_close,
                forecast: None,
            },
            prev: None,
            fate,
            due_ms: created,
            regressions: 0,
        };
        enter_stage(&mut self.rng, &mut deal, 0);
        deal
    }

    /// The pipeline the org already has when the simulation starts at `t0`: deals opened over
    /// the last 90 days that are still open, each with the records of its stages so far, all
    /// stamped before `t0`. Without it the first days would show no stage ages in days and no
    /// stalled or overdue deals, and a backfill of a few days would never get there.
    fn open_pipeline(&mut self, t0: i64) {
        let n = (self.org.reps().len() * OPEN_PER_REP).min(OPENING_DEALS);
        let mut opening: Vec<(Deal, Vec<DealState>)> = Vec::with_capacity(n);
        while opening.len() < n {
            let created = t0 - self.rng.random_range(HOUR_MS..HISTORY_MS);
            let mut deal = self.draw_deal(created);
            let mut history = vec![deal.state.clone()];
            // Plays the plan up to `t0`; a deal that closes before is not part of it.
            while deal.due_ms < t0 && deal.state.stage < WON {
                let at = deal.due_ms;
                move_deal(&mut self.rng, &mut deal, at);
                history.push(deal.state.clone());
            }
            if deal.state.stage < WON {
                opening.push((deal, history));
            }
        }
        // Ids in the order the deals were opened, as a CRM numbers them.
        opening.sort_by_key(|(d, _)| d.state.created_ms);
        let mut states = Vec::new();
        for (mut deal, mut history) in opening {
            let id = self.next_deal_id();
            for s in &mut history {
                s.deal_id.clone_from(&id);
            }
            deal.state.deal_id = id;
            deal.prev = history.iter().rev().nth(1).cloned();
            states.extend(history);
            self.add_open(deal);
        }
        states.sort_by_key(|s| s.occurred_ms);
        for s in states {
            let r = self.deal_record(&s, None);
            self.pending.push_back(r);
        }
    }

    /// A deal record, or an activity when no deal has anything to do: deals change every few
    /// days, far less often than reps log calls and emails.
    fn deal_change(&mut self, now: i64) -> Record {
        // Reps move deals in working hours: what falls due at night or at the weekend mostly
        // waits for the next working morning.
        if now >= self.due_floor && self.rng.random_bool(rhythm::weight(now) / PEAK_WEIGHT) {
            if let Some((_, due)) = self.next_due().filter(|&(t, _)| t <= now) {
                return self.apply_due(due, now);
            }
        }
        let roll: f64 = self.rng.random();
        if roll < EDIT_SHARE && !self.open.is_empty() {
            let edit = pick(&mut self.rng, &EDITS);
            let i = self.deal_to_edit(edit, now);
            return self.edit(i, edit, now);
        }
        if roll < EDIT_SHARE + EARLY_SHARE {
            if let Some((_, due)) = self.next_due() {
                return self.apply_due(due, now);
            }
        }
        let target = self.org.reps().len() * OPEN_PER_REP;
        let create = if self.open.len() < target {
            CREATE_BELOW_TARGET
        } else {
            CREATE_ABOVE_TARGET
        };
        if self.rng.random_bool(create) {
            let deal = self.new_deal(now);
            let r = self.deal_record(&deal.state, None);
            self.add_open(deal);
            return r;
        }
        self.activity_record(now, None)
    }

    /// The scheduled change due first, and when. Looks at every deal, so it also notes when
    /// that is, for [`Generator::deal_change`] to skip the look until then.
    fn next_due(&mut self) -> Option<(i64, Due)> {
        let open = self
            .open
            .iter()
            .enumerate()
            .map(|(i, d)| (d.due_ms, Due::Open(i)));
        let reopen = self
            .reopening
            .iter()
            .enumerate()
            .map(|(i, d)| (d.due_ms, Due::Reopen(i)));
        let next = open.chain(reopen).min_by_key(|&(t, _)| t);
        self.due_floor = next.map_or(i64::MAX, |(t, _)| t);
        next
    }

    /// Keeps `due_floor` at or below every scheduled change.
    fn schedule(&mut self, due_ms: i64) {
        self.due_floor = self.due_floor.min(due_ms);
    }

    fn add_open(&mut self, deal: Deal) {
        self.schedule(deal.due_ms);
        self.open.push(deal);
    }

    fn apply_due(&mut self, due: Due, now: i64) -> Record {
        match due {
            Due::Open(i) => self.move_stage(i, now),
            Due::Reopen(i) => self.reopen(i, now),
        }
    }

    /// A CRM reassigns the deals of a rep who left; returns whether it did.
    fn reassign_if_gone(&mut self, s: &mut DealState) -> bool {
        if self.org.is_active(s.rep) {
            return false;
        }
        let rep = self.org.random_active(&mut self.rng);
        self.set_owner(s, rep);
        true
    }

    fn set_owner(&self, s: &mut DealState, rep: usize) {
        s.rep = rep;
        if s.team_id.is_some() {
            s.team_id = Some(self.org.team_of(rep).to_owned());
        }
    }

    /// Moves open deal `i` to its next stage at `now`, as planned or ahead of plan.
    fn move_stage(&mut self, i: usize, now: i64) -> Record {
        let mut deal = self.open[i].clone();
        let prev = deal.state.clone();
        self.reassign_if_gone(&mut deal.state);
        move_deal(&mut self.rng, &mut deal, now);
        deal.prev = Some(prev);
        let r = self.deal_record(&deal.state, None);
        if deal.state.stage < WON {
            self.schedule(deal.due_ms);
            self.open[i] = deal;
            return r;
        }
        self.open.swap_remove(i);
        if deal.state.stage == WON && self.rng.random_bool(REOPEN_SHARE) {
            deal.due_ms = now + self.rng.random_range(REOPEN_AFTER_DAYS) * DAY_MS;
            self.schedule(deal.due_ms);
            self.reopening.push(deal);
        } else {
            if self.closed.len() == CLOSED_DEALS {
                self.closed.pop_front();
            }
            self.closed.push_back(deal);
        }
        r
    }

    /// A random open deal, for a pull-in one whose date lies far enough out if a few tries
    /// find one: buyers ask to sign a quarter sooner only on deals dated that far.
    fn deal_to_edit(&mut self, edit: Edit, now: i64) -> usize {
        let today = date_of(now);
        let mut i = self.rng.random_range(0..self.open.len());
        for _ in 0..8 {
            let date = self.open[i].state.expected_close;
            if edit != Edit::PullIn || date.and_then(|d| pulled_in(d, today)).is_some() {
                break;
            }
            i = self.rng.random_range(0..self.open.len());
        }
        i
    }

    /// Changes open deal `i` at `now` without moving it: what reps do between stage changes.
    fn edit(&mut self, i: usize, edit: Edit, now: i64) -> Record {
        let mut s = self.open[i].state.clone();
        let prev = s.clone();
        // Strictly later, so that the services can tell every state from the one before.
        s.occurred_ms = now.max(s.occurred_ms + 1);
        if !self.reassign_if_gone(&mut s) {
            self.apply_edit(&mut s, edit);
        }
        let r = self.deal_record(&s, None);
        let deal = &mut self.open[i];
        deal.prev = Some(prev);
        deal.state = s;
        r
    }

    /// One edit; a change of the close date changes nothing else, as when a rep moves it.
    fn apply_edit(&mut self, s: &mut DealState, edit: Edit) {
        let today = date_of(s.occurred_ms);
        let date = match (edit, s.expected_close) {
            (Edit::Owner, _) => {
                if let Some(rep) = self.org.other_active(&mut self.rng, s.rep) {
                    self.set_owner(s, rep);
                }
                return;
            }
            (Edit::Amount, _) => {
                let factor = self.rng.random_range(0.75..1.3);
                let dollars = s.amount_cents as f64 / 100.0 * factor;
                s.amount_cents = round_amount(&mut self.rng, dollars);
                return;
            }
            (Edit::Call, _) => {
                s.forecast = recall(&mut self.rng, s.stage, s.forecast);
                return;
            }
            // The buyer names a date for the first time.
            (_, None) => days_after(today, self.rng.random_range(14..90)),
            (Edit::Slip, Some(d)) => slipped(&mut self.rng, d, today),
            (Edit::Push, Some(d)) => pushed(&mut self.rng, d, today),
            // A date too close to pull into an earlier quarter slips instead.
            (Edit::PullIn, Some(d)) => {
                pulled_in(d, today).or_else(|| slipped(&mut self.rng, d, today))
            }
            (Edit::Undate, Some(_)) => None,
        };
        s.expected_close = date;
    }

    /// Takes won deal `i` of those due to reopen back to negotiation.
    fn reopen(&mut self, i: usize, now: i64) -> Record {
        let mut deal = self.reopening.swap_remove(i);
        let mut s = deal.state.clone();
        s.occurred_ms = now.max(s.occurred_ms + 1);
        let days = self.rng.random_range(14..60);
        s.expected_close = Some(date_of(s.occurred_ms + days * DAY_MS));
        self.reassign_if_gone(&mut s);
        deal.fate = if self.rng.random_bool(0.5) {
            Fate::Won
        } else {
            Fate::LostAt(NEGOTIATION)
        };
        deal.prev = Some(std::mem::replace(&mut deal.state, s));
        enter_stage(&mut self.rng, &mut deal, NEGOTIATION);
        let r = self.deal_record(&deal.state, None);
        self.add_open(deal);
        r
    }
}

/// Moves `deal` out of its open stage at `at` (or just after its last change, if that is
/// later) into the next one.
fn move_deal<R: Rng>(rng: &mut R, deal: &mut Deal, at: i64) {
    let from = deal.state.stage;
    let to = next_stage(rng, from, deal.fate, deal.regressions);
    if to < from {
        deal.regressions += 1;
    }
    deal.state.occurred_ms = at.max(deal.state.occurred_ms + 1);
    enter_stage(rng, deal, to);
}

/// Puts `deal` into `stage` as of its `occurred_ms`: the rep's forecast call for the stage,
/// and for an open stage when the visit is planned to end.
fn enter_stage<R: Rng>(rng: &mut R, deal: &mut Deal, stage: usize) {
    let s = &mut deal.state;
    s.stage = stage;
    s.forecast = entry_call(rng, stage);
    if stage >= WON {
        s.closed_ms = Some(s.occurred_ms);
        return;
    }
    s.closed_ms = None;
    // Reps firm up the date as a deal gets serious: most deals reaching proposal undated, or
    // with a date already past, get one weeks ahead. The rest stay undated or overdue.
    let today = date_of(s.occurred_ms);
    if stage >= PROPOSAL && s.expected_close.is_none_or(|d| d < today) && rng.random_bool(0.6) {
        s.expected_close = days_after(today, rng.random_range(10..60));
    }
    deal.due_ms = s.occurred_ms + visit_ms(rng, stage);
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use chrono::{Datelike, Timelike, Weekday};
    use salespulse_decode::{Contract, Reason};

    use super::*;

    /// 2026-11-20T12:00:00Z, a Friday.
    const END_MS: i64 = 1_795_694_400_000;

    fn run(cfg: Config, backfill_days: i64, per_hour: f64, live: usize) -> Vec<(i64, Record)> {
        // Several records per millisecond, as with --rate 0.
        let live = (0..live as i64).map(|i| END_MS + i / 4);
        run_at(cfg, backfill_days, per_hour, live)
    }

    /// A backfill ending at END_MS, then live records at the given instants.
    fn run_at(
        cfg: Config,
        backfill_days: i64,
        per_hour: f64,
        live: impl IntoIterator<Item = i64>,
    ) -> Vec<(i64, Record)> {
        let mut g = Generator::new(cfg).unwrap_or_else(|e| panic!("{e}"));
        let mut b = Backfill::new(END_MS - backfill_days * DAY_MS, END_MS, per_hour);
        let mut out = Vec::new();
        while let Some(r) = g.backfill_record(&mut b) {
            out.push((END_MS, r));
        }
        for now in live {
            out.push((now, g.next_record(now)));
        }
        out
    }

    fn faulty() -> Config {
        Config {
            roster_move_share: 0.01,
            duplicate_share: 0.03,
            stale_share: 0.03,
            late_share: 0.03,
            malformed_share: 0.03,
            ..Config::default()
        }
    }

    #[test]
    fn same_seed_gives_same_records() {
        let a = run(Config::default(), 2, 300.0, 3000);
        let b = run(Config::default(), 2, 300.0, 3000);
        assert_eq!(a, b);
        let c = run(
            Config {
                seed: 43,
                ..Config::default()
            },
            2,
            300.0,
            3000,
        );
        assert_ne!(a, c);
    }

    #[test]
    fn roster_comes_first_and_covers_every_rep() {
        let recs = run(Config::default(), 0, 0.0, 30);
        let keys: Vec<&str> = recs[..24].iter().map(|(_, r)| r.key.as_str()).collect();
        assert!(recs[..24].iter().all(|(_, r)| r.topic == Topic::Roster));
        assert_eq!(keys[0], "rep-001");
        assert_eq!(keys[23], "rep-024");
    }

    fn expected_reason(m: Malformation, format: Format) -> Reason {
        match m {
            Malformation::Garbled if format == Format::Json => Reason::InvalidJson,
            Malformation::Garbled => Reason::InvalidProtobuf,
            Malformation::MissingField => Reason::MissingField,
            Malformation::NegativeAmount => Reason::NegativeAmount,
            Malformation::UnknownStage => Reason::UnknownStage,
            Malformation::UnknownKind => Reason::UnknownKind,
            Malformation::UnknownCurrency => Reason::UnknownCurrency,
            Malformation::FarFuture => Reason::FutureTimestamp,
            Malformation::EmptyId => Reason::EmptyId,
            Malformation::UnknownForecastCategory => Reason::UnknownForecastCategory,
        }
    }

    #[derive(Default)]
    struct Seen {
        created: i64,
        latest: i64,
    }

    fn check_contract(format: Format) {
        let contract = Contract::default();
        let decode_format = match format {
            Format::Json => salespulse_decode::Format::Json,
            Format::Protobuf => salespulse_decode::Format::Protobuf,
        };
        let cfg = Config { format, ..faulty() };
        let recs = run(cfg, 3, 800.0, 20_000);
        let mut deals: HashMap<String, Seen> = HashMap::new();
        let mut values: HashSet<Vec<u8>> = HashSet::new();
        let mut event_ids: HashSet<String> = HashSet::new();
        let mut malformed: HashSet<Malformation> = HashSet::new();
        for (now, r) in &recs {
            let key = Some(r.key.as_bytes());
            assert_eq!(r.content_type, format.content_type());
            if let Some(Fault::Malformed(m)) = r.fault {
                malformed.insert(m);
                let err = match r.topic {
                    Topic::Deals => contract
                        .decode_deal(key, &r.value, decode_format, *now)
                        .map(|_| ()),
                    Topic::Activities => contract
                        .decode_activity(key, &r.value, decode_format, *now)
                        .map(|_| ()),
                    Topic::Roster => panic!("malformed roster records would be compacted in"),
                };
                let reason = err.err().map(|e| e.reason);
                assert_eq!(reason, Some(expected_reason(m, format)), "{m:?}");
                continue;
            }
            if r.fault == Some(Fault::Duplicate) {
                assert!(values.contains(&r.value), "a duplicate repeats a record");
            }
            values.insert(r.value.clone());
            match r.topic {
                Topic::Roster => {
                    contract
                        .decode_roster(key, Some(&r.value), decode_format)
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                Topic::Activities => {
                    let a = contract
                        .decode_activity(key, &r.value, decode_format, *now)
                        .unwrap_or_else(|e| panic!("{e}"));
                    assert!(a.occurred_at <= *now);
                    if r.fault == Some(Fault::Late) {
                        assert!(a.occurred_at <= now - HOUR_MS);
                        assert!(a.occurred_at > now - LATE_HORIZON_MS);
                    }
                    if r.fault != Some(Fault::Duplicate) {
                        assert!(event_ids.insert(a.event_id.into_owned()));
                    }
                }
                Topic::Deals => {
                    let d = contract
                        .decode_deal(key, &r.value, decode_format, *now)
                        .unwrap_or_else(|e| panic!("{e}"));
                    // A deal changed twice within a millisecond is stamped a millisecond on.
                    assert!(d.occurred_at <= now + 10, "{} > {now}", d.occurred_at);
                    assert!(d.created_at <= d.occurred_at);
                    let stage = STAGES[usize::from(d.stage)];
                    let closed = stage.starts_with("closed_");
                    assert_eq!(closed, d.closed_at.is_some(), "{stage}");
                    let amount = Decimal::new(2_000 * 100, 2);
                    assert!(d.amount >= amount, "{}", d.amount);
                    match r.fault {
                        Some(Fault::Duplicate) => {}
                        Some(Fault::Stale) => {
                            let seen = &deals[d.deal_id.as_ref()];
                            assert!(d.occurred_at < seen.latest);
                            assert_eq!(d.created_at, seen.created);
                            assert!(event_ids.insert(d.event_id.into_owned()));
                        }
                        _ => {
                            let seen = deals.entry(d.deal_id.to_string()).or_insert(Seen {
                                created: d.created_at,
                                latest: i64::MIN,
                            });
                            assert_eq!(seen.created, d.created_at, "created_at is constant");
                            assert!(d.occurred_at > seen.latest, "occurred_at moves forward");
                            seen.latest = d.occurred_at;
                            if r.fault == Some(Fault::Late) {
                                assert!(d.occurred_at <= now - HOUR_MS);
                            }
                            assert!(event_ids.insert(d.event_id.into_owned()));
                        }
                    }
                }
            }
        }
        assert_eq!(malformed.len(), Malformation::ALL.len(), "{malformed:?}");
    }

    #[test]
    fn json_records_meet_the_contract_unless_malformed() {
        check_contract(Format::Json);
    }

    #[test]
    fn protobuf_records_meet_the_contract_unless_malformed() {
        check_contract(Format::Protobuf);
    }

    #[test]
    fn fault_shares_are_roughly_respected() {
        let n = 60_000;
        let recs = run(faulty(), 0, 0.0, n);
        let count =
            |f: fn(&Option<Fault>) -> bool| recs.iter().filter(|(_, r)| f(&r.fault)).count();
        let shares = [
            count(|f| matches!(f, Some(Fault::Malformed(_)))),
            count(|f| *f == Some(Fault::Duplicate)),
            count(|f| *f == Some(Fault::Stale)),
            count(|f| *f == Some(Fault::Late)),
        ];
        for got in shares {
            let expected = 0.03 * n as f64;
            assert!(
                (got as f64 - expected).abs() < expected * 0.15,
                "{got} vs {expected}"
            );
        }

        let defaults = run(Config::default(), 0, 0.0, n);
        let got = defaults
            .iter()
            .filter(|(_, r)| matches!(r.fault, Some(Fault::Malformed(_))))
            .count() as f64;
        let expected = 0.002 * n as f64;
        assert!(
            (got - expected).abs() < expected * 0.4,
            "{got} vs {expected}"
        );
    }

    #[test]
    fn activities_follow_the_working_day() {
        let recs = run(Config::default(), 14, 600.0, 0);
        let (mut office, mut off) = (0u32, 0u32);
        for (_, r) in &recs {
            if r.topic != Topic::Activities || r.fault.is_some() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap_or_default();
            let t = v["occurred_at"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .unwrap_or_default();
            let weekday = !matches!(t.weekday(), Weekday::Sat | Weekday::Sun);
            match (weekday, t.hour()) {
                (true, 9..=16) => office += 1,
                (_, 0..=5) => off += 1,
                _ => {}
            }
        }
        // Office hours are 40 of the 168 weekly hours, nights 42.
        assert!(office > 8 * off, "office {office}, night {off}");
    }

    #[test]
    fn deals_close_with_about_a_third_won() {
        let recs = run(Config::default(), 0, 0.0, 80_000);
        let (mut won, mut lost, mut reopened) = (0u32, 0u32, 0u32);
        let mut last_stage: HashMap<String, String> = HashMap::new();
        for (_, r) in recs.iter().filter(|(_, r)| r.fault.is_none()) {
            if r.topic != Topic::Deals {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap_or_default();
            let stage = v["stage"].as_str().unwrap_or_default().to_owned();
            let before = last_stage.insert(r.key.clone(), stage.clone());
            match (before.as_deref(), stage.as_str()) {
                (_, "closed_won") => won += 1,
                (_, "closed_lost") => lost += 1,
                (Some("closed_won"), "negotiation") => reopened += 1,
                _ => {}
            }
        }
        let share = f64::from(won) / f64::from(won + lost);
        assert!((0.22..0.4).contains(&share), "won {won}, lost {lost}");
        assert!(reopened > 0);
        let deal_ids: HashSet<&str> = recs
            .iter()
            .filter(|(_, r)| r.topic == Topic::Deals)
            .map(|(_, r)| r.key.as_str())
            .collect();
        assert!(deal_ids.len() > 100);
    }

    #[test]
    fn invalid_shares_are_refused() {
        let cfg = Config {
            late_share: 1.5,
            ..Config::default()
        };
        assert!(matches!(cfg.validate(), Err(ConfigError::Share { .. })));
        let cfg = Config {
            duplicate_share: 0.6,
            malformed_share: 0.6,
            ..Config::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::FaultsExceedOne(_))
        ));
    }

    /// A deal as its JSON records show it.
    #[derive(Debug, Clone, PartialEq)]
    struct DealView {
        stage: usize,
        /// When the deal entered its stage, as far as its records tell.
        entered: i64,
        occurred: i64,
        amount: String,
        rep: String,
        expected: Option<NaiveDate>,
        call: Option<String>,
    }

    /// What the ordinary deal records of a run say about the pipeline, read as the services
    /// read them: a visit of a stage lasts from the first record in it to the first in another.
    #[derive(Debug, Default)]
    struct Flow {
        deals: HashMap<String, DealView>,
        moves: usize,
        regressions: usize,
        skips: usize,
        reopened: usize,
        pushed: usize,
        pulled_in: usize,
        /// Records of open deals without an expected close date.
        undated: usize,
        /// (stage, category) of the records that name a category.
        calls: HashMap<(usize, String), usize>,
        /// Stage visits that ended, by the stage: (count, total ms), those ending at or after
        /// `since` only.
        visits: [(usize, i64); 4],
        since: i64,
        /// Stage changes at or after `since`.
        moves_since: usize,
        won_since: usize,
    }

    /// Quarter of a date (fiscal year = calendar year, as configured by default).
    fn quarter(d: NaiveDate) -> i32 {
        d.year() * 4 + d.month0() as i32 / 3
    }

    fn deal_json(r: &Record) -> Option<(String, DealView)> {
        let v: serde_json::Value = serde_json::from_slice(&r.value).ok()?;
        let time = |k: &str| {
            v[k].as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.timestamp_millis())
        };
        let occurred = time("occurred_at")?;
        let seen = DealView {
            stage: STAGES.iter().position(|s| v["stage"] == *s)?,
            entered: occurred,
            occurred,
            amount: v["amount"].as_str()?.to_owned(),
            rep: v["rep_id"].as_str()?.to_owned(),
            expected: v["expected_close_date"]
                .as_str()
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()),
            call: v["forecast_category"].as_str().map(str::to_owned),
        };
        Some((v["deal_id"].as_str()?.to_owned(), seen))
    }

    impl Flow {
        fn read(recs: &[(i64, Record)], since: i64) -> Flow {
            let mut f = Flow {
                since,
                ..Flow::default()
            };
            for (_, r) in recs {
                let ordinary = matches!(r.fault, None | Some(Fault::Late));
                if r.topic == Topic::Deals && ordinary {
                    if let Some((id, seen)) = deal_json(r) {
                        f.add(id, seen);
                    }
                }
            }
            f
        }

        fn add(&mut self, id: String, mut now: DealView) {
            let open = now.stage < WON;
            if open && now.expected.is_none() {
                self.undated += 1;
            }
            if let Some(c) = &now.call {
                *self.calls.entry((now.stage, c.clone())).or_default() += 1;
            }
            let Some(before) = self.deals.get(&id).cloned() else {
                self.deals.insert(id, now);
                return;
            };
            if now.stage == before.stage {
                now.entered = before.entered;
                let only_the_date = DealView {
                    expected: now.expected,
                    occurred: now.occurred,
                    ..before.clone()
                } == now;
                if let (true, Some(a), Some(b)) = (only_the_date, before.expected, now.expected) {
                    match quarter(b).cmp(&quarter(a)) {
                        std::cmp::Ordering::Greater => self.pushed += 1,
                        std::cmp::Ordering::Less => self.pulled_in += 1,
                        std::cmp::Ordering::Equal => {}
                    }
                }
            } else {
                self.moves += 1;
                let (from, to) = (before.stage, now.stage);
                if from < WON {
                    if now.occurred >= self.since {
                        self.moves_since += 1;
                        let v = &mut self.visits[from];
                        v.0 += 1;
                        v.1 += now.occurred - before.entered;
                    }
                    if to < from {
                        self.regressions += 1;
                    }
                    if to == from + 2 {
                        self.skips += 1;
                    }
                    if to == WON && now.occurred >= self.since {
                        self.won_since += 1;
                    }
                } else if from == WON && open {
                    self.reopened += 1;
                }
            }
            self.deals.insert(id, now);
        }

        /// Open deals at `at`: (count, mean days in their stage, stalled) by stage, overdue
        /// and undated.
        fn open_at(&self, at: i64) -> ([(usize, f64, usize); 4], usize, usize) {
            let mut by_stage = [(0, 0.0, 0); 4];
            let (mut overdue, mut undated) = (0, 0);
            for d in self.deals.values().filter(|d| d.stage < WON) {
                let days = (at - d.entered) as f64 / DAY_MS as f64;
                let s = &mut by_stage[d.stage];
                s.0 += 1;
                s.1 += days;
                if days > crate::pipeline::STALL_DAYS[d.stage] as f64 {
                    s.2 += 1;
                }
                match d.expected {
                    Some(e) if e < date_of(at) => overdue += 1,
                    None => undated += 1,
                    _ => {}
                }
            }
            for s in &mut by_stage {
                s.1 /= s.0.max(1) as f64;
            }
            (by_stage, overdue, undated)
        }
    }

    #[test]
    fn a_backfill_shows_the_pipeline_flowing_in_days() {
        // Two days of history, as scripts/run.sh produces first.
        let start = END_MS - 2 * DAY_MS;
        let recs = run_at(Config::default(), 2, 600.0, []);
        let flow = Flow::read(&recs, start);
        let (open, overdue, undated) = flow.open_at(END_MS);
        let deals = recs.iter().filter(|(_, r)| r.topic == Topic::Deals).count();
        println!(
            "{} records, {deals} deals; moves {} ({} in the backfill, {} wins), regressions {}, \
             skips {}, reopened {}, pushed {}, pulled in {}; undated records {}",
            recs.len(),
            flow.moves,
            flow.moves_since,
            flow.won_since,
            flow.regressions,
            flow.skips,
            flow.reopened,
            flow.pushed,
            flow.pulled_in,
            flow.undated
        );
        let days = |(n, ms): (usize, i64)| ms as f64 / n.max(1) as f64 / DAY_MS as f64;
        for (stage, &(n, age, stalled)) in open.iter().enumerate() {
            let visits = flow.visits[stage];
            println!(
                "{:>13}: {n} open, {age:.1} days in it on average, {stalled} stalled; \
                 {} visits ended in the backfill, {:.1} days on average",
                STAGES[stage],
                visits.0,
                days(visits)
            );
            assert!(
                age > 2.0 && stalled > 0 && visits.0 > 5,
                "{}",
                STAGES[stage]
            );
            assert!(days(visits) > 1.0, "{}", STAGES[stage]);
        }
        let mut calls: Vec<_> = flow.calls.iter().collect();
        calls.sort();
        println!("open: {overdue} overdue, {undated} undated; categories named: {calls:?}");
        assert!(overdue > 0 && undated > 0);
        assert!(flow.regressions > 0 && flow.skips > 0);
        assert!(flow.pushed > 0 && flow.pulled_in > 0 && flow.undated > 0);
        assert!(flow.calls.contains_key(&(NEGOTIATION, "best_case".into())));
        assert!(flow.calls.contains_key(&(PROPOSAL, "commit".into())));
        let valid = ["pipeline", "best_case", "commit", "omitted", "closed"];
        assert!(flow.calls.keys().all(|(_, c)| valid.contains(&c.as_str())));
        let explicit: usize = flow.calls.values().sum();
        assert!(explicit * 2 < deals, "most records name no category");
    }

    #[test]
    fn live_records_move_deals_every_few_seconds() {
        // As scripts/run.sh: two days of history, then live records at 20 a second.
        let live = (0..1200).map(|i| END_MS + i * 50);
        let recs = run_at(Config::default(), 2, 600.0, live);
        let flow = Flow::read(&recs, END_MS);
        println!(
            "a minute live at 20 records a second: {} stage changes",
            flow.moves_since
        );
        assert!(flow.moves_since >= 15, "{}", flow.moves_since);
    }

    #[test]
    fn activities_last_as_their_kind_does() {
        let recs = run(Config::default(), 0, 0.0, 20_000);
        let mut by_kind: HashMap<String, (usize, usize, i64)> = HashMap::new();
        for (_, r) in &recs {
            if r.topic != Topic::Activities || r.fault.is_some() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap_or_default();
            let kind = v["kind"].as_str().unwrap_or_default().to_owned();
            let e = by_kind.entry(kind).or_default();
            e.0 += 1;
            if let Some(d) = v["duration_seconds"].as_i64() {
                e.1 += 1;
                e.2 += d;
            }
        }
        let mean = |k: &str| {
            let (_, n, total) = by_kind[k];
            total as f64 / n.max(1) as f64 / 60.0
        };
        println!("activities by kind: (count, with a duration, seconds) {by_kind:?}");
        for kind in ["call", "meeting", "demo"] {
            let (n, timed, _) = by_kind[kind];
            assert_eq!(n, timed, "every {kind} has a duration");
        }
        assert_eq!(by_kind["email"].1, 0, "emails have none");
        assert!(
            by_kind["task"].1 < by_kind["task"].0,
            "most tasks have none"
        );
        assert!((3.0..20.0).contains(&mean("call")), "{}", mean("call"));
        assert!(
            (25.0..60.0).contains(&mean("meeting")),
            "{}",
            mean("meeting")
        );
        assert!((30.0..70.0).contains(&mean("demo")), "{}", mean("demo"));
    }
}
