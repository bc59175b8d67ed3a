//! The working-day rhythm of a sales org and the simulated clock of a backfill.

use chrono::{DateTime, Datelike, Timelike, Weekday};
use rand::Rng;

const HOUR_MS: i64 = 3_600_000;
const WEEK_HOURS: i64 = 24 * 7;

/// Relative activity at an instant (Unix ms, UTC): 1 in weekday office hours.
pub fn weight(ms: i64) -> f64 {
    let Some(t) = DateTime::from_timestamp_millis(ms) else {
        return 0.0;
    };
    let hour = t.hour();
    let weekend = matches!(t.weekday(), Weekday::Sat | Weekday::Sun);
    match (weekend, hour) {
        (false, 9..=16) => 1.0,
        (false, 7..=8) | (false, 17..=19) => 0.35,
        (false, _) => 0.06,
        (true, 9..=17) => 0.12,
        (true, _) => 0.04,
    }
}

/// Highest value [`weight`] takes; thinning draws candidates at this rate.
pub const PEAK_WEIGHT: f64 = 1.0;

/// Mean of [`weight`] over a week, so that a rate given as an average stays an average.
pub fn mean_weight() -> f64 {
    // 1970-01-05 was a Monday; any whole week gives the same mean.
    let monday = 4 * 24 * HOUR_MS;
    let total: f64 = (0..WEEK_HOURS)
        .map(|h| weight(monday + h * HOUR_MS + HOUR_MS / 2))
        .sum();
    total / WEEK_HOURS as f64
}

/// Instants of a backfill: a Poisson process whose intensity follows [`weight`], running
/// from `start_ms` to `end_ms`.
#[derive(Debug, Clone)]
pub struct Backfill {
    t_ms: f64,
    end_ms: i64,
    /// Candidates per millisecond at peak weight.
    peak_per_ms: f64,
}

impl Backfill {
    /// `mean_per_hour` is the average number of instants per hour over a whole week.
    pub fn new(start_ms: i64, end_ms: i64, mean_per_hour: f64) -> Backfill {
        let peak_per_hour = mean_per_hour * PEAK_WEIGHT / mean_weight();
        Backfill {
            t_ms: start_ms as f64,
            end_ms,
            peak_per_ms: peak_per_hour / HOUR_MS as f64,
        }
    }

    /// The end of the backfill, which is its notion of "now".
    pub fn end_ms(&self) -> i64 {
        self.end_ms
    }

    /// The next instant, or `None` once the end is passed.
    pub fn advance<R: Rng>(&mut self, rng: &mut R) -> Option<i64> {
        if self.peak_per_ms <= 0.0 {
            return None;
        }
        loop {
            // 1 - u lies in (0, 1], so the logarithm stays finite.
            let u: f64 = rng.random();
            self.t_ms += -(1.0 - u).ln() / self.peak_per_ms;
            if self.t_ms > self.end_ms as f64 {
                self.t_ms = self.end_ms as f64 + 1.0;
                return None;
            }
            let t = self.t_ms as i64;
            if rng.random::<f64>() * PEAK_WEIGHT < weight(t) {
                return Some(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_millis())
            .unwrap_or_default()
    }

    #[test]
    fn office_hours_weigh_most() {
        // 2026-11-25 is a Wednesday, 2026-11-28 a Saturday.
        assert_eq!(weight(ms("2026-11-25T10:00:00Z")), 1.0);
        assert!(weight(ms("2026-11-25T03:00:00Z")) < 0.1);
        assert!(weight(ms("2026-11-28T11:00:00Z")) < 0.2);
    }

    #[test]
    fn backfill_is_ordered_bounded_and_near_its_mean_rate() {
        let (start, end) = (ms("2026-11-02T00:00:00Z"), ms("2026-11-16T00:00:00Z"));
        let mut b = Backfill::new(start, end, 200.0);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut last = start;
        let mut n = 0u32;
        while let Some(t) = b.advance(&mut rng) {
            assert!(t >= last && t <= end);
            last = t;
            n += 1;
        }
        let expected = 200.0 * 24.0 * 14.0;
        assert!(
            (f64::from(n) - expected).abs() < expected * 0.05,
            "{n} vs {expected}"
        );
        assert_eq!(b.advance(&mut rng), None);
    }
}
