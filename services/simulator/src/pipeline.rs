//! How deals move through the pipeline: how long they stay in a stage, where they go next, and
//! what reps do to close dates and forecast calls meanwhile. Pure functions of the caller's
//! random generator, so that the simulation stays reproducible.

use chrono::{Days, Months, NaiveDate};
use rand::Rng;

use crate::generate::{pick, standard_normal};

pub const STAGES: [&str; 6] = [
    "prospecting",
    "qualification",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
];
pub const PROSPECTING: usize = 0;
pub const PROPOSAL: usize = 2;
pub const NEGOTIATION: usize = 3;
pub const WON: usize = 4;
pub const LOST: usize = 5;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Days in an open stage after which the services call a deal stalled (their defaults).
pub const STALL_DAYS: [i64; 4] = [14, 21, 30, 30];
/// Median days of a stage visit that does not stall. Visits spread log-normally around it:
/// some deals clear a stage the same day, others take a couple of weeks.
const MEDIAN_DAYS: [f64; 4] = [3.0, 4.5, 6.0, 5.0];
const SPREAD: f64 = 0.7;
/// A visit never planned shorter than this, so that every move is a distinct moment.
const MIN_VISIT_MS: i64 = 2 * HOUR_MS;
/// Share of stage visits that stall: the deal sits well past the stall limit before it moves.
const STALL_SHARE: f64 = 0.07;
/// Share of moves that go back a stage (the buyer's budget is not there after all), and the
/// most a deal regresses, so that none loops for ever.
const REGRESSION_SHARE: f64 = 0.08;
const MAX_REGRESSIONS: u8 = 2;
/// Share of moves that jump a stage (a proposal goes out on the first qualified call).
const SKIP_SHARE: f64 = 0.07;

/// How a deal's story ends, drawn when it opens so that the win rate holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Won,
    LostAt(usize),
}

/// How long a deal stays in open stage `stage` this time, in milliseconds.
pub fn visit_ms<R: Rng>(rng: &mut R, stage: usize) -> i64 {
    let stall = STALL_DAYS[stage] as f64;
    let days = if rng.random_bool(STALL_SHARE) {
        stall * rng.random_range(1.1..2.5)
    } else {
        // Below the stall limit: stalling is the separate draw above.
        (MEDIAN_DAYS[stage].ln() + SPREAD * standard_normal(rng))
            .exp()
            .min(stall * 0.9)
    };
    ((days * DAY_MS as f64) as i64).max(MIN_VISIT_MS)
}

/// The stage a deal in open stage `stage` moves to, after `regressions` earlier regressions.
pub fn next_stage<R: Rng>(rng: &mut R, stage: usize, fate: Fate, regressions: u8) -> usize {
    if stage > PROSPECTING && regressions < MAX_REGRESSIONS && rng.random_bool(REGRESSION_SHARE) {
        return stage - 1;
    }
    // The furthest the deal gets: the stage it is lost in, or won.
    let furthest = match fate {
        Fate::LostAt(at) if stage >= at => return LOST,
        Fate::LostAt(at) => at,
        Fate::Won => WON,
    };
    // Jumps stay within the story: a deal lost in proposal never skips past it.
    if stage + 2 <= furthest && rng.random_bool(SKIP_SHARE) {
        return stage + 2;
    }
    if stage >= NEGOTIATION {
        WON
    } else {
        stage + 1
    }
}

/// The forecast category of a record that names none, by stage (the services' defaults).
pub const STAGE_CATEGORY: [&str; 6] = [
    "pipeline",
    "pipeline",
    "best_case",
    "commit",
    "closed",
    "omitted",
];
/// The calls a rep makes on an open deal of each stage when they set one: mostly a proposal
/// upgraded to commit or a negotiation held back at best case, sometimes the stage's default
/// spelled out, now and then a deal left out of the forecast.
const CALLS: [&[(&str, u32)]; 4] = [
    &[("pipeline", 3), ("omitted", 1)],
    &[("pipeline", 2), ("best_case", 2), ("omitted", 1)],
    &[
        ("commit", 4),
        ("best_case", 2),
        ("pipeline", 2),
        ("omitted", 1),
    ],
    &[
        ("best_case", 5),
        ("commit", 2),
        ("pipeline", 1),
        ("omitted", 1),
    ],
];
/// Share of stage entries on which the rep sets a category instead of leaving the stage's.
const CALL_SHARE: f64 = 0.18;
/// Share of closed deals whose records spell out `closed` or `omitted`.
const CLOSED_CALL_SHARE: f64 = 0.25;

/// The category a deal's records name on entering `stage`; mostly none.
pub fn entry_call<R: Rng>(rng: &mut R, stage: usize) -> Option<&'static str> {
    match CALLS.get(stage) {
        Some(calls) => rng.random_bool(CALL_SHARE).then(|| pick(rng, calls)),
        None => rng
            .random_bool(CLOSED_CALL_SHARE)
            .then_some(STAGE_CATEGORY[stage]),
    }
}

/// A rep's new call on an open deal of `stage` that has `current`: often back to the stage's
/// category, otherwise another call.
pub fn recall<R: Rng>(
    rng: &mut R,
    stage: usize,
    current: Option<&'static str>,
) -> Option<&'static str> {
    if current.is_some() && rng.random_bool(0.4) {
        return None;
    }
    let calls = CALLS.get(stage).copied().unwrap_or(&[]);
    let other: Vec<(&'static str, u32)> = calls
        .iter()
        .copied()
        .filter(|&(c, _)| Some(c) != current)
        .collect();
    (!other.is_empty()).then(|| pick(rng, &other))
}

