//! Property tests: the incremental core against a naive recomputation of every metric from
//! the full list of records.

#![allow(clippy::needless_range_loop)] // the references index windows by number on purpose

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use salespulse_aggregate::{ActivitiesCore, Calendar, DealsCore, Outcome, SubjectSeries};
use salespulse_decode::{ActivityEvent, Contract, DealEvent};

const N0: i64 = 1_795_780_800; // 2026-11-27T12:00:00Z

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Step {
    Deal(DealRec),
    Activity(ActRec),
    Roster(usize, Option<usize>),
    Tick(i64),
}

#[derive(Debug, Clone)]
struct DealRec {
    event: u32,
    deal: usize,
    rep: usize,
    team: Option<usize>,
    stage: u8,
    cents: i64,
    created: i64,
    occurred: i64,
    closed: Option<i64>,
}

#[derive(Debug, Clone)]
struct ActRec {
    event: u32,
    rep: usize,
    team: Option<usize>,
    kind: u8,
    at: i64,
}

fn rep(i: usize) -> String {
    format!("r{i}")
}
fn team(i: usize) -> String {
    format!("t{i}")
}

fn arb_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        (N0 - 3 * 3600..N0 + 120),
        (N0 - 40 * 86_400..N0 + 120),
        (N0 - 400 * 86_400..N0),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u32..8, 0usize..6, 0usize..4, prop::option::weighted(0.2, 0usize..3), 0u8..6,
              0i64..2_000_000, arb_time(), 0i64..5 * 86_400, prop::option::weighted(0.5, 0i64..86_400))
            .prop_map(|(event, deal, rep, team, stage, cents, created, dt, closed)| Step::Deal(DealRec {
                event, deal, rep, team, stage, cents, created,
                occurred: created + dt,
                closed: closed.map(|c| created + c),
            })),
        4 => (0u32..80, 0usize..4, prop::option::weighted(0.2, 0usize..3), 0u8..5, arb_time())
            .prop_map(|(event, rep, team, kind, at)| Step::Activity(ActRec { event, rep, team, kind, at })),
        1 => (0usize..4, prop::option::weighted(0.8, 0usize..3)).prop_map(|(r, t)| Step::Roster(r, t)),
        1 => (0i64..2 * 86_400).prop_map(Step::Tick),
    ]
}

/// Flattens series into `key -> value` so that two sets compare as maps.
fn flatten(subjects: &[SubjectSeries], into: &mut BTreeMap<String, Decimal>) {
    for s in subjects {
        for x in &s.series {
            into.insert(
                format!(
                    "{}|{}|{}|{}|{}|{}",
                    x.scope.label(),
                    x.id(),
                    x.team.as_deref().unwrap_or(""),
                    x.metric.name(),
                    x.extra.as_deref().unwrap_or(""),
                    x.window.map(|w| w.label()).unwrap_or("")
                ),
                x.value,
            );
        }
    }
}

/// Applies incremental changes: a subject's series replace all its earlier ones.
fn apply_changes(board: &mut BTreeMap<String, Decimal>, changes: &[SubjectSeries]) {
    for s in changes {
        let prefix = match &s.subject {
            salespulse_aggregate::Subject::Rep(r) => format!("rep|{r}|"),
            salespulse_aggregate::Subject::Team(t) => format!("team|{t}|"),
            salespulse_aggregate::Subject::Org => "org|org|".to_owned(),
        };
        board.retain(|k, _| !k.starts_with(&prefix));
        flatten(std::slice::from_ref(s), board);
    }
}

const WINDOW_LABELS: [&str; 9] = [
    "1h", "24h", "7d", "30d", "today", "wtd", "mtd", "qtd", "ytd",
];

/// Window starts at `now`, UTC calendar, fiscal year from January: computed directly.
fn starts(now: i64) -> [i64; 9] {
    let d = Utc
        .timestamp_opt(now, 0)
        .single()
        .expect("valid")
        .date_naive();
    let mid = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("valid").and_utc().timestamp();
    let q_month = (d.month() - 1) / 3 * 3 + 1;
    [
        now - 3599,
        now - 86_399,
        now - 7 * 86_400 + 1,
        now - 30 * 86_400 + 1,
        mid(d),
        mid(d - chrono::Duration::days(i64::from(d.weekday().num_days_from_monday()))),
        mid(NaiveDate::from_ymd_opt(d.year(), d.month(), 1).expect("valid")),
        mid(NaiveDate::from_ymd_opt(d.year(), q_month, 1).expect("valid")),
        mid(NaiveDate::from_ymd_opt(d.year(), 1, 1).expect("valid")),
    ]
}

fn ratio(n: Decimal, d: Decimal) -> Option<Decimal> {
    (!d.is_zero()).then(|| {
        (n / d)
            .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            .normalize()
    })
}

struct Reference {
    roster: HashMap<usize, usize>,
    deals: HashMap<usize, (DealRec, Option<i64>, Vec<u32>)>,
    acts: Vec<ActRec>,
    seen_acts: HashSet<u32>,
    now: i64,
    max_horizon: i64,
}

impl Reference {
    fn eff_team(&self, rep: usize, team: Option<usize>) -> String {
        team.or_else(|| self.roster.get(&rep).copied())
            .map(crate::team)
            .unwrap_or_else(|| "unassigned".into())
    }

    fn deals_board(&self) -> BTreeMap<String, Decimal> {
        let lo = starts(self.now);
        let probs =
            ["0.1", "0.2", "0.5", "0.8", "1", "0"].map(|p| p.parse::<Decimal>().expect("p"));
        let stage_names = ["prospecting", "qualification", "proposal", "negotiation"];
        // (scope, id, team) -> per window [bookings, won, lost, cycle, created_amount, created] + open
        #[derive(Default, Clone)]
        struct Acc {
            w: [[Decimal; 6]; 9],
            open: BTreeMap<u8, (Decimal, i64)>,
            weighted: Decimal,
        }
        let mut accs: BTreeMap<(String, String, String), Acc> = BTreeMap::new();
        for (d, closed_at, _) in self.deals.values() {
            let team = self.eff_team(d.rep, d.team);
            let mut targets = vec![
                ("team".to_owned(), team.clone(), team.clone()),
                ("org".into(), "org".into(), String::new()),
            ];
            if self.roster.contains_key(&d.rep) {
                targets.push(("rep".into(), rep(d.rep), team.clone()));
            }
            let amount = Decimal::new(d.cents, 2);
            let mut facts: Vec<(i64, [Decimal; 6])> = vec![(
                d.created,
                [
                    Decimal::ZERO,
                    Decimal::ZERO,
                    Decimal::ZERO,
                    Decimal::ZERO,
                    amount,
                    Decimal::ONE,
                ],
            )];
            match (d.stage, closed_at) {
                (4, Some(c)) => facts.push((
                    *c,
                    [
                        amount,
                        Decimal::ONE,
                        Decimal::ZERO,
                        Decimal::from(c - d.created),
                        Decimal::ZERO,
                        Decimal::ZERO,
                    ],
                )),
                (5, Some(c)) => facts.push((
                    *c,
                    [
                        Decimal::ZERO,
                        Decimal::ZERO,
                        Decimal::ONE,
                        Decimal::ZERO,
                        Decimal::ZERO,
                        Decimal::ZERO,
                    ],
                )),
                _ => {}
            }
            for t in targets {
                let acc = accs.entry(t).or_default();
                for (ts, f) in &facts {
                    if *ts < self.max_horizon {
                        continue;
                    }
                    for w in 0..9 {
                        if lo[w] <= *ts && *ts <= self.now {
                            for i in 0..6 {
                                acc.w[w][i] += f[i];
                            }
                        }
                    }
                }
                if d.stage < 4 {
                    let e = acc.open.entry(d.stage).or_default();
                    e.0 += amount;
                    e.1 += 1;
                    acc.weighted += amount * probs[usize::from(d.stage)];
                }
            }
        }
        let mut out = BTreeMap::new();
        for ((scope, id, team), acc) in accs {
            let any_w = acc
                .w
                .iter()
                .any(|w| !w[1].is_zero() || !w[2].is_zero() || !w[5].is_zero());
            let any_open = !acc.open.is_empty();
            let mut put = |metric: &str, extra: &str, window: &str, v: Decimal| {
                out.insert(
                    format!("{scope}|{id}|{team}|{metric}|{extra}|{window}"),
                    v.normalize(),
                );
            };
            if any_w {
                for (w, label) in WINDOW_LABELS.iter().enumerate() {
                    let x = acc.w[w];
                    put("bookings", "", label, x[0]);
                    put("deals_won", "", label, x[1]);
                    put("deals_lost", "", label, x[2]);
                    put("pipeline_created", "", label, x[4]);
                    if let Some(r) = ratio(x[1], x[1] + x[2]) {
                        put("win_rate", "", label, r);
                    }
                    if let Some(r) = ratio(x[0], x[1]) {
                        put("avg_deal_size", "", label, r);
                    }
                    if let Some(r) = ratio(x[3], x[1]) {
                        put("sales_cycle_seconds", "", label, r);
                    }
                }
            }
            if any_open {
                for (s, (a, _)) in &acc.open {
                    put("open_pipeline", stage_names[usize::from(*s)], "", *a);
                }
                put("weighted_pipeline", "", "", acc.weighted);
                // No scenario here sets an expected close date.
                for period in ["week", "month", "quarter", "year"] {
                    put("pipeline_expected", period, "", Decimal::ZERO);
                    put("weighted_pipeline_expected", period, "", Decimal::ZERO);
                }
            }
        }
        // Every rep on the roster belongs to its roster team, with or without deals.
        for (r, t) in &self.roster {
            out.insert(
                format!("rep|{}|{}|member||", rep(*r), team(*t)),
                Decimal::ONE,
            );
        }
        out
    }