/// A close date moved into the next fiscal quarter or later: three months on from the date
/// (or from today, for an overdue one), and a few days more. Three months move any date into
/// the next quarter whichever month the fiscal year starts in.
pub fn pushed<R: Rng>(rng: &mut R, date: NaiveDate, today: NaiveDate) -> Option<NaiveDate> {
    date.max(today)
        .checked_add_months(Months::new(3))?
        .checked_add_days(Days::new(rng.random_range(0..20)))
}

/// A close date pulled into the previous fiscal quarter, if that is not in the past.
pub fn pulled_in(date: NaiveDate, today: NaiveDate) -> Option<NaiveDate> {
    date.checked_sub_months(Months::new(3))
        .filter(|d| *d > today)
}

/// A close date that slips by days or weeks, which may or may not cross into a later quarter.
pub fn slipped<R: Rng>(rng: &mut R, date: NaiveDate, today: NaiveDate) -> Option<NaiveDate> {
    date.max(today)
        .checked_add_days(Days::new(rng.random_range(7..35)))
}

/// A close date `days` after `today`.
pub fn days_after(today: NaiveDate, days: u64) -> Option<NaiveDate> {
    today.checked_add_days(Days::new(days))
}

#[cfg(test)]
mod tests {
    use chrono::Datelike;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn visits_last_days_and_some_stall() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (stage, &limit) in STALL_DAYS.iter().enumerate() {
            let visits: Vec<i64> = (0..4000).map(|_| visit_ms(&mut rng, stage)).collect();
            let mean_days = visits.iter().sum::<i64>() as f64 / 4000.0 / DAY_MS as f64;
            let stalled = visits.iter().filter(|&&v| v > limit * DAY_MS).count();
            assert!((2.0..12.0).contains(&mean_days), "{stage}: {mean_days}");
            assert!((150..450).contains(&stalled), "{stage}: {stalled}");
            assert!(visits.iter().all(|&v| v >= MIN_VISIT_MS));
        }
    }

    #[test]
    fn moves_regress_skip_and_follow_the_fate() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (mut back, mut skips) = (0, 0);
        for _ in 0..5000 {
            let to = next_stage(&mut rng, 1, Fate::Won, 0);
            match to {
                0 => back += 1,
                3 => skips += 1,
                _ => assert_eq!(to, 2),
            }
            // Lost in proposal: never past it, lost once there.
            assert!(next_stage(&mut rng, 1, Fate::LostAt(2), 0) <= 2);
            assert_eq!(
                next_stage(&mut rng, 2, Fate::LostAt(2), MAX_REGRESSIONS),
                LOST
            );
            assert!([PROPOSAL, WON].contains(&next_stage(&mut rng, NEGOTIATION, Fate::Won, 0)));
            assert!(next_stage(&mut rng, PROSPECTING, Fate::Won, 0) > PROSPECTING);
        }
        assert!((250..550).contains(&back), "{back}");
        assert!((200..500).contains(&skips), "{skips}");
        assert_ne!(next_stage(&mut rng, 2, Fate::Won, MAX_REGRESSIONS), 1);
    }

    #[test]
    fn calls_are_mostly_absent_and_always_valid() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let valid = ["pipeline", "best_case", "commit", "omitted", "closed"];
        for (stage, default) in STAGE_CATEGORY.iter().enumerate() {
            let calls: Vec<_> = (0..2000).map(|_| entry_call(&mut rng, stage)).collect();
            let set = calls.iter().flatten().count();
            assert!((150..700).contains(&set), "{stage}: {set}");
            assert!(calls.iter().flatten().all(|c| valid.contains(c)));
            if stage >= WON {
                assert!(calls.iter().flatten().all(|c| c == default));
            }
        }
        for _ in 0..200 {
            let c = recall(&mut rng, NEGOTIATION, Some("best_case"));
            assert_ne!(c, Some("best_case"));
        }
    }

    #[test]
    fn pushes_and_pulls_cross_a_quarter_whatever_the_fiscal_year() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        // Quarter index of a date for a fiscal year starting in `start` (1..=12).
        let quarter = |d: NaiveDate, start: u32| {
            (d.year() * 12 + d.month0() as i32 - start as i32 + 1).div_euclid(3)
        };
        let today = date("2026-11-20");
        for d in [
            "2026-11-30",
            "2026-12-31",
            "2027-01-01",
            "2027-03-31",
            "2027-05-15",
        ] {
            let d = date(d);
            let p = pushed(&mut rng, d, today).unwrap_or(d);
            for start in 1..=12 {
                assert!(quarter(p, start) > quarter(d, start), "{d} -> {p}");
                if let Some(q) = pulled_in(d, today) {
                    assert!(quarter(q, start) < quarter(d, start), "{d} -> {q}");
                }
            }
        }
        assert_eq!(pulled_in(date("2026-12-31"), today), None);
        assert_eq!(
            pulled_in(date("2027-03-31"), today),
            Some(date("2026-12-31"))
        );
        // An overdue date is pushed from today.
        assert!(pushed(&mut rng, date("2026-10-01"), today) >= Some(date("2027-02-20")));
    }
}