    fn activities_board(&self) -> BTreeMap<String, Decimal> {
        let lo = starts(self.now);
        let kinds = ["call", "email", "meeting", "demo", "task"];
        let mut accs: BTreeMap<(String, String, String), [[i64; 9]; 5]> = BTreeMap::new();
        for a in &self.acts {
            let minute = a.at - a.at.rem_euclid(60);
            let bucket = if minute < self.now - 25 * 3600 {
                a.at - a.at.rem_euclid(3600)
            } else {
                minute
            };
            let team = self.eff_team(a.rep, a.team);
            let mut targets = vec![
                ("team".to_owned(), team.clone(), team.clone()),
                ("org".into(), "org".into(), String::new()),
            ];
            if self.roster.contains_key(&a.rep) {
                targets.push(("rep".into(), rep(a.rep), team.clone()));
            }
            for t in targets {
                let acc = accs.entry(t).or_insert([[0; 9]; 5]);
                for w in 0..9 {
                    if lo[w] <= bucket && bucket <= self.now {
                        acc[usize::from(a.kind)][w] += 1;
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        for ((scope, id, team), acc) in accs {
            for (k, counts) in acc.iter().enumerate() {
                if counts.iter().all(|c| *c == 0) {
                    continue;
                }
                for (w, label) in WINDOW_LABELS.iter().enumerate() {
                    out.insert(
                        format!("{scope}|{id}|{team}|activities|{}|{label}", kinds[k]),
                        Decimal::from(counts[w]),
                    );
                }
            }
        }
        out
    }
}

/// Runs the steps; at step `restart_at` both cores are saved, dropped, and restored into new
/// cores that know only the current roster, as a restarted service would.
fn run(steps: &[Step], restart_at: Option<usize>) -> Result<(), TestCaseError> {
    let contract = Contract::default();
    let mut deals = DealsCore::new(&contract, Calendar::utc(), N0 * 1000);
    let mut acts = ActivitiesCore::new(&contract, Calendar::utc(), N0 * 1000);
    let mut r = Reference {
        roster: HashMap::new(),
        deals: HashMap::new(),
        acts: Vec::new(),
        seen_acts: HashSet::new(),
        now: N0,
        max_horizon: 0,
    };
    let mut deal_board = BTreeMap::new();
    let mut act_board = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        if restart_at == Some(i) {
            let (saved_deals, saved_acts) = (deals.save(), acts.save());
            deals = DealsCore::new(&contract, Calendar::utc(), r.now * 1000);
            acts = ActivitiesCore::new(&contract, Calendar::utc(), r.now * 1000);
            // As a service does: the snapshot first, then the whole roster.
            deals
                .restore(&saved_deals)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            acts.restore(&saved_acts)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (rp, t) in &r.roster {
                deals.roster_upsert(&rep(*rp), &team(*t));
                acts.roster_upsert(&rep(*rp), &team(*t));
            }
        }
        match step {
            Step::Deal(d) => {
                let ev = DealEvent {
                    event_id: Cow::Owned(format!("d{}-{}", d.deal, d.event)),
                    deal_id: Cow::Owned(format!("deal{}", d.deal)),
                    rep_id: Cow::Owned(rep(d.rep)),
                    team_id: d.team.map(|t| Cow::Owned(team(t))),
                    stage: d.stage,
                    amount: Decimal::new(d.cents, 2),
                    created_at: d.created * 1000,
                    occurred_at: d.occurred * 1000,
                    closed_at: d.closed.map(|c| c * 1000),
                    expected_close_date: None,
                };
                let got = deals.apply(&ev);
                // Reference: dedup on every id the deal has seen, stale on occurred_at.
                let want = match r.deals.get_mut(&d.deal) {
                    Some((_, _, ids)) if ids.contains(&d.event) => Outcome::Duplicate,
                    Some((prev, _, ids)) if d.occurred < prev.occurred => {
                        ids.push(d.event);
                        Outcome::Stale
                    }
                    Some((prev, prev_closed, ids)) => {
                        ids.push(d.event);
                        let closed = if d.stage >= 4 {
                            Some(d.closed.or(*prev_closed).unwrap_or(d.occurred))
                        } else {
                            None
                        };
                        let closed = if d.stage >= 4 && d.closed.is_none() && prev.stage < 4 {
                            Some(d.occurred)
                        } else {
                            closed
                        };
                        *prev = d.clone();
                        *prev_closed = closed;
                        Outcome::Applied
                    }
                    None => {
                        let closed = (d.stage >= 4).then(|| d.closed.unwrap_or(d.occurred));
                        r.deals.insert(d.deal, (d.clone(), closed, vec![d.event]));
                        Outcome::Applied
                    }
                };
                prop_assert_eq!(got, want, "deal outcome of {:?}", d);
            }
            Step::Activity(a) => {
                let ev = ActivityEvent {
                    event_id: Cow::Owned(format!("a{}", a.event)),
                    rep_id: Cow::Owned(rep(a.rep)),
                    team_id: a.team.map(|t| Cow::Owned(team(t))),
                    kind: a.kind,
                    occurred_at: a.at * 1000,
                    deal_id: None,
                    duration_seconds: None,
                };
                let horizon = starts(r.now).into_iter().min().unwrap_or(0);
                let got = acts.apply(&ev);
                let want = if a.at < horizon {
                    Outcome::Stale
                } else if !r.seen_acts.insert(a.event) {
                    Outcome::Duplicate
                } else {
                    r.acts.push(a.clone());
                    Outcome::Applied
                };
                prop_assert_eq!(got, want, "activity outcome of {:?}", a);
            }
            Step::Roster(rp, t) => match t {
                Some(t) => {
                    deals.roster_upsert(&rep(*rp), &team(*t));
                    acts.roster_upsert(&rep(*rp), &team(*t));
                    r.roster.insert(*rp, *t);
                }
                None => {
                    deals.roster_remove(&rep(*rp));
                    acts.roster_remove(&rep(*rp));
                    r.roster.remove(rp);
                }
            },
            Step::Tick(dt) => {
                r.now += dt;
                r.max_horizon = starts(r.now).into_iter().min().unwrap_or(0);
                deals.tick(r.now * 1000);
                acts.tick(r.now * 1000);
            }
        }
        apply_changes(&mut deal_board, &deals.drain_changes());
        apply_changes(&mut act_board, &acts.drain_changes());
    }
    let mut snap = BTreeMap::new();
    flatten(&deals.snapshot(), &mut snap);
    let want = r.deals_board();
    prop_assert_eq!(&snap, &want, "deal snapshot");
    prop_assert_eq!(&deal_board, &want, "deal changes replayed");
    let mut snap = BTreeMap::new();
    flatten(&acts.snapshot(), &mut snap);
    let want = r.activities_board();
    prop_assert_eq!(&snap, &want, "activity snapshot");
    prop_assert_eq!(&act_board, &want, "activity changes replayed");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn core_matches_naive_recomputation(steps in prop::collection::vec(arb_step(), 1..120)) {
        run(&steps, None)?;
    }

    /// Saving and restoring at any point changes no number, and remembered event ids keep
    /// recognising duplicates afterwards.
    #[test]
    fn restored_core_matches_naive_recomputation(
        steps in prop::collection::vec(arb_step(), 1..120),
        at in any::<prop::sample::Index>(),
    ) {
        let at = at.index(steps.len());
        run(&steps, Some(at))?;
    }
}

#[test]
fn amount_change_reopening_and_owner_change_move_the_numbers() {
    let steps = vec![
        Step::Roster(0, Some(0)),
        Step::Roster(1, Some(1)),
        Step::Deal(DealRec {
            event: 1,
            deal: 0,
            rep: 0,
            team: None,
            stage: 4,
            cents: 10_000,
            created: N0 - 3600,
            occurred: N0 - 60,
            closed: None,
        }),
        Step::Deal(DealRec {
            event: 2,
            deal: 0,
            rep: 0,
            team: None,
            stage: 4,
            cents: 25_000,
            created: N0 - 3600,
            occurred: N0 - 50,
            closed: None,
        }),
        Step::Deal(DealRec {
            event: 3,
            deal: 0,
            rep: 0,
            team: None,
            stage: 2,
            cents: 25_000,
            created: N0 - 3600,
            occurred: N0 - 40,
            closed: None,
        }),
        Step::Deal(DealRec {
            event: 4,
            deal: 0,
            rep: 1,
            team: None,
            stage: 4,
            cents: 30_000,
            created: N0 - 3600,
            occurred: N0 - 30,
            closed: None,
        }),
        Step::Deal(DealRec {
            event: 4,
            deal: 0,
            rep: 1,
            team: None,
            stage: 4,
            cents: 30_000,
            created: N0 - 3600,
            occurred: N0 - 30,
            closed: None,
        }),
        Step::Deal(DealRec {
            event: 5,
            deal: 0,
            rep: 0,
            team: None,
            stage: 5,
            cents: 1,
            created: N0 - 3600,
            occurred: N0 - 45,
            closed: None,
        }),
        Step::Roster(1, Some(2)),
        Step::Tick(30),
    ];
    run(&steps, None).expect("matches the reference");
}
